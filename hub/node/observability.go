package node

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/api"
	"github.com/hubproject/hub/hub/dashboard"
	"github.com/hubproject/hub/hub/dispatch"
	"github.com/hubproject/hub/hub/dlq"
	"github.com/hubproject/hub/hub/gather"
	"github.com/hubproject/hub/hub/metrics"
	"github.com/hubproject/hub/hub/subs"
)

// observability is what startObservability starts: the node's metrics and
// the tail of EVENTS that counts intake.
type observability struct {
	metrics *metrics.Metrics
	events  *metrics.EventCounter
}

func (n *Node) obsOf() *observability { return n.obs }

func (n *Node) setObs(o *observability) { n.obs = o }

// startObservability starts metrics collection before the dispatchers, so
// their first outcomes are counted. Without the HTTP API nothing could
// read the metrics, so nothing is collected.
func (n *Node) startObservability(ctx context.Context) error {
	if n.cfg.HTTP.Listen == "" {
		return nil
	}
	m := metrics.New()
	ec, err := metrics.StartEventCounter(ctx, n.js, m)
	if err != nil {
		return err
	}
	n.observers = append(n.observers, m.Observe)
	n.setObs(&observability{metrics: m, events: ec})
	return nil
}

// mountObservability adds /metrics, the dashboard (/, /ui/), its digest
// /v1/stats and the recent events /v1/events to the HTTP API, and the
// request metrics when the API can take a middleware.
func (n *Node) mountObservability(a *api.Server) {
	o := n.obsOf()
	if o == nil {
		return
	}
	channels := make([]string, 0, len(n.dispatchers))
	for name := range n.dispatchers {
		channels = append(channels, name)
	}
	slices.Sort(channels)
	consumers := make([]metrics.Consumer, 0, 2*len(channels)+1)
	for _, ch := range channels {
		consumers = append(consumers,
			metrics.Consumer{Stream: hub.EventsStream, Name: dispatch.EventsConsumer(ch), Channel: ch},
			metrics.Consumer{Stream: hub.DeliveriesStream, Name: dispatch.RetryConsumer(ch), Channel: ch})
	}
	consumers = append(consumers, metrics.Consumer{Stream: hub.AdvisoriesStream, Name: dlq.ConsumerName})
	streams := []string{hub.EventsStream, hub.DeliveriesStream, hub.DLQStream, hub.AdvisoriesStream, "KV_" + subs.Bucket}
	if err := o.metrics.Register(metrics.NewJetStreamCollector(n.js, streams,
		func() []metrics.Consumer { return consumers }, 3*time.Second)); err != nil {
		n.log.Error().Err(err).Msg("JetStream metrics not registered")
	}
	if n.gather != nil {
		o.metrics.SetGatherRoutes(n.gather.Routes())
	}
	// api.Server.Use (a middleware around every request) is an optional
	// capability until the API has it.
	if u, ok := any(a).(interface {
		Use(func(http.Handler) http.Handler)
	}); ok {
		u.Use(o.metrics.Middleware)
	}
	if n.cfg.HTTP.Metrics {
		a.Handle("GET /metrics", o.metrics.Handler())
	}
	if n.cfg.HTTP.Dashboard {
		dashboard.New(n.js, o.metrics.Gatherer(), dashboard.WithLogger(n.log.With().Str("component", "dashboard").Logger())).Mount(a)
	}
}

// observeGather records a finished gather's branches (gather.WithObserver).
func (n *Node) observeGather(res *gather.Result) {
	if o := n.obsOf(); o != nil {
		o.metrics.ObserveGather(res)
	}
}

// stopObservability stops what startObservability started.
func (n *Node) stopObservability(ctx context.Context) error {
	o := n.obsOf()
	if o == nil {
		return nil
	}
	n.setObs(nil)
	return o.events.Stop(ctx)
}
