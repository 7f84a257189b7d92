package publisher_test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/publisher"
)

func setup(t testing.TB) (*nats.Conn, jetstream.Stream) {
	t.Helper()
	return setupWith(t)
}

func TestPublishAndDuplicate(t *testing.T) {
	nc, st := setup(t)
	p, err := publisher.New(nc, publisher.WithSource("shop"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ev := publisher.Event{Type: "order.created", ID: "o-1", Data: []byte(`{"id":1}`)}
	a1, err := p.Publish(ctx, ev)
	if err != nil || a1.Duplicate || a1.Sequence != 1 || a1.ID != "o-1" {
		t.Fatalf("first: %+v %v", a1, err)
	}
	a2, err := p.Publish(ctx, ev)
	if err != nil || !a2.Duplicate || a2.Sequence != 1 {
		t.Fatalf("second: %+v %v", a2, err)
	}
	info, _ := st.Info(ctx)
	if info.State.Msgs != 1 {
		t.Fatalf("stored %d", info.State.Msgs)
	}
	m, _ := st.GetMsg(ctx, 1)
	got, err := hub.DecodeEvent(m.Data, "", 0, time.Now())
	if err != nil || got.Source != "shop" || m.Subject != "events.order.created" {
		t.Fatalf("stored %s %v", m.Data, err)
	}
}

func TestPublishGeneratesSortableIDs(t *testing.T) {
	nc, _ := setup(t)
	p, _ := publisher.New(nc)
	var prev string
	for i := 0; i < 5; i++ {
		a, err := p.Publish(context.Background(), publisher.Event{Type: "a"})
		if err != nil {
			t.Fatal(err)
		}
		if len(a.ID) != 26 || a.ID <= prev {
			t.Fatalf("id %q after %q", a.ID, prev)
		}
		prev = a.ID
	}
}

func TestPublishRejectsInvalid(t *testing.T) {
	nc, st := setup(t)
	p, _ := publisher.New(nc, publisher.WithMaxEventSize(200))
	ctx := context.Background()
	for _, ev := range []publisher.Event{
		{Type: "order..created"},
		{Type: "a", ID: strings.Repeat("x", 129)},
		{Type: "a", Data: []byte(`"` + strings.Repeat("x", 300) + `"`)},
		{Type: "a", Data: []byte(`{bad`)},
	} {
		_, err := p.Publish(ctx, ev)
		var ve *publisher.ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("%+v: want ValidationError, got %v", ev, err)
		}
	}
	info, _ := st.Info(ctx)
	if info.State.Msgs != 0 {
		t.Fatalf("stored %d invalid events", info.State.Msgs)
	}
}

func TestPublishAsync(t *testing.T) {
	nc, st := setup(t)
	p, _ := publisher.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var futs []*publisher.Future
	for i := 0; i < 500; i++ {
		f, err := p.PublishAsync(publisher.Event{Type: "bulk.item", ID: "id-" + string(rune('a'+i%26)) + "-" + itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		futs = append(futs, f)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, f := range futs {
		if a, err := f.Wait(ctx); err != nil || a.Duplicate {
			t.Fatalf("%s: %+v %v", f.ID(), a, err)
		}
	}
	// The same ids again are all duplicates.
	f, _ := p.PublishAsync(publisher.Event{Type: "bulk.item", ID: futs[7].ID()})
	if a, err := f.Wait(ctx); err != nil || !a.Duplicate {
		t.Fatalf("re-publish: %+v %v", a, err)
	}
	info, _ := st.Info(ctx)
	if info.State.Msgs != 500 {
		t.Fatalf("stored %d", info.State.Msgs)
	}
}

// withoutStream returns a publisher to a server whose EVENTS stream was
// deleted, and a context for one call.
func withoutStream(t *testing.T) (*publisher.Publisher, context.Context) {
	t.Helper()
	nc, _ := setup(t)
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(context.Background(), hub.EventsStream); err != nil {
		t.Fatal(err)
	}
	p, _ := publisher.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return p, ctx
}

func TestUnavailable(t *testing.T) {
	p, ctx := withoutStream(t)
	if _, err := p.Publish(ctx, publisher.Event{Type: "a"}); !errors.Is(err, publisher.ErrUnavailable) {
		t.Fatalf("want ErrUnavailable, got %v", err)
	}
}

// TestNoServerDependency keeps the client library small: an app importing
// publisher must not pull in nats-server.
func TestNoServerDependency(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Skipf("go list unavailable: %v %s", err, out)
	}
	if strings.Contains(string(out), "nats-server") {
		t.Fatal("publisher depends on nats-server")
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{digits[i%10]}, b...)
	}
	return string(b)
}
