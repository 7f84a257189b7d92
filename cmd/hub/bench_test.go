package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// benchReport is the part of hub bench -json the tests check.
type benchReport struct {
	Published     int64   `json:"published"`
	PublishErrors int64   `json:"publish_errors"`
	Expected      int64   `json:"expected_deliveries"`
	Delivered     int64   `json:"delivered"`
	Duplicates    int64   `json:"duplicates"`
	PerEvent      int     `json:"deliveries_per_event"`
	Complete      bool    `json:"complete"`
	DeliveryRate  float64 `json:"delivery_rate"`
	Latency       pct     `json:"latency_ms"`
	Intake        pct     `json:"intake_latency_ms"`
	Channels      []struct {
		Channel       string `json:"channel"`
		Subscriptions int    `json:"subscriptions"`
		Delivered     int64  `json:"delivered"`
		Latency       pct    `json:"latency_ms"`
	} `json:"channels"`
	Hub *struct {
		CPUSeconds float64 `json:"cpu_seconds"`
		PeakRSSMiB float64 `json:"peak_rss_mib"`
	} `json:"hub"`
}

type pct struct {
	Count                   uint64
	Min, P50, P90, P99, Max float64
	P999                    float64 `json:"p99_9"`
}

func (p pct) ordered() bool {
	return p.Min >= 0 && p.Min <= p.P50 && p.P50 <= p.P90 && p.P90 <= p.P99 && p.P99 <= p.P999 && p.P999 <= p.Max
}

func parseBench(t *testing.T, out string) benchReport {
	t.Helper()
	var r benchReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("bench output is not the JSON report: %v\n%s", err, out)
	}
	return r
}

// checkBench checks a report of count events to subs subscriptions, sent
// in requests (publishes) of batch events.
func checkBench(t *testing.T, r benchReport, count, subs, batch int) {
	t.Helper()
	want := int64(count * subs)
	if !r.Complete || r.Published != int64(count) || r.PublishErrors != 0 || r.PerEvent != subs || r.Expected != want || r.Delivered != want || r.Duplicates != 0 {
		t.Fatalf("inconsistent report: %+v", r)
	}
	var sum int64
	for _, c := range r.Channels {
		sum += c.Delivered
		if !c.Latency.ordered() || c.Latency.Count != uint64(c.Delivered) {
			t.Errorf("channel %s latency %+v", c.Channel, c.Latency)
		}
	}
	if sum != want {
		t.Errorf("channels deliver %d, want %d", sum, want)
	}
	if !r.Latency.ordered() || !r.Intake.ordered() || r.Latency.Count != uint64(want) || r.Intake.Count != uint64(count/batch) {
		t.Errorf("percentiles: latency %+v intake %+v", r.Latency, r.Intake)
	}
	if r.DeliveryRate <= 0 || r.Hub == nil || r.Hub.PeakRSSMiB <= 0 || r.Hub.CPUSeconds < 0 {
		t.Errorf("rates and process: %+v %+v", r.DeliveryRate, r.Hub)
	}
}

func TestBenchInProcess(t *testing.T) {
	out, errOut, code := runHub(t, "bench", "-inprocess", "-count", "2000", "-webhooks", "2", "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	r := parseBench(t, out)
	checkBench(t, r, 2000, 2, 1)
	if len(r.Channels) != 1 || r.Channels[0].Channel != "webhook" || r.Channels[0].Subscriptions != 2 {
		t.Errorf("channels %+v", r.Channels)
	}
}

func TestBenchInProcessEveryChannelOverHTTP(t *testing.T) {
	out, errOut, code := runHub(t, "bench", "-inprocess", "-via", "http", "-batch", "20", "-count", "400",
		"-webhooks", "1", "-emails", "1", "-sms", "1", "-size", "1024", "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	r := parseBench(t, out)
	checkBench(t, r, 400, 3, 20)
	if len(r.Channels) != 3 {
		t.Errorf("channels %+v", r.Channels)
	}
	// The text report names every channel.
	out, errOut, code = runHub(t, "bench", "-inprocess", "-count", "100", "-sms", "1", "-webhooks", "0")
	if code != 0 || !strings.Contains(out, "sms") || !strings.Contains(out, "delivered       100 of 100") {
		t.Fatalf("text report: exit %d\n%s\n%s", code, out, errOut)
	}
}

// TestBenchRunningHub drives a `hub serve` over NATS, creating its webhook
// subscription through the API and reading the hub's CPU and memory by pid.
func TestBenchRunningHub(t *testing.T) {
	cfg := baseConfig(t.TempDir()) + "channels: {webhook: {allow_cidrs: [127.0.0.0/8]}}\n"
	p := startHub(t, writeConfig(t, cfg))
	defer p.stop(t)
	out, errOut, code := runHub(t, "bench", "-server", p.natsURL, "-http", p.httpURL, "-count", "500",
		"-webhooks", "2", "-pid", fmt.Sprint(p.cmd.Process.Pid), "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	checkBench(t, parseBench(t, out), 500, 2, 1)
	// The subscriptions it created are gone again.
	out, _, code = runHub(t, "bench", "-server", p.natsURL, "-http", p.httpURL, "-via", "http", "-count", "100", "-webhooks", "0", "-json")
	if code != 0 {
		t.Fatalf("intake-only run: exit %d %s", code, out)
	}
	if r := parseBench(t, out); r.Published != 100 || r.Expected != 0 || !r.Complete {
		t.Fatalf("intake-only report %+v", r)
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"-count", "10", "-duration", "1s"},
		{"-via", "smtp", "-inprocess"},
		{"-emails", "1"}, // needs -inprocess
		{"-via", "http"}, // needs -http
		{"-inprocess", "-sync", "sometimes"},
		{"-inprocess", "-pid", "1"},
		{"-inprocess", "-backlog", "-webhooks", "0"},
		{"-batch", "0", "-inprocess"},
	} {
		if _, errOut, code := runHub(t, append([]string{"bench"}, args...)...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errOut)
		}
	}
}
