package dispatch_test

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/embedded/embeddedtest"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
)

// The fan-out benchmarks pre-load b.N events into EVENTS, then time how
// long it takes until every event has been handed to 4 subscribers and
// acknowledged. Raw JetStream does it with 4 durable consumers; the hub
// with its dispatcher and 4 subscriptions on no-op channels. Same server,
// same storage, explicit acks on both sides.

type noop struct{ n atomic.Int64 }

func (c *noop) Send(context.Context, *hub.Delivery) error { c.n.Add(1); return nil }

func setupEvents(b *testing.B) (jetstream.JetStream, *nats.Conn) {
	b.Helper()
	srv := embeddedtest.Start(b)
	nc := embeddedtest.Connect(b, srv)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	ec := hub.DefaultEventsConfig()
	ctx := context.Background()
	for _, sc := range []jetstream.StreamConfig{hub.EventsStreamConfig(ec), hub.DeliveriesStreamConfig(ec), hub.DLQStreamConfig(ec, hub.DefaultDeliveryConfig())} {
		if _, err := hub.EnsureStream(ctx, js, sc); err != nil {
			b.Fatal(err)
		}
	}
	return js, nc
}

func preload(b *testing.B, js jetstream.JetStream, n int) {
	b.Helper()
	for i := 0; i < n; i++ {
		id := "e-" + strconv.Itoa(i)
		body := []byte(`{"specversion":"1.0","id":"` + id + `","source":"bench","type":"order.created","time":"2026-11-25T12:00:00Z","data":{"order":12345,"total":99.5}}`)
		m := &nats.Msg{Subject: "events.order.created", Data: body, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("preload did not finish")
	}
}

func waitCount(b *testing.B, get func() int64, want int64) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for get() < want {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d deliveries", get(), want)
		}
		<-time.After(time.Millisecond)
	}
}

func BenchmarkRawJetStreamFanout4(b *testing.B) {
	js, _ := setupEvents(b)
	preload(b, js, b.N)
	ctx := context.Background()
	var acked atomic.Int64
	var iters []jetstream.MessagesContext
	b.ResetTimer()
	for i := 0; i < 4; i++ {
		c, err := js.CreateOrUpdateConsumer(ctx, hub.EventsStream, jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("raw-%d", i), AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy, MaxAckPending: 1024,
		})
		if err != nil {
			b.Fatal(err)
		}
		it, err := c.Messages(jetstream.PullMaxMessages(64))
		if err != nil {
			b.Fatal(err)
		}
		iters = append(iters, it)
		go func() {
			for {
				m, err := it.Next()
				if err != nil {
					return
				}
				_ = m.Ack()
				acked.Add(1)
			}
		}()
	}
	waitCount(b, acked.Load, int64(4*b.N))
	b.StopTimer()
	for _, it := range iters {
		it.Stop()
	}
	b.ReportMetric(float64(4*b.N)/b.Elapsed().Seconds(), "deliveries/s")
}

func benchHub(b *testing.B, channels []string) {
	js, _ := setupEvents(b)
	preload(b, js, b.N)
	ctx := context.Background()
	sinks := make([]*noop, len(channels))
	var ds []*dispatch.Dispatcher
	cfg := hub.DefaultDeliveryConfig()
	cache := dispatch.NewEventCache(4096)
	// Pre-create the consumers at the start of the stream (a new consumer
	// would otherwise start after the preloaded events).
	for _, name := range channels {
		if _, err := js.CreateOrUpdateConsumer(ctx, hub.EventsStream, jetstream.ConsumerConfig{
			Durable: dispatch.EventsConsumer(name), FilterSubject: "events.>", AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i, name := range channels {
		sinks[i] = &noop{}
		cfg.Concurrency[name] = 64
		d := dispatch.New(name, sinks[i], js, cfg, dispatch.WithEventCache(cache))
		var routes []dispatch.Route
		for s := 0; s < 4/len(channels); s++ {
			routes = append(routes, dispatch.Route{Sub: &hub.Subscription{ID: fmt.Sprintf("%s-%d", name, s), Channel: name, Events: []string{"order.>"}}})
		}
		d.SetRoutes(routes)
		if err := d.Start(ctx); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, d)
	}
	total := func() int64 {
		var n int64
		for _, s := range sinks {
			n += s.n.Load()
		}
		return n
	}
	waitCount(b, total, int64(4*b.N))
	b.StopTimer()
	for _, d := range ds {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = d.Stop(sctx)
		cancel()
	}
	b.ReportMetric(float64(4*b.N)/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkHubFanout4 is 4 subscriptions on one no-op channel.
func BenchmarkHubFanout4(b *testing.B) { benchHub(b, []string{"noop"}) }

// BenchmarkHubFanout4Channels is 4 subscriptions on 4 channels (4 consumers).
func BenchmarkHubFanout4Channels(b *testing.B) { benchHub(b, []string{"a", "b", "c", "d"}) }
