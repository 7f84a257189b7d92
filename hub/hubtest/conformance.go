package hubtest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubproject/hub/hub"
)

// Suite describes a channel to the conformance cases. Every field but New
// and OK is optional; cases without what they need are skipped.
type Suite struct {
	// New returns a fresh channel; its far side (server) is set up by the
	// test and torn down with t.Cleanup.
	New func(t *testing.T) hub.Channel
	// OK returns a delivery the channel accepts.
	OK func(t *testing.T) *hub.Delivery
	// Permanent returns a delivery the far side rejects for good.
	Permanent func(t *testing.T) *hub.Delivery
	// Retryable returns a delivery the far side fails transiently.
	Retryable func(t *testing.T) *hub.Delivery
	// Slow returns a delivery the far side does not answer until the
	// request is abandoned.
	Slow func(t *testing.T) *hub.Delivery
}

// Run runs every case (DESIGN.md §4): delivered, ctx cancel returns
// promptly, concurrent Send under -race, permanent vs retryable
// classification, Close idempotent, no leaked goroutines.
func Run(t *testing.T, s Suite) {
	t.Run("Delivered", func(t *testing.T) {
		ch := s.New(t)
		defer closeCh(t, ch)
		if err := ch.Send(context.Background(), s.OK(t)); err != nil {
			t.Fatalf("Send: %v", err)
		}
	})
	t.Run("ContextCancel", func(t *testing.T) {
		if s.Slow == nil {
			t.Skip("no slow delivery")
		}
		ch := s.New(t)
		defer closeCh(t, ch)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		d := s.Slow(t)
		go func() { done <- ch.Send(ctx, d) }()
		time.AfterFunc(50*time.Millisecond, cancel)
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("Send succeeded after cancel")
			}
			if hub.IsPermanent(err) {
				t.Fatalf("cancel classified permanent: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Send did not return within 2s of ctx cancel")
		}
	})
	t.Run("CancelledBeforeSend", func(t *testing.T) {
		ch := s.New(t)
		defer closeCh(t, ch)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := ch.Send(ctx, s.OK(t)); err == nil || hub.IsPermanent(err) {
			t.Fatalf("Send with a cancelled ctx: %v", err)
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		ch := s.New(t)
		defer closeCh(t, ch)
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for i := 0; i < 32; i++ {
			d := s.OK(t)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := ch.Send(context.Background(), d); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("concurrent Send: %v", err)
		}
	})
	t.Run("Classification", func(t *testing.T) {
		if s.Permanent == nil && s.Retryable == nil {
			t.Skip("no failing deliveries")
		}
		ch := s.New(t)
		defer closeCh(t, ch)
		if s.Permanent != nil {
			if err := ch.Send(context.Background(), s.Permanent(t)); err == nil || !hub.IsPermanent(err) {
				t.Errorf("permanent failure classified as %v", err)
			}
		}
		if s.Retryable != nil {
			err := ch.Send(context.Background(), s.Retryable(t))
			if err == nil || hub.IsPermanent(err) {
				t.Errorf("transient failure classified as %v", err)
			}
		}
	})
	t.Run("CloseIdempotent", func(t *testing.T) {
		ch := s.New(t)
		c, ok := ch.(hub.Closer)
		if !ok {
			t.Skip("no Close")
		}
		for i := 0; i < 2; i++ {
			if err := c.Close(context.Background()); err != nil {
				t.Fatalf("Close #%d: %v", i+1, err)
			}
		}
	})
	t.Run("NoLeaks", func(t *testing.T) {
		opt := goleak.IgnoreCurrent()
		func() {
			ch := s.New(t)
			for i := 0; i < 4; i++ {
				_ = ch.Send(context.Background(), s.OK(t))
			}
			closeCh(t, ch)
		}()
		// Servers set up by New stop on their own Cleanup, after this case;
		// ignore those, and wait briefly for the channel's own goroutines.
		deadline := time.Now().Add(2 * time.Second)
		for {
			err := goleak.Find(opt, goleak.IgnoreTopFunction("net/http.(*conn).serve"),
				goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			<-time.After(20 * time.Millisecond)
		}
	})
}

func closeCh(t *testing.T, ch hub.Channel) {
	t.Helper()
	if c, ok := ch.(hub.Closer); ok {
		if err := c.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

// ErrTransient is what a Capture's Fail function can return for a
// retryable failure in tests.
var ErrTransient = errors.New("transient failure")
