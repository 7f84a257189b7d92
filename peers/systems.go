package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/embedded"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/loadgen"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/webhook"
)

// fanout is the number of consumers, queues or subscriptions every system
// delivers each event to.
const fanout = 4

// window is how many publishes may await their ack (PubAck or confirm).
const window = 4096

// system is one contender: it stores events durably, delivers each to
// fanout consumers that acknowledge it, and counts what they received.
type system interface {
	// publish stores events from..from+n-1 (made by mk, each due at the time
	// pace returns), keeping up to window unacknowledged, and returns once
	// every one is acknowledged. bulk marks the flat-out intake phase, where
	// a system run with -batch sends atomic batches (RabbitMQ ignores it).
	publish(ctx context.Context, from, n int, mk func(i int) hub.Event, pace func(i int) time.Time, bulk bool) error
	// release lets the consumers run (they are held until then, so publish
	// first builds a backlog).
	release(ctx context.Context) error
	close(ctx context.Context) error
}

// counter is what every system's consumers report to.
type counter struct {
	n   atomic.Int64
	lat atomic.Pointer[loadgen.Histogram]
}

func newCounter() *counter {
	c := &counter{}
	c.lat.Store(&loadgen.Histogram{})
	return c
}

func (c *counter) got(sent time.Time) {
	c.lat.Load().Record(time.Since(sent))
	c.n.Add(1)
}

// batching is -batch and -batch-workers: with size > 0 the intake phase of
// raw JetStream and the hub publishes JetStream atomic batches of size
// events, workers batches open at once, each waiting for its commit ack.
type batching struct {
	size, workers int
}

// run calls send for consecutive slices [i, i+k) of from..from+n-1, at most
// size long, from b.workers goroutines; the first error stops it.
func (b batching) run(ctx context.Context, from, n int, send func(ctx context.Context, i, k int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	starts := make(chan int)
	go func() {
		defer close(starts)
		for i := from; i < from+n; i += b.size {
			select {
			case starts <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for w := 0; w < max(b.workers, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range starts {
				if err := send(ctx, i, min(b.size, from+n-i)); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// ---- raw JetStream ----

type rawJetStream struct {
	srv      *embedded.Server
	pubConn  *nats.Conn
	subConn  *nats.Conn
	js       jetstream.JetStream
	cons     []jetstream.Consumer
	iters    []jetstream.MessagesContext
	wg       sync.WaitGroup
	c        *counter
	released bool
	batch    batching
}

const rawStream = "BENCH"

func startJetStream(ctx context.Context, dir, sync string, batch batching, c *counter) (*rawJetStream, error) {
	srv, err := embedded.Start(ctx, embedded.Options{Listen: "127.0.0.1:0", StoreDir: dir, Sync: sync})
	if err != nil {
		return nil, err
	}
	s := &rawJetStream{srv: srv, c: c, batch: batch}
	if s.pubConn, err = nats.Connect(srv.ClientURL(), nats.Name("peers publisher")); err != nil {
		_ = s.close(ctx)
		return nil, err
	}
	if s.subConn, err = srv.Connect("peers consumers"); err != nil {
		_ = s.close(ctx)
		return nil, err
	}
	if s.js, err = jetstream.New(s.pubConn, jetstream.WithPublishAsyncMaxPending(window)); err != nil {
		_ = s.close(ctx)
		return nil, err
	}
	// The same stream settings as the hub's EVENTS: file storage, a
	// two-minute dedup window, atomic batch publish allowed.
	if _, err = s.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: rawStream, Subjects: []string{"bench.>"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, Duplicates: 2 * time.Minute, AllowAtomicPublish: true,
	}); err != nil {
		_ = s.close(ctx)
		return nil, err
	}
	sjs, err := jetstream.New(s.subConn)
	if err != nil {
		_ = s.close(ctx)
		return nil, err
	}
	for i := 0; i < fanout; i++ {
		cons, err := sjs.CreateOrUpdateConsumer(ctx, rawStream, jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("c%d", i), AckPolicy: jetstream.AckExplicitPolicy,
			DeliverPolicy: jetstream.DeliverAllPolicy, MaxAckPending: 1024,
		})
		if err != nil {
			_ = s.close(ctx)
			return nil, err
		}
		s.cons = append(s.cons, cons)
	}
	return s, nil
}

func (s *rawJetStream) publish(ctx context.Context, from, n int, mk func(int) hub.Event, pace func(int) time.Time, bulk bool) error {
	if bulk && s.batch.size > 0 {
		return s.batch.run(ctx, from, n, func(ctx context.Context, i, k int) error {
			return s.publishAtomic(ctx, i, k, mk, pace)
		})
	}
	for i := from; i < from+n; i++ {
		ev := mk(i)
		ev.Time = pace(i)
		body, err := ev.MarshalJSON()
		if err != nil {
			return err
		}
		m := &nats.Msg{Subject: "bench." + ev.Type, Data: body, Header: nats.Header{jetstream.MsgIDHeader: []string{ev.ID}}}
		for {
			_, err = s.js.PublishMsgAsync(m)
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				break
			}
		}
		if err != nil {
			return err
		}
	}
	select {
	case <-s.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publishAtomic stores events i..i+k-1 as one JetStream atomic batch: each
// with Nats-Msg-Id, Nats-Batch-Id and Nats-Batch-Sequence, the last also
// with Nats-Batch-Commit and a reply subject; one PubAck for the batch.
func (s *rawJetStream) publishAtomic(ctx context.Context, i, k int, mk func(int) hub.Event, pace func(int) time.Time) error {
	id := hub.NewID()
	for j := 0; j < k; j++ {
		ev := mk(i + j)
		ev.Time = pace(i + j)
		body, err := ev.MarshalJSON()
		if err != nil {
			return err
		}
		m := &nats.Msg{Subject: "bench." + ev.Type, Data: body, Header: nats.Header{
			jetstream.MsgIDHeader: []string{ev.ID}, "Nats-Batch-Id": []string{id}, "Nats-Batch-Sequence": []string{strconv.Itoa(j + 1)},
		}}
		if j < k-1 {
			if err := s.pubConn.PublishMsg(m); err != nil {
				return err
			}
			continue
		}
		m.Header.Set("Nats-Batch-Commit", "1")
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		reply, err := s.pubConn.RequestMsgWithContext(rctx, m)
		cancel()
		if err != nil {
			return fmt.Errorf("batch commit: %w", err)
		}
		var ack struct {
			Seq   uint64              `json:"seq"`
			Count int                 `json:"count"`
			Error *jetstream.APIError `json:"error"`
		}
		if err := json.Unmarshal(reply.Data, &ack); err != nil {
			return fmt.Errorf("batch commit: %w", err)
		}
		if ack.Error != nil {
			return fmt.Errorf("batch commit: %w", ack.Error)
		}
		if ack.Count != k {
			return fmt.Errorf("batch commit: %d of %d messages acknowledged", ack.Count, k)
		}
	}
	return nil
}

func (s *rawJetStream) release(context.Context) error {
	if s.released {
		return nil
	}
	s.released = true
	for _, cons := range s.cons {
		it, err := cons.Messages(jetstream.PullMaxMessages(64))
		if err != nil {
			return err
		}
		s.iters = append(s.iters, it)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				m, err := it.Next()
				if err != nil {
					if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
						return
					}
					continue
				}
				_, sent, ok := loadgen.ParseEnvelope(m.Data())
				_ = m.Ack()
				if ok {
					s.c.got(sent)
				}
			}
		}()
	}
	return nil
}

func (s *rawJetStream) close(ctx context.Context) error {
	for _, it := range s.iters {
		it.Stop()
	}
	s.wg.Wait()
	for _, c := range []*nats.Conn{s.pubConn, s.subConn} {
		if c != nil {
			c.Close()
		}
	}
	return s.srv.Shutdown(ctx)
}

// ---- RabbitMQ ----

type rabbitMQ struct {
	pubConn, subConn *amqp.Connection
	pub              *amqp.Channel
	queues           []string
	subs             []*amqp.Channel
	wg               sync.WaitGroup
	c                *counter
	released         bool
}

const rabbitExchange = "hub-bench"

func startRabbit(url string, c *counter) (*rabbitMQ, error) {
	r := &rabbitMQ{c: c}
	var err error
	if r.pubConn, err = amqp.Dial(url); err != nil {
		return nil, fmt.Errorf("rabbitmq: %w", err)
	}
	if r.subConn, err = amqp.Dial(url); err != nil {
		_ = r.close(context.Background())
		return nil, fmt.Errorf("rabbitmq: %w", err)
	}
	if r.pub, err = r.pubConn.Channel(); err != nil {
		_ = r.close(context.Background())
		return nil, err
	}
	// Start from nothing: a previous run's queues would hold its messages.
	_ = r.pub.ExchangeDelete(rabbitExchange, false, false)
	for i := 0; i < fanout; i++ {
		_, _ = r.pub.QueueDelete(fmt.Sprintf("hub-bench-%d", i), false, false, false)
	}
	if err := r.pub.ExchangeDeclare(rabbitExchange, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		_ = r.close(context.Background())
		return nil, err
	}
	for i := 0; i < fanout; i++ {
		q, err := r.pub.QueueDeclare(fmt.Sprintf("hub-bench-%d", i), true, false, false, false, amqp.Table{"x-queue-type": "classic"})
		if err != nil {
			_ = r.close(context.Background())
			return nil, err
		}
		if err := r.pub.QueueBind(q.Name, "", rabbitExchange, false, nil); err != nil {
			_ = r.close(context.Background())
			return nil, err
		}
		r.queues = append(r.queues, q.Name)
	}
	if err := r.pub.Confirm(false); err != nil {
		_ = r.close(context.Background())
		return nil, err
	}
	return r, nil
}

func (r *rabbitMQ) publish(ctx context.Context, from, n int, mk func(int) hub.Event, pace func(int) time.Time, _ bool) error {
	pending := make([]*amqp.DeferredConfirmation, 0, window)
	head := 0
	wait := func(dc *amqp.DeferredConfirmation) error {
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("rabbitmq: publish nacked")
		}
		return nil
	}
	for i := from; i < from+n; i++ {
		ev := mk(i)
		ev.Time = pace(i)
		body, err := ev.MarshalJSON()
		if err != nil {
			return err
		}
		if len(pending)-head >= window {
			if err := wait(pending[head]); err != nil {
				return err
			}
			head++
			if head > window {
				pending, head = append(pending[:0], pending[head:]...), 0
			}
		}
		dc, err := r.pub.PublishWithDeferredConfirmWithContext(ctx, rabbitExchange, "", false, false, amqp.Publishing{
			ContentType: "application/cloudevents+json", DeliveryMode: amqp.Persistent, MessageId: ev.ID, Body: body,
		})
		if err != nil {
			return err
		}
		pending = append(pending, dc)
	}
	for _, dc := range pending[head:] {
		if err := wait(dc); err != nil {
			return err
		}
	}
	return nil
}

func (r *rabbitMQ) release(context.Context) error {
	if r.released {
		return nil
	}
	r.released = true
	for i, q := range r.queues {
		ch, err := r.subConn.Channel()
		if err != nil {
			return err
		}
		// Prefetch like a JetStream consumer's pull batch; ack one by one.
		if err := ch.Qos(256, 0, false); err != nil {
			return err
		}
		ds, err := ch.Consume(q, fmt.Sprintf("c%d", i), false, false, false, false, nil)
		if err != nil {
			return err
		}
		r.subs = append(r.subs, ch)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for d := range ds {
				_, sent, ok := loadgen.ParseEnvelope(d.Body)
				_ = d.Ack(false)
				if ok {
					r.c.got(sent)
				}
			}
		}()
	}
	return nil
}

func (r *rabbitMQ) close(context.Context) error {
	if r.pub != nil {
		_ = r.pub.ExchangeDelete(rabbitExchange, false, false)
		for _, q := range r.queues {
			_, _ = r.pub.QueueDelete(q, false, false, false)
		}
	}
	for _, ch := range r.subs {
		_ = ch.Close()
	}
	for _, c := range []*amqp.Connection{r.subConn, r.pubConn} {
		if c != nil {
			_ = c.Close()
		}
	}
	r.wg.Wait()
	return nil
}

// ---- the hub ----

// gate holds every Send until it is opened, so the events published first
// wait in EVENTS as a backlog.
type gate struct {
	open chan struct{}
	once sync.Once
}

func newGate() *gate { return &gate{open: make(chan struct{})} }

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

func (g *gate) wait(ctx context.Context) error {
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// noopChannel is a channel whose sends succeed at once and are counted.
type noopChannel struct {
	g *gate
	c *counter
}

func (n *noopChannel) Send(ctx context.Context, d *hub.Delivery) error {
	if err := n.g.wait(ctx); err != nil {
		return err
	}
	n.c.got(d.Event.Time)
	return nil
}

// gatedChannel holds a real channel's sends until the gate opens, and
// counts each successful one when the receiver's answer is back.
type gatedChannel struct {
	g  *gate
	ch hub.Channel
	c  *counter
}

func (w *gatedChannel) Send(ctx context.Context, d *hub.Delivery) error {
	if err := w.g.wait(ctx); err != nil {
		return err
	}
	err := w.ch.Send(ctx, d)
	if err == nil {
		w.c.got(d.Event.Time)
	}
	return err
}

func (w *gatedChannel) Close(ctx context.Context) error {
	if c, ok := w.ch.(hub.Closer); ok {
		return c.Close(ctx)
	}
	return nil
}

type hubSystem struct {
	n     *node.Node
	conn  *nats.Conn
	pub   *publisher.Publisher
	g     *gate
	sinks *loadgen.Sinks
	batch batching
}

// startHub runs the hub in-process with fanout subscriptions: on the log
// channel replaced by a no-op (webhooks false), or to a local keep-alive
// webhook receiver (webhooks true). The publisher connects over TCP, as
// the other systems' publishers do.
func startHub(ctx context.Context, dir, sync string, webhooks bool, batch batching, c *counter) (*hubSystem, error) {
	s := &hubSystem{g: newGate(), batch: batch}
	cfg := node.DefaultConfig()
	cfg.NATS.StoreDir, cfg.NATS.Listen, cfg.NATS.Sync = dir, "127.0.0.1:0", sync
	cfg.HTTP.Listen = ""
	cfg.Log.Level = "error"
	var opts []node.Option
	if webhooks {
		rec := loadgen.NewRecorder(0)
		var err error
		if s.sinks, err = loadgen.StartSinks(rec, fanout, 0, 0); err != nil {
			return nil, err
		}
		spec := loadgen.Spec{Type: loadgen.DefaultType, Webhooks: fanout}
		if cfg, err = loadgen.InProcessConfig(cfg, dir, "127.0.0.1:0", false, spec, rec.Run, s.sinks); err != nil {
			return nil, err
		}
		cfg.NATS.Sync = sync
		wh, err := webhook.New(cfg.Channels.Webhook)
		if err != nil {
			return nil, err
		}
		opts = append(opts, node.WithChannel("webhook", &gatedChannel{g: s.g, ch: wh, c: c}))
	} else {
		cfg.Delivery.Concurrency["log"] = cfg.Delivery.ConcurrencyFor("webhook")
		for i := 0; i < fanout; i++ {
			cfg.Subscriptions = append(cfg.Subscriptions, hub.Subscription{ID: fmt.Sprintf("noop-%d", i), Channel: "log", Events: []string{loadgen.DefaultType}})
		}
		opts = append(opts, node.WithChannel("log", &noopChannel{g: s.g, c: c}))
		if err := config.Check(&cfg); err != nil {
			return nil, err
		}
	}
	s.n = node.New(cfg, opts...)
	if err := s.n.Start(ctx); err != nil {
		return nil, err
	}
	var err error
	if s.conn, err = nats.Connect(s.n.NATSURL(), nats.Name("peers publisher")); err != nil {
		_ = s.close(ctx)
		return nil, err
	}
	popts := []publisher.Option{publisher.WithMaxPending(window)}
	if batch.size > 0 {
		popts = append(popts, publisher.WithMaxBatch(batch.size))
	}
	if s.pub, err = publisher.New(s.conn, popts...); err != nil {
		_ = s.close(ctx)
		return nil, err
	}
	return s, nil
}

func (s *hubSystem) publish(ctx context.Context, from, n int, mk func(int) hub.Event, pace func(int) time.Time, bulk bool) error {
	if bulk && s.batch.size > 0 {
		return s.batch.run(ctx, from, n, func(ctx context.Context, i, k int) error {
			evs := make([]publisher.Event, k)
			for j := range evs {
				evs[j] = mk(i + j)
				evs[j].Time = pace(i + j)
			}
			_, err := s.pub.PublishBatch(ctx, evs)
			return err
		})
	}
	for i := from; i < from+n; i++ {
		ev := mk(i)
		ev.Time = pace(i)
		for {
			_, err := s.pub.PublishAsync(ev)
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				continue
			}
			if err != nil {
				return err
			}
			break
		}
	}
	return s.pub.Flush(ctx)
}

func (s *hubSystem) release(context.Context) error { s.g.release(); return nil }

func (s *hubSystem) close(ctx context.Context) error {
	s.g.release()
	if s.conn != nil {
		s.conn.Close()
	}
	err := s.n.Shutdown(ctx)
	if s.sinks != nil {
		_ = s.sinks.Close(ctx)
	}
	return err
}
