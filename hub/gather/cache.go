package gather

import (
	"container/list"
	"encoding/json"
	"sync"
	"time"
)

// cache holds one branch's successful replies by request bytes, at most
// size entries, each for ttl. It evicts the least recently used entry when
// full, and an expired entry when it is looked up.
type cache struct {
	ttl  time.Duration
	size int
	now  func() time.Time

	mu    sync.Mutex
	order *list.List // front = most recently used; values are *cacheEntry
	byKey map[string]*list.Element
}

type cacheEntry struct {
	key     string
	val     json.RawMessage
	expires time.Time
}

func newCache(ttl time.Duration, size int, now func() time.Time) *cache {
	return &cache{ttl: ttl, size: size, now: now, order: list.New(), byKey: make(map[string]*list.Element, min(size, 64))}
}

// get returns the value stored under key unless it has expired.
func (c *cache) get(key []byte) (json.RawMessage, bool) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[string(key)] // no allocation for the lookup
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.order.Remove(el)
		delete(c.byKey, e.key)
		return nil, false
	}
	c.order.MoveToFront(el)
	return e.val, true
}

// put stores val under key for the cache's ttl.
func (c *cache) put(key []byte, val json.RawMessage) {
	expires := c.now().Add(c.ttl)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[string(key)]; ok {
		e := el.Value.(*cacheEntry)
		e.val, e.expires = val, expires
		c.order.MoveToFront(el)
		return
	}
	for c.order.Len() >= c.size {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.byKey, oldest.Value.(*cacheEntry).key)
	}
	k := string(key)
	c.byKey[k] = c.order.PushFront(&cacheEntry{key: k, val: val, expires: expires})
}

// len reports the number of entries, expired or not.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
