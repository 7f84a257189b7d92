package email

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/time/rate"

	"github.com/hubproject/hub/hub"
)

// limiter spaces sends to a rate. A short wait blocks the worker; a long
// one returns hub.Defer, so the delivery waits in the queue without
// spending an attempt and the worker serves other channels' work meanwhile.
type limiter struct {
	lim     *rate.Limiter
	perSec  float64
	maxWait time.Duration
}

func newLimiter(perSec float64, maxWait time.Duration) *limiter {
	if perSec <= 0 {
		return nil
	}
	// Burst 1: sends are evenly spaced, never a burst above the rate.
	return &limiter{lim: rate.NewLimiter(rate.Limit(perSec), 1), perSec: perSec, maxWait: maxWait}
}

func (l *limiter) wait(ctx context.Context) error {
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
		return hub.Defer(fmt.Errorf("email: rate limit of %g/s reached", l.perSec), delay)
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
