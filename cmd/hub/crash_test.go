package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/audit"
	"github.com/hubproject/hub/subscribers/webhook"
)

// receiver counts webhook deliveries by webhook-id (stable per event and
// subscription) and wakes waiters on every request.
type receiver struct {
	mu     sync.Mutex
	counts map[string]int
	total  int
	notify chan struct{}
}

func newReceiver() *receiver {
	return &receiver{counts: map[string]int{}, notify: make(chan struct{})}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	r.counts[id]++
	r.total++
	close(r.notify)
	r.notify = make(chan struct{})
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// waitFor blocks until cond(distinct, total) holds or ctx ends.
func (r *receiver) waitFor(ctx context.Context, cond func(distinct, total int) bool) error {
	for {
		r.mu.Lock()
		ok := cond(len(r.counts), r.total)
		ch := r.notify
		r.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			r.mu.Lock()
			defer r.mu.Unlock()
			return fmt.Errorf("%w: %d distinct, %d total", ctx.Err(), len(r.counts), r.total)
		}
	}
}

// crashConfig is a hub with two webhook subscriptions to rcvURL (/crm
// for every event, /billing for order.>); trail, when set, turns the
// audit trail on with that file and shortens ack_wait so the killed hub's
// unacknowledged events come back soon.
func crashConfig(t *testing.T, store, rcvURL, trail string) string {
	t.Helper()
	secret := webhook.GenerateSecret()
	var ackWait, trailCfg string
	if trail != "" {
		ackWait = "  ack_wait: 2s\n"
		trailCfg = fmt.Sprintf("  audit: {enabled: true, file: %q}\n", trail)
	}
	return writeConfig(t, baseConfig(store)+fmt.Sprintf(`
delivery:
  backoff: [100ms, 200ms, 500ms]
  concurrency: {webhook: 32}
%schannels:
  webhook: {allow_cidrs: [127.0.0.0/8]}
%ssubscriptions:
  - {id: crm, channel: webhook, events: [">"], url: %q, secret: %q}
  - {id: billing, channel: webhook, events: ["order.>"], url: %q, secret: %q}
`, ackWait, trailCfg, rcvURL+"/crm", secret, rcvURL+"/billing", secret))
}

// publishOrders publishes n order.created events, ids prefix-00000 on.
func publishOrders(ctx context.Context, t *testing.T, url, prefix string, n int) {
	t.Helper()
	pub, err := publisher.New(dialNATS(t, url))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := pub.PublishAsync(publisher.Event{Type: "order.created", ID: fmt.Sprintf("%s-%05d", prefix, i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// crashAndRestart starts the hub, publishes n events, SIGKILLs it once the
// receiver has had killAt requests, and starts it again on the same store
// until the receiver has want distinct deliveries. atKill is how many it
// had at the kill.
func crashAndRestart(ctx context.Context, t *testing.T, cfg string, rcv *receiver, prefix string, n, killAt, want int) (p *hubProc, atKill int) {
	t.Helper()
	p = startHub(t, cfg)
	publishOrders(ctx, t, p.natsURL, prefix, n)
	if err := rcv.waitFor(ctx, func(_, total int) bool { return total >= killAt }); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	rcv.mu.Lock()
	atKill = len(rcv.counts)
	rcv.mu.Unlock()
	p = startHub(t, cfg)
	if err := rcv.waitFor(ctx, func(distinct, _ int) bool { return distinct >= want }); err != nil {
		t.Fatalf("after restart: %v\n%s", err, p.logs)
	}
	return p, atKill
}

// TestCrashDuringDelivery: SIGKILL the hub while it delivers 10,000 events
// to two webhook subscriptions, restart it on the same store, and check
// every (event, subscription) pair arrives at least once.
func TestCrashDuringDelivery(t *testing.T) {
	const events, subs = 10000, 2
	rcv := newReceiver()
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	cfg := crashConfig(t, t.TempDir(), srv.URL, "")

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	p, atKill := crashAndRestart(ctx, t, cfg, rcv, "crash", events, events/4, events*subs)
	p.stop(t)
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	dups := 0
	for _, c := range rcv.counts {
		dups += c - 1
	}
	if len(rcv.counts) != events*subs {
		t.Fatalf("%d distinct deliveries, want %d", len(rcv.counts), events*subs)
	}
	t.Logf("SIGKILL after %d of %d deliveries; after restart all %d delivered, %d duplicates (%.2f%%)",
		atKill, events*subs, len(rcv.counts), dups, 100*float64(dups)/float64(events*subs))
}

// TestCrashWithAuditTrail: SIGKILL the hub, audit trail on, while it
// delivers; restart it on the same store and let it finish. The chain
// still verifies (a torn tail is repaired and recorded), every event has
// its event record, and every delivery the receiver got has a delivered
// record: the trail lost no completed attempt. (An attempt the receiver
// answered but whose record the killed hub had not stored was not
// complete: its event was not acknowledged, so it is redelivered after
// ack_wait and the new attempt is recorded.)
func TestCrashWithAuditTrail(t *testing.T) {
	const events, subs = 3000, 2
	rcv := newReceiver()
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	dir := t.TempDir()
	trail := filepath.Join(dir, "audit.log")
	cfg := crashConfig(t, filepath.Join(dir, "js"), srv.URL, trail)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	p, atKill := crashAndRestart(ctx, t, cfg, rcv, "acrash", events, events*subs/3, events*subs)
	// Every event and retry settled: the killed hub's unacknowledged
	// events came back after ack_wait and were attempted again.
	waitAllAcked(ctx, t, p.natsURL, events)
	p.stop(t) // a clean stop stores and syncs what is queued
	out, errOut, code := runHub(t, "audit", "verify", "-file", trail)
	if code != 0 || !strings.HasPrefix(out, "audit chain OK: ") {
		t.Fatalf("verify after SIGKILL: exit %d %q %q", code, out, errOut)
	}
	data, err := os.ReadFile(trail)
	if err != nil {
		t.Fatal(err)
	}
	eventRecs := map[string]bool{}
	delivered := map[string]bool{}
	repairs := 0
	for line := range strings.SplitSeq(strings.TrimSuffix(string(data), "\n"), "\n") {
		var r audit.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		switch r.Kind {
		case audit.KindEvent:
			eventRecs[r.EventID] = true
		case dispatch.KindDelivered:
			delivered[r.ResolvedDeliveryID()] = true
		case audit.KindChainRepaired:
			repairs++
		}
	}
	if len(eventRecs) != events {
		t.Errorf("%d events have an event record, want %d", len(eventRecs), events)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	missing := 0
	for id := range rcv.counts {
		if !delivered[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d deliveries the receiver got have no delivered record", missing, len(rcv.counts))
	}
	t.Logf("SIGKILL after %d of %d deliveries; after restart: %s, %d event records, %d delivered records cover all %d deliveries, %d torn tails repaired",
		atKill, events*subs, strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "), len(eventRecs), len(delivered), len(rcv.counts), repairs)
}

// waitAllAcked waits until the webhook dispatcher has acknowledged all n
// events and its retry consumer has nothing left (a redelivered attempt
// can be deferred into DELIVERIES).
func waitAllAcked(ctx context.Context, t *testing.T, url string, n int) {
	t.Helper()
	js, err := jetstream.New(dialNATS(t, url))
	if err != nil {
		t.Fatal(err)
	}
	done := func() (bool, error) {
		ev, err := js.Consumer(ctx, hub.EventsStream, dispatch.EventsConsumer("webhook"))
		if err != nil {
			return false, err
		}
		rt, err := js.Consumer(ctx, hub.DeliveriesStream, dispatch.RetryConsumer("webhook"))
		if err != nil {
			return false, err
		}
		ei, ri := ev.CachedInfo(), rt.CachedInfo()
		return ei.AckFloor.Stream >= uint64(n) && ei.NumAckPending == 0 && ri.NumPending == 0 && ri.NumAckPending == 0, nil
	}
	for {
		ok, err := done()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("deliveries never all settled: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dialNATS connects to url; the connection closes when the test ends.
func dialNATS(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
