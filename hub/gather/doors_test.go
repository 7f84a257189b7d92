package gather_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/examples/dashboard/responders"
	"github.com/hubproject/hub/hub/gather"
	"github.com/hubproject/hub/publisher"
)

// doorsYAML has a healthy route, one whose required branch never answers
// and one whose required branch has no responders.
const doorsYAML = `
concurrency: 4
routes:
  - name: dashboard
    timeout: 2s
    branches:
      - { name: user,     subject: svc.user.get,      timeout: 500ms, required: true }
      - { name: orders,   subject: svc.orders.list,   timeout: 500ms, fallback: [] }
      - { name: payments, subject: svc.payments.list, timeout: 500ms, fallback: [] }
  - name: slow
    branches:
      - { name: user,  subject: svc.user.get }
      - { name: audit, subject: svc.audit.silent, timeout: 60ms, required: true }
  - name: broken
    branches:
      - { name: ledger, subject: svc.ledger.none, required: true }
`

func startDoors(t *testing.T, delay time.Duration) (*env, *gather.Gatherer) {
	t.Helper()
	e := newEnv(t)
	stop, err := responders.Start(e.svc, responders.Options{Delay: delay})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	respond(t, e.svc, "svc.audit.silent", 0, silent)
	return e, e.gatherer(t, doorsYAML)
}

func problemOf(t *testing.T, body []byte) gather.Problem {
	t.Helper()
	var p gather.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("not a problem JSON: %v\n%s", err, body)
	}
	return p
}

func TestNATSDoor(t *testing.T) {
	e, g := startDoors(t, 0)
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Stop(context.Background()) })
	client := connect(t, e.ns)

	body, status, err := publisher.GatherRoute(t.Context(), client, "dashboard", map[string]any{"user_id": "9"},
		publisher.Header(nats.Header{gather.CorrelationIDHeader: {"cli-1"}}))
	if err != nil || status != 200 {
		t.Fatalf("status %d err %v body %s", status, err, body)
	}
	r := decodeReply(t, body)
	if !strings.Contains(string(r.Values["user"]), `"id":"9"`) || r.Meta.Partial || r.Meta.CorrelationID != "cli-1" {
		t.Fatalf("reply = %s", body)
	}

	body, status, err = publisher.GatherRoute(t.Context(), client, "slow", nil)
	if err != nil || status != 504 {
		t.Fatalf("slow: status %d err %v", status, err)
	}
	if p := problemOf(t, body); p.Status != 504 || p.Branch != "audit" || p.Route != "slow" {
		t.Fatalf("slow problem = %+v", p)
	}

	body, status, err = publisher.GatherRoute(t.Context(), client, "broken", nil)
	if err != nil || status != 502 {
		t.Fatalf("broken: status %d err %v", status, err)
	}
	if p := problemOf(t, body); p.Branch != "ledger" || !strings.Contains(p.Detail, "no responders") {
		t.Fatalf("broken problem = %+v", p)
	}

	// A body that is not a JSON object is a 400.
	m, err := client.RequestWithContext(t.Context(), publisher.GatherSubjectPrefix+"dashboard", []byte(`[1,2]`))
	if err != nil {
		t.Fatal(err)
	}
	if s := m.Header.Get(publisher.GatherStatusHeader); s != "400" || m.Header.Get("Content-Type") != gather.ContentTypeProblem {
		t.Fatalf("bad body: status %q headers %v", s, m.Header)
	}

	// A route that is not configured has no subscription at all.
	if _, _, err := publisher.GatherRoute(t.Context(), client, "nope", nil); !errors.Is(err, publisher.ErrNoResponders) {
		t.Fatalf("unknown route: err = %v", err)
	}
}

func TestNATSDoorConcurrentRequests(t *testing.T) {
	// concurrency is 4 and each gather waits 50ms on its branches: 32
	// requests must all be answered (queued, not dropped or serialised
	// into timeouts).
	e, g := startDoors(t, 50*time.Millisecond)
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Stop(context.Background()) })
	client := connect(t, e.ns)

	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			_, status, err := publisher.GatherRoute(ctx, client, "dashboard", nil)
			if err == nil && status != 200 {
				err = errors.New("status " + http.StatusText(status))
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestNATSDoorStopAnswersInFlight(t *testing.T) {
	e := newEnv(t)
	slow := respond(t, e.svc, "svc.slow", 200*time.Millisecond, jsonReply(`"done"`))
	g := e.gatherer(t, `
routes:
  - name: r
    branches: [{ name: s, subject: svc.slow, required: true }]
`)
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	client := connect(t, e.ns)
	type result struct {
		status int
		err    error
	}
	out := make(chan result, 1)
	go func() {
		_, status, err := publisher.GatherRoute(t.Context(), client, "r", nil, publisher.Timeout(5*time.Second))
		out <- result{status, err}
	}()
	<-slow.got // the gather is in flight
	if err := g.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := <-out; r.err != nil || r.status != 200 {
		t.Fatalf("in-flight gather: status %d err %v", r.status, r.err)
	}
	// Stopped: nobody serves the route any more.
	if _, _, err := publisher.GatherRoute(t.Context(), client, "r", nil); !errors.Is(err, publisher.ErrNoResponders) {
		t.Fatalf("after stop: err = %v", err)
	}
	if err := g.Stop(t.Context()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestNATSDoorStopDeadlineCancelsGathers(t *testing.T) {
	e := newEnv(t)
	slow := respond(t, e.svc, "svc.slow", 0, silent)
	g := e.gatherer(t, `
routes:
  - name: r
    timeout: 10s
    branches: [{ name: s, subject: svc.slow, required: true }]
`)
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	client := connect(t, e.ns)
	out := make(chan int, 1)
	go func() {
		_, status, _ := publisher.GatherRoute(t.Context(), client, "r", nil, publisher.Timeout(10*time.Second))
		out <- status
	}()
	<-slow.got
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := g.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want deadline exceeded", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Stop took %v", el)
	}
	if status := <-out; status != 502 {
		t.Fatalf("cancelled gather answered %d, want 502", status)
	}
}

func TestHTTPDoor(t *testing.T) {
	_, g := startDoors(t, 0)
	mux := http.NewServeMux()
	mux.Handle("/v1/gather/{route}", g.HTTPHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	do := func(method, path, body string, hdr map[string]string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}

	resp, body := do("GET", "/v1/gather/dashboard?user_id=5", "", map[string]string{"Hub-Correlation-Id": "h-1"})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != gather.ContentTypeJSON || resp.Header.Get("Hub-Correlation-Id") != "h-1" {
		t.Fatalf("GET: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if r := decodeReply(t, body); !strings.Contains(string(r.Values["user"]), `"id":"5"`) {
		t.Fatalf("GET body = %s", body)
	}

	resp, body = do("POST", "/v1/gather/dashboard", `{"user_id": 77}`, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("POST: %d %s", resp.StatusCode, body)
	}
	if r := decodeReply(t, body); !strings.Contains(string(r.Values["user"]), `"id":"77"`) {
		t.Fatalf("POST body = %s", body)
	}

	for _, tc := range []struct {
		method, path, body string
		status             int
		branch             string
	}{
		{"GET", "/v1/gather/nope", "", 404, ""},
		{"POST", "/v1/gather/dashboard", `{"user_id":`, 400, ""},
		{"POST", "/v1/gather/dashboard", `"str"`, 400, ""},
		{"POST", "/v1/gather/dashboard", `{} {}`, 400, ""},
		{"DELETE", "/v1/gather/dashboard", "", 405, ""},
		{"GET", "/v1/gather/slow", "", 504, "audit"},
		{"POST", "/v1/gather/broken", "", 502, "ledger"},
	} {
		resp, body := do(tc.method, tc.path, tc.body, nil)
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != gather.ContentTypeProblem {
			t.Errorf("%s %s %q: %d %s", tc.method, tc.path, tc.body, resp.StatusCode, resp.Header.Get("Content-Type"))
			continue
		}
		p := problemOf(t, body)
		if p.Status != tc.status || p.Title == "" || p.Type == "" || p.Branch != tc.branch {
			t.Errorf("%s %s: problem %+v", tc.method, tc.path, p)
		}
		if tc.branch != "" && (len(p.Meta) == 0 || !strings.Contains(p.Detail, tc.branch)) {
			t.Errorf("%s %s: problem does not explain the branch: %+v", tc.method, tc.path, p)
		}
	}
}

func TestStartTwiceFails(t *testing.T) {
	e := newEnv(t)
	g := e.gatherer(t, dashboardYAML)
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = g.Stop(t.Context()) }()
	if err := g.Start(t.Context()); err == nil {
		t.Fatal("second Start succeeded")
	}
}
