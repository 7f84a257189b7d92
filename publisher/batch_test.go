package publisher_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/embedded"
	"github.com/hubproject/hub/embedded/embeddedtest"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/publisher"
)

// setupWith is setup with server options (sync, jetstream limits).
func setupWith(t testing.TB, opts ...func(*embedded.Options)) (*nats.Conn, jetstream.Stream) {
	t.Helper()
	srv := embeddedtest.Start(t, opts...)
	nc := embeddedtest.ConnectTCP(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := hub.EnsureStream(context.Background(), js, hub.EventsStreamConfig(hub.DefaultEventsConfig()))
	if err != nil {
		t.Fatal(err)
	}
	return nc, st
}

func batchEvents(prefix string, n int) []publisher.Event {
	evs := make([]publisher.Event, n)
	for i := range evs {
		evs[i] = publisher.Event{Type: "order.created", ID: fmt.Sprintf("%s-%d", prefix, i), Data: []byte(fmt.Sprintf(`{"n":%d}`, i))}
	}
	return evs
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// stored returns the stream's messages by sequence, from 1.
func stored(t *testing.T, st jetstream.Stream) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := testCtx(t)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

// TestPublishBatchSplitsInOrder: 250 events with batches of 100 are three
// atomic batches (100, 100, 50), stored in order, each event's sequence
// reported.
func TestPublishBatchSplitsInOrder(t *testing.T) {
	nc, st := setup(t)
	p, err := publisher.New(nc, publisher.WithSource("shop"), publisher.WithMaxBatch(100))
	if err != nil {
		t.Fatal(err)
	}
	evs := batchEvents("o", 250)
	acks, err := p.PublishBatch(testCtx(t), evs)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range acks {
		if a.ID != evs[i].ID || a.Sequence != uint64(i+1) || a.Duplicate || a.Stream != hub.EventsStream {
			t.Fatalf("ack %d: %+v", i, a)
		}
	}
	msgs := stored(t, st)
	if len(msgs) != 250 {
		t.Fatalf("stored %d", len(msgs))
	}
	for i, m := range msgs {
		if id := m.Header.Get(jetstream.MsgIDHeader); id != evs[i].ID {
			t.Fatalf("seq %d holds %q, want %q", i+1, id, evs[i].ID)
		}
		ev, err := hub.DecodeEvent(m.Data, "", 0, time.Now())
		if err != nil || ev.Source != "shop" || ev.ID != evs[i].ID {
			t.Fatalf("seq %d: %s %v", i+1, m.Data, err)
		}
	}
	if sizes := batchSizes(t, msgs); fmt.Sprint(sizes) != "[100 100 50]" {
		t.Fatalf("batches of %v, want [100 100 50]", sizes)
	}
	// The caller's events are not modified (defaults go into copies).
	if evs[0].Source != "" {
		t.Fatalf("caller's event got source %q", evs[0].Source)
	}
}

// TestPublishBatchRepeatedIDInBatch: an id twice in one call is stored
// once; the copy gets its sequence and Duplicate. The batch stays atomic.
func TestPublishBatchRepeatedIDInBatch(t *testing.T) {
	nc, st := setup(t)
	p, _ := publisher.New(nc)
	evs := []publisher.Event{{Type: "a", ID: "x"}, {Type: "a", ID: "y"}, {Type: "a", ID: "x"}, {Type: "a", ID: "z"}}
	acks, err := p.PublishBatch(testCtx(t), evs)
	if err != nil {
		t.Fatal(err)
	}
	want := []publisher.Ack{
		{ID: "x", Stream: hub.EventsStream, Sequence: 1},
		{ID: "y", Stream: hub.EventsStream, Sequence: 2},
		{ID: "x", Stream: hub.EventsStream, Sequence: 1, Duplicate: true},
		{ID: "z", Stream: hub.EventsStream, Sequence: 3},
	}
	for i := range want {
		if acks[i] != want[i] {
			t.Fatalf("ack %d: %+v, want %+v", i, acks[i], want[i])
		}
	}
	msgs := stored(t, st)
	if len(msgs) != 3 || msgs[0].Header.Get("Nats-Batch-Id") == "" {
		t.Fatalf("stored %d, first headers %v", len(msgs), msgs[0].Header)
	}
}

// TestPublishBatchIDAlreadyStored: the server refuses an atomic batch with a
// stored id (10201, nothing stored); PublishBatch then sends that batch per
// message, so the stored id comes back Duplicate with its sequence and the
// others are stored in order.
func TestPublishBatchIDAlreadyStored(t *testing.T) {
	nc, st := setup(t)
	p, _ := publisher.New(nc)
	ctx := testCtx(t)
	if _, err := p.Publish(ctx, publisher.Event{Type: "a", ID: "b-1"}); err != nil {
		t.Fatal(err)
	}
	evs := []publisher.Event{{Type: "a", ID: "b-0"}, {Type: "a", ID: "b-1"}, {Type: "a", ID: "b-2"}, {Type: "a", ID: "b-0"}}
	acks, err := p.PublishBatch(ctx, evs)
	if err != nil {
		t.Fatal(err)
	}
	want := []publisher.Ack{
		{ID: "b-0", Stream: hub.EventsStream, Sequence: 2},
		{ID: "b-1", Stream: hub.EventsStream, Sequence: 1, Duplicate: true},
		{ID: "b-2", Stream: hub.EventsStream, Sequence: 3},
		{ID: "b-0", Stream: hub.EventsStream, Sequence: 2, Duplicate: true},
	}
	for i := range want {
		if acks[i] != want[i] {
			t.Fatalf("ack %d: %+v, want %+v", i, acks[i], want[i])
		}
	}
	msgs := stored(t, st)
	if len(msgs) != 3 {
		t.Fatalf("stored %d, want 3", len(msgs))
	}
	// b-0 and b-2 came by the per-message path (the batch was refused).
	if msgs[1].Header.Get("Nats-Batch-Id") != "" {
		t.Fatalf("seq 2 has batch headers: %v", msgs[1].Header)
	}
	// The whole batch again: every event is a duplicate of its first copy.
	again, err := p.PublishBatch(ctx, evs[:3])
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range again {
		if !a.Duplicate || a.Sequence != want[i].Sequence {
			t.Fatalf("retry ack %d: %+v", i, a)
		}
	}
	if n := len(stored(t, st)); n != 3 {
		t.Fatalf("stored %d after the retry, want 3", n)
	}
}

// TestPublishBatchInvalidEvent: one bad event rejects the batch before
// anything is sent; the error names each bad event's index and field.
func TestPublishBatchInvalidEvent(t *testing.T) {
	nc, st := setup(t)
	p, _ := publisher.New(nc, publisher.WithMaxEventSize(300))
	evs := []publisher.Event{
		{Type: "ok.one"},
		{Type: "order..created"},
		{Type: "ok.two"},
		{Type: "ok.three", Data: []byte(`"` + strings.Repeat("x", 400) + `"`)},
	}
	acks, err := p.PublishBatch(testCtx(t), evs)
	var ve *publisher.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want ValidationError, got %v", err)
	}
	fields := map[string]bool{}
	for _, fe := range ve.Errors {
		fields[fe.Field] = true
	}
	if !fields["[1].type"] || !fields["[3]"] || len(fields) != 2 {
		t.Fatalf("errors %+v, want [1].type and [3]", ve.Errors)
	}
	if !strings.Contains(err.Error(), "[3]: event is") {
		t.Fatalf("error %q does not say why [3] failed", err)
	}
	for _, a := range acks {
		if a.Sequence != 0 {
			t.Fatalf("ack %+v for a rejected batch", a)
		}
	}
	if n := len(stored(t, st)); n != 0 {
		t.Fatalf("stored %d events of a rejected batch", n)
	}
}

// TestPublishBatchServerLimit: a server whose max_batch_size is below ours
// refuses the batch (10199, "too large: 40"); PublishBatch learns the limit
// and resends in batches of 40.
func TestPublishBatchServerLimit(t *testing.T) {
	nc, st := setupWith(t, func(o *embedded.Options) {
		o.Configure = func(so *server.Options) error { so.JetStreamLimits.MaxBatchSize = 40; return nil }
	})
	p, _ := publisher.New(nc)
	evs := batchEvents("l", 100)
	acks, err := p.PublishBatch(testCtx(t), evs)
	if err != nil {
		t.Fatal(err)
	}
	checkInOrder(t, acks)
	if sizes := batchSizes(t, stored(t, st)); fmt.Sprint(sizes) != "[40 40 20]" {
		t.Fatalf("batches of %v, want [40 40 20]", sizes)
	}
}

// TestPublishBatchAtomicDisabled: on a stream without allow_atomic the
// server refuses the batch (10174); the events are stored per message.
// EnsureStream with the hub's config then turns atomic publish on in place.
func TestPublishBatchAtomicDisabled(t *testing.T) {
	nc, st := setup(t)
	ctx := testCtx(t)
	js, _ := jetstream.New(nc)
	cfg := hub.EventsStreamConfig(hub.DefaultEventsConfig())
	cfg.AllowAtomicPublish = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	p, _ := publisher.New(nc)
	acks, err := p.PublishBatch(ctx, batchEvents("d", 5))
	if err != nil {
		t.Fatal(err)
	}
	checkInOrder(t, acks)
	for _, m := range stored(t, st) {
		if m.Header.Get("Nats-Batch-Id") != "" {
			t.Fatalf("seq %d has batch headers on a stream without allow_atomic", m.Sequence)
		}
	}
	// The hub's EnsureStream on the existing stream enables atomic publish.
	st2, err := hub.EnsureStream(ctx, js, hub.EventsStreamConfig(hub.DefaultEventsConfig()))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st2.Info(ctx); err != nil || !info.Config.AllowAtomicPublish || info.State.Msgs != 5 {
		t.Fatalf("after EnsureStream: %+v %v", info, err)
	}
	// A new publisher (the old one waits 30 s before trying again) batches.
	p2, _ := publisher.New(nc)
	if _, err := p2.PublishBatch(ctx, batchEvents("e", 3)); err != nil {
		t.Fatal(err)
	}
	msgs := stored(t, st)
	if len(msgs) != 8 || msgs[7].Header.Get("Nats-Batch-Id") == "" {
		t.Fatalf("stored %d; last headers %v", len(msgs), msgs[len(msgs)-1].Header)
	}
}

func TestPublishBatchUnavailable(t *testing.T) {
	p, ctx := withoutStream(t)
	acks, err := p.PublishBatch(ctx, batchEvents("u", 3))
	if !errors.Is(err, publisher.ErrUnavailable) || !strings.Contains(err.Error(), "0 of 3 events stored") {
		t.Fatalf("want ErrUnavailable, 0 of 3 stored; got %v", err)
	}
	if len(acks) != 3 || acks[0].ID != "u-0" || acks[0].Sequence != 0 {
		t.Fatalf("acks %+v", acks)
	}
}

// TestPublishBatchSyncAlways: on a server that fsyncs every write, 1500
// events go as the default batches of 1000 and 500.
func TestPublishBatchSyncAlways(t *testing.T) {
	nc, st := setupWith(t, func(o *embedded.Options) { o.Sync = embedded.SyncAlways })
	p, _ := publisher.New(nc)
	acks, err := p.PublishBatch(testCtx(t), batchEvents("s", 1500))
	if err != nil {
		t.Fatal(err)
	}
	checkInOrder(t, acks)
	if sizes := batchSizes(t, stored(t, st)); fmt.Sprint(sizes) != "[1000 500]" {
		t.Fatalf("batches of %v, want [1000 500]", sizes)
	}
}

// batchSizes counts consecutive messages per Nats-Batch-Id; every message
// must have one.
func batchSizes(t *testing.T, msgs []*jetstream.RawStreamMsg) []int {
	t.Helper()
	var sizes []int
	last := ""
	for _, m := range msgs {
		b := m.Header.Get("Nats-Batch-Id")
		if b == "" {
			t.Fatalf("seq %d not stored by an atomic batch", m.Sequence)
		}
		if b != last {
			sizes = append(sizes, 0)
			last = b
		}
		sizes[len(sizes)-1]++
	}
	return sizes
}

// checkInOrder fails unless acks are sequences 1, 2, ... none duplicate.
func checkInOrder(t *testing.T, acks []publisher.Ack) {
	t.Helper()
	for i, a := range acks {
		if a.Sequence != uint64(i+1) || a.Duplicate {
			t.Fatalf("ack %d: %+v", i, a)
		}
	}
}
