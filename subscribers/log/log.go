// Package log is a channel that writes each delivery to the hub's log:
// `make run` shows fan-out with nothing else running, and it is a handy
// sink while writing subscriptions.
package log

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/hubproject/hub/hub"
)

// Sender logs deliveries at info level: ids, type and subscription, never
// the payload.
type Sender struct {
	log zerolog.Logger
}

// New returns a Sender writing to l.
func New(l zerolog.Logger) *Sender { return &Sender{log: l} }

// Send logs the delivery.
func (s *Sender) Send(ctx context.Context, d *hub.Delivery) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.log.Info().Str("channel", "log").Str("subscription", d.Subscription.ID).Str("event_id", d.Event.ID).
		Str("event_type", d.Event.Type).Str("delivery_id", d.ID).Int("attempt", d.Attempt).Int("bytes", len(d.EventJSON)).
		Msg("delivered")
	return nil
}

// Close is a no-op.
func (s *Sender) Close(context.Context) error { return nil }
