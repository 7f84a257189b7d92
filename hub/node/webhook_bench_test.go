package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/webhook"
)

// webhookHub starts an in-process hub with the real webhook channel and
// n subscriptions to one local keep-alive receiver (plus extra subs).
func webhookHub(b *testing.B, url string, n int, extra ...hub.Subscription) (*node.Node, *publisher.Publisher) {
	b.Helper()
	cfg := testConfig(b.TempDir())
	cfg.NATS.Listen, cfg.HTTP.Listen = "", ""
	cfg.Log.Level = "error"
	cfg.Channels.Webhook.AllowCIDRs = []string{"127.0.0.0/8"}
	cfg.Channels.Webhook.Timeout = config.Duration(2 * time.Second)
	cfg.Delivery.Concurrency["webhook"] = 64
	secret := config.Secret(webhook.GenerateSecret())
	for i := 0; i < n; i++ {
		cfg.Subscriptions = append(cfg.Subscriptions, hub.Subscription{
			ID: fmt.Sprintf("s%d", i), Channel: "webhook", Events: []string{"order.>"},
			URL: fmt.Sprintf("%s/s%d", url, i), Secret: secret,
		})
	}
	for _, s := range extra {
		s.Secret = secret
		cfg.Subscriptions = append(cfg.Subscriptions, s)
	}
	nd := node.New(cfg)
	if err := nd.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = nd.Shutdown(ctx)
	})
	p, err := publisher.New(nd.Conn())
	if err != nil {
		b.Fatal(err)
	}
	return nd, p
}

type countingReceiver struct {
	n       atomic.Int64
	mu      sync.Mutex
	latency []time.Duration
}

func (c *countingReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if sent := r.Header.Get("X-Sent"); sent != "" {
		_ = sent
	}
	c.n.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

func waitN(b *testing.B, c *atomic.Int64, want int64) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for c.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d deliveries", c.Load(), want)
		}
		<-time.After(time.Millisecond)
	}
}

// BenchmarkWebhookThroughput: deliveries/s from publish to a local
// keep-alive receiver, one subscription.
func BenchmarkWebhookThroughput(b *testing.B) {
	rcv := &countingReceiver{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	_, p := webhookHub(b, srv.URL, 1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := p.PublishAsync(publisher.Event{Type: "order.created", ID: "t" + strconv.Itoa(i)}); err != nil {
			b.Fatal(err)
		}
	}
	waitN(b, &rcv.n, int64(b.N))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkWebhookLatency1k publishes at 1,000 events/s and reports the
// publish→received latency percentiles.
func BenchmarkWebhookLatency1k(b *testing.B) {
	var mu sync.Mutex
	var lat []time.Duration
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			Time time.Time `json:"time"`
		}
		buf := make([]byte, 512)
		n, _ := r.Body.Read(buf)
		_ = jsonUnmarshal(buf[:n], &ev)
		mu.Lock()
		lat = append(lat, time.Since(ev.Time))
		mu.Unlock()
		got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	_, p := webhookHub(b, srv.URL, 1)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		<-tick.C
		if _, err := p.PublishAsync(publisher.Event{Type: "order.created", ID: "l" + strconv.Itoa(i), Time: time.Now()}); err != nil {
			b.Fatal(err)
		}
	}
	waitN(b, &got, int64(b.N))
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkDeadEndpoint compares healthy deliveries/s with 100 (and 999)
// healthy subscriptions alone and with one more whose endpoint accepts
// connections and never answers.
func BenchmarkDeadEndpoint(b *testing.B) {
	// 999 + 1 is DESIGN.md's "1,000 webhook subscriptions, one of them dead".
	for _, healthy := range []int{100, 999} {
		for _, dead := range []bool{false, true} {
			benchDeadEndpoint(b, healthy, dead)
		}
	}
}

func benchDeadEndpoint(b *testing.B, healthy int, dead bool) {
	name := fmt.Sprintf("healthy%d", healthy)
	if dead {
		name += "+dead1"
	}
	b.Run(name, func(b *testing.B) {
		rcv := &countingReceiver{}
		srv := httptest.NewServer(rcv)
		defer srv.Close()
		var extra []hub.Subscription
		if dead {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			var conns []net.Conn
			var cmu sync.Mutex
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					cmu.Lock()
					conns = append(conns, c) // hold it open, never answer
					cmu.Unlock()
				}
			}()
			defer func() {
				ln.Close()
				cmu.Lock()
				for _, c := range conns {
					c.Close()
				}
				cmu.Unlock()
			}()
			extra = append(extra, hub.Subscription{ID: "dead", Channel: "webhook", Events: []string{"order.>"}, URL: "http://" + ln.Addr().String() + "/dead"})
		}
		_, p := webhookHub(b, srv.URL, healthy, extra...)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := p.PublishAsync(publisher.Event{Type: "order.created", ID: "d" + strconv.Itoa(i)}); err != nil {
				b.Fatal(err)
			}
		}
		waitN(b, &rcv.n, int64(healthy*b.N))
		b.ReportMetric(float64(healthy*b.N)/b.Elapsed().Seconds(), "healthy-deliveries/s")
	})
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
