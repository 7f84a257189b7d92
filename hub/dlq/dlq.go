// Package dlq turns terminated deliveries into dead letters and lets
// operators list, replay and drop them.
//
// The dispatcher ends a delivery with TermWithReason (permanent failure,
// attempts exhausted); JetStream then publishes an advisory, which the
// HUB_ADVISORIES stream captures even if the hub is down at that moment.
// The Processor reads each advisory, fetches the delivery from DELIVERIES
// and writes a DeadLetter to DLQ under dlq.<channel>.<subscription>, with
// Nats-Msg-Id dlq/<delivery sequence> so a crash between the two steps
// cannot make two records.
package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
)

// DeadLetter is one DLQ record.
type DeadLetter = dispatch.DeadLetter

// ConsumerName is the Processor's durable consumer on HUB_ADVISORIES.
const ConsumerName = "hub-dlq"

// advisory is the part of JetStream's terminated / max-deliveries advisory
// the processor needs.
type advisory struct {
	Type       string    `json:"type"`
	Stream     string    `json:"stream"`
	Consumer   string    `json:"consumer"`
	StreamSeq  uint64    `json:"stream_seq"`
	Deliveries uint64    `json:"deliveries"`
	Reason     string    `json:"reason"`
	Timestamp  time.Time `json:"timestamp"`
}

// Processor writes dead letters from advisories.
type Processor struct {
	js   jetstream.JetStream
	log  zerolog.Logger
	obs  func(DeadLetter)
	it   jetstream.MessagesContext
	done chan struct{}
	once sync.Once
}

// NewProcessor returns a Processor; obs (may be nil) sees every new record.
func NewProcessor(js jetstream.JetStream, log zerolog.Logger, obs func(DeadLetter)) *Processor {
	if obs == nil {
		obs = func(DeadLetter) {}
	}
	return &Processor{js: js, log: log, obs: obs, done: make(chan struct{})}
}

// Start creates the consumer and starts processing.
func (p *Processor) Start(ctx context.Context) error {
	cfg := jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "hub: advisories to dead letters",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: 64,
	}
	var c jetstream.Consumer
	err := hub.RetryTransient(ctx, func(ctx context.Context) error {
		var err error
		c, err = p.js.CreateOrUpdateConsumer(ctx, hub.AdvisoriesStream, cfg)
		return err
	})
	if err != nil {
		return fmt.Errorf("dlq consumer: %w", err)
	}
	it, err := c.Messages(jetstream.PullMaxMessages(32))
	if err != nil {
		return fmt.Errorf("dlq consume: %w", err)
	}
	p.it = it
	go p.loop()
	return nil
}

// Stop finishes the advisory in hand and stops.
func (p *Processor) Stop(ctx context.Context) error {
	if p.it == nil {
		return nil
	}
	p.once.Do(p.it.Drain)
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		p.it.Stop()
		<-p.done
		return ctx.Err()
	}
}

func (p *Processor) loop() {
	defer close(p.done)
	for {
		msg, err := p.it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			p.log.Warn().Err(err).Msg("dlq: consume advisories")
			<-time.After(100 * time.Millisecond) // pace a failing consume
			continue
		}
		if err := p.handle(context.Background(), msg); err != nil {
			p.log.Warn().Err(err).Msg("dlq: will retry the advisory")
			_ = msg.NakWithDelay(time.Second)
			continue
		}
		_ = msg.Ack()
	}
}

func (p *Processor) handle(ctx context.Context, msg jetstream.Msg) error {
	var a advisory
	if err := json.Unmarshal(msg.Data(), &a); err != nil || a.Stream != hub.DeliveriesStream || a.StreamSeq == 0 {
		p.log.Warn().Str("subject", msg.Subject()).Msg("dlq: ignoring an advisory it cannot read")
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	src, err := p.js.Stream(ctx, hub.DeliveriesStream)
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", hub.DeliveriesStream, err)
	}
	m, err := src.GetMsg(ctx, a.StreamSeq)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			p.log.Error().Uint64("delivery_seq", a.StreamSeq).Msg("dlq: the terminated delivery is gone from DELIVERIES (max_age too short?)")
			return nil
		}
		return fmt.Errorf("get delivery %d: %w", a.StreamSeq, err)
	}
	var rec dispatch.Record
	if err := json.Unmarshal(m.Data, &rec); err != nil {
		p.log.Error().Err(err).Uint64("delivery_seq", a.StreamSeq).Msg("dlq: unreadable delivery record")
		return nil
	}
	h := m.Header
	reason := a.Reason
	if strings.Contains(a.Type, "max_deliver") || reason == "" {
		reason = fmt.Sprintf("no acknowledgement after %d deliveries", a.Deliveries)
		if le := h.Get(hub.HeaderLastError); le != "" {
			reason += "; last error: " + le
		}
	}
	attempts, _ := dispatch.AttemptOf(nats.Header(h), a.Deliveries)
	if h.Get(hub.HeaderTerminal) != "" {
		attempts, _ = strconv.Atoi(h.Get(hub.HeaderAttempts))
	}
	at := a.Timestamp
	if at.IsZero() {
		at = time.Now()
	}
	first := dispatch.HeaderTime(nats.Header(h), hub.HeaderFirstAttempt)
	if first.IsZero() {
		first = at
	}
	dl := DeadLetter{Record: rec, Reason: reason, Attempts: attempts, FirstAttempt: first, LastAttempt: at, DeadAt: at, SourceSeq: a.StreamSeq}
	body, err := json.Marshal(dl)
	if err != nil {
		return fmt.Errorf("encode dead letter of delivery %d: %w", a.StreamSeq, err)
	}
	out := &nats.Msg{Subject: hub.DLQSubject(rec.Channel, rec.Subscription), Data: body, Header: nats.Header{}}
	out.Header.Set(jetstream.MsgIDHeader, "dlq/"+strconv.FormatUint(a.StreamSeq, 10))
	ack, err := p.js.PublishMsg(ctx, out)
	if err != nil {
		return fmt.Errorf("store dead letter of delivery %d: %w", a.StreamSeq, err)
	}
	if !ack.Duplicate {
		dl.ID = ack.Sequence
		p.log.Warn().Str("channel", rec.Channel).Str("subscription", rec.Subscription).Str("event_id", rec.EventID).
			Str("delivery_id", rec.DeliveryID).Int("attempts", attempts).Str("reason", reason).Uint64("dlq_id", ack.Sequence).Msg("dead letter")
		p.obs(dl)
	}
	return nil
}
