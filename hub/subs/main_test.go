package subs_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/embedded"
	"github.com/hubproject/hub/embedded/embeddedtest"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/subs"
	"github.com/hubproject/hub/subscribers/webhook"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// configSubs is a config file's fan-out table: a webhook and an email
// subscription, and one disabled in the file.
func configSubs() []hub.Subscription {
	return []hub.Subscription{
		{ID: "crm", Channel: "webhook", Events: []string{"order.>"}, URL: "https://crm.example.com/hooks", Secret: config.Secret(webhook.GenerateSecret())},
		{ID: "mail", Channel: "email", Events: []string{"order.created"}, To: "{{ .data.email }}", Subject: "Order"},
		{ID: "off", Channel: "webhook", Events: []string{"x.y"}, URL: "https://off.example.com/", Secret: config.Secret(webhook.GenerateSecret()), Disabled: true},
	}
}

// node is one hub node's view of the bucket: its own connection, its
// Store, the lists its OnChange received, and the HTTP API.
type node struct {
	store   *subs.Store
	changes chan []hub.Subscription
	mux     *http.ServeMux
}

func newServer(t *testing.T) *embedded.Server { return embeddedtest.Start(t) }

// newNode starts a Store on a new connection to srv, stopped on cleanup
// (before the connection closes).
func newNode(t *testing.T, srv *embedded.Server, opts ...subs.Option) *node {
	t.Helper()
	js := jsFor(t, srv)
	n := &node{changes: make(chan []hub.Subscription, 1024), mux: http.NewServeMux()}
	opts = append(opts, subs.WithOnChange(func(l []hub.Subscription) { n.changes <- l }))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var err error
	n.store, err = subs.New(ctx, js, configSubs(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.store.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.store.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	n.store.Mount(n.mux)
	return n
}

func jsFor(t *testing.T, srv *embedded.Server) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(embeddedtest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// waitList reads OnChange lists until ok accepts one.
func (n *node) waitList(t *testing.T, what string, ok func([]hub.Subscription) bool) []hub.Subscription {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case l := <-n.changes:
			if ok(l) {
				return l
			}
		case <-deadline:
			t.Fatalf("timed out waiting for OnChange: %s", what)
		}
	}
}

func find(l []hub.Subscription, id string) (hub.Subscription, bool) {
	for _, s := range l {
		if s.ID == id {
			return s, true
		}
	}
	return hub.Subscription{}, false
}

// response is an answer with its decoded JSON body.
type response struct {
	code int
	hdr  http.Header
	raw  string
	body map[string]any
}

func (n *node) do(t *testing.T, method, path, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return serve(t, n.mux, req)
}

func serve(t *testing.T, h http.Handler, req *http.Request) response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	r := response{code: rec.Code, hdr: rec.Header(), raw: rec.Body.String()}
	if r.raw != "" {
		if err := json.Unmarshal(rec.Body.Bytes(), &r.body); err != nil {
			t.Fatalf("%s %s: body is not a JSON object: %v\n%s", req.Method, req.URL, err, r.raw)
		}
	}
	return r
}

func (r response) want(t *testing.T, code int) response {
	t.Helper()
	if r.code != code {
		t.Fatalf("status %d, want %d: %s", r.code, code, r.raw)
	}
	return r
}

// fieldErrors returns the problem's errors as field → reason.
func (r response) fieldErrors(t *testing.T) map[string]string {
	t.Helper()
	if ct := r.hdr.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	out := map[string]string{}
	list, _ := r.body["errors"].([]any)
	for _, e := range list {
		m := e.(map[string]any)
		out[m["field"].(string)] = m["reason"].(string)
	}
	return out
}

func str(m map[string]any, k string) string { s, _ := m[k].(string); return s }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
