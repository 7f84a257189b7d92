// Package hubtest helps test channels and apps: Capture is a channel that
// records what it was sent and can be told to fail; Conformance runs the
// cases every channel must pass.
package hubtest

import (
	"context"
	"sync"
	"time"

	"github.com/hubproject/hub/hub"
)

// Captured is one delivery a Capture received.
type Captured struct {
	DeliveryID   string
	EventID      string
	EventType    string
	Subscription string
	Recipient    string
	Content      hub.Content
	Attempt      int
	At           time.Time
	EventJSON    []byte
}

// Capture is a channel that records every Send. A Fail function decides,
// per delivery, whether to fail it and how.
type Capture struct {
	mu      sync.Mutex
	got     []Captured
	attempt map[string][]Captured // by delivery id, every attempt
	fail    func(*hub.Delivery) error
	notify  chan struct{}
	closed  bool
}

// NewCapture returns an empty Capture that accepts everything.
func NewCapture() *Capture {
	return &Capture{attempt: map[string][]Captured{}, notify: make(chan struct{})}
}

// FailWith installs f: its non-nil result is returned by Send (and the
// delivery is not counted as delivered).
func (c *Capture) FailWith(f func(*hub.Delivery) error) {
	c.mu.Lock()
	c.fail = f
	c.mu.Unlock()
}

// Send records the delivery.
func (c *Capture) Send(ctx context.Context, d *hub.Delivery) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rec := Captured{
		DeliveryID: d.ID, EventID: d.Event.ID, EventType: d.Event.Type, Subscription: d.Subscription.ID,
		Recipient: d.Recipient, Content: d.Content, Attempt: d.Attempt, At: time.Now(), EventJSON: d.EventJSON,
	}
	c.mu.Lock()
	fail := c.fail
	c.attempt[d.ID] = append(c.attempt[d.ID], rec)
	c.mu.Unlock()
	var err error
	if fail != nil {
		err = fail(d)
	}
	c.mu.Lock()
	if err == nil {
		c.got = append(c.got, rec)
	}
	close(c.notify)
	c.notify = make(chan struct{})
	c.mu.Unlock()
	return err
}

// Close marks the capture closed; idempotent.
func (c *Capture) Close(context.Context) error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

// Delivered returns the successful deliveries so far.
func (c *Capture) Delivered() []Captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Captured(nil), c.got...)
}

// Attempts returns every attempt (successful or not) of a delivery id.
func (c *Capture) Attempts(deliveryID string) []Captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Captured(nil), c.attempt[deliveryID]...)
}

// Wait blocks until cond holds over the deliveries so far, or ctx ends.
// It wakes on every Send, so it never polls.
func (c *Capture) Wait(ctx context.Context, cond func(delivered []Captured) bool) error {
	for {
		c.mu.Lock()
		ok := cond(c.got)
		ch := c.notify
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitCount waits until at least n deliveries succeeded.
func (c *Capture) WaitCount(ctx context.Context, n int) error {
	return c.Wait(ctx, func(d []Captured) bool { return len(d) >= n })
}

// WaitDelivered waits until the event was delivered to the subscription.
func (c *Capture) WaitDelivered(ctx context.Context, eventID, subscription string) (Captured, error) {
	var found Captured
	err := c.Wait(ctx, func(ds []Captured) bool {
		for _, d := range ds {
			if d.EventID == eventID && d.Subscription == subscription {
				found = d
				return true
			}
		}
		return false
	})
	return found, err
}
