// Command hub is the notification hub: an embedded NATS JetStream server
// that fans events out to email, SMS, webhook and audit subscribers, and
// gathers replies from services.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// errUsage marks a command-line mistake: exit status 2.
var errUsage = errors.New("usage")

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run the hub", runServe},
		{"validate", "check a configuration file", runValidate},
		{"publish", "publish one event over NATS", runPublish},
		{"gather", "ask a gather route: hub gather ROUTE key=value ...", runGather},
		{"dlq", "list, replay or drop dead letters (list|replay|drop)", runDLQ},
		{"trace", "an event's delivery timeline: hub trace EVENT-ID", runTrace},
		{"audit", "check the audit file's hash chain: hub audit verify", runAudit},
		{"status", "streams, consumers, dead letters, disabled subscriptions and cluster peers, over NATS", runStatus},
		{"bench", "drive load against a hub and measure throughput, latency, CPU and memory", runBench},
		{"version", "print the version", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			if msg := err.Error(); msg != errUsage.Error() {
				fmt.Fprintln(stderr, "hub "+c.name+":", msg)
			}
			return 2
		default:
			var logged *loggedError
			if !errors.As(err, &logged) {
				fmt.Fprintln(stderr, "hub "+c.name+":", err)
			}
			return 1
		}
	}
	fmt.Fprintf(stderr, "hub: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: hub <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'hub <command> -h' for a command's flags.")
}

// newFlags returns a FlagSet whose errors become errUsage.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("hub "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "hub", version)
	return nil
}
