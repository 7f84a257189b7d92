package chaos

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Receiver is a webhook endpoint on a fixed loopback port. Each
// subscription posts to its own path (/<subscription>); the receiver counts
// requests by webhook-id per path. It can be taken down (connections
// refused) and brought back on the same port, answer a path slowly, or
// stall every request until released.
type Receiver struct {
	addr string

	mu      sync.Mutex
	srv     *http.Server
	served  chan struct{} // closed when the current Serve returns
	counts  map[string]map[string]int
	total   int
	arrived map[string][]time.Time // per webhook-id, when each request arrived (slow paths only)
	delay   map[string]time.Duration
	stall   chan struct{} // non-nil: requests wait until it is closed
	notify  chan struct{} // closed and replaced on every delivery

	inFlight atomic.Int64
	peak     atomic.Int64
}

// StartReceiver listens on a random loopback port; it stops on t.Cleanup.
func StartReceiver(t interface{ Cleanup(func()) }) (*Receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Receiver{
		addr:    ln.Addr().String(),
		counts:  map[string]map[string]int{},
		arrived: map[string][]time.Time{},
		delay:   map[string]time.Duration{},
		notify:  make(chan struct{}),
	}
	r.serve(ln)
	t.Cleanup(r.Close)
	return r, nil
}

// URL is the endpoint for a subscription.
func (r *Receiver) URL(sub string) string { return "http://" + r.addr + "/" + sub }

func (r *Receiver) serve(ln net.Listener) {
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	r.mu.Lock()
	r.srv, r.served = srv, served
	r.mu.Unlock()
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
}

// Down closes the listener and every open connection: from now on a
// connection to the port is refused.
func (r *Receiver) Down() {
	r.mu.Lock()
	srv, served := r.srv, r.served
	r.srv = nil
	r.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	<-served
}

// Up listens on the same port again.
func (r *Receiver) Up() error {
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		return fmt.Errorf("receiver: listen again on %s: %w", r.addr, err)
	}
	r.serve(ln)
	return nil
}

// Close stops the receiver, releasing stalled requests. Idempotent.
func (r *Receiver) Close() {
	r.Release()
	r.Down()
}

// SetDelay makes requests to a subscription's path answer after d.
func (r *Receiver) SetDelay(sub string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delay[sub] = d
}

// Stall makes every request wait without an answer until Release.
func (r *Receiver) Stall() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stall == nil {
		r.stall = make(chan struct{})
	}
}

// Release answers the stalled requests and stops stalling.
func (r *Receiver) Release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stall != nil {
		close(r.stall)
		r.stall = nil
	}
}

// InFlight is how many requests are open right now.
func (r *Receiver) InFlight() int64 { return r.inFlight.Load() }

// Peak is the most requests open at the same time so far.
func (r *Receiver) Peak() int64 { return r.peak.Load() }

// ServeHTTP counts a delivery by webhook-id once it is answered; a request
// the hub gave up on (stalled, slow) is not counted.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	n := r.inFlight.Add(1)
	defer r.inFlight.Add(-1)
	for p := r.peak.Load(); n > p && !r.peak.CompareAndSwap(p, n); p = r.peak.Load() {
	}
	sub := strings.TrimPrefix(req.URL.Path, "/")
	id := req.Header.Get("webhook-id")
	if req.Method != http.MethodPost || id == "" {
		http.Error(w, "want a POST with webhook-id", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	stall, delay := r.stall, r.delay[sub]
	if delay > 0 {
		r.arrived[id] = append(r.arrived[id], time.Now())
	}
	r.mu.Unlock()
	if stall != nil {
		select {
		case <-stall:
		case <-req.Context().Done():
			return // the hub gave up on this request; it will retry
		}
	}
	if delay > 0 {
		// The slow answer is the scenario itself, not synchronisation.
		select {
		case <-time.After(delay):
		case <-req.Context().Done():
			return
		}
	}
	r.mu.Lock()
	m := r.counts[sub]
	if m == nil {
		m = map[string]int{}
		r.counts[sub] = m
	}
	m[id]++
	r.total++
	close(r.notify)
	r.notify = make(chan struct{})
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// Counts returns, for a subscription, the requests answered per webhook-id.
func (r *Receiver) Counts(sub string) map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.counts[sub]))
	for k, v := range r.counts[sub] {
		out[k] = v
	}
	return out
}

// Arrivals returns when each request of a slow path arrived, per webhook-id.
func (r *Receiver) Arrivals() map[string][]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]time.Time, len(r.arrived))
	for k, v := range r.arrived {
		out[k] = append([]time.Time(nil), v...)
	}
	return out
}

// Distinct is how many distinct webhook-ids a subscription has received.
func (r *Receiver) Distinct(sub string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.counts[sub])
}

// Total is how many requests were answered, all paths.
func (r *Receiver) Total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// WaitFor blocks until cond holds (checked after every answered request,
// with the receiver locked: call no Receiver method in it) or ctx ends.
func (r *Receiver) WaitFor(ctx context.Context, cond func(distinct map[string]int, total int) bool) error {
	for {
		r.mu.Lock()
		d := make(map[string]int, len(r.counts))
		for k, v := range r.counts {
			d[k] = len(v)
		}
		ok := cond(d, r.total)
		ch := r.notify
		r.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("receiver: %w: distinct %v, total %d", ctx.Err(), d, r.Total())
		}
	}
}

// WaitDistinct waits until each subscription in want has received at
// least that many distinct webhook-ids.
func (r *Receiver) WaitDistinct(ctx context.Context, want map[string]int) error {
	return r.WaitFor(ctx, func(d map[string]int, _ int) bool {
		for sub, n := range want {
			if d[sub] < n {
				return false
			}
		}
		return true
	})
}
