package main

import (
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hubproject/hub/hub/loadgen"
)

func TestRender(t *testing.T) {
	in := t.TempDir()
	write := func(name string, v any) {
		b, _ := json.Marshal(v)
		if err := os.WriteFile(filepath.Join(in, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lat := loadgen.Percentiles{Count: 10, P50: 0.5, P90: 0.9, P99: 2, P999: 3, Max: 4}
	for i, sys := range []string{"jetstream", "rabbitmq", "hub", "hub-webhook"} {
		for _, mode := range []string{"default", "always"} {
			for round := 1; round <= 2; round++ {
				res := Result{
					System: sys, Sync: mode, Count: 1000, EventBytes: 128, Subscribers: 4, LatencyRate: 100, LatencyEvents: 500,
					IntakeRate: float64(1000 * (i + round)), FanoutRate: float64(4000 * (i + 1)), Latency: lat, CPUSeconds: 1, Complete: true,
				}
				if mode == "always" && sys != "rabbitmq" {
					res.Batch, res.BatchWorkers = 1000, 4
				}
				write("peers-"+sys+"-"+mode+"-r"+string(rune('0'+round))+".json", res)
			}
		}
	}
	rep := loadgen.Report{Published: 100, PublishRate: 1000, DeliveryRate: 4000, EventBytes: 128, Latency: lat, Complete: true,
		Hub: &loadgen.ProcReport{PeakRSSMiB: 50, MaxRSSMiB: 40, Samples: []loadgen.Sample{{Seconds: 0, RSSMiB: 30}, {Seconds: 1, RSSMiB: 40}}}}
	for _, name := range []string{"scale-subs-1", "scale-subs-10", "scale-size-1024", "http-batch", "http-single", "webhook-1k", "steady-5k"} {
		write(name+".json", rep)
	}
	backlog := rep
	backlog.PublishSeconds, backlog.AfterPublishSeconds, backlog.RetryMessages = 1, 1, 66
	backlog.Hub = &loadgen.ProcReport{PeakRSSMiB: 60, MaxRSSMiB: 60, Samples: []loadgen.Sample{
		{Seconds: 0, RSSMiB: 30}, {Seconds: 1, RSSMiB: 40}, {Seconds: 1.5, RSSMiB: 42}, {Seconds: 2, RSSMiB: 41}, {Seconds: 3, RSSMiB: 60}}}
	write("backlog.json", backlog)
	out := t.TempDir()
	md := filepath.Join(out, "peers.md")
	if err := run(t.Context(), []string{"render", "-in", in, "-md", md, "-img", filepath.Join(out, "img"), "-command", "make bench-peers X=1"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, want := range []string{
		"`make bench-peers X=1`", "| raw JetStream | 2,000 | 4,000 |", "| intake, hub / raw JetStream (hub, webhooks: nothing consuming during intake, as for raw JetStream) | 2.50× | ≥ 0.8× | yes |",
		"| intake, hub / raw JetStream (hub, no-op sinks: an idle channel reads every event meanwhile) | 2.00× |", "| fan-out, hub / raw JetStream | 3.00× |",
		"Best of 2 rounds", "### Webhook subscriptions",
		"`peers run -batch 1000 -batch-workers 4`", "| hub, no-op sinks, atomic batches of 1000 |", "| RabbitMQ | 3,000 |",
		"| intake, raw JetStream (atomic batches of 1000) / RabbitMQ |", "| hub, webhooks | always, batches of 1000 |", "| 10 |", "A backlog waiting", "| 40 – 42 |", "| 66 |", "(img/peers-throughput.svg)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("peers.md lacks %q", want)
		}
	}
	svgs, _ := filepath.Glob(filepath.Join(out, "img", "*.svg"))
	if len(svgs) != 4 {
		t.Fatalf("charts %v", svgs)
	}
	for _, f := range svgs {
		b, _ := os.ReadFile(f)
		d := xml.NewDecoder(strings.NewReader(string(b)))
		for {
			if _, err := d.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s is not well-formed: %v", f, err)
			}
		}
	}
	if err := run(t.Context(), []string{"render", "-in", t.TempDir()}, io.Discard, io.Discard); err == nil {
		t.Error("no error for an empty directory")
	}
}
