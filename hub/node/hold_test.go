package node_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/webhook"
)

// flakyReceiver answers 503 while down, 204 otherwise, and counts the
// distinct events it accepted per subscription path.
type flakyReceiver struct {
	down atomic.Bool
	mu   sync.Mutex
	got  map[string]map[string]bool // path -> webhook-ids (one per event and subscription)
}

func (f *flakyReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.down.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	f.mu.Lock()
	if f.got[r.URL.Path] == nil {
		f.got[r.URL.Path] = map[string]bool{}
	}
	f.got[r.URL.Path][r.Header.Get("webhook-id")] = true
	f.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (f *flakyReceiver) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got[path])
}

// holdHub starts a hub with one webhook subscription per id, to urls[id],
// and a breaker that opens after 2 failures for openFor.
func holdHub(t *testing.T, openFor time.Duration, urls map[string]string) (*node.Node, *publisher.Publisher) {
	t.Helper()
	cfg := testConfig(t.TempDir())
	cfg.NATS.Listen, cfg.HTTP.Listen = "", ""
	cfg.Log.Level = "error"
	cfg.Channels.Webhook.AllowCIDRs = []string{"127.0.0.0/8"}
	cfg.Channels.Webhook.Timeout = config.Duration(2 * time.Second) // bounds the wait behind a probe
	cfg.Channels.Webhook.Breaker = webhook.BreakerConfig{Enabled: true, Failures: 2,
		OpenFor: config.Duration(openFor), MaxOpenFor: config.Duration(openFor)}
	cfg.Delivery.Concurrency["webhook"] = 4
	cfg.Delivery.Backoff = []config.Duration{config.Duration(100 * time.Millisecond)}
	cfg.Delivery.MaxAttempts = 100 // deferrals spend none; failures do
	secret := config.Secret(webhook.GenerateSecret())
	for id, u := range urls {
		cfg.Subscriptions = append(cfg.Subscriptions, hub.Subscription{ID: id, Channel: "webhook",
			Events: []string{"order.>"}, URL: u, Secret: secret})
	}
	n := start(t, cfg)
	t.Cleanup(func() { stop(t, n) })
	p, err := publisher.New(n.Conn())
	if err != nil {
		t.Fatal(err)
	}
	return n, p
}

func publishN(t *testing.T, p *publisher.Publisher, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := p.PublishAsync(publisher.Event{Type: "order.created", ID: "h" + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func deliveriesWritten(t *testing.T, n *node.Node) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := n.JetStream().Stream(ctx, hub.DeliveriesStream)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.LastSeq
}

func waitCount(t *testing.T, rcv *flakyReceiver, path string, want int) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for rcv.count(path) < want {
		select {
		case <-deadline:
			t.Fatalf("%s: %d of %d events delivered", path, rcv.count(path), want)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestBlockedChannelLeavesEventsInEVENTS: while the only subscription's
// endpoint has an open breaker, new events wait in EVENTS instead of
// being copied into DELIVERIES one by one; when it answers again, every
// event is delivered.
func TestBlockedChannelLeavesEventsInEVENTS(t *testing.T) {
	rcv := &flakyReceiver{got: map[string]map[string]bool{}}
	rcv.down.Store(true)
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	// Open for 2 s: the first pass over the events (all of them fit in the
	// consumer's ack-pending window) happens inside one open period however
	// loaded the machine is, so what leaks into DELIVERIES does not depend
	// on how many half-open cycles the wait below spans.
	n, p := holdHub(t, 2*time.Second, map[string]string{"dead": srv.URL + "/dead"})

	const events = 500
	publishN(t, p, events)
	// Let the dispatcher go through the events at least once: held events
	// come back every few hundred ms while the breaker cycles.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		c, err := n.JetStream().Consumer(ctx, hub.EventsStream, dispatch.EventsConsumer("webhook"))
		if err != nil {
			t.Fatal(err)
		}
		if info := c.CachedInfo(); info.Delivered.Stream >= events {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the events consumer never reached the last event")
		case <-time.After(10 * time.Millisecond):
		}
	}
	// A few first attempts are written to DELIVERIES: the failures that
	// open the breaker and the events started beside them (concurrency 4):
	// 7-22 seen on a loaded machine. The rest stay in EVENTS; without the
	// hold every event is copied (500 writes).
	w := deliveriesWritten(t, n)
	t.Logf("%d DELIVERIES writes for %d events", w, events)
	if w > events/10 {
		t.Fatalf("%d DELIVERIES writes for %d events while the only endpoint was down: events were copied, not held", w, events)
	}
	rcv.down.Store(false)
	waitCount(t, rcv, "/dead", events)
}

// TestBlockedSubscriptionDoesNotHoldTheOthers: with one dead and one
// healthy subscription on the channel, nothing is held: the healthy one
// gets every event while the dead one's deliveries wait in DELIVERIES.
func TestBlockedSubscriptionDoesNotHoldTheOthers(t *testing.T) {
	dead := &flakyReceiver{got: map[string]map[string]bool{}}
	dead.down.Store(true)
	deadSrv := httptest.NewServer(dead)
	defer deadSrv.Close()
	good := &flakyReceiver{got: map[string]map[string]bool{}}
	goodSrv := httptest.NewServer(good)
	defer goodSrv.Close()

	n, p := holdHub(t, 300*time.Millisecond, map[string]string{"dead": deadSrv.URL + "/dead", "good": goodSrv.URL + "/good"})
	const events = 300
	publishN(t, p, events)
	waitCount(t, good, "/good", events)
	if w := deliveriesWritten(t, n); w < events-10 {
		t.Fatalf("%d DELIVERIES writes: the dead subscription's deliveries should wait there", w)
	}
	dead.down.Store(false)
	waitCount(t, dead, "/dead", events)
}
