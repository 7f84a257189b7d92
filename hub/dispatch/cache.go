package dispatch

import (
	"sync"

	"github.com/hubproject/hub/hub"
)

// EventCache shares decoded events between the channels' dispatchers in
// one process: each reads every event from EVENTS, and decoding the JSON
// envelope is most of the cost of a first hop. Entries are keyed by stream
// sequence in a fixed ring, so the cache is bounded and needs no eviction;
// dispatchers move through the stream at about the same pace, so most look
// ups hit. Cached events are shared: nothing may modify them.
type EventCache struct {
	mu      sync.Mutex
	entries []cacheEntry
}

type cacheEntry struct {
	seq uint64
	ev  *hub.Event
	err error
}

// NewEventCache returns a cache holding the last size events (by sequence).
func NewEventCache(size int) *EventCache {
	return &EventCache{entries: make([]cacheEntry, max(size, 1))}
}

func (c *EventCache) get(seq uint64) (*hub.Event, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[seq%uint64(len(c.entries))]
	if e.seq != seq || seq == 0 {
		return nil, nil, false
	}
	return e.ev, e.err, true
}

func (c *EventCache) put(seq uint64, ev *hub.Event, err error) {
	c.mu.Lock()
	c.entries[seq%uint64(len(c.entries))] = cacheEntry{seq: seq, ev: ev, err: err}
	c.mu.Unlock()
}
