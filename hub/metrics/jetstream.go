package metrics

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubproject/hub/hub"
)

// Consumer names a durable consumer the collector reports.
type Consumer struct {
	Stream  string
	Name    string
	Channel string // "" for consumers that serve no channel
}

// JetStreamCollector reads stream sizes and consumer state from JetStream
// when Prometheus scrapes, each scrape bounded by a timeout: no goroutine,
// no polling between scrapes. A stream or consumer that cannot be read is
// left out of that scrape and hub_jetstream_up is 0.
type JetStreamCollector struct {
	js        jetstream.JetStream
	streams   []string
	consumers func() []Consumer
	timeout   time.Duration

	streamMsgs, streamBytes, dlqMsgs *prometheus.Desc
	pending, ackPending, redelivered *prometheus.Desc
	up                               *prometheus.Desc
}

// NewJetStreamCollector reports streams and the consumers that consumers
// returns (asked at every scrape, so the list can grow after start-up).
// timeout bounds one scrape's JetStream requests (0: 3s).
func NewJetStreamCollector(js jetstream.JetStream, streams []string, consumers func() []Consumer, timeout time.Duration) *JetStreamCollector {
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	if consumers == nil {
		consumers = func() []Consumer { return nil }
	}
	cl := []string{"stream", "consumer", "channel"}
	return &JetStreamCollector{
		js: js, streams: streams, consumers: consumers, timeout: timeout,
		streamMsgs:  prometheus.NewDesc(StreamMessages, "Messages in a hub stream.", []string{"stream"}, nil),
		streamBytes: prometheus.NewDesc(StreamBytes, "Bytes in a hub stream.", []string{"stream"}, nil),
		dlqMsgs:     prometheus.NewDesc(DLQMessages, "Dead letters waiting in the DLQ stream.", nil, nil),
		pending:     prometheus.NewDesc(ConsumerPending, "Messages of the stream the consumer has not been sent yet (num_pending).", cl, nil),
		ackPending:  prometheus.NewDesc(ConsumerAckPending, "Messages sent to the consumer and not acknowledged yet, retries waiting out a delay included (num_ack_pending).", cl, nil),
		redelivered: prometheus.NewDesc(ConsumerRedeliver, "Messages sent to the consumer more than once and not acknowledged yet (num_redelivered).", cl, nil),
		up:          prometheus.NewDesc(JetStreamUp, "1 when every stream and consumer could be read at this scrape.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *JetStreamCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.streamMsgs, c.streamBytes, c.dlqMsgs, c.pending, c.ackPending, c.redelivered, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *JetStreamCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	up := 1.0
	for _, name := range c.streams {
		st, err := c.js.Stream(ctx, name)
		if err != nil {
			up = 0
			continue
		}
		s := st.CachedInfo().State
		ch <- prometheus.MustNewConstMetric(c.streamMsgs, prometheus.GaugeValue, float64(s.Msgs), name)
		ch <- prometheus.MustNewConstMetric(c.streamBytes, prometheus.GaugeValue, float64(s.Bytes), name)
		if name == hub.DLQStream {
			ch <- prometheus.MustNewConstMetric(c.dlqMsgs, prometheus.GaugeValue, float64(s.Msgs))
		}
	}
	for _, cs := range c.consumers() {
		cons, err := c.js.Consumer(ctx, cs.Stream, cs.Name)
		if err != nil {
			up = 0
			continue
		}
		info := cons.CachedInfo()
		l := []string{cs.Stream, cs.Name, cs.Channel}
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(info.NumPending), l...)
		ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(info.NumAckPending), l...)
		ch <- prometheus.MustNewConstMetric(c.redelivered, prometheus.GaugeValue, float64(info.NumRedelivered), l...)
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
}
