// Package publisher is the Go client apps use to publish events to the hub
// over NATS, and to gather replies from services (Gather). It depends only
// on nats.go, never on the server, so importing it keeps an app small.
//
//	nc, _ := nats.Connect("nats://127.0.0.1:4222")
//	p, _ := publisher.New(nc, publisher.WithSource("shop"))
//	ack, err := p.Publish(ctx, publisher.Event{Type: "order.created", Data: []byte(`{"id":1}`)})
package publisher

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub"
)

// Event is a CloudEvents 1.0 event. Empty id, source, specversion and time
// are filled in by Publish.
type Event = hub.Event

// ValidationError lists every invalid field of a rejected event.
type ValidationError = hub.ValidationError

// ErrUnavailable means JetStream did not answer: the hub is down or the
// EVENTS stream does not exist. The publish may be retried with the same id.
var ErrUnavailable = errors.New("hub unavailable")

// Ack confirms an event is stored.
type Ack struct {
	ID       string `json:"id"`
	Stream   string `json:"stream,omitempty"`
	Sequence uint64 `json:"sequence"`
	// Duplicate is true when an event with this id was already stored
	// within the duplicate window; nothing new was stored.
	Duplicate bool `json:"duplicate"`
}

// Publisher publishes events to the hub's EVENTS stream.
type Publisher struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	source  string
	maxSize int
	now     func() time.Time
	header  nats.Header
	// validated: the caller validated every event already.
	validated bool
	// maxBatch: events per atomic batch; lowered if the server says so.
	maxBatch atomic.Int64
	// inflight holds a slot per open atomic batch (WithMaxInflightBatches).
	inflight chan struct{}
	// atomicOffUntil (unix ns): the stream refused atomic batches; publish
	// per message until then.
	atomicOffUntil atomic.Int64
}

// Option configures a Publisher.
type Option func(*config)

type config struct {
	source     string
	maxSize    int
	maxPending int
	now        func() time.Time
	header     nats.Header
	validated  bool
	maxBatch   int
	inflight   int
}

// WithValidatedEvents skips validation for a caller that has already
// validated every event it publishes (the hub's HTTP API does); encoding
// and the size limit still apply.
func WithValidatedEvents() Option { return func(c *config) { c.validated = true } }

// WithSource sets the CloudEvents source for events that have none.
func WithSource(s string) Option { return func(c *config) { c.source = s } }

// WithMaxEventSize sets the size limit checked before publishing; match the
// hub's events.max_event_size (default 256 KiB).
func WithMaxEventSize(n int) Option { return func(c *config) { c.maxSize = n } }

// WithMaxPending bounds unacknowledged async publishes (default 4096);
// PublishAsync blocks while the window is full.
func WithMaxPending(n int) Option { return func(c *config) { c.maxPending = n } }

// WithMaxBatch sets the most events PublishBatch puts in one atomic batch
// (default DefaultMaxBatch, nats-server's default max_batch_size); set it to
// the server's jetstream limit if that is lower.
func WithMaxBatch(n int) Option { return func(c *config) { c.maxBatch = n } }

// WithMaxInflightBatches bounds the atomic batches this Publisher has open
// at once (default DefaultMaxInflightBatches); PublishBatch waits for a slot.
func WithMaxInflightBatches(n int) Option { return func(c *config) { c.inflight = n } }

// WithHeader adds a header to every message published.
func WithHeader(key, value string) Option {
	return func(c *config) {
		if c.header == nil {
			c.header = nats.Header{}
		}
		c.header.Set(key, value)
	}
}

// WithClock sets the clock used for default event times (tests).
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// New returns a Publisher on an open connection.
func New(nc *nats.Conn, opts ...Option) (*Publisher, error) {
	if nc == nil {
		return nil, errors.New("publisher: nil connection")
	}
	c := config{source: hub.DefaultSource, maxSize: hub.DefaultMaxEventSize, maxPending: 4096, now: time.Now,
		maxBatch: DefaultMaxBatch, inflight: DefaultMaxInflightBatches}
	for _, o := range opts {
		o(&c)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(c.maxPending))
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	p := &Publisher{nc: nc, js: js, source: c.source, maxSize: c.maxSize, now: c.now, header: c.header, validated: c.validated,
		inflight: make(chan struct{}, max(c.inflight, 1))}
	p.maxBatch.Store(int64(max(c.maxBatch, 1)))
	return p, nil
}

// prepare fills defaults, validates and encodes the event into a message.
func (p *Publisher) prepare(ev *Event) (*nats.Msg, error) {
	ev.SetDefaults(p.source, p.now())
	if !p.validated {
		if err := ev.Validate(0); err != nil {
			return nil, err
		}
	}
	body, err := ev.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("publisher: encode event: %w", err)
	}
	if p.maxSize > 0 && len(body) > p.maxSize {
		return nil, &ValidationError{Errors: []hub.FieldError{{Reason: fmt.Sprintf("event is %d bytes, over the %d byte limit", len(body), p.maxSize)}}}
	}
	msg := &nats.Msg{Subject: ev.NATSSubject(), Data: body, Header: nats.Header{}}
	for k, v := range p.header {
		msg.Header[k] = v
	}
	msg.Header[jetstream.MsgIDHeader] = []string{ev.ID}
	if tp, ok := ev.Extensions["traceparent"].(string); ok {
		msg.Header["traceparent"] = []string{tp}
	}
	return msg, nil
}

// Publish validates and stores one event, waiting for JetStream's ack. The
// event's id doubles as the dedup id: publishing it again within the
// duplicate window stores nothing and returns Duplicate.
func (p *Publisher) Publish(ctx context.Context, ev Event) (Ack, error) {
	msg, err := p.prepare(&ev)
	if err != nil {
		return Ack{ID: ev.ID}, err
	}
	pa, err := p.js.PublishMsg(ctx, msg)
	if err != nil {
		return Ack{ID: ev.ID}, classify(err)
	}
	return Ack{ID: ev.ID, Stream: pa.Stream, Sequence: pa.Sequence, Duplicate: pa.Duplicate}, nil
}

// Future is the pending result of PublishAsync.
type Future struct {
	id string
	f  jetstream.PubAckFuture
}

// ID is the event id (generated if the event had none).
func (f *Future) ID() string { return f.id }

// Wait blocks until the event is stored or fails, or ctx ends.
func (f *Future) Wait(ctx context.Context) (Ack, error) {
	select {
	case pa := <-f.f.Ok():
		return Ack{ID: f.id, Stream: pa.Stream, Sequence: pa.Sequence, Duplicate: pa.Duplicate}, nil
	case err := <-f.f.Err():
		return Ack{ID: f.id}, classify(err)
	case <-ctx.Done():
		return Ack{ID: f.id}, ctx.Err()
	}
}

// PublishAsync validates and sends one event without waiting for the ack,
// for throughput. At most WithMaxPending are unacknowledged at once. Wait
// on the Future, or call Flush, to learn the outcome.
func (p *Publisher) PublishAsync(ev Event) (*Future, error) {
	msg, err := p.prepare(&ev)
	if err != nil {
		return nil, err
	}
	f, err := p.js.PublishMsgAsync(msg)
	if err != nil {
		return nil, classify(err)
	}
	return &Future{id: ev.ID, f: f}, nil
}

// Flush waits until every PublishAsync so far is acknowledged (or failed).
func (p *Publisher) Flush(ctx context.Context) error {
	select {
	case <-p.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("publisher: flush: %d pending: %w", p.js.PublishAsyncPending(), ctx.Err())
	}
}

// Pending is the number of unacknowledged async publishes.
func (p *Publisher) Pending() int { return p.js.PublishAsyncPending() }

func classify(err error) error {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrTimeout) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return fmt.Errorf("publisher: %w", err)
}
