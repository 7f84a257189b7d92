package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/api"
)

// MaxRecent is the most events GET /v1/events returns at once.
const MaxRecent = 500

// Recent is one stored event as the recent list shows it: its attributes,
// never its data.
type Recent struct {
	Seq      uint64    `json:"seq"`
	StoredAt time.Time `json:"stored_at"`
	ID       string    `json:"id"`
	Type     string    `json:"type"`
	Source   string    `json:"source,omitempty"`
	Subject  string    `json:"subject,omitempty"`
	Time     string    `json:"time,omitempty"`
	Size     int       `json:"size"`
	// Traceparent is the W3C trace context the event carries, if any.
	Traceparent string `json:"traceparent,omitempty"`
}

// envelope is the part of a stored event the list reads; data is skipped.
type envelope struct {
	ID          string `json:"id"`
	Source      string `json:"source"`
	Subject     string `json:"subject"`
	Time        string `json:"time"`
	Traceparent string `json:"traceparent"`
}

// RecentEvents returns the events stored after sequence after (0: any),
// at most limit, newest first, and the stream's last sequence.
func RecentEvents(ctx context.Context, js jetstream.JetStream, limit int, after uint64) ([]Recent, uint64, error) {
	out := []Recent{}
	st, err := js.Stream(ctx, hub.EventsStream)
	if err != nil {
		return out, 0, fmt.Errorf("recent events: %w", err)
	}
	state := st.CachedInfo().State
	if state.Msgs == 0 || state.LastSeq <= after {
		return out, state.LastSeq, nil
	}
	start := max(after+1, state.FirstSeq)
	if state.LastSeq >= uint64(limit) {
		start = max(start, state.LastSeq-uint64(limit)+1)
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{hub.SubjectPrefix + ">"},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       start,
		InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return out, state.LastSeq, fmt.Errorf("recent events: %w", err)
	}
	batch, err := c.FetchNoWait(int(state.LastSeq - start + 1))
	if err != nil {
		return out, state.LastSeq, fmt.Errorf("recent events: %w", err)
	}
	for m := range batch.Messages() {
		meta, err := m.Metadata()
		if err != nil || meta.Sequence.Stream > state.LastSeq {
			continue
		}
		r := Recent{
			Seq: meta.Sequence.Stream, StoredAt: meta.Timestamp.UTC(), Size: len(m.Data()),
			Type: strings.TrimPrefix(m.Subject(), hub.SubjectPrefix),
		}
		var env envelope
		if json.Unmarshal(m.Data(), &env) == nil {
			r.ID, r.Source, r.Subject, r.Time, r.Traceparent = env.ID, env.Source, env.Subject, env.Time, env.Traceparent
		}
		if r.ID == "" {
			r.ID = m.Headers().Get(jetstream.MsgIDHeader)
		}
		out = append(out, r)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return out, state.LastSeq, fmt.Errorf("recent events: %w", err)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, state.LastSeq, nil
}

// httpEvents serves GET /v1/events?limit=50&after=SEQ.
func (d *Dashboard) httpEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxRecent {
			api.Error(w, http.StatusBadRequest, "invalid limit", hub.FieldError{Field: "limit", Reason: fmt.Sprintf("must be a number from 1 to %d", MaxRecent)})
			return
		}
		limit = n
	}
	var after uint64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			api.Error(w, http.StatusBadRequest, "invalid after", hub.FieldError{Field: "after", Reason: "must be a stream sequence (a number)"})
			return
		}
		after = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	items, last, err := RecentEvents(ctx, d.js, limit, after)
	if err != nil {
		d.log.Warn().Err(err).Msg("listing recent events")
		api.Error(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"items": items, "count": len(items), "last_seq": last})
}
