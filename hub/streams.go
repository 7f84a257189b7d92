package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	// Replicas for the hub's streams (1 standalone, 3 in a cluster).
	Replicas int `yaml:"replicas" validate:"gte=1,lte=5"`
}

// DefaultEventsConfig returns the defaults written in configs/hub.yaml.
func DefaultEventsConfig() EventsConfig {
	return EventsConfig{
		DuplicateWindow: config.Duration(2 * time.Minute),
		MaxAge:          config.Duration(168 * time.Hour),
		MaxEventSize:    DefaultMaxEventSize,
		MaxBatch:        1000,
		Replicas:        1,
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
	}
}

// EnsureStream creates the stream or updates it to cfg; it is safe to call
// from several nodes at once.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		s, err := js.CreateOrUpdateStream(ctx, cfg)
		if err == nil {
			return s, nil
		}
		lastErr = err
		// Another node may be creating it at the same moment; look again.
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) || errors.Is(err, context.DeadlineExceeded) {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
			}
			continue
		}
		break
	}
	return nil, fmt.Errorf("ensure stream %s: %w", cfg.Name, lastErr)
}
