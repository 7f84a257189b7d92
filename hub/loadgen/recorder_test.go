package loadgen

import (
	"testing"
	"time"
)

func TestRecorderCountsOncePerEventAndSubscription(t *testing.T) {
	r := NewRecorder(100)
	c := r.Channel("webhook", 2)
	if r.Channel("webhook", 5) != c {
		t.Fatal("Channel made a second stats for one name")
	}
	sent := time.Now()
	for _, sub := range []int{0, 1, 0} { // the third is a duplicate
		c.Record(sub, []byte(r.EventID(7)), sent, sent.Add(time.Millisecond))
	}
	c.Record(0, []byte("other-7"), sent, sent)       // another run
	c.Record(5, []byte(r.EventID(1)), sent, sent)    // no such subscription
	c.Record(0, []byte(r.EventID(1000)), sent, sent) // past maxEvents: counted, not deduplicated
	c.Record(0, []byte(r.EventID(1000)), sent, sent) // so this counts again
	c.Record(0, []byte(r.Run+"-12x"), sent, sent)    // not a number
	if c.Delivered() != 4 || r.Delivered() != 4 || c.Duplicates() != 1 || c.Foreign() != 3 || c.Received() != 8 {
		t.Fatalf("delivered %d/%d duplicates %d foreign %d received %d", c.Delivered(), r.Delivered(), c.Duplicates(), c.Foreign(), c.Received())
	}
	if c.Latency.Count() != 4 || c.Latency.Max() != time.Millisecond {
		t.Fatalf("latency %+v", c.Latency.Summary())
	}
	if r.Last().IsZero() || r.First().IsZero() {
		t.Fatal("no delivery time")
	}
	select {
	case <-r.Notify():
	default:
		t.Fatal("no notification")
	}
}

func TestEventsAndParsers(t *testing.T) {
	r := NewRecorder(0)
	for _, size := range []int{0, 128, 1024, 16384} {
		e := NewEvents(r, "", size)
		sent := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)
		ev := e.Event(42, sent)
		b, err := ev.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if err := ev.Validate(0); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if size >= 256 && (len(b) < size-16 || len(b) > size+16) {
			t.Errorf("size %d: encoded %d bytes", size, len(b))
		}
		id, at, ok := ParseEnvelope(b)
		if !ok || string(id) != r.EventID(42) || !at.Equal(sent) {
			t.Errorf("size %d: parsed %q %v %v from %s", size, id, at, ok, b[:min(len(b), 160)])
		}
	}
	id, at, ok := parseIDNanos(" abc-12 1700000000123456789\r\n")
	if !ok || string(id) != "abc-12" || at.UnixNano() != 1700000000123456789 {
		t.Errorf("parseIDNanos: %q %v %v", id, at, ok)
	}
	for _, bad := range []string{"", "abc", "abc x"} {
		if _, _, ok := parseIDNanos(bad); ok {
			t.Errorf("parseIDNanos(%q) ok", bad)
		}
	}
	if _, _, ok := ParseEnvelope([]byte(`{"id":"x"}`)); ok {
		t.Error("envelope without time parsed")
	}
}

func TestProcSelf(t *testing.T) {
	u, err := Self().Read()
	if err != nil {
		t.Fatal(err)
	}
	if u.RSS <= 0 || u.Peak < u.RSS {
		t.Fatalf("rss %d peak %d", u.RSS, u.Peak)
	}
	if _, err := PID(-5).Read(); err == nil {
		t.Fatal("no error for a missing process")
	}
}
