package audit_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/embedded/embeddedtest"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/audit"
	"github.com/hubproject/hub/subscribers/webhook"
)

// BenchmarkObserve measures records/s through Observe into the file and
// the AUDIT stream, from 32 goroutines per core (the dispatcher calls
// Observe from its send goroutines), until every record is stored.
func BenchmarkObserve(b *testing.B) {
	for _, wait := range []bool{false, true} {
		b.Run(fmt.Sprintf("wait_stored=%v", wait), func(b *testing.B) {
			e := newEnv(b)
			cfg := testConfig(b)
			cfg.WaitStored = wait
			a := e.start(b, cfg)
			var n atomic.Int64
			err := errors.New("503 Service Unavailable")
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					id := "ev-" + strconv.FormatInt(i/4, 10)
					a.Observe(dispatch.Outcome{Kind: dispatch.KindFailed, At: time.Now(), Channel: "webhook", Subscription: "crm",
						EventID: id, EventType: "order.created", DeliveryID: hub.DeliveryID(id, "crm", ""), Attempt: 1,
						Duration: time.Millisecond, Err: err, RetryIn: 5 * time.Second})
				}
			})
			if err := a.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			if st := a.Stats(); st.Dropped != 0 || st.StoreErrors != 0 {
				b.Fatalf("stats %+v", st)
			}
		})
	}
}

// BenchmarkFanout4 is the dispatcher benchmark of hub/dispatch (b.N
// events pre-loaded, 4 subscriptions on one no-op channel, concurrency
// 64) with the audit trail off and on, wired as the hub wires it: the
// dispatcher records the events (WithEventRecorder), and the trail has a
// connection of its own for its AUDIT publishes and the acks it releases
// (WithSettleConn). With it on, every event also gets an event record and
// 4 attempt records, and the time runs until all of them are stored.
// audit=one_conn puts the trail on the dispatcher's connection; own_consumer is
// the standalone Auditor, reading EVENTS with a consumer of its own.
func BenchmarkFanout4(b *testing.B) {
	b.Run("audit=off", func(b *testing.B) { benchFanout(b, nil, fanoutWiring{}) })
	for _, wait := range []bool{false, true} {
		b.Run(fmt.Sprintf("audit=on/wait_stored=%v", wait), func(b *testing.B) {
			benchFanout(b, func(c *audit.Config) { c.WaitStored = wait }, fanoutWiring{})
		})
	}
	b.Run("audit=one_conn/wait_stored=true", func(b *testing.B) {
		benchFanout(b, func(c *audit.Config) { c.WaitStored = true }, fanoutWiring{oneConn: true})
	})
	b.Run("audit=own_consumer/wait_stored=true", func(b *testing.B) {
		benchFanout(b, func(c *audit.Config) { c.WaitStored = true }, fanoutWiring{ownConsumer: true})
	})
}

type fanoutWiring struct {
	ownConsumer bool // the trail reads EVENTS itself
	oneConn     bool // the trail shares the dispatcher's connection
}

type noop struct{ n atomic.Int64 }

func (c *noop) Send(context.Context, *hub.Delivery) error { c.n.Add(1); return nil }

func benchFanout(b *testing.B, tweak func(*audit.Config), w fanoutWiring) {
	e := newEnv(b)
	js, err := jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		id := "e-" + strconv.Itoa(i)
		body := []byte(`{"specversion":"1.0","id":"` + id + `","source":"bench","type":"order.created","time":"2026-11-25T12:00:00Z","data":{"order":12345,"total":99.5}}`)
		m := &nats.Msg{Subject: "events.order.created", Data: body, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	// Consumers at the start of the stream (new ones would skip the preload).
	consumers := []jetstream.ConsumerConfig{{
		Durable: dispatch.EventsConsumer("noop"), FilterSubject: "events.>", AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
	}}
	if w.ownConsumer {
		consumers = append(consumers, audit.ConsumerConfig())
	}
	for _, cc := range consumers {
		if _, err := js.CreateOrUpdateConsumer(ctx, hub.EventsStream, cc); err != nil {
			b.Fatal(err)
		}
	}
	// The trail starts before the clock does: creating AUDIT and the file
	// is start-up, not fan-out.
	var aud *audit.Auditor
	var opts []dispatch.Option
	if tweak != nil {
		cfg := testConfig(b)
		tweak(&cfg)
		var aopts []audit.Option
		if !w.ownConsumer {
			aopts = append(aopts, audit.WithDispatcherEvents())
		}
		ajs := js
		if !w.oneConn {
			anc := embeddedtest.Connect(b, e.srv)
			if ajs, err = jetstream.New(anc); err != nil {
				b.Fatal(err)
			}
			opts = append(opts, dispatch.WithSettleConn(anc))
		}
		if aud, err = audit.New(cfg, ajs, aopts...); err != nil {
			b.Fatal(err)
		}
		if err := aud.Start(ctx); err != nil {
			b.Fatal(err)
		}
		opts = append(opts, dispatch.WithObserver(aud.Observe), dispatch.WithSettle(aud.Settle))
		if !w.ownConsumer {
			opts = append(opts, dispatch.WithEventRecorder(aud.RecordEvent))
		}
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	sink := &noop{}
	dc := hub.DefaultDeliveryConfig()
	dc.Concurrency["noop"] = 64
	d := dispatch.New("noop", sink, js, dc, opts...)
	var routes []dispatch.Route
	for s := 0; s < 4; s++ {
		routes = append(routes, dispatch.Route{Sub: &hub.Subscription{ID: fmt.Sprintf("s-%d", s), Channel: "noop", Events: []string{"order.>"}}})
	}
	d.SetRoutes(routes)
	if err := d.Start(ctx); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for sink.n.Load() < int64(4*b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d deliveries", sink.n.Load(), 4*b.N)
		}
		<-time.After(time.Millisecond)
	}
	if w.ownConsumer {
		e.waitConsumed(b, uint64(b.N))
	}
	if aud != nil {
		if err := aud.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/event")
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = d.Stop(sctx)
	if aud != nil {
		if err := aud.Close(sctx); err != nil {
			b.Fatal(err)
		}
		if st := aud.Stats(); st.Records != uint64(5*b.N) || st.Dropped != 0 {
			b.Fatalf("stats %+v, want %d records", st, 5*b.N)
		}
	}
	b.ReportMetric(float64(4*b.N)/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkWebhook4 is a whole hub delivering every event to 4 webhook
// subscriptions on one local keep-alive receiver (the real webhook
// channel: signing, HTTP), with the hub's audit trail off and on: what
// the trail costs when deliveries do real work.
func BenchmarkWebhook4(b *testing.B) {
	b.Run("audit=off", func(b *testing.B) { benchWebhook(b, nil) })
	for _, wait := range []bool{false, true} {
		b.Run(fmt.Sprintf("audit=on/wait_stored=%v", wait), func(b *testing.B) {
			benchWebhook(b, func(c *audit.Config) { c.WaitStored = wait })
		})
	}
}

func benchWebhook(b *testing.B, tweak func(*audit.Config)) {
	e := newEnv(b)
	var got atomic.Int64
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()
	cfg := node.DefaultConfig()
	cfg.NATS = node.NATSConfig{Embedded: false, URL: e.url, Sync: "default"}
	cfg.HTTP.Listen = ""
	cfg.Log.Level = "error"
	cfg.Channels.Webhook.AllowCIDRs = []string{"127.0.0.0/8"}
	cfg.Delivery.Concurrency["webhook"] = 64
	if tweak == nil {
		disableNodeAudit(&cfg)
	} else {
		cfg.Channels.Audit = testConfig(b)
		tweak(&cfg.Channels.Audit)
	}
	secret := config.Secret(webhook.GenerateSecret())
	for i := 0; i < 4; i++ {
		cfg.Subscriptions = append(cfg.Subscriptions, hub.Subscription{ID: fmt.Sprintf("s%d", i), Channel: "webhook",
			Events: []string{"order.>"}, URL: fmt.Sprintf("%s/s%d", rcv.URL, i), Secret: secret})
	}
	n := node.New(cfg)
	ctx := context.Background()
	if err := n.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_ = n.Shutdown(sctx)
	}()
	p, err := publisher.New(n.Conn())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		if _, err := p.PublishAsync(publisher.Event{Type: "order.created", ID: "w" + strconv.Itoa(i), Data: []byte(`{"order":12345,"total":99.5}`)}); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Minute)
	for got.Load() < int64(4*b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d deliveries", got.Load(), 4*b.N)
		}
		<-time.After(time.Millisecond)
	}
	if err := n.Audit().Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/event")
	b.ReportMetric(float64(4*b.N)/b.Elapsed().Seconds(), "deliveries/s")
}

// cpuTime is the process's CPU time so far (user and system, every core):
// with the server in the process, what a benchmark costs in CPU.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
