package webhook

import (
	"container/list"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/sony/gobreaker/v2"
)

// maxTracked caps how many endpoints (breakers) and subscriptions (rate
// limiters) are tracked. Runtime subscriptions make both sets open-ended, so
// the least recently used entry is dropped past the cap; a dropped breaker
// or limiter only forgets its history.
const maxTracked = 10_000

// lru is a map capped at max entries that drops the least recently used.
type lru[V any] struct {
	mu  sync.Mutex
	max int
	ll  *list.List // of *lruEntry[V], most recently used first
	m   map[string]*list.Element
}

type lruEntry[V any] struct {
	key string
	val V
}

func newLRU[V any](max int) *lru[V] {
	return &lru[V]{max: max, ll: list.New(), m: make(map[string]*list.Element)}
}

// get returns the value for key, making it with mk when absent.
func (c *lru[V]) get(key string, mk func() V) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*lruEntry[V]).val
	}
	v := mk()
	c.m[key] = c.ll.PushFront(&lruEntry[V]{key: key, val: v})
	if c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.m, last.Value.(*lruEntry[V]).key)
	}
	return v
}

// peek returns the value for key without making it or touching its age.
func (c *lru[V]) peek(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok {
		return e.Value.(*lruEntry[V]).val, true
	}
	var zero V
	return zero, false
}

func (c *lru[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// Results reported to a breaker. Only "failed" counts towards opening it;
// "not sent" is excluded (nothing reached the endpoint, so it says nothing
// about its health).
var (
	errBreakerFailed  = errors.New("endpoint failed")
	errBreakerNotSent = errors.New("nothing sent")
)

// breaker is one endpoint's circuit breaker. gobreaker runs the state
// machine with the base open time; openUntil extends the open state when
// probes keep failing (allow refuses until then), so the open time grows
// without a breaker of our own.
type breaker struct {
	cb           *gobreaker.TwoStepCircuitBreaker[struct{}]
	openFor      time.Duration
	maxOpenFor   time.Duration
	probeTimeout time.Duration
	// openUntil is when the open state ends and probeUntil when the
	// half-open probe in flight times out (unix nanoseconds), so a refused
	// send can say how long to wait.
	openUntil  atomic.Int64
	probeUntil atomic.Int64
	trips      int // opens since the last close; under the breaker's lock
}

func newBreaker(key string, cfg BreakerConfig, probeTimeout time.Duration, log zerolog.Logger) *breaker {
	b := &breaker{openFor: cfg.OpenFor.D(), maxOpenFor: max(cfg.MaxOpenFor.D(), cfg.OpenFor.D()), probeTimeout: probeTimeout}
	failures := uint32(cfg.Failures)
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        key,
		MaxRequests: 1, // one probe when half-open
		Timeout:     b.openFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsExcluded:  func(err error) bool { return errors.Is(err, errBreakerNotSent) },
		// Called with the breaker's lock held: record and log only.
		OnStateChange: func(name string, from, to gobreaker.State) {
			switch to {
			case gobreaker.StateOpen:
				if from != gobreaker.StateHalfOpen {
					b.trips = 0
				}
				d := b.openTime(b.trips)
				b.trips++
				b.openUntil.Store(time.Now().Add(d).UnixNano())
				log.Warn().Str("endpoint", name).Dur("open_for", d).Msg("circuit breaker opened: endpoint keeps failing, deliveries wait")
			case gobreaker.StateHalfOpen:
				log.Debug().Str("endpoint", name).Msg("circuit breaker half-open: sending one probe")
			case gobreaker.StateClosed:
				b.trips = 0
				log.Info().Str("endpoint", name).Msg("circuit breaker closed: endpoint answers again")
			}
		},
	})
	return b
}

// openTime is the open time after n failed probes: open_for doubled n
// times, capped at max_open_for.
func (b *breaker) openTime(n int) time.Duration {
	d := b.openFor
	for i := 0; i < n && d < b.maxOpenFor; i++ {
		d *= 2
	}
	return min(d, b.maxOpenFor)
}

// allow is gobreaker's Allow behind the extended open time. A request
// allowed while half-open is the probe: probeUntil marks it in flight
// until it answers or times out.
func (b *breaker) allow() (func(error), error) {
	if time.Now().UnixNano() < b.openUntil.Load() {
		return nil, gobreaker.ErrOpenState
	}
	done, err := b.cb.Allow()
	if err != nil || b.cb.State() != gobreaker.StateHalfOpen {
		return done, err
	}
	mine := time.Now().Add(b.probeTimeout).UnixNano()
	b.probeUntil.Store(mine)
	return func(err error) {
		// A failed probe sets openUntil before the probe stops counting;
		// a later probe may have marked itself meanwhile.
		done(err)
		b.probeUntil.CompareAndSwap(mine, 0)
	}, nil
}

// blocked reports whether a send now would be refused: open, or the
// probe is out. It does not move the breaker's state.
func (b *breaker) blocked() (time.Time, bool) {
	now := time.Now().UnixNano()
	if t := b.openUntil.Load(); now < t {
		return time.Unix(0, t), true
	}
	if t := b.probeUntil.Load(); now < t {
		return time.Unix(0, t), true
	}
	return time.Time{}, false
}

// minDeferWait is the shortest wait of a delivery refused by the breaker.
const minDeferWait = time.Second

// wait is how long a delivery refused by the breaker should wait: the rest
// of the open time, or, while the half-open probe is out, until the probe
// times out (at most maxProbeWait). Waking the queued deliveries before the
// probe has decided would only put them back again (one more DELIVERIES
// write each).
func (b *breaker) wait() time.Duration {
	now := time.Now().UnixNano()
	if d := time.Duration(b.openUntil.Load() - now); d > 0 {
		return d
	}
	return min(max(time.Duration(b.probeUntil.Load()-now), minDeferWait), maxProbeWait)
}

// maxProbeWait caps the wait behind a probe: a probe that answers at once
// should not leave the deliveries refused meanwhile waiting a whole request
// timeout, and one that hangs costs them a rewrite every 5 s, not every 1 s.
const maxProbeWait = 5 * time.Second

// rateLimitMaxWait is the longest a Send waits for a subscription's rate
// limiter; beyond it the delivery is deferred so it does not hold a worker.
const rateLimitMaxWait = time.Second

// burstFor lets a subscription send up to one second's worth at once.
func burstFor(perSecond float64) int {
	return int(max(1, min(math.Ceil(perSecond), 1e6)))
}

// stallWindow: an endpoint none of whose requests finished within it, while
// some are in flight, is stalled.
const stallWindow = time.Second

// stallDefer is how long a delivery refused by the stall cap waits.
const stallDefer = time.Second

// flight tracks one endpoint's requests in flight and when one last
// finished.
type flight struct {
	n        atomic.Int64
	lastDone atomic.Int64 // unix nanoseconds
}

func newFlight() *flight {
	f := &flight{}
	f.lastDone.Store(time.Now().UnixNano())
	return f
}

// enter admits a request unless the endpoint is stalled and already has
// max requests out.
func (f *flight) enter(max int) bool {
	n := f.n.Add(1)
	if max > 0 && n > int64(max) && time.Since(time.Unix(0, f.lastDone.Load())) > stallWindow {
		f.n.Add(-1)
		return false
	}
	return true
}

func (f *flight) leave() {
	f.lastDone.Store(time.Now().UnixNano())
	f.n.Add(-1)
}
