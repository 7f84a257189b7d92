package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/api"
	"github.com/hubproject/hub/hub/dispatch"
)

// ErrNoRecords means the AUDIT stream holds no record of the event.
var ErrNoRecords = errors.New("no audit records for this event")

// EventTrace is one event and everything that happened to it.
type EventTrace struct {
	EventID string `json:"event_id"`
	// Event is the event as recorded (redacted); null when its record is
	// missing (audit was off when it was stored, or it aged out).
	Event json.RawMessage `json:"event"`
	// Timeline is every record of the event, oldest first.
	Timeline []Record `json:"timeline"`
	// Summary is where each subscription stands.
	Summary map[string]SubscriptionState `json:"summary"`
	// Unverified counts lines naming the event whose own hash did not
	// match (damaged, or written to audit.> by something other than a
	// hub); they are left out of the timeline.
	Unverified int `json:"unverified,omitempty"`
}

// SubscriptionState summarises one subscription's deliveries of the event.
type SubscriptionState struct {
	Channel string `json:"channel"`
	// State of the deliveries: delivered when all are; otherwise the state
	// of the last one updated that is not: pending (a routed record of an
	// older trail, no attempt yet), retrying, deferred, failed (permanent, dead letter pending),
	// dead_lettered, replayed (a replay is queued).
	State string `json:"state"`
	// Deliveries is the number of recipients; Delivered how many got it.
	Deliveries int `json:"deliveries"`
	Delivered  int `json:"delivered"`
	// Attempts counts delivered and failed attempts.
	Attempts  int       `json:"attempts"`
	LastAt    time.Time `json:"last_at"`
	LastError string    `json:"last_error,omitempty"`
	DLQID     uint64    `json:"dlq_id,omitempty"`
}

// TraceOption adjusts Trace.
type TraceOption func(*traceOptions)

type traceOptions struct{ since time.Time }

// Since reads only records stored from t on (the event's time, when the
// caller knows it): a trace of an old event in a large stream is faster.
func Since(t time.Time) TraceOption { return func(o *traceOptions) { o.since = t } }

// Trace reads the records of one event from the AUDIT stream, oldest
// first. It reads the event's subject (1/16 of the stream, see
// EventSubject) from a start time: for a ULID event id an hour before the
// id's time; otherwise the last hour, then the last day, week, and the
// whole stream, until the event record is found. Every record of an event
// is stored after the event itself, so once the event record is in the
// window, so is everything else.
func Trace(ctx context.Context, js jetstream.JetStream, eventID string, opts ...TraceOption) (*EventTrace, error) {
	if eventID == "" {
		return nil, errors.New("audit trace: empty event id")
	}
	var o traceOptions
	for _, f := range opts {
		f(&o)
	}
	st, err := js.Stream(ctx, StreamName)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("%w: the %s stream does not exist (is audit enabled?)", ErrNoRecords, StreamName)
		}
		return nil, fmt.Errorf("audit trace: %w", err)
	}
	var starts []time.Time
	now := time.Now()
	switch t, ok := idTime(eventID); {
	case !o.since.IsZero():
		starts = []time.Time{o.since, {}}
	case ok:
		starts = []time.Time{t, {}}
	default:
		starts = []time.Time{now.Add(-time.Hour), now.Add(-24 * time.Hour), now.Add(-7 * 24 * time.Hour), {}}
	}
	var recs []Record
	var bad int
	oldest := st.CachedInfo().State.FirstTime
	for _, since := range starts {
		if !since.After(oldest) {
			since = time.Time{} // the window holds the whole stream
		}
		if recs, bad, err = readRecords(ctx, st, eventID, since); err != nil {
			return nil, err
		}
		ev, found := firstKind(recs, KindEvent)
		if !found {
			if since.IsZero() {
				break // records without their event record (it aged out)
			}
			continue
		}
		// Outcomes can be stored before a lagging event record, but never
		// before the event itself (the event record's time).
		if from := ev.At.Add(-time.Minute); !since.IsZero() && from.Before(since) {
			if recs, bad, err = readRecords(ctx, st, eventID, from); err != nil {
				return nil, err
			}
		}
		break
	}
	if len(recs) == 0 {
		return nil, ErrNoRecords
	}
	recs = dedup(recs)
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].At.Before(recs[j].At) })
	for i := range recs {
		recs[i].DeliveryID = recs[i].ResolvedDeliveryID() // attempt records leave a derived one out
	}
	tr := &EventTrace{EventID: eventID, Timeline: recs, Summary: summarize(recs), Unverified: bad}
	if ev, ok := firstKind(recs, KindEvent); ok {
		tr.Event = ev.Event
		for i := range recs {
			if recs[i].EventType == "" {
				recs[i].EventType = ev.EventType // attempt records leave it to the event's
			}
		}
	}
	return tr, nil
}

// dedup drops a record read twice (the same chain position of the same
// writer cannot differ; a chunk re-published after a lost ack outside the
// dedup window is stored twice).
func dedup(recs []Record) []Record {
	seen := make(map[string]bool, len(recs))
	out := recs[:0]
	for _, r := range recs {
		if !seen[r.Hash] {
			seen[r.Hash] = true
			out = append(out, r)
		}
	}
	return out
}

// idTime is the time in a ULID event id (the hub's own ids), minus an hour
// for clock skew between the publisher and the hub.
func idTime(id string) (time.Time, bool) {
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return time.Time{}, false
	}
	t := ulid.Time(u.Time())
	if t.Year() < 2000 || t.After(time.Now().Add(time.Hour)) {
		return time.Time{}, false // not a time: an id that merely parses
	}
	return t.Add(-time.Hour), true
}

func firstKind(recs []Record, kind string) (Record, bool) {
	for _, r := range recs {
		if r.Kind == kind {
			return r, true
		}
	}
	return Record{}, false
}

// readRecords reads the event's subject with a short-lived consumer and
// keeps the records of eventID (a bucket holds other events too) whose own
// hash verifies; bad counts those that do not.
func readRecords(ctx context.Context, st jetstream.Stream, eventID string, since time.Time) (recs []Record, bad int, err error) {
	cfg := jetstream.ConsumerConfig{
		Description:       "hub: audit trace",
		FilterSubject:     EventSubject(eventID),
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute, // in case the delete below is lost
	}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	c, err := st.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, 0, fmt.Errorf("audit trace: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = st.DeleteConsumer(dctx, c.CachedInfo().Name)
	}()
	// A cheap test before decoding: the member exactly as the writer wrote it.
	needle := append([]byte(`"event_id":`), appendString(nil, eventID)...)
	out := []Record{}
	left := c.CachedInfo().NumPending
	for left > 0 {
		batch, err := c.Fetch(int(min(left, 256)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return nil, 0, fmt.Errorf("audit trace: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			for line := range bytes.SplitSeq(m.Data(), []byte{'\n'}) {
				if !bytes.Contains(line, needle) {
					continue
				}
				var r Record
				if err := json.Unmarshal(line, &r); err != nil || r.EventID != eventID {
					continue
				}
				if _, err := parseLine(line); err != nil {
					bad++
					continue
				}
				out = append(out, r)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, 0, fmt.Errorf("audit trace: %w", err)
		}
		if n == 0 {
			break // the rest aged out meanwhile
		}
		left -= uint64(n)
	}
	return out, bad, nil
}

// summarize folds the timeline into each subscription's state.
func summarize(recs []Record) map[string]SubscriptionState {
	type delivery struct {
		state string
		at    time.Time
	}
	subs := map[string]*SubscriptionState{}
	dels := map[string]map[string]*delivery{} // subscription -> delivery id -> state
	for _, r := range recs {
		if r.Subscription == "" {
			continue
		}
		s := subs[r.Subscription]
		if s == nil {
			s = &SubscriptionState{}
			subs[r.Subscription] = s
			dels[r.Subscription] = map[string]*delivery{}
		}
		if r.Channel != "" {
			s.Channel = r.Channel
		}
		s.LastAt = r.At
		d := dels[r.Subscription][r.DeliveryID]
		if d == nil {
			d = &delivery{}
			dels[r.Subscription][r.DeliveryID] = d
		}
		d.at = r.At
		switch r.Kind {
		case dispatch.KindRouted:
			d.state = "pending"
		case dispatch.KindDelivered:
			d.state = "delivered"
			s.Attempts++
		case dispatch.KindFailed:
			d.state = "retrying"
			if r.Permanent {
				d.state = "failed"
			}
			if r.Attempt > 0 {
				s.Attempts++
			}
			s.LastError = firstNonEmpty(r.Error, r.Reason)
		case dispatch.KindDeferred:
			d.state = "deferred"
			s.LastError = firstNonEmpty(r.Error, r.Reason)
		case dispatch.KindDeadLettered:
			d.state = "dead_lettered"
			s.DLQID = r.DLQID
			s.LastError = firstNonEmpty(r.Reason, r.Error)
		case dispatch.KindReplayed:
			// The replay is reported once it is queued, so its delivery can
			// be recorded first: a delivered delivery stays delivered.
			if d.state != "delivered" {
				d.state = "replayed"
			}
		default:
			d.state = r.Kind
		}
	}
	out := make(map[string]SubscriptionState, len(subs))
	for id, s := range subs {
		var lastOpen *delivery
		for _, d := range dels[id] {
			s.Deliveries++
			if d.state == "delivered" {
				s.Delivered++
			} else if lastOpen == nil || d.at.After(lastOpen.at) {
				lastOpen = d
			}
		}
		s.State = "delivered"
		if lastOpen != nil {
			s.State = lastOpen.state
		}
		out[id] = *s
	}
	return out
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// TraceHandler serves GET /v1/events/{id}: the event, its timeline and a
// summary per subscription; 404 (problem+json) when no record names it.
func TraceHandler(js jetstream.JetStream) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if js == nil {
			api.Error(w, http.StatusNotFound, "the audit trail is disabled (channels.audit.enabled)")
			return
		}
		id := r.PathValue("id")
		if id == "" || len(id) > 128 {
			api.Error(w, http.StatusBadRequest, "invalid event id", hub.FieldError{Field: "id", Reason: "must be 1-128 characters"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		tr, err := Trace(ctx, js, id)
		switch {
		case errors.Is(err, ErrNoRecords):
			api.Error(w, http.StatusNotFound, fmt.Sprintf("no audit records for event %q", id))
		case err != nil:
			api.RetryLater(w, http.StatusServiceUnavailable, time.Second, err.Error())
		default:
			api.WriteJSON(w, http.StatusOK, tr)
		}
	})
}

// Mount adds GET /v1/events/{id} to an API server.
func (a *Auditor) Mount(m interface {
	Handle(string, http.Handler)
}) {
	m.Handle("GET /v1/events/{id}", TraceHandler(a.js))
}
