// Package testhub runs the whole hub inside a test: real JetStream
// in-process, the dispatchers and DLQ, and capturing sinks in place of the
// webhook, email and SMS channels.
//
//	h := testhub.Start(t, testhub.WithConfigYAML(subscriptions))
//	shop.New(h.Publisher).PlaceOrder(ctx, order)
//	mail, err := h.WaitDelivered(ctx, "order-42", "confirmation")
package testhub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/hubtest"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/email"
	"github.com/hubproject/hub/subscribers/sms"
)

// Hub is a whole hub running inside a test: real JetStream (in-process, no
// TCP port), the dispatchers, the DLQ, and capturing sinks in place of the
// webhook, email and SMS channels. Templates still render, so the captured
// email and SMS content is what would have been sent.
type Hub struct {
	Node *node.Node
	// Publisher publishes over the hub's in-process connection.
	Publisher *publisher.Publisher
	// Webhook, Email and SMS record what each channel was asked to send.
	Webhook, Email, SMS *hubtest.Capture
}

// Option adjusts the hub's configuration before it starts.
type Option func(*node.Config)

// WithSubscriptions adds subscriptions (the fan-out table).
func WithSubscriptions(subs ...hub.Subscription) Option {
	return func(c *node.Config) { c.Subscriptions = append(c.Subscriptions, subs...) }
}

// WithConfigYAML decodes YAML over the test defaults, as a config file
// would be (strict: unknown keys fail the test).
func WithConfigYAML(y string) Option {
	return func(c *node.Config) {
		if err := config.Decode([]byte(y), c); err != nil {
			panic(fmt.Sprintf("testhub: config: %v", err))
		}
	}
}

// WithHTTP serves the HTTP API on a random loopback port (Node.HTTPURL).
func WithHTTP() Option { return func(c *node.Config) { c.HTTP.Listen = "127.0.0.1:0" } }

// WithConfig changes anything else.
func WithConfig(f func(*node.Config)) Option { return Option(f) }

// TestConfig is the configuration Start begins from: in-process NATS, a
// store in t.TempDir(), no HTTP, and a compressed retry schedule (10 ms,
// 20 ms, 40 ms; 4 attempts) so retries and dead letters happen within a
// test's time.
func TestConfig(storeDir string) node.Config {
	cfg := node.DefaultConfig()
	cfg.NATS.Listen = ""
	cfg.NATS.StoreDir = storeDir
	cfg.HTTP.Listen = ""
	cfg.Delivery.Backoff = []config.Duration{config.Duration(10 * time.Millisecond), config.Duration(20 * time.Millisecond), config.Duration(40 * time.Millisecond)}
	cfg.Delivery.MaxAttempts = 4
	cfg.Delivery.AckWait = config.Duration(5 * time.Second)
	cfg.Delivery.ShutdownTimeout = config.Duration(5 * time.Second)
	// The channels are captured; these settings only satisfy validation.
	ec := email.DefaultConfig()
	ec.SMTP.Host, ec.From = "capture.invalid", "hub <hub@example.com>"
	cfg.Channels.Email = &ec
	sc := sms.DefaultConfig()
	sc.Twilio.AccountSID, sc.Twilio.AuthToken, sc.Twilio.From = "AC-capture", "capture", "+15550000000"
	cfg.Channels.SMS = &sc
	return cfg
}

// Start starts the hub and stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Hub {
	t.Helper()
	cfg := TestConfig(t.TempDir())
	for _, o := range opts {
		o(&cfg)
	}
	if err := config.Check(&cfg); err != nil {
		t.Fatalf("testhub: invalid configuration:\n%v", err)
	}
	h := &Hub{Webhook: hubtest.NewCapture(), Email: hubtest.NewCapture(), SMS: hubtest.NewCapture()}
	h.Node = node.New(cfg, node.WithChannel("webhook", h.Webhook), node.WithChannel("email", h.Email), node.WithChannel("sms", h.SMS))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Node.Start(ctx); err != nil {
		t.Fatalf("testhub: start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := h.Node.Shutdown(ctx); err != nil {
			t.Errorf("testhub: shutdown: %v", err)
		}
	})
	p, err := publisher.New(h.Node.Conn())
	if err != nil {
		t.Fatalf("testhub: publisher: %v", err)
	}
	h.Publisher = p
	return h
}

// Publish publishes one event and waits until it is stored.
func (h *Hub) Publish(ctx context.Context, ev publisher.Event) (publisher.Ack, error) {
	return h.Publisher.Publish(ctx, ev)
}

// WaitDelivered waits until the event reached the subscription on any
// channel, and returns what was delivered.
func (h *Hub) WaitDelivered(ctx context.Context, eventID, subscription string) (hubtest.Captured, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		c   hubtest.Captured
		err error
	}
	out := make(chan result, 3)
	for _, c := range []*hubtest.Capture{h.Webhook, h.Email, h.SMS} {
		go func() {
			got, err := c.WaitDelivered(ctx, eventID, subscription)
			out <- result{got, err}
		}()
	}
	var last error
	for i := 0; i < 3; i++ {
		r := <-out
		if r.err == nil {
			return r.c, nil
		}
		last = r.err
	}
	return hubtest.Captured{}, fmt.Errorf("event %s not delivered to %s: %w", eventID, subscription, last)
}
