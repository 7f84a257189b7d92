package publisher_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/publisher"
)

// The two benchmarks run against the same kind of embedded server over TCP,
// so BenchmarkPublish / BenchmarkRawJetStreamAsync is the publisher's cost.
// Both publish ~128-byte events with a Nats-Msg-Id.

var payload = []byte(`{"order":12345,"customer":"c-42","total":99.5,"items":3}`)

func BenchmarkPublish(b *testing.B) {
	nc, _ := setup(b)
	p, err := publisher.New(nc, publisher.WithSource("bench"))
	if err != nil {
		b.Fatal(err)
	}
	ts := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, err := p.PublishAsync(publisher.Event{Type: "order.created", ID: "b-" + strconv.Itoa(i), Time: ts, Data: payload})
		if err != nil {
			b.Fatal(err)
		}
	}
	flush(b, p.Flush)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkRawJetStreamAsync(b *testing.B) {
	nc, _ := setup(b)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	// The same envelope the publisher sends, encoded once.
	body := []byte(`{"specversion":"1.0","id":"b-0","source":"bench","type":"order.created","time":"2026-11-25T12:00:00Z","data":` + string(payload) + `}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m := &nats.Msg{Subject: "events.order.created", Data: body, Header: nats.Header{jetstream.MsgIDHeader: []string{"b-" + strconv.Itoa(i)}}}
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	flush(b, func(ctx context.Context) error {
		select {
		case <-js.PublishAsyncComplete():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func flush(b *testing.B, f func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f(ctx); err != nil {
		b.Fatal(err)
	}
}
