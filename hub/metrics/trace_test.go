package metrics_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/gather"
	"github.com/hubproject/hub/hub/node"
)

// traceReceiver records the traceparent header of each webhook by event id.
type traceReceiver struct {
	mu  sync.Mutex
	got map[string]string
	ch  chan struct{}
}

func (r *traceReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var ev struct {
		ID string `json:"id"`
	}
	body, _ := io.ReadAll(req.Body)
	_ = json.Unmarshal(body, &ev)
	r.mu.Lock()
	r.got[ev.ID] = req.Header.Get("traceparent")
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

// wait returns the traceparent the webhook for event id carried.
func (r *traceReceiver) wait(t *testing.T, id string) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		tp, ok := r.got[id]
		r.mu.Unlock()
		if ok {
			return tp
		}
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("no webhook for event %s", id)
		}
	}
}

// TestTraceparentEndToEnd: a W3C traceparent given to the HTTP intake is
// kept with the event and sent on the webhook, and one given to a gather
// over HTTP reaches the branch.
func TestTraceparentEndToEnd(t *testing.T) {
	rec := &traceReceiver{got: map[string]string{}, ch: make(chan struct{}, 1)}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	n := testHub(t, []hub.Subscription{hook("traced", srv.URL, "trace.>")}, func(c *node.Config) {
		c.Gather.Routes = []gather.Route{{Name: "echo", Timeout: config.Duration(2 * time.Second),
			Branches: []gather.Branch{{Name: "svc", Subject: "svc.echo", Required: true}}}}
	})
	base := n.HTTPURL()
	tp := func(span string) string { return "00-4bf92f3577b34da6a3ce929d0e0e4736-" + span + "-01" }

	t.Run("extension in the body", func(t *testing.T) {
		postEvent(t, base, `{"type":"trace.body","id":"tb","traceparent":"`+tp("00f067aa0ba902b7")+`"}`)
		if got := rec.wait(t, "tb"); got != tp("00f067aa0ba902b7") {
			t.Fatalf("webhook traceparent %q", got)
		}
	})
	t.Run("binary mode ce-traceparent", func(t *testing.T) {
		req, _ := http.NewRequest("POST", base+"/v1/events", strings.NewReader(`{"x":1}`))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": "tc", "ce-type": "trace.binary", "ce-source": "test", "ce-traceparent": tp("00f067aa0ba902b8")} {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 202 {
			t.Fatalf("binary mode: %d", resp.StatusCode)
		}
		if got := rec.wait(t, "tc"); got != tp("00f067aa0ba902b8") {
			t.Fatalf("webhook traceparent %q", got)
		}
	})
	t.Run("gather over HTTP", func(t *testing.T) {
		sub, err := n.Conn().Subscribe("svc.echo", func(m *nats.Msg) {
			b, _ := json.Marshal(map[string]string{"traceparent": m.Header.Get("traceparent")})
			_ = m.Respond(b)
		})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = sub.Unsubscribe() }()
		if err := n.Conn().Flush(); err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", base+"/v1/gather/echo", nil)
		req.Header.Set("traceparent", tp("00f067aa0ba902b9"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var reply struct {
			Svc struct {
				Traceparent string `json:"traceparent"`
			} `json:"svc"`
		}
		if err := json.Unmarshal(b, &reply); err != nil || resp.StatusCode != 200 {
			t.Fatalf("gather: %d %s", resp.StatusCode, b)
		}
		if reply.Svc.Traceparent != tp("00f067aa0ba902b9") {
			t.Fatalf("the branch got traceparent %q", reply.Svc.Traceparent)
		}
	})
	// The W3C Trace Context HTTP header on a structured-mode request: the
	// event must keep it as its traceparent extension.
	t.Run("traceparent HTTP header", func(t *testing.T) {
		postEvent(t, base, `{"type":"trace.header","id":"th"}`, "traceparent", tp("00f067aa0ba902ba"))
		got := rec.wait(t, "th")
		if got == "" {
			t.Fatal("the traceparent HTTP header of POST /v1/events was not kept")
		}
		if got != tp("00f067aa0ba902ba") {
			t.Fatalf("webhook traceparent %q", got)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := n.JetStream().Stream(ctx, hub.EventsStream)
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetLastMsgForSubject(ctx, "events.trace.header")
		if err != nil || !strings.Contains(string(m.Data), tp("00f067aa0ba902ba")) {
			t.Fatalf("stored event lacks the traceparent: %v %s", err, m.Data)
		}
	})
}
