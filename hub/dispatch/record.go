package dispatch

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub"
)

// Record is the body of a DELIVERIES message: one (event, subscription,
// recipient) that needs a retry, a dead letter or a replay. The DLQ keeps
// the same fields.
type Record struct {
	DeliveryID   string          `json:"delivery_id"`
	EventID      string          `json:"event_id"`
	EventType    string          `json:"event_type"`
	Channel      string          `json:"channel"`
	Subscription string          `json:"subscription"`
	Recipient    string          `json:"recipient,omitempty"`
	Event        json.RawMessage `json:"event"`
}

// Retry describes where a target stands when it is written to DELIVERIES.
type Retry struct {
	Attempts     int           // attempts already made
	Wait         time.Duration // first delivery waits this long (not an attempt); <0: no wait
	FirstAttempt time.Time
	LastError    string
	Terminal     string // non-empty: dead-letter at once with this reason
	MsgID        string // dedup id; DeliveryID when empty
}

const maxErrLen = 1024

// NewDeliveryMsg builds the DELIVERIES message for rec.
func NewDeliveryMsg(rec Record, r Retry, now time.Time) (*nats.Msg, error) {
	body, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	h := nats.Header{}
	id := r.MsgID
	if id == "" {
		id = rec.DeliveryID
	}
	h.Set(jetstream.MsgIDHeader, id)
	h.Set(hub.HeaderAttempts, strconv.Itoa(r.Attempts))
	if r.Wait >= 0 {
		h.Set(hub.HeaderNotBefore, strconv.FormatInt(now.Add(r.Wait).UnixNano(), 10))
	}
	if !r.FirstAttempt.IsZero() {
		h.Set(hub.HeaderFirstAttempt, strconv.FormatInt(r.FirstAttempt.UnixNano(), 10))
	}
	if r.LastError != "" {
		h.Set(hub.HeaderLastError, truncate(r.LastError))
	}
	if r.Terminal != "" {
		h.Set(hub.HeaderTerminal, truncate(r.Terminal))
	}
	return &nats.Msg{Subject: hub.DeliverySubject(rec.Channel, rec.Subscription), Header: h, Data: body}, nil
}

func truncate(s string) string {
	if len(s) > maxErrLen {
		return s[:maxErrLen] + "…"
	}
	return s
}

// HeaderTime reads a unix-nanosecond header.
func HeaderTime(h nats.Header, key string) time.Time {
	n, err := strconv.ParseInt(h.Get(key), 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// AttemptOf is the attempt number of delivery k (1-based, NumDelivered) of
// a DELIVERIES message: the first delivery of a message with a not-before
// is a wait, not an attempt.
func AttemptOf(h nats.Header, numDelivered uint64) (attempt int, isWait bool) {
	base, _ := strconv.Atoi(h.Get(hub.HeaderAttempts))
	k := int(numDelivered)
	if h.Get(hub.HeaderNotBefore) != "" {
		if k <= 1 {
			return base, true
		}
		return base + k - 1, false
	}
	return base + k, false
}
