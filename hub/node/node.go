package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/embedded"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/api"
	"github.com/hubproject/hub/hub/dispatch"
	"github.com/hubproject/hub/hub/dlq"
	"github.com/hubproject/hub/hub/gather"
	"github.com/hubproject/hub/hub/render"
	"github.com/hubproject/hub/hub/subs"
	"github.com/hubproject/hub/subscribers/audit"
	"github.com/hubproject/hub/subscribers/email"
	sublog "github.com/hubproject/hub/subscribers/log"
	"github.com/hubproject/hub/subscribers/sms"
	"github.com/hubproject/hub/subscribers/webhook"
)

// Node is one running hub.
type Node struct {
	cfg     Config
	log     zerolog.Logger
	version string

	srv *embedded.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	// auditNC is the audit trail's own connection: its AUDIT publishes
	// and the acks it releases after each batch (dispatch.WithSettleConn)
	// stay off the connection that carries the dispatchers' pull requests
	// and deliveries. nil when the trail is off.
	auditNC *nats.Conn

	channels    map[string]hub.Channel
	dispatchers map[string]*dispatch.Dispatcher
	dlqProc     *dlq.Processor
	dlq         *dlq.Store
	observers   []dispatch.Observer
	settlers    []func(done func())

	subsStore *subs.Store
	tmpls     map[string]*render.Templates // compiled templates of config subscriptions
	subsMu    sync.Mutex
	subs      []hub.Subscription

	gather *gather.Gatherer
	obs    *observability
	audit  *audit.Auditor

	api      *api.Server
	ln       net.Listener
	httpDone chan struct{} // closed when Serve returns
	httpErr  error         // Serve's error, read after httpDone

	shutdownOnce sync.Once
	shutdownErr  error
}

// Option configures a Node.
type Option func(*Node)

// WithLogger sets the root logger.
func WithLogger(l zerolog.Logger) Option { return func(n *Node) { n.log = l } }

// WithVersion sets the version reported to receivers (User-Agent).
func WithVersion(v string) Option { return func(n *Node) { n.version = v } }

// WithChannel sets the implementation of a channel, replacing the one the
// config would build (tests use a capture; programs can add their own).
func WithChannel(name string, ch hub.Channel) Option {
	return func(n *Node) { n.channels[name] = ch }
}

// WithSettle is called with the step that acknowledges a message whose
// outcomes were observed; f runs it once they are persisted (an external
// audit trail's Settle). See dispatch.WithSettle.
func WithSettle(f func(done func())) Option {
	return func(n *Node) { n.settlers = append(n.settlers, f) }
}

// WithObserver sees every delivery outcome (metrics, tests).
func WithObserver(o dispatch.Observer) Option {
	return func(n *Node) { n.observers = append(n.observers, o) }
}

// New returns a Node for cfg; Start runs it.
func New(cfg Config, opts ...Option) *Node {
	n := &Node{cfg: cfg, log: zerolog.Nop(), version: "dev", channels: map[string]hub.Channel{}, dispatchers: map[string]*dispatch.Dispatcher{}}
	for _, o := range opts {
		o(n)
	}
	return n
}

// Start brings the hub up: NATS, streams, workers, then intake last, so
// nothing is accepted before it can be processed. On error everything
// started so far is stopped again.
func (n *Node) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = n.Shutdown(sctx)
		}
	}()
	if err := n.startNATS(ctx); err != nil {
		return err
	}
	n.cfg.Events.Replicas = n.cfg.Replicas()
	js, err := jetstream.New(n.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	n.js = js
	for _, sc := range []jetstream.StreamConfig{
		hub.EventsStreamConfig(n.cfg.Events),
		hub.DeliveriesStreamConfig(n.cfg.Events),
		hub.DLQStreamConfig(n.cfg.Events, n.cfg.Delivery),
		hub.AdvisoriesStreamConfig(n.cfg.Events),
	} {
		if _, err := hub.EnsureStream(ctx, js, sc); err != nil {
			return err
		}
	}
	acfg := n.cfg.Channels.Audit
	if acfg.Replicas == 0 {
		acfg.Replicas = n.cfg.Events.Replicas
	}
	ajs := js
	if acfg.Enabled {
		if n.auditNC, err = n.dial("hub-audit"); err != nil {
			return fmt.Errorf("audit trail connection: %w", err)
		}
		if ajs, err = jetstream.New(n.auditNC); err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
	}
	// The webhook dispatcher, which always runs, hands it the events.
	aud, err := audit.New(acfg, ajs, audit.WithLogger(n.log.With().Str("component", "audit").Logger()), audit.WithDispatcherEvents())
	if err != nil {
		return err
	}
	if err := aud.Start(ctx); err != nil {
		return err
	}
	n.audit = aud
	n.observers = append(n.observers, aud.Observe)
	n.settlers = append(n.settlers, aud.Settle)
	n.dlq = dlq.NewStore(js, func(dl dlq.DeadLetter) {
		n.observe(dispatch.Outcome{Kind: dispatch.KindReplayed, At: time.Now(), Channel: dl.Channel, Subscription: dl.Subscription,
			EventID: dl.EventID, EventType: dl.EventType, DeliveryID: dl.DeliveryID, Recipient: dl.Recipient, DLQID: dl.ID})
	})
	n.dlqProc = dlq.NewProcessor(js, n.log.With().Str("component", "dlq").Logger(), func(dl dlq.DeadLetter) {
		n.observe(dispatch.Outcome{Kind: dispatch.KindDeadLettered, At: dl.DeadAt, Channel: dl.Channel, Subscription: dl.Subscription,
			EventID: dl.EventID, EventType: dl.EventType, DeliveryID: dl.DeliveryID, Recipient: dl.Recipient, Attempt: dl.Attempts,
			Reason: dl.Reason, DLQID: dl.ID, Permanent: true})
	})
	if err := n.dlqProc.Start(ctx); err != nil {
		return err
	}
	st, err := subs.New(ctx, js, n.cfg.Subscriptions,
		subs.WithLogger(n.log.With().Str("component", "subscriptions").Logger()),
		subs.WithReplicas(n.cfg.Events.Replicas),
		subs.WithOnChange(n.setSubscriptions))
	if err != nil {
		return err
	}
	n.subsStore = st
	if err := n.startObservability(ctx); err != nil {
		return err
	}
	if err := n.startDispatchers(ctx); err != nil {
		return err
	}
	if len(n.cfg.Gather.Routes) > 0 {
		g, err := gather.New(n.cfg.Gather, n.nc, gather.WithLogger(n.log.With().Str("component", "gather").Logger()),
			gather.WithObserver(n.observeGather))
		if err != nil {
			return err
		}
		if err := g.Start(ctx); err != nil {
			return err
		}
		n.gather = g
	}
	if n.cfg.HTTP.Listen != "" {
		// Atomic batches store an HTTP batch with one fsync: a large gain
		// under sync: always, a loss otherwise (docs/benchmarks.md).
		a, err := api.New(n.cfg.HTTP, n.cfg.Events, js, api.WithLogger(n.log.With().Str("component", "http").Logger()),
			api.WithAtomicBatches(n.cfg.NATS.Embedded && n.cfg.NATS.Sync == embedded.SyncAlways))
		if err != nil {
			return err
		}
		n.dlq.Mount(a)
		n.audit.Mount(a)
		n.subsStore.Mount(a)
		n.mountObservability(a)
		if n.gather != nil {
			a.Handle("/v1/gather/{route}", n.gather.HTTPHandler())
		}
		ln, err := a.Listen()
		if err != nil {
			return err
		}
		n.api, n.ln, n.httpDone = a, ln, make(chan struct{})
		go func() {
			defer close(n.httpDone)
			n.httpErr = a.Serve(ln)
		}()
	}
	return nil
}

func (n *Node) startNATS(ctx context.Context) error {
	c := n.cfg.NATS
	if !c.Embedded {
		nc, err := n.dial("hub")
		if err != nil {
			return err
		}
		n.nc = nc
		return nil
	}
	l := n.log
	o := embedded.Options{
		Listen:     c.Listen,
		StoreDir:   c.StoreDir,
		Sync:       c.Sync,
		MaxMemory:  int64(c.MaxMemory),
		MaxStore:   int64(c.MaxStore),
		MaxPayload: int32(c.MaxPayload),
		Logger:     &l,
	}
	if err := c.secureEmbedded(&o); err != nil {
		return err
	}
	if c.Name != "" {
		o.ServerName = c.Name
	}
	if c.Cluster.Enabled() {
		o.Cluster = &embedded.Cluster{Name: c.Cluster.Name, Listen: c.Cluster.Listen, Routes: c.Cluster.Routes}
		// JetStream needs a quorum of the cluster before it answers:
		// wait for the other nodes to start.
		o.ReadyTimeout = 2 * time.Minute
	}
	srv, err := embedded.Start(ctx, o)
	if err != nil {
		return err
	}
	n.srv = srv
	nc, err := n.dial("hub")
	if err != nil {
		return err
	}
	n.nc = nc
	return nil
}

// dial opens a connection of the hub's own: in-process to the embedded
// server, or to nats.url.
func (n *Node) dial(name string) (*nats.Conn, error) {
	if n.srv != nil {
		return n.srv.Connect(name)
	}
	c := n.cfg.NATS
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1)}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", config.RedactURLs(c.URL), err)
	}
	return nc, nil
}

// NATSURL is where outside NATS clients connect ("" when in-process only).
func (n *Node) NATSURL() string {
	if n.srv != nil {
		return n.srv.ClientURL()
	}
	return n.cfg.NATS.URL
}

// HTTPAddr is the bound HTTP address ("" when HTTP is off).
func (n *Node) HTTPAddr() string {
	if n.ln == nil {
		return ""
	}
	return n.ln.Addr().String()
}

// HTTPURL is the base URL of the HTTP API ("" when HTTP is off).
func (n *Node) HTTPURL() string {
	if a := n.HTTPAddr(); a != "" {
		return n.api.Scheme() + "://" + a
	}
	return ""
}

// Conn is the hub's own (in-process when embedded) NATS connection.
func (n *Node) Conn() *nats.Conn { return n.nc }

// JetStream is the hub's JetStream context.
func (n *Node) JetStream() jetstream.JetStream { return n.js }

// Embedded is the embedded server (nil with external NATS).
func (n *Node) Embedded() *embedded.Server { return n.srv }

// HTTPDone is closed when the HTTP server stops (nil when HTTP is off);
// HTTPErr says why.
func (n *Node) HTTPDone() <-chan struct{} { return n.httpDone }

// HTTPErr is the HTTP server's error once HTTPDone is closed (nil when it
// stopped for Shutdown).
func (n *Node) HTTPErr() error {
	select {
	case <-n.httpDone:
		return n.httpErr
	default:
		return nil
	}
}

// Shutdown stops the hub in order, each step with its own deadline within
// ctx: stop intake (HTTP), drain consumers, close channels, drain the NATS
// connection, stop the embedded server. It is safe to call more than once.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() { n.shutdownErr = n.shutdown(ctx) })
	return n.shutdownErr
}

func (n *Node) shutdown(ctx context.Context) error {
	var errs []error
	step := func(name string, limit time.Duration, f func(context.Context) error) {
		sctx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		start := time.Now()
		if err := f(sctx); err != nil {
			errs = append(errs, fmt.Errorf("shutdown %s: %w", name, err))
			n.log.Warn().Err(err).Str("step", name).Msg("shutdown step failed")
			return
		}
		n.log.Debug().Str("step", name).Int64("duration_ms", time.Since(start).Milliseconds()).Msg("shutdown step done")
	}
	if n.api != nil {
		step("http", 10*time.Second, func(ctx context.Context) error {
			if err := n.api.Shutdown(ctx); err != nil {
				return err
			}
			select {
			case <-n.httpDone:
				return n.httpErr
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}
	if n.gather != nil {
		step("gather", 10*time.Second, n.gather.Stop)
	}
	if len(n.dispatchers) > 0 {
		step("drain deliveries", n.cfg.Delivery.ShutdownTimeout.D(), func(ctx context.Context) error {
			var wg sync.WaitGroup
			errs := make([]error, 0, len(n.dispatchers))
			var mu sync.Mutex
			for _, d := range n.dispatchers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := d.Stop(ctx); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			return errors.Join(errs...)
		})
	}
	if n.dlqProc != nil {
		step("dead letters", 5*time.Second, n.dlqProc.Stop)
	}
	if n.subsStore != nil {
		step("subscriptions", 5*time.Second, func(ctx context.Context) error {
			// Nothing is lost if the watcher is slow to stop: log, go on.
			if err := n.subsStore.Stop(ctx); err != nil {
				n.log.Warn().Err(err).Msg("subscriptions watcher did not stop in time")
			}
			return nil
		})
	}
	step("close channels", 10*time.Second, n.closeChannels)
	if n.audit != nil {
		step("audit", 10*time.Second, n.audit.Close)
	}
	step("observability", 5*time.Second, n.stopObservability)
	// After the trail: its Close stores the last records and releases the
	// last acks, on auditNC.
	for _, nc := range []*nats.Conn{n.auditNC, n.nc} {
		if nc != nil {
			step("nats connection "+nc.Opts.Name, 10*time.Second, func(ctx context.Context) error {
				return drainConn(ctx, nc)
			})
		}
	}
	if n.srv != nil {
		step("embedded server", 20*time.Second, n.srv.Shutdown)
	}
	return errors.Join(errs...)
}

// drainConn drains the connection (flushing pending publishes and acks) and
// waits until it is closed.
func drainConn(ctx context.Context, nc *nats.Conn) error {
	if nc.IsClosed() {
		return nil
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		if strings.Contains(err.Error(), "closed") {
			return nil
		}
		nc.Close()
		return err
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		nc.Close()
		return ctx.Err()
	}
}

// startDispatchers builds the channels the subscriptions need and starts
// one dispatcher per channel. Webhooks always run: subscriptions can be
// added at runtime.
func (n *Node) startDispatchers(ctx context.Context) error {
	n.tmpls = map[string]*render.Templates{}
	byChannel := map[string]bool{"webhook": true}
	for i := range n.cfg.Subscriptions {
		s := &n.cfg.Subscriptions[i]
		byChannel[s.Channel] = true
		if s.Channel == "email" || s.Channel == "sms" {
			t, err := render.Compile(s)
			if err != nil {
				return err
			}
			n.tmpls[s.ID] = t
		}
	}
	for name := range byChannel {
		if _, ok := n.channels[name]; ok {
			continue
		}
		ch, err := n.buildChannel(name)
		if err != nil {
			return err
		}
		n.channels[name] = ch
	}
	cache := dispatch.NewEventCache(4096)
	for name := range byChannel {
		opts := []dispatch.Option{
			dispatch.WithEventCache(cache),
			dispatch.WithLogger(n.log.With().Str("component", "dispatch").Logger()),
			dispatch.WithObserver(n.observe),
			dispatch.WithSettle(n.settle),
			dispatch.WithDisabler(n.disableSubscription),
		}
		if n.auditNC != nil {
			opts = append(opts, dispatch.WithSettleConn(n.auditNC))
		}
		if name == "webhook" && n.cfg.Channels.Audit.Enabled {
			opts = append(opts, dispatch.WithEventRecorder(n.audit.RecordEvent))
		}
		d := dispatch.New(name, n.channels[name], n.js, n.cfg.Delivery, opts...)
		n.dispatchers[name] = d
	}
	// The store's first OnChange sets the routes; later ones come from its
	// watcher, so the dispatchers map must be complete before this.
	if err := n.subsStore.Start(ctx); err != nil {
		return err
	}
	for name, d := range n.dispatchers {
		if err := d.Start(ctx); err != nil {
			return fmt.Errorf("channel %s: %w", name, err)
		}
	}
	return nil
}

func (n *Node) buildChannel(name string) (hub.Channel, error) {
	switch name {
	case "log":
		return sublog.New(n.log.With().Str("component", "channel").Logger()), nil
	case "webhook":
		return webhook.New(n.cfg.Channels.Webhook, webhook.WithLogger(n.log.With().Str("component", "webhook").Logger()), webhook.WithVersion(n.version))
	case "email":
		if n.cfg.Channels.Email == nil {
			return nil, errors.New("channel email is used by a subscription but channels.email is not configured")
		}
		return email.New(*n.cfg.Channels.Email)
	case "sms":
		if n.cfg.Channels.SMS == nil {
			return nil, errors.New("channel sms is used by a subscription but channels.sms is not configured")
		}
		return sms.New(*n.cfg.Channels.SMS)
	}
	return nil, fmt.Errorf("unknown channel %q", name)
}

// setSubscriptions is the subscription store's OnChange: the merged list
// of config and runtime subscriptions.
func (n *Node) setSubscriptions(l []hub.Subscription) {
	n.subsMu.Lock()
	n.subs = l
	n.subsMu.Unlock()
	n.applyRoutes()
}

// applyRoutes hands each dispatcher its subscriptions.
func (n *Node) applyRoutes() {
	n.subsMu.Lock()
	defer n.subsMu.Unlock()
	routes := map[string][]dispatch.Route{}
	for i := range n.subs {
		s := n.subs[i]
		r := dispatch.Route{Sub: &s}
		if t := n.tmpls[s.ID]; t != nil && s.Origin == "config" {
			r.Render = renderWith(t)
		}
		routes[s.Channel] = append(routes[s.Channel], r)
	}
	for name, d := range n.dispatchers {
		d.SetRoutes(routes[name])
	}
}

// renderWith decodes the event's data once and renders recipients and
// content from it.
func renderWith(t *render.Templates) func(*hub.Event) ([]string, hub.Content, error) {
	return func(ev *hub.Event) ([]string, hub.Content, error) {
		m, err := render.NewModel(ev)
		if err != nil {
			return nil, hub.Content{}, err
		}
		to, err := t.Recipients(m)
		if err != nil {
			return nil, hub.Content{}, err
		}
		c, err := t.Content(m)
		return to, c, err
	}
}

// disableSubscription stops deliveries to a subscription whose endpoint
// said it is gone (HTTP 410) until it is re-enabled. The state is stored,
// so every node and a restart see it.
func (n *Node) disableSubscription(ctx context.Context, id, reason string) {
	if v, err := n.subsStore.Get(id); err == nil && v.Disabled {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := n.subsStore.SetDisabled(ctx, id, true, reason); err != nil {
		n.log.Error().Err(err).Str("subscription", id).Msg("disabled state not stored; disabling on this node only")
		n.subsMu.Lock()
		l := append([]hub.Subscription(nil), n.subs...)
		n.subsMu.Unlock()
		for i := range l {
			if l[i].ID == id {
				l[i].Disabled = true
			}
		}
		n.setSubscriptions(l)
	}
	n.observe(dispatch.Outcome{Kind: dispatch.KindDisabled, At: time.Now(), Subscription: id, Reason: reason})
}

// settle runs done once every settle hook (WithSettle) has released it.
func (n *Node) settle(done func()) {
	n.settleFrom(0, done)
}

func (n *Node) settleFrom(i int, done func()) {
	if i == len(n.settlers) {
		done()
		return
	}
	n.settlers[i](func() { n.settleFrom(i+1, done) })
}

// observe hands an outcome to every observer.
func (n *Node) observe(o dispatch.Outcome) {
	for _, f := range n.observers {
		f(o)
	}
}

// Subscriptions returns the current subscriptions.
func (n *Node) Subscriptions() []hub.Subscription {
	n.subsMu.Lock()
	defer n.subsMu.Unlock()
	return append([]hub.Subscription(nil), n.subs...)
}

// DLQ is the dead-letter store.
func (n *Node) DLQ() *dlq.Store { return n.dlq }

// Audit returns the audit trail (a no-op one when channels.audit is off).
func (n *Node) Audit() *audit.Auditor { return n.audit }

func (n *Node) closeChannels(ctx context.Context) error {
	var errs []error
	for name, ch := range n.channels {
		if c, ok := ch.(hub.Closer); ok {
			if err := c.Close(ctx); err != nil {
				errs = append(errs, fmt.Errorf("channel %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}
