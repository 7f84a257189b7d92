package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
)

// ErrNotFound means no dead letter has that id.
var ErrNotFound = errors.New("no such dead letter")

// ErrNotReplayable means the dead letter has no subscription to go to (an
// invalid event): fix it and publish it again.
var ErrNotReplayable = errors.New("an invalid event cannot be replayed; fix it and publish it again")

// Filter selects dead letters.
type Filter struct {
	Channel      string
	Subscription string
	Limit        int // 0: 1000
}

func (f Filter) subject() string {
	ch, sub := "*", "*"
	if f.Channel != "" {
		ch = f.Channel
	}
	if f.Subscription != "" {
		sub = f.Subscription
	}
	return hub.DLQPrefix + ch + "." + sub
}

// Store reads and changes the DLQ.
type Store struct {
	js       jetstream.JetStream
	onReplay func(DeadLetter)
}

// NewStore returns a Store over js; onReplay (may be nil) sees every replay.
func NewStore(js jetstream.JetStream, onReplay func(DeadLetter)) *Store {
	if onReplay == nil {
		onReplay = func(DeadLetter) {}
	}
	return &Store{js: js, onReplay: onReplay}
}

// List returns dead letters oldest first.
func (s *Store) List(ctx context.Context, f Filter) ([]DeadLetter, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	st, err := s.js.Stream(ctx, hub.DLQStream)
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	out := []DeadLetter{}
	if st.CachedInfo().State.Msgs == 0 {
		return out, nil
	}
	// A short inactivity threshold: the server drops the consumer soon after.
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{f.subject()}, InactiveThreshold: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	for len(out) < limit {
		batch, err := c.FetchNoWait(min(limit-len(out), 256))
		if err != nil {
			return nil, fmt.Errorf("dlq: %w", err)
		}
		n := 0
		var last jetstream.Msg
		for m := range batch.Messages() {
			n++
			last = m
			dl, err := decode(m.Data())
			if err != nil {
				continue
			}
			meta, _ := m.Metadata()
			dl.ID = meta.Sequence.Stream
			out = append(out, dl)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("dlq: %w", err)
		}
		if n == 0 {
			break
		}
		if meta, err := last.Metadata(); err == nil && meta.NumPending == 0 {
			break
		}
	}
	return out, nil
}

// Get returns one dead letter.
func (s *Store) Get(ctx context.Context, id uint64) (DeadLetter, error) {
	st, err := s.js.Stream(ctx, hub.DLQStream)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dlq: %w", err)
	}
	m, err := st.GetMsg(ctx, id)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return DeadLetter{}, fmt.Errorf("%w: %d", ErrNotFound, id)
		}
		return DeadLetter{}, fmt.Errorf("dlq: %w", err)
	}
	dl, err := decode(m.Data)
	if err != nil {
		return DeadLetter{}, err
	}
	dl.ID = id
	return dl, nil
}

// Replay delivers a dead letter again, to its subscription only, as a new
// first attempt; then removes it from the DLQ. Replaying the same id twice
// stores one delivery (the dedup id is derived from the DLQ id).
func (s *Store) Replay(ctx context.Context, id uint64) (DeadLetter, error) {
	dl, err := s.Get(ctx, id)
	if err != nil {
		return dl, err
	}
	if dl.Channel == dispatch.InvalidChannel {
		return dl, ErrNotReplayable
	}
	m, err := dispatch.NewDeliveryMsg(dl.Record, dispatch.Retry{
		Attempts: 0, Wait: -1, FirstAttempt: time.Now(),
		MsgID: dl.DeliveryID + "/r" + strconv.FormatUint(id, 10),
	}, time.Now())
	if err != nil {
		return dl, err
	}
	if _, err := s.js.PublishMsg(ctx, m); err != nil {
		return dl, fmt.Errorf("dlq: replay %d: %w", id, err)
	}
	if err := s.Drop(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
		return dl, err
	}
	s.onReplay(dl)
	return dl, nil
}

// Drop removes a dead letter for good.
func (s *Store) Drop(ctx context.Context, id uint64) error {
	st, err := s.js.Stream(ctx, hub.DLQStream)
	if err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	if err := st.DeleteMsg(ctx, id); err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
			return fmt.Errorf("%w: %d", ErrNotFound, id)
		}
		return fmt.Errorf("dlq: drop %d: %w", id, err)
	}
	return nil
}

func decode(b []byte) (DeadLetter, error) {
	var dl DeadLetter
	if err := json.Unmarshal(b, &dl); err != nil {
		return dl, fmt.Errorf("dlq: unreadable record: %w", err)
	}
	return dl, nil
}
