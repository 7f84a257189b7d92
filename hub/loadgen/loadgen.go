// Package loadgen drives load against a hub and measures it: it publishes
// events over NATS (the publisher package) or HTTP (POST /v1/events, one
// event or a batch per request, keep-alive) at a target rate or flat out,
// for a duration or a count; runs the receivers the subscriptions deliver
// to (a keep-alive webhook receiver, a plain SMTP server, a Twilio-shaped
// SMS API, all on 127.0.0.1); and reports throughput, publish→received
// latency percentiles from a log-bucketed histogram, and the hub process's
// CPU time and memory. `hub bench` is its command line; the peers program
// (make bench-peers) uses it to compare the hub with raw JetStream and
// RabbitMQ.
//
// Latency is measured from the event's time attribute, which the load
// generator sets to when the event was meant to be published (with -rate,
// the schedule: a generator that falls behind does not hide the delay), to
// when a sink received the delivery. Sinks and publisher share a clock: both
// run in this process.
package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/publisher"
)

// Ways to publish.
const (
	ViaNATS = "nats"
	ViaHTTP = "http"
)

// Options configure a Run.
type Options struct {
	// Via is ViaNATS (default) or ViaHTTP.
	Via string
	// Conn publishes with Via nats.
	Conn *nats.Conn
	// HTTPURL is the hub's API (http://host:port) for Via http.
	HTTPURL string
	// HTTPClient sends the requests (default: keep-alive, Workers connections).
	HTTPClient *http.Client
	// Rate is events per second; 0 publishes as fast as acks come back.
	Rate float64
	// Count events are published, or for Duration: one of the two.
	Count    int
	Duration time.Duration
	// Size is the encoded size of each event in bytes (about; at least the
	// envelope, ~130 bytes).
	Size int
	// Batch is events per HTTP request (default 1: one event, not an array).
	Batch int
	// Workers is how many HTTP requests are in flight (default 4).
	Workers int
	// Window is how many NATS publishes may await their ack (default 4096).
	Window int
	// Type is the event type (DefaultType).
	Type string
	// Targets is how many deliveries each event should cause: the run waits
	// for Published × Targets after publishing.
	Targets int
	// Drain bounds the wait for deliveries after publishing (default 60s).
	Drain time.Duration
	// Stall ends the wait early when deliveries have started and none came
	// for this long (default 15s).
	Stall time.Duration
	// Recorder counts deliveries; the sinks must share it.
	Recorder *Recorder
	// Proc is the hub process to measure (nil: not measured).
	Proc *Proc
	// SampleEvery is the memory sampling interval (default 1s).
	SampleEvery time.Duration
	// Progress, when set, gets a progress line redrawn in place.
	Progress io.Writer
	// AfterPublish runs once publishing has finished, before the wait for
	// deliveries (a backlog run starts its stopped receivers here).
	AfterPublish func(ctx context.Context) error

	ownClient bool // HTTPClient was made here: close its connections after
}

func (o *Options) defaults() error {
	if o.Via == "" {
		o.Via = ViaNATS
	}
	if o.Batch <= 0 {
		o.Batch = 1
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.Window <= 0 {
		o.Window = 4096
	}
	if o.Drain <= 0 {
		o.Drain = 60 * time.Second
	}
	if o.Stall <= 0 {
		o.Stall = 15 * time.Second
	}
	if o.SampleEvery <= 0 {
		o.SampleEvery = time.Second
	}
	if o.Recorder == nil {
		o.Recorder = NewRecorder(o.Count)
	}
	switch {
	case o.Count < 0 || o.Duration < 0 || o.Rate < 0 || o.Targets < 0:
		return errors.New("count, duration, rate and targets must not be negative")
	case (o.Count == 0) == (o.Duration == 0):
		return errors.New("give a count or a duration, not both")
	case o.Via == ViaNATS && o.Conn == nil:
		return errors.New("publishing over NATS needs a connection")
	case o.Via == ViaHTTP && o.HTTPURL == "":
		return errors.New("publishing over HTTP needs the hub's HTTP URL")
	case o.Via != ViaNATS && o.Via != ViaHTTP:
		return fmt.Errorf("via must be %s or %s, not %q", ViaNATS, ViaHTTP, o.Via)
	}
	if o.HTTPClient == nil {
		o.ownClient = true
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConns: o.Workers, MaxIdleConnsPerHost: o.Workers, MaxConnsPerHost: o.Workers,
			IdleConnTimeout: time.Minute, DisableCompression: true,
		}}
	}
	return nil
}

// Report is what a run measured. Rates are per second; latencies in
// milliseconds.
type Report struct {
	Via        string  `json:"via"`
	TargetRate float64 `json:"target_rate,omitempty"`
	Batch      int     `json:"batch,omitempty"`
	EventBytes int     `json:"event_bytes"`
	// Targets is the deliveries each event should cause (its subscriptions).
	Targets        int     `json:"deliveries_per_event"`
	Published      int64   `json:"published"`
	PublishErrors  int64   `json:"publish_errors"`
	PublishError   string  `json:"publish_error,omitempty"`
	PublishSeconds float64 `json:"publish_seconds"`
	PublishRate    float64 `json:"publish_rate"`
	// IntakeLatency is publish → stored (PubAck, or the 202 of a request).
	IntakeLatency Percentiles `json:"intake_latency_ms"`
	Expected      int64       `json:"expected_deliveries"`
	Delivered     int64       `json:"delivered"`
	Duplicates    int64       `json:"duplicates"`
	// DeliverySeconds runs from the first publish to the last delivery.
	DeliverySeconds float64 `json:"delivery_seconds"`
	DeliveryRate    float64 `json:"delivery_rate"`
	// AfterPublishSeconds is how long AfterPublish took (a backlog's hold).
	AfterPublishSeconds float64 `json:"after_publish_seconds,omitempty"`
	// DrainSeconds runs from the end of AfterPublish to the last delivery.
	DrainSeconds float64 `json:"drain_seconds,omitempty"`
	// Latency is publish → received, every channel.
	Latency  Percentiles     `json:"latency_ms"`
	Channels []ChannelReport `json:"channels"`
	// RetryMessages is how many messages the hub's DELIVERIES stream got
	// (failed or deferred first attempts, retries, deferrals): 0 when every
	// delivery went through on its first attempt. In-process runs only.
	RetryMessages uint64 `json:"retry_messages"`
	// Complete is true when every expected delivery arrived.
	Complete bool        `json:"complete"`
	Hub      *ProcReport `json:"hub,omitempty"`
}

// ChannelReport is one channel's deliveries.
type ChannelReport struct {
	Channel       string      `json:"channel"`
	Subscriptions int         `json:"subscriptions"`
	Delivered     int64       `json:"delivered"`
	Duplicates    int64       `json:"duplicates"`
	Foreign       int64       `json:"foreign,omitempty"`
	Rate          float64     `json:"rate"`
	Latency       Percentiles `json:"latency_ms"`
}

// pubStats is what the publishing side counts.
type pubStats struct {
	published atomic.Int64
	errs      atomic.Int64
	firstErr  atomic.Pointer[string]
	intake    Histogram
}

func (s *pubStats) fail(n int64, err error) {
	s.errs.Add(n)
	msg := err.Error()
	s.firstErr.CompareAndSwap(nil, &msg)
}

// Run publishes, waits for the deliveries, and reports.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	evs := NewEvents(o.Recorder, o.Type, o.Size)
	var smp *sampler
	if o.Proc != nil {
		var err error
		if smp, err = startSampler(o.Proc, o.SampleEvery); err != nil {
			return nil, err
		}
	}
	if o.ownClient {
		defer o.HTTPClient.CloseIdleConnections()
	}
	var st pubStats
	start := time.Now()
	prog := startProgress(o, &st, start)
	var err error
	if o.Via == ViaNATS {
		err = publishNATS(ctx, o, evs, &st, start)
	} else {
		err = publishHTTP(ctx, o, evs, &st, start)
	}
	pubEnd := time.Now()
	if err == nil && o.AfterPublish != nil {
		prog.setPhase("after publish")
		err = o.AfterPublish(ctx)
	}
	drainStart := time.Now()
	expected := st.published.Load() * int64(o.Targets)
	if err == nil {
		prog.setPhase("delivering")
		waitDelivered(ctx, o.Recorder, expected, o.Drain, o.Stall)
	}
	prog.stop()
	rep := &Report{
		Via: o.Via, TargetRate: o.Rate, EventBytes: evs.Size(), Targets: o.Targets,
		Published: st.published.Load(), PublishErrors: st.errs.Load(),
		PublishSeconds: round3(pubEnd.Sub(start).Seconds()),
		IntakeLatency:  st.intake.Summary(),
		Expected:       expected,
		Delivered:      o.Recorder.Delivered(),
		Latency:        o.Recorder.Latency().Summary(),
	}
	if o.Via == ViaHTTP {
		rep.Batch = o.Batch
	}
	if p := st.firstErr.Load(); p != nil {
		rep.PublishError = *p
	}
	rep.PublishRate = rate(rep.Published, pubEnd.Sub(start))
	if last := o.Recorder.Last(); !last.IsZero() {
		rep.DeliverySeconds = round3(last.Sub(start).Seconds())
		rep.DeliveryRate = rate(rep.Delivered, last.Sub(start))
		if o.AfterPublish != nil {
			rep.DrainSeconds = round3(max(last.Sub(drainStart), 0).Seconds())
		}
	}
	if o.AfterPublish != nil {
		rep.AfterPublishSeconds = round3(drainStart.Sub(pubEnd).Seconds())
	}
	chans := o.Recorder.Channels()
	sort.Slice(chans, func(i, j int) bool { return chans[i].Name < chans[j].Name })
	for _, c := range chans {
		cr := ChannelReport{Channel: c.Name, Subscriptions: c.Subscriptions, Delivered: c.Delivered(),
			Duplicates: c.Duplicates(), Foreign: c.Foreign(), Latency: c.Latency.Summary()}
		if last := c.Last(); !last.IsZero() {
			cr.Rate = rate(cr.Delivered, last.Sub(start))
		}
		rep.Duplicates += cr.Duplicates
		rep.Channels = append(rep.Channels, cr)
	}
	rep.Complete = rep.Delivered >= expected && rep.PublishErrors == 0
	if smp != nil {
		rep.Hub = smp.finish()
	}
	if err != nil {
		return rep, err
	}
	return rep, ctx.Err()
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(int64(float64(n)/d.Seconds()*10+0.5)) / 10
}

// waitDelivered waits until want deliveries arrived, limit passed, ctx
// ended, or — once deliveries have started — stall went by without one
// (a backlog's first delivery may be a retry schedule away).
func waitDelivered(ctx context.Context, rec *Recorder, want int64, limit, stall time.Duration) {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastN, lastChange, started := rec.Delivered(), time.Now(), false
	for rec.Delivered() < want {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-rec.Notify():
		case <-tick.C:
		}
		if n := rec.Delivered(); n != lastN {
			lastN, lastChange, started = n, time.Now(), true
		} else if started && time.Since(lastChange) > stall {
			return
		}
	}
}

// pacer spaces events at a rate from start; with no rate it never waits.
type pacer struct {
	start time.Time
	rate  float64
}

// wait blocks until event i is due and returns its scheduled time (now
// when flat out).
func (p pacer) wait(ctx context.Context, i int) (time.Time, error) {
	if p.rate <= 0 {
		return time.Now(), ctx.Err()
	}
	due := p.start.Add(time.Duration(float64(i) / p.rate * float64(time.Second)))
	// Sleeping under ~200µs costs more than it spaces: burst instead.
	if d := time.Until(due); d > 200*time.Microsecond {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return due, ctx.Err()
		case <-t.C:
		}
	}
	return due, ctx.Err()
}

// more reports whether event i should still be published.
func more(o *Options, start time.Time, i int) bool {
	if o.Count > 0 {
		return i < o.Count
	}
	return time.Since(start) < o.Duration
}

type pending struct {
	f    *publisher.Future
	sent time.Time
}

func publishNATS(ctx context.Context, o Options, evs *Events, st *pubStats, start time.Time) error {
	p, err := publisher.New(o.Conn, publisher.WithSource("hub/bench"), publisher.WithMaxPending(o.Window))
	if err != nil {
		return err
	}
	acks := make(chan pending, o.Window)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for pd := range acks {
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			_, err := pd.f.Wait(wctx)
			cancel()
			if err != nil {
				st.fail(1, err)
				continue
			}
			st.intake.Record(time.Since(pd.sent))
			st.published.Add(1)
		}
	}()
	defer func() {
		close(acks)
		wg.Wait()
	}()
	pc := pacer{start: start, rate: o.Rate}
	for i := 0; more(&o, start, i); i++ {
		t, err := pc.wait(ctx, i)
		if err != nil {
			return nil // cancelled: report what was done
		}
		sent := time.Now()
		ev := evs.Event(i, t)
		for {
			f, err := p.PublishAsync(ev)
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) && ctx.Err() == nil {
				continue
			}
			if err != nil {
				st.fail(1, err)
				if errors.Is(err, publisher.ErrUnavailable) {
					return fmt.Errorf("publish: %w", err)
				}
				break
			}
			acks <- pending{f: f, sent: sent}
			break
		}
	}
	return nil
}

type job struct {
	first, n int
	at       time.Time
}

func publishHTTP(ctx context.Context, o Options, evs *Events, st *pubStats, start time.Time) error {
	url := strings.TrimRight(o.HTTPURL, "/") + "/v1/events"
	jobs := make(chan job, o.Workers)
	var wg sync.WaitGroup
	var fatal atomic.Pointer[error]
	for w := 0; w < o.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			for j := range jobs {
				buf.Reset()
				if o.Batch > 1 {
					buf.WriteByte('[')
				}
				for k := 0; k < j.n; k++ {
					if k > 0 {
						buf.WriteByte(',')
					}
					evs.appendJSON(&buf, j.first+k, j.at)
				}
				if o.Batch > 1 {
					buf.WriteByte(']')
				}
				sent := time.Now()
				if err := post(ctx, o.HTTPClient, url, buf.Bytes()); err != nil {
					st.fail(int64(j.n), err)
					if ctx.Err() == nil && !errors.As(err, new(*statusError)) {
						fatal.CompareAndSwap(nil, &err)
					}
					continue
				}
				st.intake.Record(time.Since(sent))
				st.published.Add(int64(j.n))
			}
		}()
	}
	pc := pacer{start: start, rate: o.Rate}
	for i := 0; more(&o, start, i) && fatal.Load() == nil; i += o.Batch {
		// With a rate, a batch is due when its last event is.
		n := o.Batch
		if o.Count > 0 {
			n = min(n, o.Count-i)
		}
		t, err := pc.wait(ctx, i+n-1)
		if err != nil {
			break
		}
		select {
		case jobs <- job{first: i, n: n, at: t}:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	if p := fatal.Load(); p != nil {
		return fmt.Errorf("publish over HTTP: %w", *p)
	}
	return nil
}

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.code, e.body) }

func post(ctx context.Context, c *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &statusError{code: resp.StatusCode, body: strings.TrimSpace(string(b))}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}
