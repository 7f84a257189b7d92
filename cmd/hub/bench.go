package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/loadgen"
	"github.com/hubproject/hub/hub/node"
)

// benchFlags are the command line of hub bench.
type benchFlags struct {
	inprocess                bool
	config, storeDir, sync   string
	server, httpURL, via     string
	rate                     float64
	count                    int
	duration, drain, hold    time.Duration
	size, batch, workers     int
	webhooks, emails, sms    int
	pid                      int
	jsonOut, backlog, noProg bool
	cpuProfile, memProfile   string
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", stderr)
	var f benchFlags
	fs.BoolVar(&f.inprocess, "inprocess", false, "run the hub in this process (a temporary store, webhook receivers allowed on 127.0.0.0/8)")
	fs.StringVar(&f.config, "config", "", "with -inprocess: start from this configuration file instead of the defaults")
	fs.StringVar(&f.storeDir, "store", "", "with -inprocess: JetStream store directory (default: a temporary one, removed after)")
	fs.StringVar(&f.sync, "sync", "", "with -inprocess: nats.sync, default or always")
	fs.StringVar(&f.server, "server", "nats://127.0.0.1:4222", "NATS URL of a running hub")
	fs.StringVar(&f.httpURL, "http", "", "HTTP URL of a running hub (for -via http and for creating webhook subscriptions)")
	fs.StringVar(&f.via, "via", "nats", "publish over nats or http")
	fs.Float64Var(&f.rate, "rate", 0, "events per second (0: as fast as the hub acknowledges)")
	fs.IntVar(&f.count, "count", 0, "publish this many events (default 10000 unless -duration)")
	fs.DurationVar(&f.duration, "duration", 0, "publish for this long")
	fs.IntVar(&f.size, "size", 128, "encoded event size in bytes (at least the ~125-byte envelope)")
	fs.IntVar(&f.batch, "batch", 1, "events per HTTP request (-via http)")
	fs.IntVar(&f.workers, "workers", 4, "HTTP requests in flight (-via http)")
	fs.IntVar(&f.webhooks, "webhooks", 1, "webhook subscriptions to a local keep-alive receiver")
	fs.IntVar(&f.emails, "emails", 0, "email subscriptions to a local SMTP sink (-inprocess)")
	fs.IntVar(&f.sms, "sms", 0, "SMS subscriptions to a local Twilio-shaped sink (-inprocess)")
	fs.IntVar(&f.pid, "pid", 0, "pid of a running hub, to report its CPU time and memory")
	fs.DurationVar(&f.drain, "drain", time.Minute, "longest wait for deliveries after publishing (the wait also ends 15s after the last delivery)")
	fs.BoolVar(&f.backlog, "backlog", false, "keep the webhook receiver down while publishing; start it after -hold and time the drain")
	fs.DurationVar(&f.hold, "hold", 0, "with -backlog: how long the receiver stays down after publishing ends")
	fs.BoolVar(&f.jsonOut, "json", false, "print the report as JSON")
	fs.BoolVar(&f.noProg, "no-progress", false, "no progress bar")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the hub too, with -inprocess) to this file")
	fs.StringVar(&f.memProfile, "memprofile", "", "write an allocation profile of this process to this file at the end")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := f.check(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if f.cpuProfile != "" {
		stop, err := startCPUProfile(f.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	rep, err := bench(ctx, f, stderr)
	if f.memProfile != "" {
		if perr := writeHeapProfile(f.memProfile); perr != nil {
			return perr
		}
	}
	if rep != nil {
		if f.jsonOut {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if jerr := enc.Encode(rep); jerr != nil {
				return jerr
			}
		} else {
			printBenchReport(stdout, rep)
		}
	}
	if err != nil {
		return err
	}
	if !rep.Complete {
		return fmt.Errorf("incomplete: %d of %d deliveries, %d publish errors", rep.Delivered, rep.Expected, rep.PublishErrors)
	}
	return nil
}

func (f *benchFlags) check() error {
	if f.count == 0 && f.duration == 0 {
		f.count = 10000
	}
	switch {
	case f.count > 0 && f.duration > 0:
		return errors.New("give -count or -duration, not both")
	case f.count < 0, f.duration < 0, f.rate < 0, f.size < 0, f.batch < 1, f.workers < 1, f.webhooks < 0, f.emails < 0, f.sms < 0:
		return errors.New("counts, sizes and rates must be positive")
	case f.via != loadgen.ViaNATS && f.via != loadgen.ViaHTTP:
		return fmt.Errorf("-via must be nats or http, not %q", f.via)
	case f.sync != "" && f.sync != "default" && f.sync != "always":
		return fmt.Errorf("-sync must be default or always, not %q", f.sync)
	case f.backlog && f.webhooks == 0:
		return errors.New("-backlog needs webhook subscriptions")
	}
	if !f.inprocess {
		switch {
		case f.config != "" || f.storeDir != "" || f.sync != "":
			return errors.New("-config, -store and -sync need -inprocess")
		case f.emails > 0 || f.sms > 0:
			return errors.New("email and SMS subscriptions come from the config file: use -inprocess, or -webhooks only against a running hub")
		case f.via == loadgen.ViaHTTP && f.httpURL == "":
			return errors.New("-via http needs -http URL (or -inprocess)")
		case f.webhooks > 0 && f.httpURL == "":
			return errors.New("webhook subscriptions are created over HTTP: give -http URL, or -webhooks 0")
		}
	} else if f.pid != 0 {
		return errors.New("-pid is for a running hub; -inprocess measures this process")
	}
	return nil
}

func bench(ctx context.Context, f benchFlags, stderr io.Writer) (*loadgen.Report, error) {
	rec := loadgen.NewRecorder(f.count)
	sinks, err := loadgen.StartSinks(rec, f.webhooks, f.emails, f.sms)
	if err != nil {
		return nil, err
	}
	defer sinks.Close(context.Background())
	spec := loadgen.Spec{Type: loadgen.DefaultType, Webhooks: f.webhooks, Emails: f.emails, SMS: f.sms}
	o := loadgen.Options{
		Via: f.via, Rate: f.rate, Count: f.count, Duration: f.duration, Size: f.size, Batch: f.batch,
		Workers: f.workers, Type: spec.Type, Targets: spec.Targets(), Drain: f.drain, Recorder: rec,
	}
	if f.duration >= 3*time.Second || f.count >= 50000 || f.backlog {
		if file, ok := stderr.(*os.File); ok && isTerminal(file) && !f.noProg {
			o.Progress = stderr
		}
	}
	if f.backlog {
		// A backlog drains on the retry schedule (backoff, breaker): pauses
		// between deliveries are normal, so wait for all of them or -drain.
		o.Stall = f.drain
		if err := sinks.Webhook.Stop(); err != nil {
			return nil, err
		}
		o.AfterPublish = func(ctx context.Context) error {
			if f.hold > 0 {
				t := time.NewTimer(f.hold)
				defer t.Stop()
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-t.C:
				}
			}
			return sinks.Webhook.Start()
		}
	}
	if f.inprocess {
		return benchInProcess(ctx, f, o, spec, sinks)
	}
	return benchRunning(ctx, f, o, spec, sinks)
}

func benchInProcess(ctx context.Context, f benchFlags, o loadgen.Options, spec loadgen.Spec, sinks *loadgen.Sinks) (*loadgen.Report, error) {
	base := node.DefaultConfig()
	if f.config != "" {
		var err error
		if base, err = node.Load(f.config); err != nil {
			return nil, fmt.Errorf("%s:\n%w", f.config, err)
		}
	}
	store := f.storeDir
	if store == "" {
		dir, err := os.MkdirTemp("", "hub-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		store = dir
	}
	if f.sync != "" {
		base.NATS.Sync = f.sync
	}
	cfg, err := loadgen.InProcessConfig(base, store, "", f.via == loadgen.ViaHTTP, spec, o.Recorder.Run, sinks)
	if err != nil {
		return nil, err
	}
	n := node.New(cfg, node.WithVersion(version))
	if err := n.Start(ctx); err != nil {
		return nil, fmt.Errorf("start the in-process hub: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_ = n.Shutdown(sctx)
	}()
	if f.via == loadgen.ViaNATS {
		nc, err := n.Embedded().Connect("hub bench")
		if err != nil {
			return nil, err
		}
		defer nc.Close()
		o.Conn = nc
	}
	o.HTTPURL = n.HTTPURL()
	o.Proc = loadgen.Self()
	rep, err := loadgen.Run(ctx, o)
	if rep != nil {
		ictx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if st, serr := n.JetStream().Stream(ictx, hub.DeliveriesStream); serr == nil {
			rep.RetryMessages = st.CachedInfo().State.LastSeq
		}
	}
	return rep, err
}

func benchRunning(ctx context.Context, f benchFlags, o loadgen.Options, spec loadgen.Spec, sinks *loadgen.Sinks) (*loadgen.Report, error) {
	if f.via == loadgen.ViaNATS {
		nc, err := nats.Connect(f.server, nats.Name("hub bench"), nats.Timeout(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("connect %s: %w", f.server, err)
		}
		defer nc.Close()
		o.Conn = nc
	}
	o.HTTPURL = f.httpURL
	if f.pid != 0 {
		o.Proc = loadgen.PID(f.pid)
		if _, err := o.Proc.Read(); err != nil {
			return nil, fmt.Errorf("-pid %d: %w", f.pid, err)
		}
	}
	if spec.Webhooks > 0 {
		c := &http.Client{Timeout: 10 * time.Second}
		ids, err := loadgen.CreateWebhooks(ctx, c, f.httpURL, spec, o.Recorder.Run, sinks)
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = loadgen.DeleteWebhooks(dctx, c, f.httpURL, ids)
		}()
		if err != nil {
			return nil, err
		}
		if err := waitSubscriptions(ctx, c, f.httpURL, ids); err != nil {
			return nil, err
		}
	}
	return loadgen.Run(ctx, o)
}

func startCPUProfile(path string) (func(), error) {
	file, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(file); err != nil {
		file.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		file.Close()
	}, nil
}

func writeHeapProfile(path string) error {
	file, err := os.Create(path)
	if err != nil {
		return err
	}
	defer file.Close()
	return pprof.Lookup("allocs").WriteTo(file, 0)
}

// waitSubscriptions waits until the hub lists every new subscription.
func waitSubscriptions(ctx context.Context, c *http.Client, base string, ids []string) error {
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range ids {
		for {
			resp, err := c.Get(strings.TrimRight(base, "/") + "/v1/subscriptions/" + id)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("subscription %s not visible after 10s", id)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

func printBenchReport(w io.Writer, r *loadgen.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	how := r.Via
	if r.Batch > 1 {
		how += fmt.Sprintf(", batches of %d", r.Batch)
	}
	target := "flat out"
	if r.TargetRate > 0 {
		target = fmt.Sprintf("target %.0f/s", r.TargetRate)
	}
	fmt.Fprintf(tw, "published\t%d events of %d B over %s (%s) in %.2fs: %.0f/s\n", r.Published, r.EventBytes, how, target, r.PublishSeconds, r.PublishRate)
	if r.PublishErrors > 0 {
		fmt.Fprintf(tw, "publish errors\t%d (first: %s)\n", r.PublishErrors, r.PublishError)
	}
	p := r.IntakeLatency
	fmt.Fprintf(tw, "intake latency\tp50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms\n", p.P50, p.P90, p.P99, p.P999, p.Max)
	if r.Targets == 0 {
		fmt.Fprintf(tw, "delivered\tnothing: no subscriptions (intake only)\n")
	} else {
		fmt.Fprintf(tw, "delivered\t%d of %d (%d per event) in %.2fs: %.0f/s\n", r.Delivered, r.Expected, r.Targets, r.DeliverySeconds, r.DeliveryRate)
	}
	if r.RetryMessages > 0 {
		fmt.Fprintf(tw, "retry path\t%d messages went through DELIVERIES (failed or deferred first attempts, retries)\n", r.RetryMessages)
	}
	if r.DrainSeconds > 0 {
		fmt.Fprintf(tw, "drain\t%.2fs after the receiver came back\n", r.DrainSeconds)
	}
	for _, c := range r.Channels {
		l := c.Latency
		fmt.Fprintf(tw, "  %s\t%d subscriptions, %d delivered (%.0f/s), %d duplicates; p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms\n",
			c.Channel, c.Subscriptions, c.Delivered, c.Rate, c.Duplicates, l.P50, l.P90, l.P99, l.P999, l.Max)
	}
	l := r.Latency
	fmt.Fprintf(tw, "latency\tpublish→received p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms\n", l.P50, l.P90, l.P99, l.P999, l.Max)
	if h := r.Hub; h != nil {
		fmt.Fprintf(tw, "hub\t%s: %.2f CPU s (%.2f cores), peak RSS %.1f MiB, RSS %.1f → %.1f MiB (max %.1f)\n",
			h.Process, h.CPUSeconds, h.CPUCores, h.PeakRSSMiB, h.StartMiB, h.EndMiB, h.MaxRSSMiB)
		if h.MaxGoroutines > 0 {
			fmt.Fprintf(tw, "goroutines	at most %d\n", h.MaxGoroutines)
		}
	}
	if !r.Complete {
		fmt.Fprintf(tw, "INCOMPLETE\t%d deliveries missing\n", r.Expected-r.Delivered)
	}
	_ = tw.Flush()
}
