package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dashboard"
	"github.com/hubproject/hub/hub/dlq"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/subscribers/webhook"
)

// testHub is an in-process hub with HTTP on a random loopback port.
func testHub(t *testing.T, subs ...hub.Subscription) *node.Node {
	t.Helper()
	return testHubWith(t, func(*node.Config) {}, subs...)
}

func testHubWith(t *testing.T, tweak func(*node.Config), subs ...hub.Subscription) *node.Node {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.NATS.Listen = ""
	cfg.NATS.StoreDir = t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Channels.Webhook.AllowCIDRs = []string{"127.0.0.0/8"}
	cfg.Subscriptions = subs
	tweak(&cfg)
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

// receiver answers webhooks with 400 while failing, 200 otherwise, and
// records the ids of the events it accepted.
type receiver struct {
	mu       sync.Mutex
	failing  bool
	accepted map[string]bool
}

func newReceiver(t *testing.T, failing bool) (*receiver, string) {
	r := &receiver{failing: failing, accepted: map[string]bool{}}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv.URL
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var ev struct {
		ID string `json:"id"`
	}
	_ = json.NewDecoder(req.Body).Decode(&ev)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.accepted[ev.ID] = true
}

func (r *receiver) setFailing(f bool) {
	r.mu.Lock()
	r.failing = f
	r.mu.Unlock()
}

func (r *receiver) got(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted[id]
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

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func publish(t *testing.T, base, typ, id string) { t.Helper(); publishAs(t, base, "", typ, id) }

// publishAs publishes over HTTP with an API token ("" for none).
func publishAs(t *testing.T, base, token, typ, id string) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/v1/events", strings.NewReader(fmt.Sprintf(`{"type":%q,"id":%q,"data":{"secret":"s3cr3t"}}`, typ, id)))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("publish: %d %s", resp.StatusCode, b)
	}
}

// waitDeadLetters waits until the DLQ holds n dead letters and returns them.
func waitDeadLetters(t *testing.T, n *node.Node, want int) []dlq.DeadLetter {
	t.Helper()
	var items []dlq.DeadLetter
	waitFor(t, 20*time.Second, fmt.Sprintf("%d dead letter(s)", want), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		items, err = n.DLQ().List(ctx, dlq.Filter{})
		return err == nil && len(items) == want
	})
	return items
}

func TestPageAndAssets(t *testing.T) {
	n := testHub(t)
	base := n.HTTPURL()
	for path, ct := range map[string]string{"/": "text/html", "/ui/app.js": "text/javascript", "/ui/style.css": "text/css"} {
		resp, body := get(t, base+path)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ct) || len(body) == 0 {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	_, page := get(t, base+"/")
	if strings.Contains(string(page), "http://") || strings.Contains(string(page), "https://") {
		t.Error("the page loads something from another origin")
	}
	// Other paths still answer problems, not the page.
	if resp, body := get(t, base+"/nope"); resp.StatusCode != 404 || !strings.Contains(string(body), `"status":404`) {
		t.Errorf("GET /nope: %d %s", resp.StatusCode, body)
	}
}

func TestRecentEvents(t *testing.T) {
	n := testHub(t)
	base := n.HTTPURL()
	var list struct {
		Items   []dashboard.Recent `json:"items"`
		Count   int                `json:"count"`
		LastSeq uint64             `json:"last_seq"`
	}
	read := func(query string) {
		t.Helper()
		resp, body := get(t, base+"/v1/events"+query)
		list.Items = nil
		if err := json.Unmarshal(body, &list); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /v1/events%s: %d %s", query, resp.StatusCode, body)
		}
	}
	read("")
	if list.Count != 0 || list.LastSeq != 0 || list.Items == nil {
		t.Fatalf("empty stream: %+v", list)
	}
	for i := range 5 {
		publish(t, base, "order.created", fmt.Sprintf("r-%d", i))
	}
	read("?limit=3")
	if list.Count != 3 || list.LastSeq != 5 || list.Items[0].ID != "r-4" || list.Items[2].ID != "r-2" || list.Items[0].Seq != 5 {
		t.Fatalf("newest three: %+v", list)
	}
	e := list.Items[0]
	if e.Type != "order.created" || e.Source != "hub/http" || e.StoredAt.IsZero() || e.Size == 0 {
		t.Fatalf("event attributes: %+v", e)
	}
	resp, body := get(t, base+"/v1/events?limit=3")
	if strings.Contains(string(body), "s3cr3t") || resp.StatusCode != 200 {
		t.Fatalf("the list shows event data: %s", body)
	}
	read("?after=3")
	if list.Count != 2 || list.Items[0].ID != "r-4" || list.Items[1].ID != "r-3" {
		t.Fatalf("after 3: %+v", list)
	}
	read("?after=5")
	if list.Count != 0 || list.LastSeq != 5 {
		t.Fatalf("after the last: %+v", list)
	}
	for _, q := range []string{"?limit=0", "?limit=501", "?limit=x", "?after=-1"} {
		resp, body := get(t, base+"/v1/events"+q)
		if resp.StatusCode != 400 || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("GET /v1/events%s: %d %s", q, resp.StatusCode, body)
		}
	}
}

func TestStats(t *testing.T) {
	good, goodURL := newReceiver(t, false)
	_, badURL := newReceiver(t, true)
	n := testHub(t, hook("good", goodURL, "order.>"), hook("bad", badURL, "order.>"))
	base := n.HTTPURL()
	for i := range 3 {
		publish(t, base, "order.created", fmt.Sprintf("s-%d", i))
	}
	waitDeadLetters(t, n, 3)
	waitFor(t, 10*time.Second, "deliveries", func() bool { return good.got("s-2") })
	var s dashboard.Stats
	waitFor(t, 10*time.Second, "stats to count every outcome", func() bool {
		resp, body := get(t, base+"/v1/stats")
		if resp.StatusCode != 200 || json.Unmarshal(body, &s) != nil {
			t.Fatalf("GET /v1/stats: %d %s", resp.StatusCode, body)
		}
		w := s.Channels["webhook"]
		return w != nil && w.Outcomes["delivered"] == 3 && w.Outcomes["dead_lettered"] == 3 &&
			s.EventsReceived["http"]+s.EventsReceived["nats"] == 3
	})
	w := s.Channels["webhook"]
	if w.Outcomes["routed"] != 6 || w.Outcomes["failed"] != 3 || w.Attempts != 6 || w.AttemptSeconds <= 0 {
		t.Errorf("webhook stats %+v", w)
	}
	if total := s.EventsReceived["http"] + s.EventsReceived["nats"]; total != 3 {
		t.Errorf("events received %v", s.EventsReceived)
	}
	if s.DLQ != 3 || !s.JetStreamUp {
		t.Errorf("dlq %v, jetstream up %v", s.DLQ, s.JetStreamUp)
	}
	found := map[string]bool{}
	for _, c := range s.Consumers {
		found[c.Consumer] = true
	}
	if !found["hub-webhook"] || !found["hub-webhook-retry"] || !found["hub-dlq"] {
		t.Errorf("consumers %+v", s.Consumers)
	}
	streams := map[string]float64{}
	for _, st := range s.Streams {
		streams[st.Stream] = st.Messages
	}
	if streams[hub.EventsStream] != 3 || streams[hub.DLQStream] != 3 {
		t.Errorf("streams %+v", s.Streams)
	}
}
