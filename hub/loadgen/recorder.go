package loadgen

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Recorder counts what the sinks receive: per channel, every delivery of
// an event of this run, once per (event, subscription) (repeats are
// counted as duplicates), with the publish→received latency. Sinks of
// every channel share one Recorder; it is safe for concurrent use.
type Recorder struct {
	// Run prefixes every event id of this run ("<run>-<n>"), so events of
	// an earlier run, or another publisher, are told apart.
	Run string

	maxEvents int
	mu        sync.Mutex
	channels  map[string]*ChannelStats
	all       Histogram
	unique    atomic.Int64
	first     atomic.Int64 // unix ns of the first delivery
	last      atomic.Int64 // unix ns of the latest delivery
	notify    chan struct{}
}

// ChannelStats is one channel's share of a Recorder.
type ChannelStats struct {
	Name string
	// Subscriptions is how many subscriptions of this channel the sinks serve.
	Subscriptions int
	// Latency is publish→received of first receipts.
	Latency    Histogram
	received   atomic.Int64
	unique     atomic.Int64
	duplicates atomic.Int64
	foreign    atomic.Int64
	last       atomic.Int64
	seen       [][]atomic.Pointer[chunk] // [subscription][event/chunkBits]
	r          *Recorder
}

const chunkBits = 1 << 16

type chunk [chunkBits / 64]atomic.Uint64

// NewRecorder returns a Recorder with a new random run id. maxEvents bounds
// the event numbers tracked for duplicates (0: 16M); later events are
// counted without the duplicate check.
func NewRecorder(maxEvents int) *Recorder {
	if maxEvents <= 0 {
		maxEvents = 1 << 24
	}
	var b [5]byte
	_, _ = rand.Read(b[:])
	run := strings.ToLower(base32.StdEncoding.EncodeToString(b[:]))
	return &Recorder{Run: run, maxEvents: maxEvents, channels: map[string]*ChannelStats{}, notify: make(chan struct{}, 1)}
}

// Channel returns the stats of channel name, creating them for subs
// subscriptions (numbered 0..subs-1) on first use.
func (r *Recorder) Channel(name string, subs int) *ChannelStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.channels[name]; ok {
		return c
	}
	c := &ChannelStats{Name: name, Subscriptions: subs, r: r, seen: make([][]atomic.Pointer[chunk], subs)}
	for i := range c.seen {
		c.seen[i] = make([]atomic.Pointer[chunk], (r.maxEvents+chunkBits-1)/chunkBits)
	}
	r.channels[name] = c
	return c
}

// Channels returns every channel's stats.
func (r *Recorder) Channels() []*ChannelStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*ChannelStats, 0, len(r.channels))
	for _, c := range r.channels {
		out = append(out, c)
	}
	return out
}

// Delivered is the number of first receipts over all channels.
func (r *Recorder) Delivered() int64 { return r.unique.Load() }

// Latency is publish→received over all channels.
func (r *Recorder) Latency() *Histogram { return &r.all }

// Last is when the latest delivery arrived (zero before any).
func (r *Recorder) Last() time.Time { return unixTime(r.last.Load()) }

// First is when the first delivery arrived (zero before any).
func (r *Recorder) First() time.Time { return unixTime(r.first.Load()) }

// Notify is signalled (without blocking) after deliveries arrive.
func (r *Recorder) Notify() <-chan struct{} { return r.notify }

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// EventID is the id of event n of this run.
func (r *Recorder) EventID(n int) string { return r.Run + "-" + strconv.Itoa(n) }

// eventNumber parses "<run>-<n>"; ok is false for an event of another run.
func (r *Recorder) eventNumber(id []byte) (int, bool) {
	if len(id) <= len(r.Run)+1 || string(id[:len(r.Run)]) != r.Run || id[len(r.Run)] != '-' {
		return 0, false
	}
	n := 0
	for _, c := range id[len(r.Run)+1:] {
		if c < '0' || c > '9' || n > 1<<40 {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// Record counts one receipt of event id by subscription sub, published at
// sent and received at now.
func (c *ChannelStats) Record(sub int, id []byte, sent, now time.Time) {
	c.received.Add(1)
	n, ok := c.r.eventNumber(id)
	if !ok || sub < 0 || sub >= len(c.seen) {
		c.foreign.Add(1)
		return
	}
	if n < c.r.maxEvents {
		chunks := c.seen[sub]
		p := chunks[n/chunkBits].Load()
		if p == nil {
			c.r.mu.Lock()
			if p = chunks[n/chunkBits].Load(); p == nil {
				p = new(chunk)
				chunks[n/chunkBits].Store(p)
			}
			c.r.mu.Unlock()
		}
		bit := uint64(1) << (n % 64)
		w := &p[(n%chunkBits)/64]
		if w.Or(bit)&bit != 0 {
			c.duplicates.Add(1)
			return
		}
	}
	lat := now.Sub(sent)
	c.Latency.Record(lat)
	c.r.all.Record(lat)
	c.unique.Add(1)
	c.r.unique.Add(1)
	ns := now.UnixNano()
	c.last.Store(ns)
	c.r.last.Store(ns)
	c.r.first.CompareAndSwap(0, ns)
	select {
	case c.r.notify <- struct{}{}:
	default:
	}
}

// Delivered is the number of first receipts.
func (c *ChannelStats) Delivered() int64 { return c.unique.Load() }

// Received counts every receipt, duplicates and foreign events included.
func (c *ChannelStats) Received() int64 { return c.received.Load() }

// Duplicates counts repeated receipts of one (event, subscription).
func (c *ChannelStats) Duplicates() int64 { return c.duplicates.Load() }

// Foreign counts receipts of events that are not this run's.
func (c *ChannelStats) Foreign() int64 { return c.foreign.Load() }

// Last is when the channel's latest delivery arrived.
func (c *ChannelStats) Last() time.Time { return unixTime(c.last.Load()) }

// Fields of a CloudEvent as the hub encodes it (hub.Event.MarshalJSON):
// id and time come before source data, so the first match is the attribute.
var (
	idKey   = []byte(`"id":"`)
	timeKey = []byte(`"time":"`)
)

// ParseEnvelope finds the id and time of a CloudEvent as the hub encodes
// it (hub.Event.MarshalJSON) without decoding it.
func ParseEnvelope(b []byte) (id []byte, t time.Time, ok bool) {
	id, ok = stringField(b, idKey)
	if !ok {
		return nil, time.Time{}, false
	}
	ts, ok := stringField(b, timeKey)
	if !ok {
		return id, time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	return id, t, err == nil
}

func stringField(b, key []byte) ([]byte, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return nil, false
	}
	rest := b[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil, false
	}
	return rest[:j], true
}

// parseIDNanos reads "<id> <unix nanoseconds>", the text the email and SMS
// subscriptions render (see Subscriptions).
func parseIDNanos(s string) (id []byte, t time.Time, ok bool) {
	s = strings.TrimSpace(s)
	i := strings.LastIndexByte(s, ' ')
	if i < 0 {
		return nil, time.Time{}, false
	}
	ns, err := strconv.ParseInt(s[i+1:], 10, 64)
	if err != nil {
		return nil, time.Time{}, false
	}
	return []byte(strings.TrimSpace(s[:i])), time.Unix(0, ns), true
}
