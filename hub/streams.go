package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/config"
)

// Stream names.
const (
	EventsStream = "EVENTS"
)

// EventsConfig configures event intake and the EVENTS stream.
type EventsConfig struct {
	// DuplicateWindow: a publish with an id seen within it is stored once.
	DuplicateWindow config.Duration `yaml:"duplicate_window" validate:"gt=0"`
	// MaxAge: events older than this are removed from the stream.
	MaxAge config.Duration `yaml:"max_age" validate:"gt=0"`
	// MaxBytes caps the stream's size (0: no cap); the oldest go first.
	MaxBytes config.ByteSize `yaml:"max_bytes" validate:"gte=0"`
	// MaxEventSize is the largest encoded event accepted.
	MaxEventSize config.ByteSize `yaml:"max_event_size" validate:"gt=0"`
	// MaxBatch is the most events one HTTP batch may carry.
	MaxBatch int `yaml:"max_batch" validate:"gt=0"`
	// Replicas for the hub's streams and consumers; 0 means min(3, cluster
	// size): 1 standalone, 3 in a cluster of three or more.
	Replicas int `yaml:"replicas" validate:"gte=0,lte=5"`
}

// DefaultEventsConfig returns the defaults written in configs/hub.yaml.
func DefaultEventsConfig() EventsConfig {
	return EventsConfig{
		DuplicateWindow: config.Duration(2 * time.Minute),
		MaxAge:          config.Duration(168 * time.Hour),
		MaxEventSize:    DefaultMaxEventSize,
		MaxBatch:        1000,
	}
}

// Validate checks cross-field rules.
func (c *EventsConfig) Validate() error {
	var errs config.Errors
	if c.MaxAge > 0 && c.DuplicateWindow > c.MaxAge {
		errs.Add("duplicate_window", "must not exceed max_age (%s)", c.MaxAge)
	}
	if c.MaxEventSize > 64<<20 {
		errs.Add("max_event_size", "must be at most 64MiB")
	}
	return errs.Err()
}

// headerAllowance is room for NATS headers on top of the event body, so an
// event of exactly max_event_size is accepted by the stream.
const headerAllowance = 4 << 10

// EventsStreamConfig is the EVENTS stream as the hub wants it.
func EventsStreamConfig(c EventsConfig) jetstream.StreamConfig {
	maxBytes := int64(c.MaxBytes)
	if maxBytes == 0 {
		maxBytes = -1
	}
	return jetstream.StreamConfig{
		Name:        EventsStream,
		Description: "hub: every published event",
		Subjects:    []string{SubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.MaxAge.D(),
		MaxBytes:    maxBytes,
		MaxMsgSize:  int32(c.MaxEventSize) + headerAllowance,
		Duplicates:  c.DuplicateWindow.D(),
		Replicas:    max(c.Replicas, 1),
		// Atomic batch publish (nats-server 2.12+): a batch is stored whole
		// with 4 fsyncs under sync: always, not one per message
		// (publisher.PublishBatch).
		AllowAtomicPublish: true,
	}
}

// EnsureStream creates the stream or updates it to cfg. It is safe to call
// from several nodes at once, and waits (until ctx ends) while a cluster is
// still forming: no meta leader yet, or too few peers for the replicas.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	var s jetstream.Stream
	err := RetryTransient(ctx, func(ctx context.Context) error {
		var err error
		s, err = js.CreateOrUpdateStream(ctx, cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// JetStream error codes that mean "try again shortly" while a cluster forms
// or a leader moves.
var transientCodes = map[jetstream.ErrorCode]bool{
	10005: true, // no suitable peers for placement
	10006: true, // cluster not active
	10008: true, // JetStream system temporarily unavailable
	10009: true, // not the leader
	10023: true, // insufficient resources (peers not yet known)
	10074: true, // replicas > cluster size (peers not yet joined)
}

// IsTransient reports whether a JetStream API error is worth retrying.
func IsTransient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && transientCodes[apiErr.ErrorCode] {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}

// RetryTransient calls f until it succeeds, fails for good, or ctx ends;
// each call gets at most 5 s.
func RetryTransient(ctx context.Context, f func(context.Context) error) error {
	wait := 50 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(cctx)
		cancel()
		if err == nil || !IsTransient(err) || ctx.Err() != nil {
			if err != nil && ctx.Err() != nil {
				return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
			}
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// EnsureEventsConsumer creates or updates a durable consumer on EVENTS. An
// existing one keeps its start policy; a new one starts with new events
// (a channel added later does not replay the stream's history) unless the
// stream is empty. Every JetStream call is retried while transient (each
// try bounded), so one unanswered request while a cluster node rejoins
// costs a few seconds, not the whole start.
func EnsureEventsConsumer(ctx context.Context, js jetstream.JetStream, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	err := RetryTransient(ctx, func(ctx context.Context) error {
		c, err := js.Consumer(ctx, EventsStream, cfg.Durable)
		if err == nil {
			info := c.CachedInfo()
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = info.Config.DeliverPolicy, info.Config.OptStartSeq, info.Config.OptStartTime
			return nil
		}
		if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("look up consumer %s: %w", cfg.Durable, err)
		}
		st, err := js.Stream(ctx, EventsStream)
		if err != nil {
			return fmt.Errorf("consumer %s: look up stream %s: %w", cfg.Durable, EventsStream, err)
		}
		if st.CachedInfo().State.Msgs > 0 {
			cfg.DeliverPolicy = jetstream.DeliverNewPolicy
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var c jetstream.Consumer
	err = RetryTransient(ctx, func(ctx context.Context) error {
		var err error
		c, err = js.CreateOrUpdateConsumer(ctx, EventsStream, cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, EventsStream, err)
	}
	return c, nil
}
