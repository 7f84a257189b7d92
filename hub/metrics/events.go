package metrics

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub"
)

// IntakeHeader, when an event's stored message carries it, names the door
// the event came through ("http"); events without it came over NATS (a raw
// client, the publisher package, `hub publish`). The HTTP intake sets it.
const IntakeHeader = hub.HeaderIntake

// EventCounter counts every event stored in the EVENTS stream, by door and
// type, by tailing the stream with an ordered consumer that fetches headers
// only. It counts what was stored: a duplicate publish is not stored, so
// not counted; a restart starts from the stream's end. Every node of a
// cluster counts every event.
type EventCounter struct {
	cc jetstream.ConsumeContext
}

// StartEventCounter starts counting events stored from now on into m. It
// retries while a cluster forms (hub.RetryTransient) within ctx.
func StartEventCounter(ctx context.Context, js jetstream.JetStream, m *Metrics) (*EventCounter, error) {
	count := func(msg jetstream.Msg) {
		door := DoorNATS
		if msg.Headers().Get(IntakeHeader) == DoorHTTP {
			door = DoorHTTP
		}
		m.EventStored(door, strings.TrimPrefix(msg.Subject(), hub.SubjectPrefix))
	}
	var cc jetstream.ConsumeContext
	err := hub.RetryTransient(ctx, func(ctx context.Context) error {
		st, err := js.Stream(ctx, hub.EventsStream)
		if err != nil {
			return err
		}
		cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{hub.SubjectPrefix + ">"},
			DeliverPolicy:  jetstream.DeliverNewPolicy,
			HeadersOnly:    true,
		})
		if err != nil {
			return err
		}
		cc, err = cons.Consume(count)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("metrics: event counter: %w", err)
	}
	return &EventCounter{cc: cc}, nil
}

// Stop stops counting and waits, within ctx, until the consumer is gone.
func (c *EventCounter) Stop(ctx context.Context) error {
	c.cc.Stop()
	select {
	case <-c.cc.Closed():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("metrics: event counter: %w", ctx.Err())
	}
}
