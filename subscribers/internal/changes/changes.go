// Package changes lets the in-process test servers (smtptest, twiliotest)
// block a caller until their state meets a condition, woken on every
// change instead of polling.
package changes

import (
	"context"
	"errors"
	"sync"
)

// ErrStopped is returned by Wait when the server stopped before the
// condition held.
var ErrStopped = errors.New("server stopped")

// Signal is closed and replaced on every change. Its owner guards it with
// its own mutex; make it with New.
type Signal struct{ ch chan struct{} }

// New returns a Signal.
func New() Signal { return Signal{ch: make(chan struct{})} }

// NotifyLocked wakes every waiter. Call it with the owner's mutex held.
func (s *Signal) NotifyLocked() {
	close(s.ch)
	s.ch = make(chan struct{})
}

// Wait blocks until cond, called with mu held, holds, ctx ends or stopped
// is closed (then cond is checked once more).
func (s *Signal) Wait(ctx context.Context, mu sync.Locker, stopped <-chan struct{}, cond func() bool) error {
	for {
		mu.Lock()
		ok := cond()
		ch := s.ch
		mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-stopped:
			mu.Lock()
			ok := cond()
			mu.Unlock()
			if ok {
				return nil
			}
			return ErrStopped
		}
	}
}
