package audit_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
	"github.com/hubproject/hub/hub/dlq"
	"github.com/hubproject/hub/hub/hubtest"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/audit"
	"github.com/hubproject/hub/subscribers/webhook"
)

func sub(id string, events ...string) hub.Subscription {
	return hub.Subscription{ID: id, Channel: "webhook", Events: events, URL: "https://receiver.example.com/" + id,
		Secret: config.Secret(webhook.GenerateSecret())}
}

// TestEndToEndMixedOutcomes runs a whole hub with the Auditor as its
// observer: one subscription delivered at once, one after two failures,
// one dead-lettered and replayed. The trace shows each path in order and
// the file verifies.
func TestEndToEndMixedOutcomes(t *testing.T) {
	e := newEnv(t)
	acfg := testConfig(t)
	aud := e.start(t, acfg)

	cfg := node.DefaultConfig()
	cfg.NATS = node.NATSConfig{Embedded: false, URL: e.url, Sync: "default"}
	cfg.HTTP.Listen = ""
	cfg.Subscriptions = []hub.Subscription{sub("ok", "order.created"), sub("flaky", "order.created"), sub("broken", "order.created")}
	cfg.Delivery.Backoff = []config.Duration{config.Duration(20 * time.Millisecond), config.Duration(40 * time.Millisecond)}
	cfg.Delivery.MaxAttempts = 5
	cfg.Delivery.AckWait = config.Duration(2 * time.Second)
	disableNodeAudit(&cfg)
	if err := config.Check(&cfg); err != nil {
		t.Fatal(err)
	}
	capture := hubtest.NewCapture()
	var flaky atomic.Int32
	var broken atomic.Bool
	broken.Store(true)
	capture.FailWith(func(d *hub.Delivery) error {
		switch d.Subscription.ID {
		case "flaky":
			if flaky.Add(1) <= 2 {
				return errors.New("503 Service Unavailable")
			}
		case "broken":
			if broken.Load() {
				return hub.Permanent(errors.New("422 Unprocessable Entity"))
			}
		}
		return nil
	})
	n := node.New(cfg, node.WithChannel("webhook", capture), node.WithObserver(aud.Observe), node.WithSettle(aud.Settle))
	ctx := ctxT(t, 60*time.Second)
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Shutdown(sctx); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(stop)

	pub, err := publisher.New(n.Conn())
	if err != nil {
		t.Fatal(err)
	}
	const id = "order.42.*"
	if _, err := pub.Publish(ctx, publisher.Event{Type: "order.created", ID: id, Data: []byte(`{"id":42}`)}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"ok", "flaky"} {
		if _, err := capture.WaitDelivered(ctx, id, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	dead := waitDLQ(t, ctx, n.DLQ(), 1)
	broken.Store(false)
	if _, err := n.DLQ().Replay(ctx, dead[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := capture.WaitDelivered(ctx, id, "broken"); err != nil {
		t.Fatal(err)
	}

	// The last record (the replayed delivery) is observed just after the
	// send returns; wait for the summary to settle.
	var tr *audit.EventTrace
	for {
		if err := aud.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		tr, err = audit.Trace(ctx, e.js, id)
		if err == nil && tr.Summary["ok"].State == "delivered" && tr.Summary["flaky"].State == "delivered" && tr.Summary["broken"].State == "delivered" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("trace never settled: %+v %v", tr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	perSub := map[string][]string{}
	for _, r := range tr.Timeline {
		if r.EventType == "" {
			t.Errorf("%s record at %s has no event_type (the trace fills it in from the event record)", r.Kind, r.At)
		}
		if r.Kind == audit.KindEvent {
			continue
		}
		k := r.Kind
		if r.Attempt > 0 {
			k += "#" + string(rune('0'+r.Attempt))
		}
		perSub[r.Subscription] = append(perSub[r.Subscription], k)
	}
	// The replay is reported after it is queued, so its delivery may be
	// recorded before it.
	want := map[string][]string{
		"ok":     {"delivered#1"},
		"flaky":  {"failed#1,failed#2,delivered#3"},
		"broken": {"failed#1,dead_lettered#1,replayed,delivered#1", "failed#1,dead_lettered#1,delivered#1,replayed"},
	}
	for s, w := range want {
		if got := strings.Join(perSub[s], ","); !slices.Contains(w, got) {
			t.Errorf("%s: %s, want %s", s, got, w[0])
		}
	}
	if tr.Timeline[0].Kind != audit.KindEvent || tr.Summary["flaky"].Attempts != 3 || tr.Summary["broken"].DLQID != dead[0].ID {
		t.Errorf("trace %+v", tr)
	}
	// Attempt records leave their standard delivery id out; the trace
	// derives it again, and it must be the id the channel was given, on
	// first attempts, retries and the replay alike.
	for _, r := range tr.Timeline {
		if r.Attempt == 0 || (r.Kind != dispatch.KindDelivered && r.Kind != dispatch.KindFailed) {
			continue
		}
		if !slices.ContainsFunc(capture.Attempts(r.DeliveryID), func(c hubtest.Captured) bool {
			return c.Subscription == r.Subscription && c.Attempt == r.Attempt
		}) {
			t.Errorf("%s %s#%d: delivery id %q is not one the channel was given", r.Subscription, r.Kind, r.Attempt, r.DeliveryID)
		}
	}
	stop()
	closeAuditor(t, aud)
	for _, line := range readLines(t, acfg.File) {
		if r := decode(t, line); (r.Kind == dispatch.KindDelivered || r.Kind == dispatch.KindFailed) && r.DeliveryID != "" {
			t.Errorf("attempt record holds its derived delivery id: %s", line)
		}
	}
	rep, err := audit.VerifyFile(acfg.File)
	if err != nil || !rep.OK() {
		t.Fatalf("verify %+v %v", rep, err)
	}
}

// disableNodeAudit turns off the hub's own audit trail (once node wires
// one): these tests attach an Auditor by hand. Before node has the
// channels.audit section the key is unknown and nothing changes.
func disableNodeAudit(cfg *node.Config) {
	_ = config.Decode([]byte("channels: {audit: {enabled: false}}"), cfg)
}

func waitDLQ(t *testing.T, ctx context.Context, s *dlq.Store, n int) []dlq.DeadLetter {
	t.Helper()
	for {
		items, err := s.List(ctx, dlq.Filter{})
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
