package dashboard

import (
	"net/http"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/hubproject/hub/hub/api"
	"github.com/hubproject/hub/hub/metrics"
)

// Stats is the digest of the node's metrics the dashboard polls. Counters
// are totals since the node started: the page turns two polls into rates.
type Stats struct {
	Time time.Time `json:"time"`
	// EventsReceived by door (http, nats).
	EventsReceived map[string]float64 `json:"events_received"`
	// Channels: outcome (routed, delivered, retry, failed, ...) totals and
	// attempt latency per channel.
	Channels map[string]*ChannelStats `json:"channels"`
	Streams  []StreamStats            `json:"streams"`
	// Consumers are the durable consumers and what waits on them.
	Consumers []ConsumerStats `json:"consumers"`
	// DLQ is the number of dead letters.
	DLQ float64 `json:"dlq"`
	// JetStreamUp is false when some stream or consumer could not be read.
	JetStreamUp bool `json:"jetstream_up"`
}

// ChannelStats are one channel's delivery totals.
type ChannelStats struct {
	Outcomes map[string]float64 `json:"outcomes"`
	Attempts uint64             `json:"attempts"`
	// AttemptSeconds is the sum of all attempts' durations.
	AttemptSeconds float64 `json:"attempt_seconds"`
}

// StreamStats is one stream's size.
type StreamStats struct {
	Stream   string  `json:"stream"`
	Messages float64 `json:"messages"`
	Bytes    float64 `json:"bytes"`
}

// ConsumerStats is one consumer's backlog.
type ConsumerStats struct {
	Stream      string  `json:"stream"`
	Consumer    string  `json:"consumer"`
	Channel     string  `json:"channel,omitempty"`
	Pending     float64 `json:"pending"`
	AckPending  float64 `json:"ack_pending"`
	Redelivered float64 `json:"redelivered"`
}

// Digest turns gathered metric families into Stats.
func Digest(mfs []*dto.MetricFamily, now time.Time) Stats {
	s := Stats{Time: now.UTC(), EventsReceived: map[string]float64{}, Channels: map[string]*ChannelStats{},
		Streams: []StreamStats{}, Consumers: []ConsumerStats{}}
	channel := func(name string) *ChannelStats {
		c := s.Channels[name]
		if c == nil {
			c = &ChannelStats{Outcomes: map[string]float64{}}
			s.Channels[name] = c
		}
		return c
	}
	streams := map[string]*StreamStats{}
	stream := func(name string) *StreamStats {
		st := streams[name]
		if st == nil {
			st = &StreamStats{Stream: name}
			streams[name] = st
		}
		return st
	}
	consumers := map[[2]string]*ConsumerStats{}
	consumer := func(m *dto.Metric) *ConsumerStats {
		l := labels(m)
		k := [2]string{l["stream"], l["consumer"]}
		c := consumers[k]
		if c == nil {
			c = &ConsumerStats{Stream: k[0], Consumer: k[1], Channel: l["channel"]}
			consumers[k] = c
		}
		return c
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case metrics.EventsReceived:
				s.EventsReceived[labels(m)["door"]] += m.GetCounter().GetValue()
			case metrics.Deliveries:
				l := labels(m)
				channel(l["channel"]).Outcomes[l["outcome"]] += m.GetCounter().GetValue()
			case metrics.AttemptDuration:
				c := channel(labels(m)["channel"])
				c.Attempts += m.GetHistogram().GetSampleCount()
				c.AttemptSeconds += m.GetHistogram().GetSampleSum()
			case metrics.StreamMessages:
				stream(labels(m)["stream"]).Messages = m.GetGauge().GetValue()
			case metrics.StreamBytes:
				stream(labels(m)["stream"]).Bytes = m.GetGauge().GetValue()
			case metrics.ConsumerPending:
				consumer(m).Pending = m.GetGauge().GetValue()
			case metrics.ConsumerAckPending:
				consumer(m).AckPending = m.GetGauge().GetValue()
			case metrics.ConsumerRedeliver:
				consumer(m).Redelivered = m.GetGauge().GetValue()
			case metrics.DLQMessages:
				s.DLQ = m.GetGauge().GetValue()
			case metrics.JetStreamUp:
				s.JetStreamUp = m.GetGauge().GetValue() == 1
			}
		}
	}
	for _, st := range streams {
		s.Streams = append(s.Streams, *st)
	}
	sort.Slice(s.Streams, func(i, j int) bool { return s.Streams[i].Stream < s.Streams[j].Stream })
	for _, c := range consumers {
		s.Consumers = append(s.Consumers, *c)
	}
	sort.Slice(s.Consumers, func(i, j int) bool {
		a, b := s.Consumers[i], s.Consumers[j]
		if a.Stream != b.Stream {
			return a.Stream < b.Stream
		}
		return a.Consumer < b.Consumer
	})
	return s
}

func labels(m *dto.Metric) map[string]string {
	l := make(map[string]string, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}

func (d *Dashboard) httpStats(w http.ResponseWriter, _ *http.Request) {
	mfs, err := d.metrics.Gather()
	if err != nil && len(mfs) == 0 {
		d.log.Warn().Err(err).Msg("gathering metrics for /v1/stats")
		api.Error(w, http.StatusServiceUnavailable, "metrics unavailable: "+err.Error())
		return
	}
	api.WriteJSON(w, http.StatusOK, Digest(mfs, time.Now()))
}
