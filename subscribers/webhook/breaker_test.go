package webhook

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
)

// waitForProbe sends until the breaker lets a request through (it was
// open for openFor), returning that send's error. Sends refused meanwhile
// must be deferrals.
func waitForProbe(t *testing.T, s *Sender, d *hub.Delivery) error {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		err := s.Send(context.Background(), d)
		if _, deferred := hub.DeferDelay(err); !deferred {
			return err
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("the breaker never let a probe through")
		}
	}
}

func TestBreakerOpensDefersAndProbes(t *testing.T) {
	const failures = 3
	openFor := time.Second // long enough that a loaded machine still sees it open
	var healthy atomic.Bool
	dead := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
		if healthy.Load() {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	good := newReceiver(t, status(http.StatusOK))
	s := newSender(t, func(c *Config) {
		c.Breaker = BreakerConfig{Enabled: true, Failures: failures, OpenFor: config.Duration(openFor), MaxOpenFor: config.Duration(4 * openFor)}
	})
	d := newDelivery(t, dead.URL+"/a")

	for i := 0; i < failures; i++ {
		err := s.Send(context.Background(), d)
		if err == nil || hub.IsPermanent(err) {
			t.Fatalf("failure %d: %v", i+1, err)
		}
		if _, deferred := hub.DeferDelay(err); deferred {
			t.Fatalf("deferred after only %d failures", i)
		}
	}
	// Open: deferred without a request, for at most open_for. Another path
	// on the same endpoint shares the breaker.
	for _, path := range []string{"/a", "/b"} {
		err := s.Send(context.Background(), newDelivery(t, dead.URL+path))
		delay, deferred := hub.DeferDelay(err)
		if !deferred || delay <= 0 || delay > openFor {
			t.Fatalf("Send while open = %v (delay %s), want Defer within %s", err, delay, openFor)
		}
		if hub.IsPermanent(err) || !errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("deferral %v: want ErrCircuitOpen, not permanent", err)
		}
	}
	if n := dead.requests.Load(); n != failures {
		t.Fatalf("dead endpoint got %d requests, want %d (none while open)", n, failures)
	}
	// Another endpoint is unaffected.
	if err := s.Send(context.Background(), newDelivery(t, good.URL)); err != nil {
		t.Fatalf("healthy endpoint while another's breaker is open: %v", err)
	}

	// After open_for one probe goes through; it fails, so the breaker opens again.
	if err := waitForProbe(t, s, d); err == nil {
		t.Fatal("probe succeeded against a failing endpoint")
	}
	if n := dead.requests.Load(); n != failures+1 {
		t.Fatalf("dead endpoint got %d requests, want %d", n, failures+1)
	}
	// Reopened for twice open_for: a long outage costs few probes.
	if delay, deferred := hub.DeferDelay(s.Send(context.Background(), d)); !deferred || delay <= openFor || delay > 2*openFor {
		t.Fatalf("after a failed probe: delay %s deferred %v, want (%s, %s]", delay, deferred, openFor, 2*openFor)
	}

	// The endpoint recovers: the next probe succeeds and closes the breaker.
	healthy.Store(true)
	if err := waitForProbe(t, s, d); err != nil {
		t.Fatalf("probe against the recovered endpoint: %v", err)
	}
	for i := 0; i < 3; i++ {
		if err := s.Send(context.Background(), d); err != nil {
			t.Fatalf("after the breaker closed: %v", err)
		}
	}
	if n := dead.requests.Load(); n != failures+5 {
		t.Fatalf("endpoint got %d requests, want %d", n, failures+5)
	}
}

func TestBreakerHalfOpenAllowsOneProbe(t *testing.T) {
	entered := make(chan struct{}, 8)
	release := make(chan struct{})
	var failing atomic.Bool
	failing.Store(true)
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		entered <- struct{}{}
		<-release
	})
	openFor := 200 * time.Millisecond
	s := newSender(t, func(c *Config) {
		c.Breaker = BreakerConfig{Enabled: true, Failures: 1, OpenFor: config.Duration(openFor)}
	})
	d := newDelivery(t, rc.URL)
	if err := s.Send(context.Background(), d); err == nil {
		t.Fatal("want a failure")
	}
	failing.Store(false)
	// Wait until open_for has passed, then start the probe, held by the receiver.
	b := s.breakers.get(endpointKey(mustParseEndpoint(t, rc.URL)), nil)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for b.cb.State().String() != "half-open" {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("breaker never became half-open")
		}
	}
	probe := make(chan error, 1)
	go func() { probe <- s.Send(context.Background(), d) }()
	<-entered
	// While the probe is out, other sends wait until it times out (the
	// request timeout), capped at maxProbeWait, not less than a second:
	// waking earlier would only put them back again.
	err := s.Send(context.Background(), d)
	if delay, deferred := hub.DeferDelay(err); !deferred || delay < minDeferWait || delay > min(s.cfg.Timeout.D(), maxProbeWait) {
		t.Fatalf("Send during the probe = %v (delay %s), want a Defer until the probe's timeout, at most %s", err, delay, maxProbeWait)
	}
	if until, blocked := s.Blocked(d.Subscription); !blocked || time.Until(until) <= 0 {
		t.Fatalf("Blocked during the probe = %v %v, want blocked until the probe's timeout", until, blocked)
	}
	close(release)
	if err := <-probe; err != nil {
		t.Fatalf("probe: %v", err)
	}
	if got := b.cb.State().String(); got != "closed" {
		t.Fatalf("breaker %s after a good probe", got)
	}
}

func TestBreakerOpenTimeDoublesToTheCap(t *testing.T) {
	b := newBreaker("x", BreakerConfig{Enabled: true, Failures: 1, OpenFor: config.Duration(30 * time.Second),
		MaxOpenFor: config.Duration(5 * time.Minute)}, time.Second, zerolog.Nop())
	want := []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute}
	for n, w := range want {
		if got := b.openTime(n); got != w {
			t.Errorf("openTime(%d) = %s, want %s", n, got, w)
		}
	}
	// max_open_for 0 or below open_for: no growth.
	b = newBreaker("x", BreakerConfig{Enabled: true, Failures: 1, OpenFor: config.Duration(30 * time.Second)}, time.Second, zerolog.Nop())
	if got := b.openTime(3); got != 30*time.Second {
		t.Errorf("without max_open_for: %s", got)
	}
}

func mustParseEndpoint(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := parseEndpoint(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestBreakerIgnoresPermanentFailures(t *testing.T) {
	rc := newReceiver(t, status(http.StatusBadRequest))
	s := newSender(t, func(c *Config) { c.Breaker.Failures = 2 })
	for i := 0; i < 6; i++ {
		err := s.Send(context.Background(), newDelivery(t, rc.URL))
		if !hub.IsPermanent(err) {
			t.Fatalf("send %d: %v, want Permanent (400s must not open the breaker)", i+1, err)
		}
	}
	if n := rc.requests.Load(); n != 6 {
		t.Fatalf("%d requests, want 6", n)
	}
}

func TestBreakerDisabled(t *testing.T) {
	rc := newReceiver(t, status(http.StatusInternalServerError))
	s := newSender(t, func(c *Config) { c.Breaker.Enabled = false; c.Breaker.Failures = 1 })
	for i := 0; i < 5; i++ {
		if _, deferred := hub.DeferDelay(s.Send(context.Background(), newDelivery(t, rc.URL))); deferred {
			t.Fatal("deferred with the breaker disabled")
		}
	}
	if n := rc.requests.Load(); n != 5 {
		t.Fatalf("%d requests, want 5", n)
	}
}

func TestBreakerCancelledSendsDoNotCount(t *testing.T) {
	rc := newReceiver(t, status(http.StatusOK))
	s := newSender(t, func(c *Config) { c.Breaker.Failures = 1 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < 3; i++ {
		err := s.Send(ctx, newDelivery(t, rc.URL))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Send with a cancelled context = %v", err)
		}
	}
	if err := s.Send(context.Background(), newDelivery(t, rc.URL)); err != nil {
		t.Fatalf("cancelled sends opened the breaker: %v", err)
	}
}

func TestTrackedEndpointsAreBounded(t *testing.T) {
	c := newLRU[int](3)
	made := 0
	mk := func() int { made++; return made }
	for i := 0; i < 10; i++ {
		c.get("k"+strconv.Itoa(i), mk)
		c.get("k0", mk) // k0 stays recently used
	}
	if c.len() != 3 {
		t.Fatalf("len %d, want 3", c.len())
	}
	if v := c.get("k0", mk); v != 1 {
		t.Fatalf("the most used entry was evicted (got %d)", v)
	}
	before := made
	c.get("k1", mk)
	if made != before+1 {
		t.Fatal("an evicted entry was still present")
	}
}

// TestStalledEndpointIsCapped: an endpoint that accepts requests and never
// answers holds at most stalled_max_in_flight of them once it is stalled;
// the rest are deferred without being sent.
func TestStalledEndpointIsCapped(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		started.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	s := newSender(t, func(c *Config) {
		c.Breaker.Enabled = false
		c.StalledMaxInFlight = 2
		c.Timeout = config.Duration(10 * time.Second)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 20)
	// Four requests go out while the endpoint is fresh (the first second
	// counts as activity), then it stalls.
	for i := 0; i < 4; i++ {
		go func() { errs <- s.Send(ctx, newDelivery(t, srv.URL)) }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for started.Load() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d requests started", started.Load())
		}
		<-time.After(5 * time.Millisecond)
	}
	// The stall window passing is the behaviour under test.
	<-time.After(stallWindow + 100*time.Millisecond)
	err := s.Send(ctx, newDelivery(t, srv.URL))
	if d, ok := hub.DeferDelay(err); !ok || d <= 0 || started.Load() != 4 {
		t.Fatalf("want a deferral with nothing sent, got %v after %d requests", err, started.Load())
	}
	cancel()
	for i := 0; i < 4; i++ {
		<-errs
	}
}
