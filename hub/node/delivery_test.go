package node_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
	"github.com/hubproject/hub/hub/dlq"
	"github.com/hubproject/hub/hub/hubtest"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/webhook"
)

// fanoutHub starts a hub whose "log" and "webhook" channels are captures,
// with a compressed retry schedule.
type fanoutHub struct {
	n        *node.Node
	logCh    *hubtest.Capture
	hookCh   *hubtest.Capture
	pub      *publisher.Publisher
	outcomes chan dispatch.Outcome
}

func startFanout(t *testing.T, subs []hub.Subscription, tweak ...func(*node.Config)) *fanoutHub {
	t.Helper()
	cfg := testConfig(t.TempDir())
	cfg.NATS.Listen = ""
	cfg.HTTP.Listen = ""
	cfg.Subscriptions = subs
	cfg.Delivery.Backoff = []config.Duration{config.Duration(50 * time.Millisecond), config.Duration(100 * time.Millisecond), config.Duration(200 * time.Millisecond)}
	cfg.Delivery.MaxAttempts = 5
	cfg.Delivery.AckWait = config.Duration(2 * time.Second)
	for _, f := range tweak {
		f(&cfg)
	}
	if err := config.Check(&cfg); err != nil {
		t.Fatal(err)
	}
	h := &fanoutHub{logCh: hubtest.NewCapture(), hookCh: hubtest.NewCapture(), outcomes: make(chan dispatch.Outcome, 10000)}
	h.n = node.New(cfg, node.WithChannel("log", h.logCh), node.WithChannel("webhook", h.hookCh),
		node.WithObserver(func(o dispatch.Outcome) {
			select {
			case h.outcomes <- o:
			default:
			}
		}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, h.n) })
	p, err := publisher.New(h.n.Conn())
	if err != nil {
		t.Fatal(err)
	}
	h.pub = p
	return h
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func sub(id, channel string, events ...string) hub.Subscription {
	s := hub.Subscription{ID: id, Channel: channel, Events: events}
	if channel == "webhook" {
		s.URL = "https://receiver.example.com/" + id
		s.Secret = config.Secret(webhook.GenerateSecret())
	}
	return s
}

func TestFanOutEveryPairDelivered(t *testing.T) {
	h := startFanout(t, []hub.Subscription{
		sub("audit-log", "log", ">"),
		sub("orders-log", "log", "order.*"),
		sub("crm", "webhook", "order.>"),
		sub("billing", "webhook", "order.paid", "invoice.*"),
	})
	ctx := ctxT(t, 30*time.Second)
	const n = 50
	types := []string{"order.created", "order.paid", "user.signed_up"}
	want := map[string]int{}
	for i := 0; i < n; i++ {
		typ := types[i%len(types)]
		if _, err := h.pub.Publish(ctx, publisher.Event{Type: typ, ID: fmt.Sprintf("ev-%d", i)}); err != nil {
			t.Fatal(err)
		}
		want["audit-log"]++
		if typ != "user.signed_up" {
			want["orders-log"]++
			want["crm"]++
		}
		if typ == "order.paid" {
			want["billing"]++
		}
	}
	if err := h.logCh.WaitCount(ctx, want["audit-log"]+want["orders-log"]); err != nil {
		t.Fatalf("log: %d delivered: %v", len(h.logCh.Delivered()), err)
	}
	if err := h.hookCh.WaitCount(ctx, want["crm"]+want["billing"]); err != nil {
		t.Fatalf("webhook: %d delivered: %v", len(h.hookCh.Delivered()), err)
	}
	got := map[string]map[string]bool{}
	for _, c := range append(h.logCh.Delivered(), h.hookCh.Delivered()...) {
		if got[c.Subscription] == nil {
			got[c.Subscription] = map[string]bool{}
		}
		got[c.Subscription][c.EventID] = true
		if c.DeliveryID != hub.DeliveryID(c.EventID, c.Subscription, "") {
			t.Fatalf("unstable delivery id %s", c.DeliveryID)
		}
	}
	for s, w := range want {
		if len(got[s]) != w {
			t.Errorf("%s: %d distinct events delivered, want %d", s, len(got[s]), w)
		}
	}
}

func TestRetryScheduleAndIsolation(t *testing.T) {
	h := startFanout(t, []hub.Subscription{sub("flaky", "webhook", "order.created"), sub("healthy", "webhook", "order.created")})
	var fails atomic.Int32
	h.hookCh.FailWith(func(d *hub.Delivery) error {
		if d.Subscription.ID == "flaky" && fails.Add(1) <= 3 {
			return errors.New("503 from flaky")
		}
		return nil
	})
	ctx := ctxT(t, 30*time.Second)
	if _, err := h.pub.Publish(ctx, publisher.Event{Type: "order.created", ID: "e1"}); err != nil {
		t.Fatal(err)
	}
	c, err := h.hookCh.WaitDelivered(ctx, "e1", "flaky")
	if err != nil {
		t.Fatal(err)
	}
	if c.Attempt != 4 {
		t.Fatalf("flaky delivered on attempt %d, want 4", c.Attempt)
	}
	attempts := h.hookCh.Attempts(hub.DeliveryID("e1", "flaky", ""))
	if len(attempts) != 4 {
		t.Fatalf("%d attempts, want 4", len(attempts))
	}
	// The schedule 50, 100, 200 ms (±10 % jitter) between attempts, plus
	// a little for the trip through DELIVERIES.
	for i, want := range []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond} {
		gap := attempts[i+1].At.Sub(attempts[i].At)
		// The upper bound allows for a loaded CI machine.
		lo, hi := time.Duration(float64(want)*0.9)-5*time.Millisecond, time.Duration(float64(want)*1.1)+400*time.Millisecond
		t.Logf("gap after attempt %d: %s (schedule %s)", i+1, gap, want)
		if gap < lo || gap > hi {
			t.Errorf("gap after attempt %d is %s, want %s..%s", i+1, gap, lo, hi)
		}
	}
	if n := len(h.hookCh.Attempts(hub.DeliveryID("e1", "healthy", ""))); n != 1 {
		t.Fatalf("healthy subscription got %d attempts, want exactly 1", n)
	}
}

func waitDLQ(t *testing.T, ctx context.Context, s *dlq.Store, f dlq.Filter, n int) []dlq.DeadLetter {
	t.Helper()
	for {
		items, err := s.List(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(items) >= n {
			return items
		}
		select {
		case <-ctx.Done():
			t.Fatalf("DLQ has %d records, want %d", len(items), n)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestPermanentFailureOneDeadLetterThenReplay(t *testing.T) {
	h := startFanout(t, []hub.Subscription{sub("broken", "webhook", "order.created"), sub("fine", "webhook", "order.created", "probe.sent")})
	var broken atomic.Bool
	broken.Store(true)
	h.hookCh.FailWith(func(d *hub.Delivery) error {
		if d.Subscription.ID == "broken" && broken.Load() {
			return hub.Permanent(errors.New("422 Unprocessable Entity: bad schema"))
		}
		return nil
	})
	ctx := ctxT(t, 30*time.Second)
	if _, err := h.pub.Publish(ctx, publisher.Event{Type: "order.created", ID: "p1"}); err != nil {
		t.Fatal(err)
	}
	items := waitDLQ(t, ctx, h.n.DLQ(), dlq.Filter{}, 1)
	dl := items[0]
	if dl.Subscription != "broken" || dl.EventID != "p1" || dl.Attempts != 1 || dl.Channel != "webhook" ||
		dl.Reason != "422 Unprocessable Entity: bad schema" || dl.DeliveryID != hub.DeliveryID("p1", "broken", "") {
		t.Fatalf("dead letter %+v", dl)
	}
	// No further attempts, and still exactly one record a moment later.
	if _, err := h.hookCh.WaitDelivered(ctx, "p1", "fine"); err != nil {
		t.Fatal(err)
	}
	publishAndWait(t, ctx, h, "probe-1")
	if n := len(h.hookCh.Attempts(dl.DeliveryID)); n != 1 {
		t.Fatalf("%d attempts after a permanent failure, want 1", n)
	}
	if items, _ := h.n.DLQ().List(ctx, dlq.Filter{}); len(items) != 1 {
		t.Fatalf("%d DLQ records, want 1", len(items))
	}

	// Replay twice at once: one delivery, to that subscription only.
	broken.Store(false)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = h.n.DLQ().Replay(ctx, dl.ID)
		}()
	}
	wg.Wait()
	if _, err := h.hookCh.WaitDelivered(ctx, "p1", "broken"); err != nil {
		t.Fatal(err)
	}
	publishAndWait(t, ctx, h, "probe-2")
	var toBroken, toFine int
	for _, c := range h.hookCh.Delivered() {
		if c.EventID != "p1" {
			continue
		}
		switch c.Subscription {
		case "broken":
			toBroken++
		case "fine":
			toFine++
		}
	}
	if toBroken != 1 || toFine != 1 {
		t.Fatalf("after replay: broken got %d, fine got %d; want 1 and 1", toBroken, toFine)
	}
	if items, _ := h.n.DLQ().List(ctx, dlq.Filter{}); len(items) != 0 {
		t.Fatalf("replayed record still in the DLQ: %+v", items)
	}
	if _, err := h.n.DLQ().Replay(ctx, dl.ID); !errors.Is(err, dlq.ErrNotFound) {
		t.Fatalf("replay of a replayed record: %v", err)
	}
}

// publishAndWait publishes a probe event only "fine" wants and waits for
// it: the pipeline has moved past everything published before.
func publishAndWait(t *testing.T, ctx context.Context, h *fanoutHub, id string) hubtest.Captured {
	t.Helper()
	if _, err := h.pub.Publish(ctx, publisher.Event{Type: "probe.sent", ID: id}); err != nil {
		t.Fatal(err)
	}
	c, err := h.hookCh.WaitDelivered(ctx, id, "fine")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestExhaustedAttemptsDeadLetter(t *testing.T) {
	h := startFanout(t, []hub.Subscription{sub("down", "webhook", "order.created")}, func(c *node.Config) { c.Delivery.MaxAttempts = 3 })
	h.hookCh.FailWith(func(d *hub.Delivery) error { return errors.New("connection refused") })
	ctx := ctxT(t, 30*time.Second)
	if _, err := h.pub.Publish(ctx, publisher.Event{Type: "order.created", ID: "x1"}); err != nil {
		t.Fatal(err)
	}
	items := waitDLQ(t, ctx, h.n.DLQ(), dlq.Filter{Subscription: "down"}, 1)
	dl := items[0]
	if dl.Attempts != 3 || dl.Reason != "gave up after 3 attempts: connection refused" {
		t.Fatalf("dead letter %+v", dl)
	}
	if n := len(h.hookCh.Attempts(dl.DeliveryID)); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
	if items, _ := h.n.DLQ().List(ctx, dlq.Filter{Channel: "log"}); len(items) != 0 {
		t.Fatalf("channel filter: %d", len(items))
	}
}

func TestDeferDoesNotSpendAttempts(t *testing.T) {
	h := startFanout(t, []hub.Subscription{sub("breaker", "webhook", "order.created")}, func(c *node.Config) { c.Delivery.MaxAttempts = 2 })
	var calls atomic.Int32
	h.hookCh.FailWith(func(d *hub.Delivery) error {
		if calls.Add(1) <= 4 {
			return hub.Defer(errors.New("circuit open"), 20*time.Millisecond)
		}
		return nil
	})
	ctx := ctxT(t, 30*time.Second)
	if _, err := h.pub.Publish(ctx, publisher.Event{Type: "order.created", ID: "d1"}); err != nil {
		t.Fatal(err)
	}
	c, err := h.hookCh.WaitDelivered(ctx, "d1", "breaker")
	if err != nil {
		t.Fatal(err)
	}
	if c.Attempt != 1 {
		t.Fatalf("delivered as attempt %d after 4 deferrals, want 1", c.Attempt)
	}
}

func TestInvalidEnvelopeIsDeadLettered(t *testing.T) {
	h := startFanout(t, []hub.Subscription{sub("all", "log", ">"), sub("hooks", "webhook", ">")})
	ctx := ctxT(t, 30*time.Second)
	nc := h.n.Conn()
	for subj, body := range map[string]string{
		"events.bad.json":  `{"type":`,
		"events.mismatch":  `{"type":"other","id":"m1","specversion":"1.0","source":"x"}`,
		"events.bad.attrs": `{"type":"bad.attrs","id":"a b"}`,
	} {
		if err := nc.PublishMsg(&nats.Msg{Subject: subj, Data: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	// A raw NATS publisher that leaves out the defaulted attributes is fine.
	m := nats.NewMsg("events.raw.ok")
	m.Header.Set("Nats-Msg-Id", "raw-1")
	m.Data = []byte(`{"type":"raw.ok"}`)
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	items := waitDLQ(t, ctx, h.n.DLQ(), dlq.Filter{Channel: dispatch.InvalidChannel}, 3)
	if _, err := h.logCh.WaitDelivered(ctx, "raw-1", "all"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.hookCh.WaitDelivered(ctx, "raw-1", "hooks"); err != nil {
		t.Fatal(err)
	}
	// Both dispatchers saw each invalid event; dedup keeps one record each.
	if items, _ = h.n.DLQ().List(ctx, dlq.Filter{}); len(items) != 3 {
		t.Fatalf("%d DLQ records, want 3: %+v", len(items), items)
	}
	for _, it := range items {
		if it.Reason == "" || it.Channel != dispatch.InvalidChannel {
			t.Fatalf("record %+v", it)
		}
		if _, err := h.n.DLQ().Replay(ctx, it.ID); !errors.Is(err, dlq.ErrNotReplayable) {
			t.Fatalf("replay of invalid: %v", err)
		}
	}
}

func TestGoneDisablesSubscription(t *testing.T) {
	h := startFanout(t, []hub.Subscription{sub("gone", "webhook", "order.created"), sub("fine", "webhook", "order.created", "probe.sent")})
	h.hookCh.FailWith(func(d *hub.Delivery) error {
		if d.Subscription.ID == "gone" {
			return hub.Gone(errors.New("410 Gone"))
		}
		return nil
	})
	ctx := ctxT(t, 30*time.Second)
	if _, err := h.pub.Publish(ctx, publisher.Event{Type: "order.created", ID: "g1"}); err != nil {
		t.Fatal(err)
	}
	waitDLQ(t, ctx, h.n.DLQ(), dlq.Filter{Subscription: "gone"}, 1)
	for _, s := range h.n.Subscriptions() {
		if s.ID == "gone" && !s.Disabled {
			t.Fatal("subscription not disabled after 410")
		}
	}
	if _, err := h.pub.Publish(ctx, publisher.Event{Type: "order.created", ID: "g2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.hookCh.WaitDelivered(ctx, "g2", "fine"); err != nil {
		t.Fatal(err)
	}
	if n := len(h.hookCh.Attempts(hub.DeliveryID("g2", "gone", ""))); n != 0 {
		t.Fatalf("disabled subscription got %d attempts", n)
	}
}
