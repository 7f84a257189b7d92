package gather

import (
	"encoding/json"
	"testing"
	"time"
)

func TestCacheBoundedLRUAndTTL(t *testing.T) {
	now := time.Unix(0, 0)
	c := newCache(time.Minute, 2, func() time.Time { return now })
	c.put([]byte("a"), json.RawMessage(`1`))
	c.put([]byte("b"), json.RawMessage(`2`))
	if _, ok := c.get([]byte("a")); !ok { // a is now the most recent
		t.Fatal("a missing")
	}
	c.put([]byte("c"), json.RawMessage(`3`)) // evicts b, the least recently used
	if _, ok := c.get([]byte("b")); ok {
		t.Fatal("b should have been evicted")
	}
	if v, ok := c.get([]byte("a")); !ok || string(v) != "1" {
		t.Fatalf("a = %s %v", v, ok)
	}
	if c.len() != 2 {
		t.Fatalf("len = %d", c.len())
	}
	c.put([]byte("a"), json.RawMessage(`10`)) // update in place
	if v, _ := c.get([]byte("a")); string(v) != "10" || c.len() != 2 {
		t.Fatalf("a = %s len %d", v, c.len())
	}
	now = now.Add(time.Minute)
	if _, ok := c.get([]byte("a")); ok {
		t.Fatal("a should have expired")
	}
	if c.len() != 1 {
		t.Fatalf("expired entry not removed: len %d", c.len())
	}
}
