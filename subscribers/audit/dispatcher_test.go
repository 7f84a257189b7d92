package audit_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/embedded/embeddedtest"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
	"github.com/hubproject/hub/subscribers/audit"
)

// The hub's wiring: a dispatcher hands the trail its events, so there is
// no hub-audit consumer (one left by an earlier hub is removed); every
// event, wanted by a subscription or not, gets one event record before
// its attempt records; and the dispatcher's acks wait for the records.
func TestEventsFromDispatcher(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, time.Minute)
	if _, err := e.js.CreateOrUpdateConsumer(ctx, hub.EventsStream, audit.ConsumerConfig()); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	a, err := audit.New(cfg, e.js, audit.WithDispatcherEvents())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeAuditor(t, a) })
	if _, err := e.js.Consumer(ctx, hub.EventsStream, audit.ConsumerName); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("hub-audit after Start: %v, want it removed", err)
	}

	// The trail acknowledges nothing itself here: an ack means the
	// dispatcher's settle step ran, which must come after the records.
	var recordsAtAck []uint64
	ackCh := make(chan uint64, 16)
	settle := func(done func()) {
		a.Settle(func() {
			ackCh <- a.Stats().Records
			done()
		})
	}
	sink := &idSink{}
	d := dispatch.New("noop", sink, e.js, hub.DefaultDeliveryConfig(),
		dispatch.WithObserver(a.Observe), dispatch.WithSettle(settle), dispatch.WithEventRecorder(a.RecordEvent),
		dispatch.WithSettleConn(embeddedtest.Connect(t, e.srv)))
	d.SetRoutes([]dispatch.Route{
		{Sub: &hub.Subscription{ID: "s1", Channel: "noop", Events: []string{"order.>"}}},
		{Sub: &hub.Subscription{ID: "s2", Channel: "noop", Events: []string{"order.>"}}},
	})
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = d.Stop(sctx)
	})
	e.publish(t, "ord-1", "order.created", `{"n":1}`)
	e.publish(t, "usr-1", "user.deleted", `{"n":2}`) // no subscription wants it
	e.publish(t, "ord-2", "order.paid", `{"n":3}`)
	for len(recordsAtAck) < 3 {
		select {
		case n := <-ackCh:
			recordsAtAck = append(recordsAtAck, n)
		case <-ctx.Done():
			t.Fatalf("%d of 3 events acknowledged", len(recordsAtAck))
		}
	}
	// Each ack came after at least its own event's records were written:
	// the first one after at least one record.
	if recordsAtAck[0] == 0 {
		t.Fatalf("an event was acknowledged before any record was written")
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	events := map[string]int{}
	delivered := map[string]int{}
	seen := map[string]bool{}
	for _, line := range readLines(t, cfg.File) {
		r := decode(t, line)
		switch r.Kind {
		case audit.KindEvent:
			events[r.EventID]++
			seen[r.EventID] = true
		case dispatch.KindDelivered:
			if !seen[r.EventID] {
				t.Errorf("attempt of %s recorded before its event", r.EventID)
			}
			delivered[r.EventID]++
			// The standard delivery id is left out of the line and derived
			// again; it must be the id the channel was given.
			if r.DeliveryID != "" {
				t.Errorf("record holds its derived delivery id: %s", line)
			}
			if id := r.ResolvedDeliveryID(); !sink.has(id) {
				t.Errorf("delivery id %s of %s/%s is not one the channel got", id, r.EventID, r.Subscription)
			}
		}
	}
	tr, err := audit.Trace(ctx, e.js, "ord-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range tr.Timeline {
		if r.Kind == dispatch.KindDelivered && !sink.has(r.DeliveryID) {
			t.Errorf("trace: delivery id %q is not one the channel got", r.DeliveryID)
		}
	}
	for _, id := range []string{"ord-1", "usr-1", "ord-2"} {
		if events[id] != 1 {
			t.Errorf("event %s: %d event records, want 1", id, events[id])
		}
	}
	if delivered["ord-1"] != 2 || delivered["ord-2"] != 2 || delivered["usr-1"] != 0 {
		t.Errorf("delivered records %v, want 2 for each order event", delivered)
	}
	if got := sink.count(); got != 4 {
		t.Errorf("%d deliveries, want 4", got)
	}
	// The acks went out on the settle connection, and they count.
	for {
		c, err := e.js.Consumer(ctx, hub.EventsStream, dispatch.EventsConsumer("noop"))
		if err != nil {
			t.Fatal(err)
		}
		if info := c.CachedInfo(); info.AckFloor.Stream == 3 && info.NumAckPending == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("events not acknowledged: %+v", c.CachedInfo())
		case <-time.After(10 * time.Millisecond):
		}
	}

	// A DELIVERIES message whose delivery id is not the derived one (not
	// one the hub writes, but one anything can publish) keeps its id in
	// the record: nothing could derive it again.
	rec := dispatch.Record{DeliveryID: "dlv_foreign", EventID: "ord-1", EventType: "order.created", Channel: "noop",
		Subscription: "s1", Event: []byte(`{"specversion":"1.0","id":"ord-1","source":"test","type":"order.created","data":{"n":1}}`)}
	m, err := dispatch.NewDeliveryMsg(rec, dispatch.Retry{Attempts: 1, Wait: -1}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	before := a.Stats().Records // everything before it is written (flushed above)
	if _, err := e.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	// Its record is queued just after the send returns; once the writer
	// has taken it, Flush waits until it is written.
	for a.Stats().Records == before {
		select {
		case <-ctx.Done():
			t.Fatal("the foreign delivery was not recorded")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(readLines(t, cfg.File), func(line []byte) bool {
		r := decode(t, line)
		return r.Kind == dispatch.KindDelivered && r.DeliveryID == "dlv_foreign"
	}) {
		t.Fatal("no delivered record keeps the foreign delivery id")
	}
	if !sink.has("dlv_foreign") {
		t.Fatal("the channel was not given the foreign delivery id")
	}
}

// idSink is a channel that remembers the delivery ids it was given.
type idSink struct {
	mu  sync.Mutex
	ids []string
}

func (c *idSink) Send(_ context.Context, d *hub.Delivery) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids = append(c.ids, d.ID)
	return nil
}

func (c *idSink) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ids)
}

func (c *idSink) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.ids, id)
}

// Settle's step runs once the records before it are stored, and at once
// after Close.
func TestSettleAfterStored(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(t)
	a := e.start(t, cfg)
	a.Observe(dispatch.Outcome{Kind: dispatch.KindDelivered, At: time.Now(), Channel: "webhook", Subscription: "s1",
		EventID: "ord-1", EventType: "order.created", DeliveryID: hub.DeliveryID("ord-1", "s1", ""), Attempt: 1})
	done := make(chan uint64, 1)
	a.Settle(func() { done <- a.Stats().Records })
	select {
	case n := <-done:
		if n != 1 {
			t.Fatalf("settled with %d records written, want 1", n)
		}
	case <-ctxT(t, 30*time.Second).Done():
		t.Fatal("settle step never ran")
	}
	closeAuditor(t, a)
	ran := false
	a.Settle(func() { ran = true })
	if !ran {
		t.Fatal("a settle step after Close did not run at once")
	}
}
