// Package pace spaces a channel's sends to a configured rate, the way a
// provider's rate limit wants: a short wait blocks the worker; a long one
// returns hub.Defer, so the delivery waits in the queue without spending an
// attempt and the worker serves other work meanwhile.
package pace

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/time/rate"

	"github.com/hubproject/hub/hub"
)

// Limiter paces one provider's sends. A nil *Limiter never waits.
type Limiter struct {
	name    string
	lim     *rate.Limiter
	perSec  float64
	maxWait time.Duration
}

// New returns a Limiter for perSec sends per second (nil when perSec <= 0);
// name prefixes its errors ("email", "sms").
func New(name string, perSec float64, maxWait time.Duration) *Limiter {
	if perSec <= 0 {
		return nil
	}
	// Burst 1: sends are evenly spaced, never a burst above the rate.
	return &Limiter{name: name, lim: rate.NewLimiter(rate.Limit(perSec), 1), perSec: perSec, maxWait: maxWait}
}

// Wait blocks until the next send may go, up to maxWait; beyond that it
// returns hub.Defer with the delay.
func (l *Limiter) Wait(ctx context.Context) error {
	if l == nil {
		return nil
	}
	r := l.lim.Reserve()
	delay := r.Delay()
	if delay == 0 {
		return nil
	}
	if delay > l.maxWait {
		r.Cancel()
		return hub.Defer(fmt.Errorf("%s: rate limit of %g/s reached", l.name, l.perSec), delay)
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	}
}
