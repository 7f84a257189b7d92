// Package metrics holds a hub node's Prometheus metrics: intake, delivery
// outcomes and latencies, HTTP requests, gather latencies, and JetStream
// stream and consumer state read at scrape time. Every Metrics has a
// registry of its own (never the global default one), so several hubs can
// run in one process. docs/observability.md lists every metric.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hubproject/hub/hub/dispatch"
	"github.com/hubproject/hub/hub/gather"
)

// Metric names, shared with the dashboard's digest (/v1/stats).
const (
	EventsReceived     = "hub_events_received_total"
	EventsUnmatched    = "hub_events_unmatched_total"
	EventsInvalid      = "hub_events_invalid_total"
	Deliveries         = "hub_deliveries_total"
	AttemptDuration    = "hub_delivery_attempt_duration_seconds"
	SubsDisabled       = "hub_subscriptions_disabled_total"
	HTTPRequests       = "hub_http_requests_total"
	HTTPDuration       = "hub_http_request_duration_seconds"
	GatherDuration     = "hub_gather_duration_seconds"
	GatherBranch       = "hub_gather_branch_duration_seconds"
	DLQMessages        = "hub_dlq_messages"
	StreamMessages     = "hub_stream_messages"
	StreamBytes        = "hub_stream_bytes"
	ConsumerPending    = "hub_consumer_pending"
	ConsumerAckPending = "hub_consumer_ack_pending"
	ConsumerRedeliver  = "hub_consumer_redelivered"
	JetStreamUp        = "hub_jetstream_up"
)

// Values of the outcome label of hub_deliveries_total.
const (
	OutcomeRouted       = "routed"        // a target was matched (before its first attempt)
	OutcomeDelivered    = "delivered"     // an attempt succeeded
	OutcomeRetry        = "retry"         // an attempt failed and will be retried
	OutcomeFailed       = "failed"        // an attempt failed for good: the target goes to the DLQ
	OutcomeDeferred     = "deferred"      // the channel asked to wait without spending the attempt
	OutcomeDeadLettered = "dead_lettered" // the dead letter was written
	OutcomeReplayed     = "replayed"      // a dead letter was replayed
)

// Intake doors (the door label of hub_events_received_total).
const (
	DoorHTTP = "http"
	DoorNATS = "nats"
)

// Other is the label value that stands for every value past a cap.
const Other = "other"

// Defaults for the label caps.
const (
	DefaultMaxTypes         = 100
	DefaultMaxSubscriptions = 1000
)

// Buckets of every latency histogram: 0.5 ms to about 12 s.
var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 2.5, 12)

// Metrics is one hub node's metrics.
type Metrics struct {
	reg *prometheus.Registry

	received      *prometheus.CounterVec
	unmatched     *prometheus.CounterVec
	invalid       *prometheus.CounterVec
	deliveries    *prometheus.CounterVec
	attempts      *prometheus.HistogramVec
	disabled      *prometheus.CounterVec
	httpRequests  *prometheus.CounterVec
	httpDuration  *prometheus.HistogramVec
	gatherLatency *prometheus.HistogramVec
	branchLatency *prometheus.HistogramVec

	types  *capped
	subs   *capped
	routes *capped // gather route names; fixed by SetGatherRoutes
}

// Option configures Metrics.
type Option func(*options)

type options struct {
	maxTypes, maxSubs int
	process           bool
}

// WithMaxTypes caps the distinct event types counted by name; later types
// count as "other". Default 100.
func WithMaxTypes(n int) Option { return func(o *options) { o.maxTypes = n } }

// WithMaxSubscriptions caps the distinct subscription label values;
// later subscriptions count as "other". Default 1000.
func WithMaxSubscriptions(n int) Option { return func(o *options) { o.maxSubs = n } }

// WithoutProcessMetrics leaves out the go_* and process_* collectors
// (tests that compare whole scrapes).
func WithoutProcessMetrics() Option { return func(o *options) { o.process = false } }

// New returns Metrics with every hub metric registered in a new registry.
func New(opts ...Option) *Metrics {
	o := options{maxTypes: DefaultMaxTypes, maxSubs: DefaultMaxSubscriptions, process: true}
	for _, f := range opts {
		f(&o)
	}
	m := &Metrics{
		reg:    prometheus.NewRegistry(),
		types:  newCapped(o.maxTypes),
		subs:   newCapped(o.maxSubs),
		routes: newCapped(0),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: EventsReceived,
			Help: "Events stored in the EVENTS stream, by intake door and type (duplicates inside the window are not stored, so not counted).",
		}, []string{"door", "type"}),
		unmatched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: EventsUnmatched,
			Help: "Events a channel read that matched none of its subscriptions.",
		}, []string{"channel"}),
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: EventsInvalid,
			Help: "Stored envelopes that failed validation and were dead-lettered, as seen by each channel.",
		}, []string{"channel"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: Deliveries,
			Help: "Delivery outcomes by channel, subscription and outcome (routed, delivered, retry, failed, deferred, dead_lettered, replayed).",
		}, []string{"channel", "subscription", "outcome"}),
		attempts: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    AttemptDuration,
			Help:    "Duration of one delivery attempt (the channel's Send), by channel.",
			Buckets: latencyBuckets,
		}, []string{"channel"}),
		disabled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: SubsDisabled,
			Help: "Subscriptions disabled by the hub (an endpoint answered 410 Gone).",
		}, []string{"subscription"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: HTTPRequests,
			Help: "HTTP API requests by method, route pattern and status code.",
		}, []string{"method", "pattern", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    HTTPDuration,
			Help:    "HTTP API request duration by method and route pattern.",
			Buckets: latencyBuckets,
		}, []string{"method", "pattern"}),
		gatherLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    GatherDuration,
			Help:    "Whole gathers over HTTP by route and HTTP status.",
			Buckets: latencyBuckets,
		}, []string{"route", "code"}),
		branchLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    GatherBranch,
			Help:    "Gather branch latency by route, branch and status (ok, cached, timeout, error).",
			Buckets: latencyBuckets,
		}, []string{"route", "branch", "status"}),
	}
	m.reg.MustRegister(m.received, m.unmatched, m.invalid, m.deliveries, m.attempts, m.disabled,
		m.httpRequests, m.httpDuration, m.gatherLatency, m.branchLatency)
	if o.process {
		m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return m
}

// Register adds a collector (the JetStream collector) to the registry.
func (m *Metrics) Register(c prometheus.Collector) error { return m.reg.Register(c) }

// Gatherer reads the current values (the dashboard's digest uses it).
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler serves the registry in the Prometheus exposition format. A
// collector that fails is left out of the scrape; the rest is served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// EventStored counts one event stored through door with type typ.
func (m *Metrics) EventStored(door, typ string) {
	m.received.WithLabelValues(door, m.types.value(typ)).Inc()
}

// Observe is a dispatch.Observer: it counts every delivery outcome and
// times every attempt. It never blocks.
func (m *Metrics) Observe(o dispatch.Outcome) {
	switch o.Kind {
	case dispatch.KindUnmatched:
		m.unmatched.WithLabelValues(o.Channel).Inc()
		return
	case dispatch.KindInvalid:
		m.invalid.WithLabelValues(o.Channel).Inc()
		return
	case dispatch.KindDisabled:
		m.disabled.WithLabelValues(m.subs.value(o.Subscription)).Inc()
		return
	}
	outcome := ""
	switch o.Kind {
	case dispatch.KindRouted:
		outcome = OutcomeRouted
	case dispatch.KindDelivered:
		outcome = OutcomeDelivered
	case dispatch.KindFailed:
		outcome = OutcomeRetry
		if o.Permanent {
			outcome = OutcomeFailed
		}
	case dispatch.KindDeferred:
		outcome = OutcomeDeferred
	case dispatch.KindDeadLettered:
		outcome = OutcomeDeadLettered
	case dispatch.KindReplayed:
		outcome = OutcomeReplayed
	default:
		return
	}
	m.deliveries.WithLabelValues(o.Channel, m.subs.value(o.Subscription), outcome).Inc()
	// Attempts carry their number; a render failure (failed before any
	// attempt) and the dead letter's record do not time a Send.
	switch o.Kind {
	case dispatch.KindDelivered, dispatch.KindFailed, dispatch.KindDeferred:
		if o.Attempt > 0 {
			m.attempts.WithLabelValues(o.Channel).Observe(o.Duration.Seconds())
		}
	}
}

// SetGatherRoutes names the gather routes that get their own label value;
// any other route name (an unknown route, answered 404) is "other".
func (m *Metrics) SetGatherRoutes(routes []string) {
	m.routes.fix(routes)
}

// ObserveGather records a finished gather's branches. It is meant for a
// gather observer hook (gather.WithObserver, not there yet).
func (m *Metrics) ObserveGather(res *gather.Result) {
	if res == nil {
		return
	}
	route := m.routes.value(res.Route)
	for _, b := range res.Branches {
		m.branchLatency.WithLabelValues(route, b.Name, string(b.Status)).Observe(b.Latency.Seconds())
	}
}

// capped passes label values through until it has seen max distinct ones;
// every later value is Other. It bounds the series a label can create.
type capped struct {
	mu    sync.RWMutex
	max   int
	seen  map[string]struct{}
	fixed bool
}

func newCapped(max int) *capped { return &capped{max: max, seen: map[string]struct{}{}} }

func (c *capped) value(v string) string {
	c.mu.RLock()
	_, ok := c.seen[v]
	full := c.fixed || len(c.seen) >= c.max
	c.mu.RUnlock()
	if ok {
		return v
	}
	if full {
		return Other
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[v]; ok {
		return v
	}
	if c.fixed || len(c.seen) >= c.max {
		return Other
	}
	c.seen[v] = struct{}{}
	return v
}

// fix sets the allowed values once and for all.
func (c *capped) fix(values []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = make(map[string]struct{}, len(values))
	for _, v := range values {
		c.seen[v] = struct{}{}
	}
	c.fixed = true
}
