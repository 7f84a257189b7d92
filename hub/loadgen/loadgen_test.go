package loadgen_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub/loadgen"
	"github.com/hubproject/hub/hub/node"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startHub runs an in-process hub for spec, delivering to sinks; adjust
// may change the configuration first.
func startHub(t *testing.T, spec loadgen.Spec, rec *loadgen.Recorder, http bool, adjust func(*node.Config)) (*node.Node, *loadgen.Sinks) {
	t.Helper()
	sinks, err := loadgen.StartSinks(rec, spec.Webhooks, spec.Emails, spec.SMS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sinks.Close(context.Background()) })
	base := node.DefaultConfig()
	if adjust != nil {
		adjust(&base)
	}
	cfg, err := loadgen.InProcessConfig(base, t.TempDir(), "", http, spec, rec.Run, sinks)
	if err != nil {
		t.Fatal(err)
	}
	n := node.New(cfg)
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return n, sinks
}

func checkReport(t *testing.T, r *loadgen.Report, events int, spec loadgen.Spec) {
	t.Helper()
	want := int64(events * spec.Targets())
	if !r.Complete || r.Published != int64(events) || r.Expected != want || r.Delivered != want || r.Duplicates != 0 || r.PublishErrors != 0 {
		t.Fatalf("report: complete %v published %d expected %d delivered %d duplicates %d errors %d (%s)",
			r.Complete, r.Published, r.Expected, r.Delivered, r.Duplicates, r.PublishErrors, r.PublishError)
	}
	per := map[string]int{"webhook": spec.Webhooks, "email": spec.Emails, "sms": spec.SMS}
	var sum int64
	for _, c := range r.Channels {
		if c.Delivered != int64(events*per[c.Channel]) || c.Subscriptions != per[c.Channel] {
			t.Errorf("channel %s: %d delivered by %d subscriptions", c.Channel, c.Delivered, c.Subscriptions)
		}
		sum += c.Delivered
	}
	if sum != want {
		t.Errorf("channels add up to %d, want %d", sum, want)
	}
	for _, p := range []loadgen.Percentiles{r.Latency, r.IntakeLatency} {
		if !(p.Min <= p.P50 && p.P50 <= p.P90 && p.P90 <= p.P99 && p.P99 <= p.P999 && p.P999 <= p.Max) || p.Min < 0 {
			t.Errorf("percentiles out of order: %+v", p)
		}
	}
	if r.Latency.Count != uint64(want) || r.PublishRate <= 0 || r.DeliveryRate <= 0 {
		t.Errorf("latency count %d, publish rate %v, delivery rate %v", r.Latency.Count, r.PublishRate, r.DeliveryRate)
	}
}

func TestRunOverNATSToEveryChannel(t *testing.T) {
	rec := loadgen.NewRecorder(300)
	spec := loadgen.Spec{Webhooks: 2, Emails: 1, SMS: 1}
	n, _ := startHub(t, spec, rec, false, nil)
	nc, err := n.Embedded().Connect("loadgen test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r, err := loadgen.Run(context.Background(), loadgen.Options{
		Conn: nc, Count: 300, Size: 1024, Targets: spec.Targets(), Recorder: rec, Proc: loadgen.Self(), SampleEvery: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, r, 300, spec)
	if r.EventBytes < 1000 || r.EventBytes > 1050 {
		t.Errorf("event size %d, want about 1024", r.EventBytes)
	}
	if r.Hub == nil || r.Hub.PeakRSSMiB <= 0 || r.Hub.CPUSeconds < 0 || len(r.Hub.Samples) < 2 {
		t.Errorf("process report %+v", r.Hub)
	}
}

func TestRunOverHTTPBatchesAtARate(t *testing.T) {
	rec := loadgen.NewRecorder(200)
	spec := loadgen.Spec{Webhooks: 1}
	n, _ := startHub(t, spec, rec, true, nil)
	start := time.Now()
	r, err := loadgen.Run(context.Background(), loadgen.Options{
		Via: loadgen.ViaHTTP, HTTPURL: n.HTTPURL(), Count: 200, Batch: 10, Workers: 2, Rate: 1000, Targets: 1, Recorder: rec,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, r, 200, spec)
	// 200 events at 1,000/s take at least 0.19 s.
	if el := time.Since(start); el < 150*time.Millisecond || r.Batch != 10 {
		t.Errorf("paced run took %v (batch %d)", el, r.Batch)
	}
}

func TestBacklogDrainsAfterReceiverReturns(t *testing.T) {
	rec := loadgen.NewRecorder(100)
	spec := loadgen.Spec{Webhooks: 1}
	n, sinks := startHub(t, spec, rec, false, func(c *node.Config) {
		c.Channels.Webhook.Breaker.Enabled = false
		c.Delivery.Backoff = []config.Duration{config.Duration(100 * time.Millisecond)}
		c.Delivery.MaxAttempts = 100
	})
	nc, err := n.Embedded().Connect("loadgen test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := sinks.Webhook.Stop(); err != nil {
		t.Fatal(err)
	}
	r, err := loadgen.Run(context.Background(), loadgen.Options{
		Conn: nc, Count: 100, Targets: 1, Recorder: rec,
		AfterPublish: func(context.Context) error {
			if rec.Delivered() != 0 {
				t.Error("delivered while the receiver was down")
			}
			return sinks.Webhook.Start()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, r, 100, spec)
	if r.DrainSeconds <= 0 {
		t.Errorf("drain %v", r.DrainSeconds)
	}
}

func TestOptionsAreChecked(t *testing.T) {
	for _, o := range []loadgen.Options{
		{Count: 1},                       // no connection
		{Via: loadgen.ViaHTTP, Count: 1}, // no URL
		{Via: "smoke", HTTPURL: "http://x", Count: 1}, // unknown
		{Via: loadgen.ViaHTTP, HTTPURL: "http://x"},   // neither count nor duration
		{Via: loadgen.ViaHTTP, HTTPURL: "http://x", Count: 1, Duration: time.Second},
	} {
		if _, err := loadgen.Run(context.Background(), o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
