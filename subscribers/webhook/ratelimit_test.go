package webhook

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hubproject/hub/hub"
)

func TestRateLimitDefersLongWaits(t *testing.T) {
	rc := newReceiver(t, status(http.StatusOK))
	s := newSender(t, nil)
	d := newDelivery(t, rc.URL)
	d.Subscription.RateLimit = 0.1 // one every 10s, burst 1
	if err := s.Send(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := s.Send(context.Background(), d)
	delay, deferred := hub.DeferDelay(err)
	if !deferred || delay <= rateLimitMaxWait || delay > 10*time.Second {
		t.Fatalf("Send over the rate = %v (delay %s), want Defer of up to 10s", err, delay)
	}
	if time.Since(start) > 500*time.Millisecond {
		t.Fatal("a long rate-limit wait blocked the caller")
	}
	if n := rc.requests.Load(); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
	// The deferral gave its token back: the next send still waits at most
	// 10s from the first, not 20s.
	if d2, deferred := hub.DeferDelay(s.Send(context.Background(), d)); !deferred || d2 > 10*time.Second {
		t.Fatalf("after a deferral: deferred %v, delay %s; deferrals must not consume tokens", deferred, d2)
	}
	// Another subscription has its own limiter.
	other := newDelivery(t, rc.URL)
	other.Subscription.ID = "other"
	other.Subscription.RateLimit = 0.1
	if err := s.Send(context.Background(), other); err != nil {
		t.Fatalf("another subscription: %v", err)
	}
}

func TestRateLimitWaitsShortly(t *testing.T) {
	rc := newReceiver(t, status(http.StatusOK))
	s := newSender(t, nil)
	d := newDelivery(t, rc.URL)
	d.Subscription.RateLimit = 2 // burst 2, then one every 500ms: under the 1s bound, so Send waits
	for i := 0; i < 2; i++ {
		if err := s.Send(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if err := s.Send(context.Background(), d); err != nil {
		t.Fatalf("third send: %v", err)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("third send took %s; the limiter did not wait", el)
	}
	// A cancelled context ends the wait.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Send(ctx, d); !errors.Is(err, context.Canceled) {
		t.Fatalf("Send with a cancelled context while rate limited = %v", err)
	}
	if n := rc.requests.Load(); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
}

func TestRateLimitFollowsChanges(t *testing.T) {
	rc := newReceiver(t, status(http.StatusOK))
	s := newSender(t, nil)
	d := newDelivery(t, rc.URL)
	d.Subscription.RateLimit = 0.1
	_ = s.Send(context.Background(), d)
	if _, deferred := hub.DeferDelay(s.Send(context.Background(), d)); !deferred {
		t.Fatal("want a deferral at 0.1/s")
	}
	d.Subscription.RateLimit = 1000 // raised through the API
	if err := s.Send(context.Background(), d); err != nil {
		t.Fatalf("after raising the limit: %v", err)
	}
	d.Subscription.RateLimit = 0 // removed
	for i := 0; i < 50; i++ {
		if err := s.Send(context.Background(), d); err != nil {
			t.Fatalf("without a limit: %v", err)
		}
	}
}

// BenchmarkSend measures deliveries per second to a local keep-alive
// receiver, signing each request, with the breaker on.
func BenchmarkSend(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	s := newSender(b, nil)
	tmpl := newDelivery(b, srv.URL+"/hooks")
	b.SetParallelism(16) // network-bound: many sends in flight per core, as the dispatcher runs them
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		d := *tmpl
		for pb.Next() {
			if err := s.Send(context.Background(), &d); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
}
