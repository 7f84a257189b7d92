package gather_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/examples/dashboard/responders"
	"github.com/hubproject/hub/hub/gather"
)

const dashboardYAML = `
routes:
  - name: dashboard
    timeout: 2s
    branches:
      - { name: user,     subject: svc.user.get,      timeout: 500ms, required: true }
      - { name: orders,   subject: svc.orders.list,   timeout: 500ms, fallback: [] }
      - { name: payments, subject: svc.payments.list, timeout: 500ms, fallback: [] }
`

func TestThreeBranchesRunInParallel(t *testing.T) {
	e := newEnv(t)
	stop, err := responders.Start(e.svc, responders.Options{Delay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	g := e.gatherer(t, dashboardYAML)

	start := time.Now()
	res, err := g.Gather(t.Context(), "dashboard", map[string]any{"user_id": "7"}, nil)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	// Sequential would be ≥150ms; parallel is ~50ms. The bound is loose
	// for a shared machine under -race; the benchmark measures the figure.
	if elapsed >= 150*time.Millisecond {
		t.Fatalf("gather took %v, want well under the 150ms sum of the branches", elapsed)
	}
	r := decodeReply(t, marshal(t, res))
	var user struct{ ID, Name, Email string }
	if err := json.Unmarshal(r.Values["user"], &user); err != nil || user.ID != "7" || user.Email == "" {
		t.Fatalf("user = %s (%v)", r.Values["user"], err)
	}
	var orders []struct {
		ID     string `json:"id"`
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(r.Values["orders"], &orders); err != nil || len(orders) == 0 || orders[0].UserID != "7" {
		t.Fatalf("orders = %s (%v)", r.Values["orders"], err)
	}
	if _, ok := r.Values["payments"]; !ok {
		t.Fatalf("payments missing: %v", r.Values)
	}
	if r.Meta.Partial {
		t.Fatal("partial = true, want false")
	}
	for _, name := range []string{"user", "orders", "payments"} {
		b := r.Meta.Branches[name]
		if b.Status != "ok" || b.LatencyMS < 45 || b.Error != "" || b.Fallback {
			t.Errorf("branch %s meta = %+v", name, b)
		}
	}
}

func TestTimeoutGivesFallbackAndPartial(t *testing.T) {
	e := newEnv(t)
	respond(t, e.svc, "svc.user.get", 0, jsonReply(`{"id":"1"}`))
	respond(t, e.svc, "svc.orders.list", 0, silent)
	respond(t, e.svc, "svc.payments.list", 0, silent)
	g := e.gatherer(t, `
routes:
  - name: dashboard
    timeout: 2s
    branches:
      - { name: user,     subject: svc.user.get,      required: true }
      - { name: orders,   subject: svc.orders.list,   timeout: 80ms, fallback: [] }
      - { name: payments, subject: svc.payments.list, timeout: 80ms }
`)
	res, err := g.Gather(t.Context(), "dashboard", nil, nil)
	if err != nil {
		t.Fatalf("an optional branch failing must not fail the gather: %v", err)
	}
	r := decodeReply(t, marshal(t, res))
	if !r.Meta.Partial {
		t.Fatal("partial = false, want true")
	}
	if got := string(r.Values["orders"]); got != "[]" {
		t.Fatalf("orders = %q, want the fallback []", got)
	}
	if m := r.Meta.Branches["orders"]; m.Status != "timeout" || !m.Fallback || m.Error == "" {
		t.Fatalf("orders meta = %+v", m)
	}
	if _, ok := r.Values["payments"]; ok {
		t.Fatal("payments has no fallback and timed out: it must be absent")
	}
	if m := r.Meta.Branches["payments"]; m.Status != "timeout" || m.Fallback {
		t.Fatalf("payments meta = %+v", m)
	}
	if m := r.Meta.Branches["user"]; m.Status != "ok" {
		t.Fatalf("user meta = %+v", m)
	}
}

func TestRequiredBranchTimeoutIsBranchError(t *testing.T) {
	e := newEnv(t)
	respond(t, e.svc, "svc.user.get", 0, silent)
	respond(t, e.svc, "svc.orders.list", 0, jsonReply(`[]`))
	g := e.gatherer(t, `
routes:
  - name: dashboard
    branches:
      - { name: orders, subject: svc.orders.list }
      - { name: user,   subject: svc.user.get, timeout: 60ms, required: true }
`)
	res, err := g.Gather(t.Context(), "dashboard", nil, nil)
	var be *gather.BranchError
	if !errors.As(err, &be) {
		t.Fatalf("err = %v, want *BranchError", err)
	}
	if be.Branch != "user" || be.Route != "dashboard" || !be.Timeout || be.HTTPStatus() != 504 {
		t.Fatalf("BranchError = %+v", be)
	}
	if f := res.Failed(); f == nil || f.Branch != "user" {
		t.Fatalf("Result.Failed() = %v", f)
	}
	if !strings.Contains(err.Error(), "user") {
		t.Fatalf("error %q does not name the branch", err)
	}
}

func TestNoRespondersIsFastErrorNotTimeout(t *testing.T) {
	e := newEnv(t)
	g := e.gatherer(t, `
routes:
  - name: r
    timeout: 2s
    branches:
      - { name: first, subject: svc.nobody.first, fallback: {} }
      - { name: all,   subject: svc.nobody.all, mode: all }
      - { name: must,  subject: svc.nobody.must, required: true }
`)
	start := time.Now()
	res, err := g.Gather(t.Context(), "r", nil, nil)
	elapsed := time.Since(start)
	if elapsed > 50*time.Millisecond {
		t.Fatalf("no responders took %v, want < 50ms", elapsed)
	}
	var be *gather.BranchError
	if !errors.As(err, &be) || be.Branch != "must" || be.Timeout || be.HTTPStatus() != 502 || !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("err = %#v, want a 502 BranchError for must wrapping ErrNoResponders", err)
	}
	for _, name := range []string{"first", "all", "must"} {
		b, _ := res.Branch(name)
		if b.Status != gather.StatusError || !errors.Is(b.Err, nats.ErrNoResponders) {
			t.Errorf("branch %s: status %s err %v", name, b.Status, b.Err)
		}
	}
	if v, _ := res.Value("first"); string(v) != "{}" {
		t.Fatalf("first = %s, want its fallback {}", v)
	}
}

func TestModeAllCollectsEveryResponder(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		respond(t, e.svc, "svc.stock", 0, jsonReply(fmt.Sprintf(`{"warehouse":%d}`, i)))
	}
	g := e.gatherer(t, `
routes:
  - name: stock
    timeout: 5s
    branches:
      - { name: every, subject: svc.stock, mode: all, stall_gap: 100ms }
      - { name: three, subject: svc.stock, mode: all, max_replies: 3, stall_gap: 4s }
`)
	start := time.Now()
	res, err := g.Gather(t.Context(), "stock", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// "three" can only end at its max_replies (its stall gap and the route
	// timeout are seconds away); "every" ends at its 100ms stall gap.
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("gather took %v: neither max_replies nor the stall gap ended it", el)
	}
	var every, three []struct{ Warehouse int }
	v, _ := res.Value("every")
	if err := json.Unmarshal(v, &every); err != nil || len(every) != 5 {
		t.Fatalf("every = %s (%v), want 5 replies", v, err)
	}
	seen := map[int]bool{}
	for _, w := range every {
		seen[w.Warehouse] = true
	}
	if len(seen) != 5 {
		t.Fatalf("every = %s: not 5 distinct responders", v)
	}
	v, _ = res.Value("three")
	if err := json.Unmarshal(v, &three); err != nil || len(three) != 3 {
		t.Fatalf("three = %s (%v), want 3 replies", v, err)
	}
	if b, _ := res.Branch("three"); b.Status != gather.StatusOK || b.Latency > time.Second {
		t.Fatalf("three: %+v", b)
	}
}

func TestModeAllStallGapEndsWhenRespondersGoQuiet(t *testing.T) {
	e := newEnv(t)
	for i := range 3 {
		respond(t, e.svc, "svc.peers", 0, jsonReply(fmt.Sprint(i)))
	}
	respond(t, e.svc, "svc.peers", 0, silent) // a peer that never answers
	g := e.gatherer(t, `
routes:
  - name: peers
    timeout: 5s
    branches:
      - { name: peers, subject: svc.peers, mode: all, stall_gap: 100ms }
`)
	start := time.Now()
	res, err := g.Gather(t.Context(), "peers", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("took %v, want the stall gap to end it well before the 5s timeout", el)
	}
	var got []int
	v, _ := res.Value("peers")
	if err := json.Unmarshal(v, &got); err != nil || len(got) != 3 {
		t.Fatalf("peers = %s (%v)", v, err)
	}
}

func TestModeAllNoReplyIsTimeout(t *testing.T) {
	e := newEnv(t)
	respond(t, e.svc, "svc.quiet", 0, silent)
	g := e.gatherer(t, `
routes:
  - name: q
    branches:
      - { name: quiet, subject: svc.quiet, mode: all, timeout: 60ms, fallback: [] }
`)
	res, err := g.Gather(t.Context(), "q", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := res.Branch("quiet")
	if b.Status != gather.StatusTimeout || !b.Fallback || string(b.Value) != "[]" {
		t.Fatalf("quiet = %+v", b)
	}
}

func TestCacheAnswersSecondCallWithoutRequest(t *testing.T) {
	e := newEnv(t)
	pay := respond(t, e.svc, "svc.payments.list", 0, func(m *nats.Msg) *nats.Msg {
		return &nats.Msg{Data: fmt.Appendf(nil, `{"for":%s}`, m.Data)}
	})
	respond(t, e.svc, "svc.user.get", 0, jsonReply(`{}`))
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	g := e.gatherer(t, `
routes:
  - name: dashboard
    branches:
      - { name: user,     subject: svc.user.get }
      - { name: payments, subject: svc.payments.list, cache_ttl: 30s }
`, gather.WithClock(clock))
	call := func(params map[string]any) gather.BranchResult {
		t.Helper()
		res, err := g.Gather(t.Context(), "dashboard", params, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := res.Branch("payments")
		return b
	}
	p42 := map[string]any{"user_id": "42"}
	if b := call(p42); b.Status != gather.StatusOK {
		t.Fatalf("first call: %+v", b)
	}
	b := call(p42)
	if b.Status != gather.StatusCached || string(b.Value) != `{"for":{"user_id":"42"}}` {
		t.Fatalf("second call: status %s value %s", b.Status, b.Value)
	}
	if n := pay.count.Load(); n != 1 {
		t.Fatalf("payments got %d requests, want 1 (the second call is cached)", n)
	}
	res, _ := g.Gather(t.Context(), "dashboard", p42, nil)
	if r := decodeReply(t, marshal(t, res)); r.Meta.Partial || r.Meta.Branches["payments"].Status != "cached" {
		t.Fatalf("cached reply meta = %+v", r.Meta)
	}

	if b := call(map[string]any{"user_id": "43"}); b.Status != gather.StatusOK {
		t.Fatalf("other params must miss the cache: %+v", b)
	}
	mu.Lock()
	now = now.Add(31 * time.Second)
	mu.Unlock()
	if b := call(p42); b.Status != gather.StatusOK {
		t.Fatalf("after the ttl: %+v", b)
	}
	if n := pay.count.Load(); n != 3 {
		t.Fatalf("payments got %d requests, want 3", n)
	}
}

func TestFailuresAreNotCached(t *testing.T) {
	e := newEnv(t)
	bad := respond(t, e.svc, "svc.flaky", 0, jsonReply(`not json`))
	g := e.gatherer(t, `
routes:
  - name: f
    branches:
      - { name: flaky, subject: svc.flaky, cache_ttl: 1m, fallback: null }
`)
	for range 2 {
		res, err := g.Gather(t.Context(), "f", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := res.Branch("flaky")
		if b.Status != gather.StatusError || b.Value != nil || !strings.Contains(b.Err.Error(), "not JSON") {
			t.Fatalf("flaky = %+v", b)
		}
	}
	if n := bad.count.Load(); n != 2 {
		t.Fatalf("requests = %d, want 2", n)
	}
}

func TestCorrelationIDAndTraceparentReachBranches(t *testing.T) {
	e := newEnv(t)
	a := respond(t, e.svc, "svc.a", 0, jsonReply(`1`))
	b := respond(t, e.svc, "svc.b", 0, jsonReply(`2`))
	g := e.gatherer(t, `
routes:
  - name: r
    branches:
      - { name: a, subject: svc.a }
      - { name: b, subject: svc.b, mode: all, max_replies: 1 }
`)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	// HTTP-style canonical keys must work as well as NATS-style ones.
	hdr := nats.Header{"Hub-Correlation-Id": {"req-123"}, "Traceparent": {tp}, "Tracestate": {"k=v"}}
	res, err := g.Gather(t.Context(), "r", nil, hdr)
	if err != nil {
		t.Fatal(err)
	}
	if res.CorrelationID != "req-123" {
		t.Fatalf("correlation id = %q", res.CorrelationID)
	}
	for name, r := range map[string]*responder{"a": a, "b": b} {
		m := <-r.got
		if m.Header.Get(gather.CorrelationIDHeader) != "req-123" || m.Header.Get("traceparent") != tp || m.Header.Get("tracestate") != "k=v" {
			t.Errorf("branch %s got headers %v", name, m.Header)
		}
	}

	// Without one, an id is generated and shared by every branch; a
	// malformed traceparent is not passed on.
	res, err = g.Gather(t.Context(), "r", nil, nats.Header{"traceparent": {"garbage"}})
	if err != nil {
		t.Fatal(err)
	}
	ma, mb := <-a.got, <-b.got
	id := ma.Header.Get(gather.CorrelationIDHeader)
	if id == "" || id != mb.Header.Get(gather.CorrelationIDHeader) || id != res.CorrelationID {
		t.Fatalf("generated ids: a %q b %q result %q", id, mb.Header.Get(gather.CorrelationIDHeader), res.CorrelationID)
	}
	if ma.Header.Get("traceparent") != "" {
		t.Fatalf("malformed traceparent was forwarded: %v", ma.Header)
	}
}

func TestBreakerOpensAfterFailures(t *testing.T) {
	e := newEnv(t)
	failing := respond(t, e.svc, "svc.down", 0, func(*nats.Msg) *nats.Msg {
		m := nats.NewMsg("")
		m.Header.Set("Nats-Service-Error", "database unavailable")
		m.Header.Set("Nats-Service-Error-Code", "503")
		return m
	})
	g := e.gatherer(t, `
routes:
  - name: r
    branches:
      - { name: down, subject: svc.down, fallback: "n/a", breaker: { failures: 2, open_for: 1m } }
`)
	for i := range 4 {
		res, err := g.Gather(t.Context(), "r", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := res.Branch("down")
		if b.Status != gather.StatusError || string(b.Value) != `"n/a"` || !b.Fallback {
			t.Fatalf("call %d: %+v", i, b)
		}
		wantOpen := i >= 2
		if got := strings.Contains(b.Err.Error(), "circuit breaker open"); got != wantOpen {
			t.Fatalf("call %d: error %q, breaker open = %v, want %v", i, b.Err, got, wantOpen)
		}
		if !wantOpen && !strings.Contains(b.Err.Error(), "database unavailable") {
			t.Fatalf("call %d: error %q does not carry the service error", i, b.Err)
		}
	}
	if n := failing.count.Load(); n != 2 {
		t.Fatalf("the open breaker let requests through: %d, want 2", n)
	}
}

func TestPayloadTemplate(t *testing.T) {
	e := newEnv(t)
	r := respond(t, e.svc, "svc.user.get", 0, jsonReply(`{}`))
	g := e.gatherer(t, `
routes:
  - name: r
    branches:
      - name: user
        subject: svc.user.get
        payload: '{"uid": {{ json .user_id }}, "fields": "name"}'
`)
	if _, err := g.Gather(t.Context(), "r", map[string]any{"user_id": "a\"b"}, nil); err != nil {
		t.Fatal(err)
	}
	if got := string((<-r.got).Data); got != `{"uid": "a\"b", "fields": "name"}` {
		t.Fatalf("branch request = %s", got)
	}
	// A missing parameter fails the branch before sending anything.
	res, _ := g.Gather(t.Context(), "r", nil, nil)
	b, _ := res.Branch("user")
	if b.Status != gather.StatusError || !strings.Contains(b.Err.Error(), "user_id") {
		t.Fatalf("missing param: %+v", b)
	}
	if n := r.count.Load(); n != 1 {
		t.Fatalf("requests = %d, want 1", n)
	}
}

func TestDefaultRequestIsParamsJSON(t *testing.T) {
	e := newEnv(t)
	r := respond(t, e.svc, "svc.echo", 0, func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: m.Data} })
	g := e.gatherer(t, `
routes:
  - name: r
    branches: [{ name: echo, subject: svc.echo }]
`)
	res, err := g.Gather(t.Context(), "r", map[string]any{"b": 2, "a": "x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := res.Value("echo"); string(v) != `{"a":"x","b":2}` {
		t.Fatalf("echo = %s", v)
	}
	if _, err := g.Gather(t.Context(), "r", nil, nil); err != nil {
		t.Fatal(err)
	}
	<-r.got
	if got := string((<-r.got).Data); got != "{}" {
		t.Fatalf("no params sent %q, want {}", got)
	}
}

func TestUnknownRoute(t *testing.T) {
	e := newEnv(t)
	g := e.gatherer(t, dashboardYAML)
	if _, err := g.Gather(t.Context(), "nope", nil, nil); !errors.Is(err, gather.ErrUnknownRoute) {
		t.Fatalf("err = %v", err)
	}
	if got := g.Routes(); len(got) != 1 || got[0] != "dashboard" {
		t.Fatalf("routes = %v", got)
	}
}

func TestResultJSONShape(t *testing.T) {
	res := &gather.Result{Route: "r", CorrelationID: "c\"1", Partial: true, Branches: []gather.BranchResult{
		{Name: "user", Status: gather.StatusOK, Value: json.RawMessage(`{"id":1}`), Latency: 1234567 * time.Nanosecond},
		{Name: "orders", Status: gather.StatusTimeout, Value: json.RawMessage(`[]`), Fallback: true, Latency: 500 * time.Millisecond, Err: errors.New("no reply within 500ms")},
		{Name: "pay", Status: gather.StatusError, Err: errors.New(`bad "reply"`)},
	}}
	want := `{"user":{"id":1},"orders":[],"_meta":{"partial":true,"correlation_id":"c\"1","branches":{` +
		`"user":{"status":"ok","latency_ms":1.235},` +
		`"orders":{"status":"timeout","latency_ms":500,"error":"no reply within 500ms","fallback":true},` +
		`"pay":{"status":"error","latency_ms":0,"error":"bad \"reply\""}}}}`
	if got := string(marshal(t, res)); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if !json.Valid([]byte(want)) {
		t.Fatal("want is not JSON")
	}
}
