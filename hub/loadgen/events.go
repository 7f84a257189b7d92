package loadgen

import (
	"bytes"
	"strings"
	"time"

	"github.com/hubproject/hub/hub"
)

// DefaultType is the event type a run publishes; the subscriptions a run
// creates match it.
const DefaultType = "bench.event"

// Events makes the events of a run: id "<run>-<n>", the given type, source
// "hub/bench", time = when it is (meant to be) published, and data padded
// so the encoded envelope is about size bytes.
type Events struct {
	rec  *Recorder
	typ  string
	data []byte
}

// NewEvents returns the maker for events of about size bytes encoded.
func NewEvents(rec *Recorder, typ string, size int) *Events {
	if typ == "" {
		typ = DefaultType
	}
	e := &Events{rec: rec, typ: typ}
	// Measure the envelope with a typical id (8 digits) and time, then pad.
	base, _ := e.Event(10_000_000, time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)).MarshalJSON()
	const wrap = len(`,"data":{"pad":""}`)
	if pad := size - len(base) - wrap; pad >= 0 {
		e.data = []byte(`{"pad":"` + strings.Repeat("x", pad) + `"}`)
	}
	return e
}

// Event returns event n, published at t.
func (e *Events) Event(n int, t time.Time) hub.Event {
	return hub.Event{
		SpecVersion: hub.SpecVersion,
		ID:          e.rec.EventID(n),
		Source:      "hub/bench",
		Type:        e.typ,
		Time:        t.UTC(),
		Data:        e.data,
	}
}

// Size is the encoded size of a typical event.
func (e *Events) Size() int {
	b, _ := e.Event(10_000_000, time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)).MarshalJSON()
	return len(b)
}

// Type is the event type.
func (e *Events) Type() string { return e.typ }

// appendJSON appends the encoded event n to buf.
func (e *Events) appendJSON(buf *bytes.Buffer, n int, t time.Time) {
	ev := e.Event(n, t)
	b, _ := ev.MarshalJSON()
	buf.Write(b)
}
