// Package dispatch delivers events to one channel's subscriptions.
//
// One Dispatcher runs per channel with two durable consumers. The first
// reads EVENTS directly: it matches the channel's subscriptions, renders
// them, and sends every target in parallel in-process, so a healthy event
// costs one read and one ack whatever the number of subscriptions. Only a
// target that fails is written to DELIVERIES as its own message
// (deliveries.<channel>.<subscription>, Nats-Msg-Id = its delivery id);
// the second consumer retries those on the backoff schedule with
// NakWithDelay, so a failing target never causes a healthy one to be sent
// again. Permanent failures and exhausted attempts are terminated with a
// reason; JetStream's advisory for that becomes the dead letter (see
// package dlq). docs/architecture.md explains why.
package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/hubproject/hub/hub"
)

// Route is one subscription of the channel with its renderer.
type Route struct {
	Sub *hub.Subscription
	// Render yields the recipients and content for an event; nil means one
	// delivery with no recipient and no content (webhook, log).
	Render func(ev *hub.Event) (recipients []string, content hub.Content, err error)
}

// Outcome kinds.
const (
	// KindRouted: the event matched a target (subscription, recipient);
	// reported once, before its first attempt.
	KindRouted = "routed"
	// KindDelivered: an attempt succeeded.
	KindDelivered = "delivered"
	// KindFailed: an attempt failed; Permanent says whether it is final
	// (the target goes to the DLQ) or will be retried after RetryIn.
	KindFailed = "failed"
	// KindDeferred: the channel asked to wait without spending the attempt.
	KindDeferred = "deferred"
	// KindDeadLettered: a dead letter was written (Reason, DLQID).
	KindDeadLettered = "dead_lettered"
	// KindReplayed: a dead letter was replayed.
	KindReplayed = "replayed"
	// KindDisabled: a subscription was disabled (Reason).
	KindDisabled = "disabled"
	// KindUnmatched: the event matched no subscription of the channel.
	KindUnmatched = "unmatched"
	// KindInvalid: the stored envelope failed validation (dead-lettered).
	KindInvalid = "invalid"
)

// Outcome is reported to the Observer after every attempt and decision.
type Outcome struct {
	Kind         string
	At           time.Time
	Channel      string
	Subscription string
	EventID      string
	EventType    string
	DeliveryID   string
	// DerivedID: DeliveryID is hub.DeliveryID(EventID, Subscription,
	// Recipient), so a record can leave it out and a reader derive it.
	DerivedID bool
	Recipient string
	Attempt   int
	Duration  time.Duration
	Err       error
	Permanent bool
	RetryIn   time.Duration
	Result    hub.Outcome // what the far side answered
	Reason    string
	DLQID     uint64
}

// Observer receives outcomes (metrics, audit, tests). It must not block.
type Observer func(Outcome)

// Dispatcher delivers one channel.
type Dispatcher struct {
	channel string
	ch      hub.Channel
	js      jetstream.JetStream
	cfg     hub.DeliveryConfig
	log     zerolog.Logger
	obs     Observer
	settle  func(done func())
	// settleNC, when set, carries the acks of settle steps (WithSettleConn).
	settleNC *nats.Conn
	record   EventRecorder // nil: this dispatcher records no events
	disable  func(ctx context.Context, sub, reason string)
	now      func() time.Time

	routes atomic.Pointer[[]Route]
	cache  *EventCache
	gate   hub.Gate                  // the channel, when it can say a subscription is blocked
	hold   atomic.Pointer[holdState] // cached answer of heldUntil

	sendSem  chan struct{} // sends in flight
	eventSem chan struct{} // events being fanned out
	retrySem chan struct{} // retries being handled

	runCtx    context.Context // cancelled when the shutdown budget runs out
	cancelRun context.CancelFunc
	iters     []jetstream.MessagesContext
	loops     sync.WaitGroup
	handlers  sync.WaitGroup
	stopping  atomic.Bool
}

// Option configures a Dispatcher.
type Option func(*Dispatcher)

// WithLogger sets the logger.
func WithLogger(l zerolog.Logger) Option { return func(d *Dispatcher) { d.log = l } }

// WithObserver receives every outcome.
func WithObserver(o Observer) Option { return func(d *Dispatcher) { d.obs = o } }

// WithSettle is called once a message's outcomes were observed, with the
// step that settles the message (ack, nak or term): f runs done when the
// outcomes observed so far are persisted, at once or later on another
// goroutine. An observer that must persist outcomes before their message
// is acknowledged (the audit trail) delays done; the handler has returned
// by then, so waiting holds neither a send slot nor a handler, only the
// message's place in MaxAckPending. f must eventually run done.
func WithSettle(f func(done func())) Option { return func(d *Dispatcher) { d.settle = f } }

// WithSettleConn publishes the acks of the settle steps on nc, a second
// connection to the same server and account. A settle hook that releases
// hundreds of acks at once (the audit trail, after each batch) would
// otherwise hold the dispatcher's own connection, which carries its pull
// requests and deliveries, long enough to starve the pipeline: measured
// 12-15 % idle CPU with the trail on, 4-5 % with this.
func WithSettleConn(nc *nats.Conn) Option { return func(d *Dispatcher) { d.settleNC = nc } }

// EventRecorder is told of every EVENTS message one dispatcher handles
// (ev is nil when it was not decoded: no subscription of the channel
// wants it, it is held, or it is invalid), before its outcomes, and the
// message is settled through WithSettle: the audit trail's event records
// come from there instead of from a consumer of their own. A held message
// comes back, so a recorder sees a message more than once.
type EventRecorder func(msg jetstream.Msg, ev *hub.Event)

// WithEventRecorder makes this dispatcher report every EVENTS message to f.
// Every channel's dispatcher reads every event, so one of them is enough.
func WithEventRecorder(f EventRecorder) Option { return func(d *Dispatcher) { d.record = f } }

// WithEventCache shares decoded events with the other channels' dispatchers.
func WithEventCache(c *EventCache) Option { return func(d *Dispatcher) { d.cache = c } }

// WithDisabler is called when a channel reports a subscription Gone.
func WithDisabler(f func(ctx context.Context, sub, reason string)) Option {
	return func(d *Dispatcher) { d.disable = f }
}

// New returns a Dispatcher for channel; Start runs it.
func New(channel string, ch hub.Channel, js jetstream.JetStream, cfg hub.DeliveryConfig, opts ...Option) *Dispatcher {
	n := cfg.ConcurrencyFor(channel)
	d := &Dispatcher{
		channel:  channel,
		ch:       ch,
		js:       js,
		cfg:      cfg,
		log:      zerolog.Nop(),
		obs:      func(Outcome) {},
		settle:   func(done func()) { done() },
		disable:  func(context.Context, string, string) {},
		now:      time.Now,
		sendSem:  make(chan struct{}, n),
		eventSem: make(chan struct{}, n),
		retrySem: make(chan struct{}, n),
	}
	for _, o := range opts {
		o(d)
	}
	d.gate, _ = ch.(hub.Gate)
	empty := []Route{}
	d.routes.Store(&empty)
	return d
}

// SetRoutes replaces the channel's subscriptions; safe at any time.
func (d *Dispatcher) SetRoutes(rs []Route) {
	cp := append([]Route(nil), rs...)
	d.routes.Store(&cp)
	d.hold.Store(nil) // a new subscription may not be blocked
}

// holdState is heldUntil's cached answer.
type holdState struct {
	until   time.Time // earliest end of a block; zero when not held
	checked time.Time // when the gate was asked
	expires time.Time // when to ask the gate again
}

// holdCheckEvery bounds how often the gate is asked (per dispatcher, not
// per event: a channel may have thousands of subscriptions).
const holdCheckEvery = 100 * time.Millisecond

// maxHold is the longest an event is left in EVENTS at a time: a hold
// costs no write, so it comes back often and goes out soon after the
// endpoint recovers.
const maxHold = 5 * time.Second

// A deferred send asks for a gate check soon after the last one, so the
// last subscription to be blocked starts the hold quickly: 100 µs per
// subscription of the channel after it, at most holdRecheckAfterDefer.
// Asking walks every subscription, so however many sends are deferred the
// checks cost about 1 % of a core; a channel with one subscription holds
// within 100 µs (at 10 ms flat, a fast machine copied a hundred events
// into DELIVERIES before the hold began).
const (
	holdRecheckAfterDefer = 10 * time.Millisecond
	holdRecheckPerRoute   = 100 * time.Microsecond
)

// recheckHoldSoon makes heldUntil ask the gate again at the next event
// after the spacing above.
func (d *Dispatcher) recheckHoldSoon() {
	h := d.hold.Load()
	if h == nil || !h.until.IsZero() {
		return // asks at the next event anyway, or already holding
	}
	gap := min(holdRecheckAfterDefer, time.Duration(len(*d.routes.Load()))*holdRecheckPerRoute)
	if soon := h.checked.Add(gap); h.expires.After(soon) {
		d.hold.CompareAndSwap(h, &holdState{checked: h.checked, expires: soon})
	}
}

// heldUntil reports whether every subscription of the channel is blocked
// by the channel's gate (an open circuit breaker), and until when the
// first block ends. Then a new event could only be deferred: the
// dispatcher leaves it in EVENTS (NakWithDelay) instead of copying it into
// DELIVERIES, and since no subscription of the channel can send, holding
// events starves none. Once MaxAckPending events are held, JetStream stops
// delivering: the backlog waits on disk.
func (d *Dispatcher) heldUntil() (time.Time, bool) {
	if d.gate == nil {
		return time.Time{}, false
	}
	now := d.now()
	if h := d.hold.Load(); h != nil && now.Before(h.expires) {
		return h.until, !h.until.IsZero()
	}
	var until time.Time
	active := 0
	for _, r := range *d.routes.Load() {
		if r.Sub.Disabled {
			continue
		}
		active++
		u, blocked := d.gate.Blocked(r.Sub)
		if !blocked {
			until = time.Time{}
			break
		}
		if until.IsZero() || u.Before(until) {
			until = u
		}
	}
	if active == 0 {
		until = time.Time{}
	}
	exp := now.Add(holdCheckEvery)
	if !until.IsZero() && until.Before(exp) {
		exp = until
	}
	d.hold.Store(&holdState{until: until, checked: now, expires: exp})
	return until, !until.IsZero()
}

// wants reports whether an enabled subscription matches the event type.
func (d *Dispatcher) wants(typ string) bool {
	for _, r := range *d.routes.Load() {
		if !r.Sub.Disabled && r.Sub.Matches(typ) {
			return true
		}
	}
	return false
}

func (d *Dispatcher) route(id string) (Route, bool) {
	for _, r := range *d.routes.Load() {
		if r.Sub.ID == id {
			return r, true
		}
	}
	return Route{}, false
}

// EventsConsumer and RetryConsumer are the durable consumer names.
func EventsConsumer(channel string) string { return "hub-" + channel }
func RetryConsumer(channel string) string  { return "hub-" + channel + "-retry" }

// Start creates (or updates) the durable consumers and starts consuming.
func (d *Dispatcher) Start(ctx context.Context) error {
	d.runCtx, d.cancelRun = context.WithCancel(context.Background())
	n := cap(d.sendSem)
	evCons, err := d.ensureEventsConsumer(ctx)
	if err != nil {
		return err
	}
	var rtCons jetstream.Consumer
	err = hub.RetryTransient(ctx, func(ctx context.Context) error {
		var err error
		rtCons, err = d.js.CreateOrUpdateConsumer(ctx, hub.DeliveriesStream, d.retryConsumerConfig())
		return err
	})
	if err != nil {
		return fmt.Errorf("dispatch %s: retry consumer: %w", d.channel, err)
	}
	// A short expiry bounds how long a lost pull request can stall delivery.
	// Fetch about what the workers can start now: a message waiting in the
	// client buffer gets no InProgress and could outlive its AckWait.
	batch := []jetstream.PullMessagesOpt{jetstream.PullMaxMessages(max(n/2, 8)), jetstream.PullExpiry(5 * time.Second)}
	evIt, err := evCons.Messages(batch...)
	if err != nil {
		return fmt.Errorf("dispatch %s: consume events: %w", d.channel, err)
	}
	rtIt, err := rtCons.Messages(batch...)
	if err != nil {
		evIt.Stop()
		return fmt.Errorf("dispatch %s: consume retries: %w", d.channel, err)
	}
	d.iters = []jetstream.MessagesContext{evIt, rtIt}
	d.loops.Add(2)
	go d.loop(evIt, d.eventSem, d.handleEvent)
	go d.loop(rtIt, d.retrySem, d.handleRetry)
	return nil
}

func (d *Dispatcher) retryConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       RetryConsumer(d.channel),
		Description:   "hub: retries and replays for channel " + d.channel,
		FilterSubject: hub.DeliveriesPrefix + d.channel + ".>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       d.cfg.AckWait.D(),
		// The first delivery of a retry is a wait; then MaxAttempts attempts.
		MaxDeliver: d.cfg.MaxAttempts + 1,
		// Messages waiting out a NakWithDelay count as pending: allow many,
		// or one dead endpoint's backlog would stall the channel's retries.
		MaxAckPending: 1_000_000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// ensureEventsConsumer creates the channel's consumer on EVENTS (see
// hub.EnsureEventsConsumer for where a new one starts).
func (d *Dispatcher) ensureEventsConsumer(ctx context.Context) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       EventsConsumer(d.channel),
		Description:   "hub: first attempts for channel " + d.channel,
		FilterSubject: hub.SubjectPrefix + ">",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       d.cfg.AckWait.D(),
		MaxDeliver:    -1,
		// Room for a restarted hub while a killed one's fetched messages
		// wait out their AckWait.
		MaxAckPending: max(16*cap(d.sendSem), 1024),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	c, err := hub.EnsureEventsConsumer(ctx, d.js, cfg)
	if err != nil {
		return nil, fmt.Errorf("dispatch %s: %w", d.channel, err)
	}
	return c, nil
}

// Stop stops fetching, lets in-flight and already fetched messages finish
// within ctx, then cancels what is left (those messages are redelivered
// after a restart).
func (d *Dispatcher) Stop(ctx context.Context) error {
	if !d.stopping.CompareAndSwap(false, true) || d.cancelRun == nil {
		return nil
	}
	for _, it := range d.iters {
		it.Drain()
	}
	done := make(chan struct{})
	go func() {
		d.loops.Wait()
		d.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
		d.cancelRun()
		return nil
	case <-ctx.Done():
		d.cancelRun()
		for _, it := range d.iters {
			it.Stop()
		}
		<-done
		return fmt.Errorf("dispatch %s: in-flight sends cancelled: %w", d.channel, ctx.Err())
	}
}

func (d *Dispatcher) loop(it jetstream.MessagesContext, sem chan struct{}, handle func(context.Context, jetstream.Msg)) {
	defer d.loops.Done()
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			d.log.Warn().Err(err).Str("channel", d.channel).Msg("consume")
			select {
			case <-d.runCtx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		sem <- struct{}{}
		d.handlers.Add(1)
		go func() {
			defer func() {
				<-sem
				d.handlers.Done()
			}()
			handle(d.runCtx, msg)
		}()
	}
}

// keepAlive tells JetStream a long send is still in progress, so AckWait
// does not expire under it. The returned func stops it.
func (d *Dispatcher) keepAlive(msg jetstream.Msg) func() {
	every := d.cfg.AckWait.D() / 3
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	t = time.AfterFunc(every, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		_ = msg.InProgress()
		t.Reset(every)
	})
	return func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		t.Stop()
	}
}

type target struct {
	route     Route
	id        string // delivery id
	recipient string
	content   hub.Content
	renderErr error
	err       error
	result    hub.Outcome
	took      time.Duration
	del       *hub.Delivery // the attempt made, reported at at
	at        time.Time
}

func (d *Dispatcher) handleEvent(ctx context.Context, msg jetstream.Msg) {
	// Most channels want few event types: match on the subject first and
	// skip decoding events no subscription of this channel wants. (An
	// invalid envelope is dead-lettered by the channels that want it.)
	if typ, ok := strings.CutPrefix(msg.Subject(), hub.SubjectPrefix); ok && !d.wants(typ) {
		d.recordEvent(msg, nil)
		d.obs(Outcome{Kind: KindUnmatched, At: d.now(), Channel: d.channel, EventType: typ})
		d.ackRecorded(msg)
		return
	}
	if until, held := d.heldUntil(); held {
		d.recordEvent(msg, nil)
		_ = msg.NakWithDelay(min(max(until.Sub(d.now()), 10*time.Millisecond), maxHold))
		return
	}
	ev, err := d.decode(msg)
	if err != nil {
		d.recordEvent(msg, nil)
		d.invalidEvent(ctx, msg, err)
		return
	}
	d.recordEvent(msg, ev)
	var targets []*target
	for _, r := range *d.routes.Load() {
		if r.Sub.Disabled || !r.Sub.Matches(ev.Type) {
			continue
		}
		if r.Render == nil {
			targets = append(targets, &target{route: r})
			continue
		}
		recips, content, err := r.Render(ev)
		if err != nil {
			targets = append(targets, &target{route: r, renderErr: err})
			continue
		}
		for _, rc := range recips {
			targets = append(targets, &target{route: r, recipient: rc, content: content})
		}
	}
	if len(targets) == 0 {
		d.obs(Outcome{Kind: KindUnmatched, At: d.now(), Channel: d.channel, EventID: ev.ID, EventType: ev.Type})
		d.ackRecorded(msg)
		return
	}
	now := d.now()
	for _, t := range targets {
		t.id = hub.DeliveryID(ev.ID, t.route.Sub.ID, t.recipient)
		o := Outcome{Kind: KindRouted, At: now, Channel: d.channel, Subscription: t.route.Sub.ID, EventID: ev.ID,
			EventType: ev.Type, DeliveryID: t.id, DerivedID: true, Recipient: t.recipient}
		if t.renderErr != nil {
			o.Kind, o.Permanent, o.Err, o.Reason = KindFailed, true, t.renderErr, "render: "+t.renderErr.Error()
		}
		d.obs(o)
	}
	// InProgress until the message is settled: the sends, the DELIVERIES
	// writes and the wait for their records (settle).
	stopKeepAlive := d.keepAlive(msg)
	if len(targets) == 1 {
		d.sendTarget(ctx, ev, msg.Data(), targets[0], now, false)
	} else {
		// A slot is taken before each goroutine starts, so an event with
		// 1,000 targets runs at most `concurrency` goroutines at a time.
		var wg sync.WaitGroup
		for _, t := range targets {
			if t.renderErr != nil {
				continue
			}
			if !d.acquire(ctx) {
				t.err = ctx.Err()
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer d.release()
				d.sendTarget(ctx, ev, msg.Data(), t, now, true)
			}()
		}
		wg.Wait()
	}
	// Reported here rather than on the send goroutines: their stacks are
	// new and small, and an observer's frames would grow every one.
	for _, t := range targets {
		if t.del != nil {
			d.report(t.del, t.err, t.took, 1, t.at, t.del.ID == t.id && t.del.Recipient == t.recipient)
		}
	}
	d.settleMsg(stopKeepAlive, d.splitFailed(ctx, msg, ev, targets, now))
}

// recordEvent tells the event recorder, if this dispatcher has one, of msg.
func (d *Dispatcher) recordEvent(msg jetstream.Msg, ev *hub.Event) {
	if d.record != nil {
		d.record(msg, ev)
	}
}

// ackRecorded acknowledges an event the channel has nothing to do for:
// at once, or, on the recorder, once its event record is stored.
func (d *Dispatcher) ackRecorded(msg jetstream.Msg) {
	if d.record == nil {
		_ = msg.Ack()
		return
	}
	d.settleMsg(func() {}, d.ackStep(msg))
}

// settleMsg runs act (ack, nak or term) once the message's outcomes are
// persisted (WithSettle), and ends its keep-alive.
func (d *Dispatcher) settleMsg(stopKeepAlive func(), act func() error) {
	d.settle(func() {
		stopKeepAlive()
		_ = act()
	})
}

// splitFailed writes every target that did not get through to DELIVERIES
// and returns how to settle the event: ack it, or, if the hub is stopping
// and a send was cut short, leave the whole event for redelivery.
func (d *Dispatcher) splitFailed(ctx context.Context, msg jetstream.Msg, ev *hub.Event, targets []*target, now time.Time) func() error {
	var splits []*nats.Msg
	for _, t := range targets {
		if t.renderErr == nil && t.err == nil {
			continue
		}
		if ctx.Err() != nil && t.renderErr == nil {
			return msg.Nak
		}
		m, err := d.splitMsg(ev, msg.Data(), t, now)
		if err != nil {
			d.log.Error().Err(err).Str("event_id", ev.ID).Msg("build delivery")
			return nakAfter(msg, time.Second)
		}
		splits = append(splits, m)
	}
	if err := d.publishAll(ctx, splits); err != nil {
		d.log.Warn().Err(err).Str("channel", d.channel).Str("event_id", ev.ID).Msg("storing failed deliveries; the event will be redelivered")
		return nakAfter(msg, time.Second)
	}
	return d.ackStep(msg)
}

// ackStep is the settle step that acks msg: on the settle connection
// (WithSettleConn) when there is one.
func (d *Dispatcher) ackStep(msg jetstream.Msg) func() error {
	if d.settleNC == nil || msg.Reply() == "" {
		return msg.Ack
	}
	return func() error { return d.settleNC.Publish(msg.Reply(), ackPayload) }
}

// ackPayload is JetStream's ack (what jetstream.Msg.Ack sends).
var ackPayload = []byte("+ACK")

func nakAfter(msg jetstream.Msg, delay time.Duration) func() error {
	return func() error { return msg.NakWithDelay(delay) }
}

func termWith(msg jetstream.Msg, reason string) func() error {
	return func() error { return msg.TermWithReason(reason) }
}

func (d *Dispatcher) sendTarget(ctx context.Context, ev *hub.Event, raw []byte, t *target, now time.Time, held bool) {
	if t.renderErr != nil {
		return
	}
	del := &hub.Delivery{
		ID:           t.id,
		Event:        ev,
		EventJSON:    raw,
		Subscription: t.route.Sub,
		Recipient:    t.recipient,
		Content:      t.content,
		Attempt:      1,
		FirstAttempt: now,
	}
	if held {
		t.err, t.took = d.sendHeld(ctx, del)
	} else {
		t.err, t.took = d.send(ctx, del)
	}
	t.result = del.Outcome
	t.del, t.at = del, d.now()
}

// splitMsg turns a failed first attempt into its DELIVERIES message.
func (d *Dispatcher) splitMsg(ev *hub.Event, raw []byte, t *target, now time.Time) (*nats.Msg, error) {
	rec := Record{
		DeliveryID:   t.id,
		EventID:      ev.ID,
		EventType:    ev.Type,
		Channel:      d.channel,
		Subscription: t.route.Sub.ID,
		Recipient:    t.recipient,
		Event:        raw,
	}
	r := Retry{Attempts: 1, FirstAttempt: now, Wait: -1}
	switch err := t.err; {
	case t.renderErr != nil:
		r.Attempts = 0
		r.Terminal = "render: " + t.renderErr.Error()
	case hub.IsPermanent(err):
		if hub.IsGone(err) {
			d.disable(context.Background(), t.route.Sub.ID, err.Error())
		}
		r.Terminal = err.Error()
	default:
		r.LastError = err.Error()
		if dl, ok := hub.DeferDelay(err); ok {
			r.Attempts, r.Wait = 0, dl
		} else {
			r.Wait = d.retryDelay(err, 1)
		}
		if r.Attempts >= d.cfg.MaxAttempts {
			r.Terminal = fmt.Sprintf("gave up after %d attempt(s): %v", r.Attempts, err)
		}
	}
	return NewDeliveryMsg(rec, r, now)
}

func (d *Dispatcher) retryDelay(err error, attempt int) time.Duration {
	if dl, ok := hub.RetryDelay(err); ok {
		return min(max(dl, 0), d.cfg.MaxBackoff())
	}
	return d.cfg.BackoffAfter(attempt)
}

func (d *Dispatcher) publishAll(ctx context.Context, msgs []*nats.Msg) error {
	if len(msgs) == 0 {
		return nil
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if len(msgs) == 1 {
		_, err := d.js.PublishMsg(pctx, msgs[0])
		return err
	}
	futs := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := d.js.PublishMsgAsync(m)
		if err != nil {
			return err
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-pctx.Done():
			return pctx.Err()
		}
	}
	return nil
}

// send makes one attempt, bounded by the channel's concurrency. A panic in
// the channel is an error, not a crash.
func (d *Dispatcher) send(ctx context.Context, del *hub.Delivery) (err error, took time.Duration) {
	if !d.acquire(ctx) {
		return ctx.Err(), 0
	}
	defer d.release()
	return d.sendHeld(ctx, del)
}

// acquire takes a send slot, or reports false when ctx ends first.
func (d *Dispatcher) acquire(ctx context.Context) bool {
	select {
	case d.sendSem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (d *Dispatcher) release() { <-d.sendSem }

// sendHeld makes the attempt; the caller holds a send slot.
func (d *Dispatcher) sendHeld(ctx context.Context, del *hub.Delivery) (err error, took time.Duration) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("channel %s panicked: %v", d.channel, p)
		}
		took = time.Since(start)
	}()
	return d.ch.Send(ctx, del), 0
}

func (d *Dispatcher) report(del *hub.Delivery, err error, took time.Duration, attempt int, at time.Time, derivedID bool) {
	o := Outcome{
		Kind: KindDelivered, At: at, Channel: d.channel, Subscription: del.Subscription.ID, EventID: del.Event.ID,
		EventType: del.Event.Type, DeliveryID: del.ID, DerivedID: derivedID, Recipient: del.Recipient, Attempt: attempt, Duration: took,
		Err: err, Result: del.Outcome,
	}
	l := d.log.Debug()
	switch {
	case err == nil:
	case hub.IsPermanent(err):
		o.Kind, o.Permanent = KindFailed, true
		l = d.log.Warn()
	default:
		o.Kind = KindFailed
		if dl, ok := hub.DeferDelay(err); ok {
			d.recheckHoldSoon() // the channel may have just blocked its last subscription
			o.Kind, o.RetryIn = KindDeferred, dl
		} else if attempt >= d.cfg.MaxAttempts {
			o.Permanent = true
		} else {
			o.RetryIn = d.retryDelay(err, attempt)
		}
		l = d.log.Info()
	}
	// One line per attempt: the dispatcher is where errors are logged.
	l.Str("channel", d.channel).Str("subscription", del.Subscription.ID).Str("event_id", del.Event.ID).
		Str("delivery_id", del.ID).Int("attempt", attempt).Int64("duration_ms", took.Milliseconds()).
		Int("status", del.Outcome.Status).Err(err).Str("outcome", o.Kind).Msg("attempt")
	d.obs(o)
}

// handleRetry makes one attempt of a DELIVERIES message.
func (d *Dispatcher) handleRetry(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.TermWithReason("no metadata")
		return
	}
	h := msg.Headers()
	if reason := h.Get(hub.HeaderTerminal); reason != "" {
		_ = msg.TermWithReason(reason)
		return
	}
	attempt, wait := AttemptOf(h, meta.NumDelivered)
	if wait {
		_ = msg.NakWithDelay(max(time.Until(HeaderTime(h, hub.HeaderNotBefore)), 0))
		return
	}
	var rec Record
	if err := json.Unmarshal(msg.Data(), &rec); err != nil {
		_ = msg.TermWithReason("corrupt delivery record: " + err.Error())
		return
	}
	r, ok := d.route(rec.Subscription)
	switch {
	case !ok:
		_ = msg.TermWithReason(fmt.Sprintf("subscription %s no longer exists", rec.Subscription))
		return
	case r.Sub.Disabled:
		_ = msg.TermWithReason(fmt.Sprintf("subscription %s is disabled", rec.Subscription))
		return
	}
	ev, err := decodeEvent(rec.Event)
	if err != nil {
		_ = msg.TermWithReason("invalid event: " + err.Error())
		return
	}
	var content hub.Content
	if r.Render != nil {
		if _, content, err = r.Render(ev); err != nil {
			_ = msg.TermWithReason("render: " + err.Error())
			return
		}
	}
	first := HeaderTime(h, hub.HeaderFirstAttempt)
	if first.IsZero() {
		first = d.now()
	}
	del := &hub.Delivery{
		ID: rec.DeliveryID, Event: ev, EventJSON: rec.Event, Subscription: r.Sub, Recipient: rec.Recipient,
		Content: content, Attempt: attempt, FirstAttempt: first,
	}
	stopKeepAlive := d.keepAlive(msg) // until the message is settled (rewrites, records)
	err, took := d.send(ctx, del)
	// Retries carry the id their first attempt derived (a check, not a
	// trust: the message could come from elsewhere).
	d.report(del, err, took, attempt, d.now(), del.ID == hub.DeliveryID(ev.ID, r.Sub.ID, del.Recipient))
	var act func() error
	switch {
	case err == nil:
		act = d.ackStep(msg)
	case ctx.Err() != nil:
		// Shutting down: try again after the restart.
		act = msg.Nak
	case hub.IsPermanent(err):
		if hub.IsGone(err) {
			d.disable(ctx, r.Sub.ID, err.Error())
		}
		act = termWith(msg, truncate(err.Error()))
	default:
		if dl, ok := hub.DeferDelay(err); ok {
			act = d.deferRetry(ctx, msg, rec, attempt, first, dl, err)
		} else if attempt >= d.cfg.MaxAttempts {
			act = termWith(msg, truncate(fmt.Sprintf("gave up after %d attempts: %v", attempt, err)))
		} else {
			act = nakAfter(msg, d.retryDelay(err, attempt))
		}
	}
	d.settleMsg(stopKeepAlive, act)
}

// deferRetry waits without spending the attempt: the message is written
// again with the attempts made so far and a not-before, then acked (the
// returned step).
func (d *Dispatcher) deferRetry(ctx context.Context, msg jetstream.Msg, rec Record, attempt int, first time.Time, wait time.Duration, cause error) func() error {
	meta, _ := msg.Metadata()
	m, err := NewDeliveryMsg(rec, Retry{
		Attempts: attempt - 1, Wait: wait, FirstAttempt: first, LastError: cause.Error(),
		MsgID: fmt.Sprintf("%s/c%d", rec.DeliveryID, meta.Sequence.Stream),
	}, d.now())
	if err == nil {
		err = d.publishAll(ctx, []*nats.Msg{m})
	}
	if err != nil {
		d.log.Warn().Err(err).Str("channel", d.channel).Str("delivery_id", rec.DeliveryID).Msg("rewriting a deferred delivery failed; it waits on its current message")
		return nakAfter(msg, wait)
	}
	return d.ackStep(msg)
}

// invalidEvent dead-letters an envelope that fails validation. Every
// channel's dispatcher sees it; the DLQ's dedup keeps one record.
func (d *Dispatcher) invalidEvent(ctx context.Context, msg jetstream.Msg, cause error) {
	meta, _ := msg.Metadata()
	var seq uint64
	if meta != nil {
		seq = meta.Sequence.Stream
	}
	if err := PublishInvalid(ctx, d.js, msg.Subject(), seq, msg.Data(), cause, d.now()); err != nil {
		d.log.Warn().Err(err).Str("channel", d.channel).Uint64("stream_seq", seq).Msg("dead-lettering an invalid event; retrying")
		_ = msg.NakWithDelay(time.Second)
		return
	}
	d.obs(Outcome{Kind: KindInvalid, At: d.now(), Channel: d.channel, Err: cause, Reason: cause.Error()})
	d.settleMsg(func() {}, d.ackStep(msg))
}

// InvalidChannel and InvalidSubscription are the DLQ subject tokens of
// events that failed validation before any subscription was matched.
const (
	InvalidChannel      = "_invalid"
	InvalidSubscription = "_"
)

// PublishInvalid writes a dead letter for an invalid envelope.
func PublishInvalid(ctx context.Context, js jetstream.JetStream, subject string, seq uint64, data []byte, cause error, now time.Time) error {
	ev := json.RawMessage(data)
	if !json.Valid(data) {
		b, _ := json.Marshal(string(data))
		ev = b
	}
	dl := DeadLetter{
		Record: Record{
			DeliveryID: fmt.Sprintf("invalid/%d", seq), Channel: InvalidChannel, Subscription: InvalidSubscription,
			EventType: strings.TrimPrefix(subject, hub.SubjectPrefix), Event: ev,
		},
		Reason: "invalid event: " + cause.Error(), DeadAt: now, FirstAttempt: now, LastAttempt: now, SourceSeq: seq,
	}
	body, err := json.Marshal(dl)
	if err != nil {
		return fmt.Errorf("encode dead letter of invalid event %d: %w", seq, err)
	}
	m := &nats.Msg{Subject: hub.DLQSubject(InvalidChannel, InvalidSubscription), Data: body, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, dl.DeliveryID)
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err = js.PublishMsg(pctx, m); err != nil {
		return fmt.Errorf("store dead letter of invalid event %d: %w", seq, err)
	}
	return nil
}

// DeadLetter is a DLQ record.
type DeadLetter struct {
	Record
	// ID is the DLQ stream sequence, filled in when read.
	ID           uint64    `json:"id,omitempty"`
	Reason       string    `json:"reason"`
	Attempts     int       `json:"attempts"`
	FirstAttempt time.Time `json:"first_attempt"`
	LastAttempt  time.Time `json:"last_attempt"`
	DeadAt       time.Time `json:"dead_at"`
	// SourceSeq is the DELIVERIES (or EVENTS, for invalid events) sequence.
	SourceSeq uint64 `json:"source_seq"`
}

// decode decodes an event from EVENTS, through the shared cache.
func (d *Dispatcher) decode(msg jetstream.Msg) (*hub.Event, error) {
	if d.cache == nil {
		return decodeStored(msg)
	}
	meta, err := msg.Metadata()
	if err != nil {
		return decodeStored(msg)
	}
	seq := meta.Sequence.Stream
	if ev, err, ok := d.cache.get(seq); ok {
		return ev, err
	}
	ev, err := decodeStored(msg)
	d.cache.put(seq, ev, err)
	return ev, err
}

// decodeStored decodes an event from EVENTS. Raw NATS publishers may leave
// out the defaulted attributes; they are filled deterministically (the id
// from Nats-Msg-Id or the stream sequence) so redelivery keeps delivery ids.
func decodeStored(msg jetstream.Msg) (*hub.Event, error) {
	var ev hub.Event
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		var ve *hub.ValidationError
		if errors.As(err, &ve) {
			return nil, ve
		}
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if ev.ID == "" || ev.Time.IsZero() {
		meta, err := msg.Metadata()
		if err != nil {
			return nil, err
		}
		if ev.ID == "" {
			ev.ID = msg.Headers().Get(jetstream.MsgIDHeader)
			if ev.ID == "" {
				ev.ID = fmt.Sprintf("seq-%d", meta.Sequence.Stream)
			}
		}
		if ev.Time.IsZero() {
			ev.Time = meta.Timestamp.UTC()
		}
	}
	ev.SetDefaults("hub/nats", time.Time{})
	if err := ev.Validate(0); err != nil {
		return nil, err
	}
	// The subject is what NATS permissions check; a body claiming another
	// type would slip past them.
	if msg.Subject() != ev.NATSSubject() {
		return nil, &hub.ValidationError{Errors: []hub.FieldError{{Field: "type", Reason: fmt.Sprintf("%q does not match the subject %s", ev.Type, msg.Subject())}}}
	}
	return &ev, nil
}

func decodeEvent(b []byte) (*hub.Event, error) {
	var ev hub.Event
	if err := json.Unmarshal(b, &ev); err != nil {
		var ve *hub.ValidationError
		if errors.As(err, &ve) {
			return nil, ve
		}
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if err := ev.Validate(0); err != nil {
		return nil, err
	}
	return &ev, nil
}
