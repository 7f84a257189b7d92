// Command dashboard runs the three demo services behind the "dashboard"
// gather route (svc.user.get, svc.orders.list, svc.payments.list) against a
// NATS server, with a configurable delay and failure rate:
//
//	go run ./examples/dashboard -server nats://127.0.0.1:4222 -delay 50ms -fail 0.0
//
// Then, with the hub running the route from examples/dashboard/hub.yaml:
//
//	hub gather dashboard user_id=42
//	curl 'http://127.0.0.1:8080/v1/gather/dashboard?user_id=42'
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/examples/dashboard/responders"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dashboard:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dashboard", flag.ContinueOnError)
	server := fs.String("server", nats.DefaultURL, "NATS server URL")
	delay := fs.Duration("delay", 50*time.Millisecond, "delay before each reply")
	fail := fs.Float64("fail", 0, "share of requests (0..1) answered with an error")
	queue := fs.String("queue", "dashboard", "queue group (empty: every process answers every request)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	nc, err := nats.Connect(*server, nats.Name("hub-dashboard-example"))
	if err != nil {
		return fmt.Errorf("connect %s: %w", *server, err)
	}
	defer nc.Close()
	stopResponders, err := responders.Start(nc, responders.Options{Delay: *delay, FailRate: *fail, Queue: *queue})
	if err != nil {
		return err
	}
	fmt.Printf("answering %s, %s, %s on %s (delay %v, fail %.0f%%); Ctrl-C to stop\n",
		responders.UserSubject, responders.OrdersSubject, responders.PaymentsSubject, *server, *delay, *fail*100)
	<-ctx.Done()
	stopResponders() // unsubscribes and waits for replies being sent
	if err := nc.FlushTimeout(2 * time.Second); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}
