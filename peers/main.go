// Command peers compares the hub with the brokers a user would pick
// instead, in one run on one machine: raw NATS JetStream (embedded, one
// stream, four durable consumers), RabbitMQ (a fanout exchange to four
// durable classic queues, persistent messages, publisher confirms) and the
// hub in-process (four subscriptions on a no-op channel, or on four local
// keep-alive webhook receivers). Every system gets the same events (hub
// CloudEvents of the same size), file storage, acknowledged publishes and
// one manual ack per delivery.
//
//	peers run -system jetstream|rabbitmq|hub|hub-webhook [-sync default|always] [-batch N] -out result.json
//	peers render -in DIR -md docs/peers.md -img docs/img
//
// scripts/bench-peers.sh (make bench-peers) runs every system, the scale
// curves (hub bench) and render.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage: peers run|render [flags]")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "run":
		return runSystem(ctx, args[1:], stdout, stderr)
	case "render":
		return runRender(args[1:], stdout, stderr)
	}
	return errUsage
}

// Result is one system's run, as written to -out.
type Result struct {
	System      string `json:"system"`
	Sync        string `json:"sync"`
	Count       int    `json:"count"`
	EventBytes  int    `json:"event_bytes"`
	Subscribers int    `json:"subscribers"`
	// Batch: with -batch, the intake phase of raw JetStream and the hub
	// published JetStream atomic batches of Batch events, BatchWorkers open
	// at once (0: one message at a time, up to window awaiting acks).
	Batch        int `json:"batch,omitempty"`
	BatchWorkers int `json:"batch_workers,omitempty"`
	// IntakeRate: events/s from the first publish to the last ack, nothing consuming.
	IntakeRate float64 `json:"intake_rate"`
	// FanoutRate: deliveries/s draining the backlog of Count events to
	// every subscriber, each acked.
	FanoutRate float64 `json:"fanout_rate"`
	// Latency: publish → consumer, at LatencyRate events/s with consumers running.
	LatencyRate   float64             `json:"latency_rate"`
	LatencyEvents int                 `json:"latency_events"`
	Latency       loadgen.Percentiles `json:"latency_ms"`
	// CPUSeconds of the intake and fan-out phases: this process, plus the
	// RabbitMQ server's when measured.
	CPUSeconds  float64 `json:"cpu_seconds"`
	BrokerCPU   float64 `json:"broker_cpu_seconds,omitempty"`
	PeakRSSMiB  float64 `json:"peak_rss_mib"`
	Complete    bool    `json:"complete"`
	Note        string  `json:"note,omitempty"`
	GoVersion   string  `json:"go_version,omitempty"`
	CompletedAt string  `json:"completed_at"`
}

func runSystem(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("peers run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("system", "", "jetstream, rabbitmq, hub or hub-webhook")
	sync := fs.String("sync", "default", "default or always (JetStream and the hub; RabbitMQ confirms after its own fsync either way)")
	count := fs.Int("count", 50000, "events for the intake and fan-out phases")
	size := fs.Int("size", 128, "encoded event size in bytes")
	rate := fs.Float64("latency-rate", 1000, "events/s of the latency phase")
	latDur := fs.Duration("latency-duration", 5*time.Second, "length of the latency phase")
	amqpURL := fs.String("amqp", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL")
	rabbitPID := fs.Int("rabbit-pid", 0, "pid of the RabbitMQ server, to add its CPU time")
	out := fs.String("out", "", "write the result as JSON to this file")
	batchSize := fs.Int("batch", 0, "intake of jetstream and hub: JetStream atomic batches of this many events (at most the server's 1000); 0: per message")
	batchWorkers := fs.Int("batch-workers", 4, "atomic batches open at once, with -batch")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *sync != "default" && *sync != "always" {
		return fmt.Errorf("%w: -sync default|always", errUsage)
	}
	if *batchSize < 0 || *batchSize > 1000 || *batchWorkers < 1 {
		return fmt.Errorf("%w: -batch 0..1000, -batch-workers ≥ 1", errUsage)
	}
	batch := batching{size: *batchSize, workers: *batchWorkers}
	dir, err := os.MkdirTemp("", "peers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c := newCounter()
	var sys system
	res := Result{System: *name, Sync: *sync, Count: *count, Subscribers: fanout, LatencyRate: *rate}
	switch *name {
	case "jetstream":
		sys, err = startJetStream(ctx, dir, *sync, batch, c)
	case "rabbitmq":
		sys, err = startRabbit(*amqpURL, c)
		res.Note = "classic queues; a confirm is sent once the message is on disk, in both modes"
	case "hub":
		sys, err = startHub(ctx, dir, *sync, false, batch, c)
	case "hub-webhook":
		sys, err = startHub(ctx, dir, *sync, true, batch, c)
	default:
		return fmt.Errorf("%w: -system jetstream|rabbitmq|hub|hub-webhook", errUsage)
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", *name, err)
	}
	if *name != "rabbitmq" && batch.size > 0 {
		res.Batch, res.BatchWorkers = batch.size, batch.workers
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = sys.close(sctx)
	}()
	evs := loadgen.NewEvents(loadgen.NewRecorder(0), loadgen.DefaultType, *size)
	res.EventBytes = evs.Size()
	mk := func(i int) hub.Event { return evs.Event(i, time.Time{}) }
	flat := func(int) time.Time { return time.Now() }
	self := loadgen.Self()
	var broker *loadgen.Proc
	if *rabbitPID > 0 && *name == "rabbitmq" {
		broker = loadgen.PID(*rabbitPID)
	}
	cpu := func() (time.Duration, time.Duration) {
		u, _ := self.Read()
		var b time.Duration
		if broker != nil {
			bu, _ := broker.Read()
			b = bu.CPU
		}
		return u.CPU, b
	}

	// 1. Intake: nothing consumes yet.
	cpu0, b0 := cpu()
	t0 := time.Now()
	if err := sys.publish(ctx, 0, *count, mk, flat, true); err != nil {
		return fmt.Errorf("%s intake: %w", *name, err)
	}
	res.IntakeRate = perSecond(*count, time.Since(t0))
	fmt.Fprintf(stderr, "%s/%s: intake %.0f events/s (batch %d)\n", *name, *sync, res.IntakeRate, res.Batch)

	// 2. Fan-out: drain the backlog to every subscriber.
	t1 := time.Now()
	if err := sys.release(ctx); err != nil {
		return err
	}
	want := int64(*count * fanout)
	done := waitFor(ctx, c, want, 5*time.Minute)
	res.FanoutRate = perSecond(int(min(c.n.Load(), want)), done.Sub(t1))
	cpu1, b1 := cpu()
	res.CPUSeconds = round2((cpu1 - cpu0 + b1 - b0).Seconds())
	if broker != nil {
		res.BrokerCPU = round2((b1 - b0).Seconds())
	}
	fmt.Fprintf(stderr, "%s/%s: fan-out %.0f deliveries/s (%d of %d)\n", *name, *sync, res.FanoutRate, c.n.Load(), want)
	complete := c.n.Load() >= want

	// 3. Latency at a fixed rate, consumers running.
	c.lat.Store(&loadgen.Histogram{})
	n := int(*rate * latDur.Seconds())
	res.LatencyEvents = n
	start := time.Now()
	pace := func(i int) time.Time {
		due := start.Add(time.Duration(float64(i-*count) / *rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		return due
	}
	if err := sys.publish(ctx, *count, n, mk, pace, false); err != nil {
		return fmt.Errorf("%s latency phase: %w", *name, err)
	}
	want += int64(n * fanout)
	waitFor(ctx, c, want, 2*time.Minute)
	res.Latency = c.lat.Load().Summary()
	res.Complete = complete && c.n.Load() >= want
	fmt.Fprintf(stderr, "%s/%s: latency at %.0f/s p50 %.3f p99 %.3f p99.9 %.3f ms\n", *name, *sync, *rate, res.Latency.P50, res.Latency.P99, res.Latency.P999)
	if u, err := self.Read(); err == nil {
		res.PeakRSSMiB = round2(float64(u.Peak) / (1 << 20))
	}
	res.CompletedAt = time.Now().UTC().Format(time.RFC3339)
	b, _ := json.MarshalIndent(res, "", "  ")
	if *out != "" {
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout, string(b))
	}
	if !res.Complete {
		return fmt.Errorf("%s: %d of %d deliveries", *name, c.n.Load(), want)
	}
	return nil
}

// waitFor polls until c counted want deliveries, and returns when that
// was (or when it gave up).
func waitFor(ctx context.Context, c *counter, want int64, limit time.Duration) time.Time {
	deadline := time.Now().Add(limit)
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for c.n.Load() < want && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return time.Now()
		case <-t.C:
		}
	}
	return time.Now()
}

func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(int64(float64(n) / d.Seconds()))
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
