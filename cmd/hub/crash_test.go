package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/publisher"
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

// TestCrashDuringDelivery: SIGKILL the hub while it delivers 10,000 events
// to two webhook subscriptions, restart it on the same store, and check
// every (event, subscription) pair arrives at least once.
func TestCrashDuringDelivery(t *testing.T) {
	const events, subs = 10000, 2
	rcv := newReceiver()
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	secret := webhook.GenerateSecret()
	store := t.TempDir()
	cfg := writeConfig(t, baseConfig(store)+fmt.Sprintf(`
delivery:
  backoff: [100ms, 200ms, 500ms]
  concurrency: {webhook: 32}
channels:
  webhook: {allow_cidrs: [127.0.0.0/8]}
subscriptions:
  - {id: crm, channel: webhook, events: [">"], url: %q, secret: %q}
  - {id: billing, channel: webhook, events: ["order.>"], url: %q, secret: %q}
`, srv.URL+"/crm", secret, srv.URL+"/billing", secret))

	p := startHub(t, cfg)
	nc, err := nats.Connect(p.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := publisher.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for i := 0; i < events; i++ {
		if _, err := pub.PublishAsync(publisher.Event{Type: "order.created", ID: fmt.Sprintf("crash-%05d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	// Kill it mid-delivery.
	if err := rcv.waitFor(ctx, func(_, total int) bool { return total >= events/4 }); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	rcv.mu.Lock()
	atKill := len(rcv.counts)
	rcv.mu.Unlock()

	p = startHub(t, cfg)
	if err := rcv.waitFor(ctx, func(distinct, _ int) bool { return distinct >= events*subs }); err != nil {
		t.Fatalf("after restart: %v\n%s", err, p.logs)
	}
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
