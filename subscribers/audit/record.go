package audit

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
)

// Record kinds besides the delivery outcome kinds of package dispatch
// (delivered, failed, deferred, dead_lettered, replayed, disabled,
// invalid; routed is not recorded, though trails written before 2026-11-26
// hold it).
const (
	// KindEvent: an event was stored in EVENTS; Event holds it (redacted).
	KindEvent = "event"
	// KindChainRepaired: the writer found a torn tail (a crash mid-write)
	// and truncated it; TruncatedBytes/TruncatedAt/TruncatedSHA256 say
	// what was removed.
	KindChainRepaired = "chain_repaired"
	// KindRecordsDropped: Count delivery records were dropped because the
	// queue stayed full for queue_wait.
	KindRecordsDropped = "records_dropped"
)

// Record is one line of the audit trail, in the file and in the AUDIT
// stream alike. Seq, Prev and Hash form the hash chain: Hash is the
// SHA-256 of the line without its trailing ,"hash":"..." member (its
// canonical bytes) in unpadded base64url (hex in trails written before
// 2026-11-26), and Prev is the Hash of the record before it.
type Record struct {
	Seq  uint64    `json:"seq"`
	Prev string    `json:"prev"`
	Kind string    `json:"kind"`
	At   time.Time `json:"at"`

	EventID      string  `json:"event_id,omitempty"`
	EventType    string  `json:"event_type,omitempty"`
	Channel      string  `json:"channel,omitempty"`
	Subscription string  `json:"subscription,omitempty"`
	DeliveryID   string  `json:"delivery_id,omitempty"`
	Recipient    string  `json:"recipient,omitempty"`
	Attempt      int     `json:"attempt,omitempty"`
	Status       int     `json:"status,omitempty"`
	LatencyMS    float64 `json:"latency_ms,omitempty"`
	Permanent    bool    `json:"permanent,omitempty"`
	RetryInMS    int64   `json:"retry_in_ms,omitempty"`
	Error        string  `json:"error,omitempty"`
	Reason       string  `json:"reason,omitempty"`
	Response     string  `json:"response,omitempty"`
	DLQID        uint64  `json:"dlq_id,omitempty"`
	// StreamSeq is the EVENTS sequence of an event record.
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	// Count of records_dropped.
	Count uint64 `json:"count,omitempty"`
	// What a chain_repaired record truncated.
	TruncatedBytes  int64  `json:"truncated_bytes,omitempty"`
	TruncatedAt     int64  `json:"truncated_at,omitempty"`
	TruncatedSHA256 string `json:"truncated_sha256,omitempty"`

	Event json.RawMessage `json:"event,omitempty"`
	Hash  string          `json:"hash"`
}

// recordFromOutcome copies what the trail keeps of a dispatcher outcome.
// The event type is left out: the event's own record holds it, and a trace
// fills it in (it was about a tenth of every attempt record). So is a
// delivery id derived from the event, subscription and recipient (another
// sixth): ResolvedDeliveryID derives it again (outcomeRecord puts it
// back when it redacts the recipient).
func recordFromOutcome(o dispatch.Outcome) Record {
	r := Record{
		Kind: o.Kind, At: o.At, EventID: o.EventID, Channel: o.Channel,
		Subscription: o.Subscription, Recipient: o.Recipient, Attempt: o.Attempt,
		Status: o.Result.Status, Permanent: o.Permanent, Reason: o.Reason, Response: o.Result.Response, DLQID: o.DLQID,
	}
	// Derived again from the record's text, so only from valid UTF-8 (the
	// record replaces anything else with U+FFFD).
	if !o.DerivedID || o.EventID == "" || o.Subscription == "" ||
		!utf8.ValidString(o.EventID) || !utf8.ValidString(o.Subscription) || !utf8.ValidString(o.Recipient) {
		r.DeliveryID = o.DeliveryID
	}
	if o.Duration > 0 {
		r.LatencyMS = float64(o.Duration.Microseconds()) / 1000
	}
	if o.RetryIn > 0 {
		r.RetryInMS = o.RetryIn.Milliseconds()
	}
	if o.Err != nil {
		r.Error = truncate(o.Err.Error())
	}
	if r.Reason == r.Error {
		r.Reason = ""
	}
	r.Reason = truncate(r.Reason)
	return r
}

// ResolvedDeliveryID is the record's delivery id: its delivery_id, or,
// for an attempt record that leaves it out because it is the standard id
// of (event, subscription, recipient), that id.
func (r *Record) ResolvedDeliveryID() string {
	if r.DeliveryID != "" || r.EventID == "" || r.Subscription == "" {
		return r.DeliveryID
	}
	switch r.Kind {
	case dispatch.KindDelivered, dispatch.KindFailed, dispatch.KindDeferred, dispatch.KindRouted:
		return hub.DeliveryID(r.EventID, r.Subscription, r.Recipient)
	}
	return ""
}

const maxTextLen = 1024

func truncate(s string) string {
	if len(s) <= maxTextLen {
		return s
	}
	s = s[:maxTextLen]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1] // do not cut a rune in half
	}
	return s + "…"
}

// appendBody appends r's members after kind, without seq, prev and hash
// (the writer adds those), and without the enclosing braces. It is written
// by hand, not with encoding/json: it runs on the dispatcher's hot path.
func appendBody(b []byte, r *Record) []byte {
	b = append(b, `"kind":`...)
	b = appendString(b, r.Kind)
	b = append(b, `,"at":"`...)
	b = appendTime(b, r.At)
	b = append(b, '"')
	str := func(name, v string) {
		if v != "" {
			b = append(b, `,"`...)
			b = append(b, name...)
			b = append(b, `":`...)
			b = appendString(b, v)
		}
	}
	num := func(name string, v int64) {
		if v != 0 {
			b = append(b, `,"`...)
			b = append(b, name...)
			b = append(b, `":`...)
			b = strconv.AppendInt(b, v, 10)
		}
	}
	unum := func(name string, v uint64) {
		if v != 0 {
			b = append(b, `,"`...)
			b = append(b, name...)
			b = append(b, `":`...)
			b = strconv.AppendUint(b, v, 10)
		}
	}
	str("event_id", r.EventID)
	str("event_type", r.EventType)
	str("channel", r.Channel)
	str("subscription", r.Subscription)
	str("delivery_id", r.DeliveryID)
	str("recipient", r.Recipient)
	num("attempt", int64(r.Attempt))
	num("status", int64(r.Status))
	if r.LatencyMS != 0 {
		b = append(b, `,"latency_ms":`...)
		b = appendMillis(b, r.LatencyMS)
	}
	if r.Permanent {
		b = append(b, `,"permanent":true`...)
	}
	num("retry_in_ms", r.RetryInMS)
	str("error", r.Error)
	str("reason", r.Reason)
	str("response", r.Response)
	unum("dlq_id", r.DLQID)
	unum("stream_seq", r.StreamSeq)
	unum("count", r.Count)
	if r.Kind == KindChainRepaired {
		// Zero is meaningful here (a torn first line starts at offset 0).
		b = append(b, `,"truncated_bytes":`...)
		b = strconv.AppendInt(b, r.TruncatedBytes, 10)
		b = append(b, `,"truncated_at":`...)
		b = strconv.AppendInt(b, r.TruncatedAt, 10)
	}
	str("truncated_sha256", r.TruncatedSHA256)
	if len(r.Event) > 0 {
		b = append(b, `,"event":`...)
		b = append(b, r.Event...) // compact JSON: no newline can break the line
	}
	return b
}

const hexDigits = "0123456789abcdef"

// plain holds the bytes appendString copies as they are: printable
// ASCII but '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain8 reports whether all eight bytes of x are plain: none is a control
// character, '"', '\\' or non-ASCII (the bit tricks of "Bit Twiddling
// Hacks": haszero, hasless).
func plain8(x uint64) bool {
	quote := x ^ (ones * '"')
	backslash := x ^ (ones * '\\')
	special := (x - ones*0x20) &^ x
	special |= (quote - ones) &^ quote
	special |= (backslash - ones) &^ backslash
	return (special|x)&highs == 0
}

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// control characters (and U+2028/2029) are escaped, so a line never
// contains a raw newline.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		// Eight plain bytes at a time (most of a record's strings are).
		for i+8 <= len(s) && plain8(binary.LittleEndian.Uint64([]byte(s[i:i+8]))) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if plain[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Subjects of the AUDIT stream. Records about an event go to
// audit.ev.<b>, where the bucket b is the low hex digit of the FNV-1a
// hash of the event id (cheap on the hot path, stable across versions): never the raw id (ids may contain '.', '*' or '>'),
// few subjects (so the writer can store a whole batch in at most 16
// messages, and JetStream's per-subject index stays tiny), and a trace
// reads 1/16 of the stream in its time window. Records not about one
// event (chain repairs, drops, disabled subscriptions) go to audit.hub.
// docs/audit.md explains the choice.
const (
	StreamName    = "AUDIT"
	SubjectPrefix = "audit."
	HubSubject    = "audit.hub"
	eventSubjects = "audit.ev."
)

var bucketSubjects = func() (b [16]string) {
	for i := range b {
		b[i] = eventSubjects + hexDigits[i:i+1]
	}
	return b
}()

// EventSubject is the AUDIT subject holding the records of eventID.
func EventSubject(eventID string) string {
	if eventID == "" {
		return HubSubject
	}
	h := uint32(2166136261)
	for i := 0; i < len(eventID); i++ {
		h ^= uint32(eventID[i])
		h *= 16777619
	}
	return bucketSubjects[h&0xf]
}

// appendTime appends t in UTC as time.RFC3339Nano does, without the
// layout interpreter (it runs for every record); years outside 0-9999 go
// through AppendFormat.
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(b, time.RFC3339Nano)
	}
	hour, minute, sec := t.Clock()
	b = append(b, byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-',
		byte('0'+int(month)/10), byte('0'+int(month)%10), '-', byte('0'+day/10), byte('0'+day%10), 'T',
		byte('0'+hour/10), byte('0'+hour%10), ':', byte('0'+minute/10), byte('0'+minute%10), ':',
		byte('0'+sec/10), byte('0'+sec%10))
	if ns := t.Nanosecond(); ns != 0 {
		b = appendFraction(b, uint64(ns), 9)
	}
	return append(b, 'Z')
}

// appendFraction appends '.' and the digits-digit fraction v (v > 0),
// without trailing zeros: 123000000, 9 gives ".123".
func appendFraction(b []byte, v uint64, digits int) []byte {
	for v%10 == 0 {
		v /= 10
		digits--
	}
	var buf [20]byte
	i := len(buf)
	for ; digits > 0; digits-- {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	b = append(b, '.')
	return append(b, buf[i:]...)
}

// appendMillis appends ms as strconv.AppendFloat(b, ms, 'f', -1, 64)
// does. A latency is whole microseconds, so it is written from the
// integer; anything else goes through AppendFloat.
func appendMillis(b []byte, ms float64) []byte {
	us := int64(math.Round(ms * 1000))
	if us <= 0 || us >= 1<<53 || float64(us)/1000 != ms {
		return strconv.AppendFloat(b, ms, 'f', -1, 64)
	}
	b = strconv.AppendInt(b, us/1000, 10)
	if frac := us % 1000; frac != 0 {
		b = appendFraction(b, uint64(frac), 3)
	}
	return b
}
