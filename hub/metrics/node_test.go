package metrics_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/subscribers/webhook"
)

// testHub is an in-process hub with HTTP on a random loopback port and
// in-process NATS only.
func testHub(t *testing.T, subs []hub.Subscription, tweak ...func(*node.Config)) *node.Node {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.NATS.Listen = ""
	cfg.NATS.StoreDir = t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Channels.Webhook.AllowCIDRs = []string{"127.0.0.0/8"}
	cfg.Subscriptions = subs
	for _, f := range tweak {
		f(&cfg)
	}
	if err := config.Check(&cfg); err != nil {
		t.Fatal(err)
	}
	n := node.New(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return n
}

func hook(id, url string, events ...string) hub.Subscription {
	return hub.Subscription{ID: id, Channel: "webhook", Events: events, URL: url, Secret: config.Secret(webhook.GenerateSecret())}
}

// receiver answers every webhook with status and counts them.
func receiver(t *testing.T, status int) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		n.Add(1)
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// scrape reads /metrics into "name{k="v",...}" → value, labels sorted as
// the Prometheus text format writes them.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// series builds a key: series("x", "b", "2", "a", "1") is x{a="1",b="2"}.
func series(name string, kv ...string) string {
	var ls []string
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, fmt.Sprintf("%s=%q", kv[i], kv[i+1]))
	}
	if len(ls) == 0 {
		return name
	}
	slices.Sort(ls)
	return name + "{" + strings.Join(ls, ",") + "}"
}

func sumPrefix(m map[string]float64, prefix string) float64 {
	s := 0.0
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			s += v
		}
	}
	return s
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

func postEvent(t *testing.T, base, body string, hdr ...string) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/v1/events", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("POST /v1/events: %d %s", resp.StatusCode, b)
	}
}

// TestMetricsCountAKnownWorkload: 10 events to two webhook subscriptions,
// one of them failing permanently, and one event nobody subscribes to move
// every counter by exactly what happened.
func TestMetricsCountAKnownWorkload(t *testing.T) {
	good, goodN := receiver(t, http.StatusOK)
	bad, badN := receiver(t, http.StatusBadRequest)
	n := testHub(t, []hub.Subscription{hook("good", good.URL, "order.created"), hook("bad", bad.URL, "order.created")})
	base := n.HTTPURL()

	before := scrape(t, base)
	const events = 10
	for i := range events {
		postEvent(t, base, fmt.Sprintf(`{"type":"order.created","id":"m-%d"}`, i))
	}
	postEvent(t, base, `{"type":"user.created","id":"nobody-listens"}`)

	dl := series("hub_deliveries_total", "channel", "webhook", "subscription", "bad", "outcome", "dead_lettered")
	delivered := series("hub_deliveries_total", "channel", "webhook", "subscription", "good", "outcome", "delivered")
	unmatched := series("hub_events_unmatched_total", "channel", "webhook")
	var after map[string]float64
	waitFor(t, 20*time.Second, "every delivery and dead letter to be counted", func() bool {
		after = scrape(t, base)
		return after[dl]-before[dl] >= events && after[delivered]-before[delivered] >= events &&
			after[series("hub_dlq_messages")] >= events && after[unmatched]-before[unmatched] >= 1 &&
			sumPrefix(after, `hub_events_received_total{`)-sumPrefix(before, `hub_events_received_total{`) >= events+1
	})
	if goodN.Load() != events || badN.Load() != events {
		t.Fatalf("receivers got %d and %d requests, want %d each", goodN.Load(), badN.Load(), events)
	}
	delta := func(k string) float64 { return after[k] - before[k] }
	d := func(sub, outcome string) string {
		return series("hub_deliveries_total", "channel", "webhook", "subscription", sub, "outcome", outcome)
	}
	for k, want := range map[string]float64{
		d("good", "routed"):       events,
		d("good", "delivered"):    events,
		d("good", "retry"):        0,
		d("good", "failed"):       0,
		d("bad", "routed"):        events,
		d("bad", "delivered"):     0,
		d("bad", "retry"):         0,
		d("bad", "failed"):        events,
		d("bad", "dead_lettered"): events,
		series("hub_delivery_attempt_duration_seconds_count", "channel", "webhook"): 2 * events,
		unmatched: 1,
		series("hub_stream_messages", "stream", hub.EventsStream): events + 1,
		series("hub_stream_messages", "stream", hub.DLQStream):    events,
		series("hub_dlq_messages"):                                events,
	} {
		if got := delta(k); got != want {
			t.Errorf("%s moved by %v, want %v", k, got, want)
		}
	}
	// Intake: counted by type; the door is http once the HTTP intake marks
	// its events (metrics.IntakeHeader), nats until then.
	if got := sumPrefix(after, `hub_events_received_total{door=`) - sumPrefix(before, `hub_events_received_total{door=`); got != events+1 {
		t.Errorf("events received moved by %v, want %d", got, events+1)
	}
	switch h := sumPrefix(after, `hub_events_received_total{door="http"`) - sumPrefix(before, `hub_events_received_total{door="http"`); h {
	case events + 1:
	case 0:
		t.Log("the HTTP intake does not mark its events yet (metrics.IntakeHeader): they count as door=nats")
	default:
		t.Errorf("door=http moved by %v, want %d (or 0 before the intake marks its events)", h, events+1)
	}
	typed := after[series("hub_events_received_total", "door", "http", "type", "order.created")] +
		after[series("hub_events_received_total", "door", "nats", "type", "order.created")]
	if typed != events {
		t.Errorf("events received of type order.created: %v, want %d", typed, events)
	}
	if after[series("hub_jetstream_up")] != 1 {
		t.Error("hub_jetstream_up is not 1")
	}
	for _, c := range []string{"hub-webhook", "hub-webhook-retry", "hub-dlq"} {
		if !hasSeries(after, "hub_consumer_pending", `consumer="`+c+`"`) || !hasSeries(after, "hub_consumer_redelivered", `consumer="`+c+`"`) {
			t.Errorf("no consumer metrics for %s", c)
		}
	}
	for _, st := range []string{hub.EventsStream, hub.DeliveriesStream, hub.DLQStream, hub.AdvisoriesStream, "KV_HUB_SUBSCRIPTIONS"} {
		if _, ok := after[series("hub_stream_bytes", "stream", st)]; !ok {
			t.Errorf("no hub_stream_bytes for %s", st)
		}
	}
	if !hasSeries(after, "go_goroutines", "") || !hasSeries(after, "process_resident_memory_bytes", "") {
		t.Error("no Go runtime or process metrics")
	}

	t.Run("http", func(t *testing.T) {
		post := series("hub_http_requests_total", "method", "POST", "pattern", "POST /v1/events", "code", "202")
		if !hasSeries(after, "hub_http_requests_total", "") {
			t.Fatal("no hub_http_requests_total series: the HTTP middleware is not installed")
		}
		if got := delta(post); got != events+1 {
			t.Errorf("%s moved by %v, want %d", post, got, events+1)
		}
		for k := range after {
			if strings.Contains(k, "m-1") || strings.Contains(k, "/v1/dlq/1") {
				t.Errorf("a raw path or id in a label: %s", k)
			}
		}
	})
}

func hasSeries(m map[string]float64, name, contains string) bool {
	for k := range m {
		if (k == name || strings.HasPrefix(k, name+"{")) && strings.Contains(k, contains) {
			return true
		}
	}
	return false
}
