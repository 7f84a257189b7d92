package metrics

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hubproject/hub/hub/dispatch"
	"github.com/hubproject/hub/hub/gather"
)

// values reads every series of m as "name{k=v,...}" → value (counters,
// gauges; histograms as _count and _sum).
func values(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			var ls []string
			for _, l := range s.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			k := "{" + strings.Join(ls, ",") + "}"
			switch {
			case s.Counter != nil:
				out[mf.GetName()+k] = s.GetCounter().GetValue()
			case s.Gauge != nil:
				out[mf.GetName()+k] = s.GetGauge().GetValue()
			case s.Histogram != nil:
				out[mf.GetName()+"_count"+k] = float64(s.GetHistogram().GetSampleCount())
				out[mf.GetName()+"_sum"+k] = s.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

func TestObserveOutcomes(t *testing.T) {
	m := New(WithoutProcessMetrics())
	for _, o := range []dispatch.Outcome{
		{Kind: dispatch.KindRouted, Channel: "webhook", Subscription: "a"},
		{Kind: dispatch.KindDelivered, Channel: "webhook", Subscription: "a", Attempt: 1, Duration: 20 * time.Millisecond},
		{Kind: dispatch.KindFailed, Channel: "webhook", Subscription: "b", Attempt: 1, Duration: 10 * time.Millisecond},
		{Kind: dispatch.KindFailed, Channel: "webhook", Subscription: "b", Attempt: 2, Permanent: true, Duration: 10 * time.Millisecond},
		// A render failure: failed before any attempt, so not timed.
		{Kind: dispatch.KindFailed, Channel: "email", Subscription: "c", Permanent: true},
		{Kind: dispatch.KindDeferred, Channel: "webhook", Subscription: "a", Attempt: 1},
		{Kind: dispatch.KindDeadLettered, Channel: "webhook", Subscription: "b", Attempt: 2},
		{Kind: dispatch.KindReplayed, Channel: "webhook", Subscription: "b"},
		{Kind: dispatch.KindUnmatched, Channel: "log"},
		{Kind: dispatch.KindInvalid, Channel: "log"},
		{Kind: dispatch.KindDisabled, Subscription: "b"},
		{Kind: "something new"},
	} {
		m.Observe(o)
	}
	got := values(t, m)
	want := map[string]float64{
		`hub_deliveries_total{channel=webhook,outcome=routed,subscription=a}`:        1,
		`hub_deliveries_total{channel=webhook,outcome=delivered,subscription=a}`:     1,
		`hub_deliveries_total{channel=webhook,outcome=retry,subscription=b}`:         1,
		`hub_deliveries_total{channel=webhook,outcome=failed,subscription=b}`:        1,
		`hub_deliveries_total{channel=email,outcome=failed,subscription=c}`:          1,
		`hub_deliveries_total{channel=webhook,outcome=deferred,subscription=a}`:      1,
		`hub_deliveries_total{channel=webhook,outcome=dead_lettered,subscription=b}`: 1,
		`hub_deliveries_total{channel=webhook,outcome=replayed,subscription=b}`:      1,
		`hub_events_unmatched_total{channel=log}`:                                    1,
		`hub_events_invalid_total{channel=log}`:                                      1,
		`hub_subscriptions_disabled_total{subscription=b}`:                           1,
		`hub_delivery_attempt_duration_seconds_count{channel=webhook}`:               4,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if _, ok := got[`hub_delivery_attempt_duration_seconds_count{channel=email}`]; ok {
		t.Error("a render failure must not be timed as an attempt")
	}
	if s := got[`hub_delivery_attempt_duration_seconds_sum{channel=webhook}`]; s < 0.039 || s > 0.041 {
		t.Errorf("attempt seconds sum %v, want 0.04", s)
	}
}

func TestLabelCaps(t *testing.T) {
	m := New(WithoutProcessMetrics(), WithMaxTypes(2), WithMaxSubscriptions(1))
	for _, typ := range []string{"a.b", "c.d", "e.f", "a.b", "g.h"} {
		m.EventStored(DoorNATS, typ)
	}
	m.Observe(dispatch.Outcome{Kind: dispatch.KindRouted, Channel: "webhook", Subscription: "s1"})
	m.Observe(dispatch.Outcome{Kind: dispatch.KindRouted, Channel: "webhook", Subscription: "s2"})
	m.Observe(dispatch.Outcome{Kind: dispatch.KindRouted, Channel: "webhook", Subscription: "s1"})
	got := values(t, m)
	for k, v := range map[string]float64{
		`hub_events_received_total{door=nats,type=a.b}`:                           2,
		`hub_events_received_total{door=nats,type=c.d}`:                           1,
		`hub_events_received_total{door=nats,type=other}`:                         2,
		`hub_deliveries_total{channel=webhook,outcome=routed,subscription=s1}`:    2,
		`hub_deliveries_total{channel=webhook,outcome=routed,subscription=other}`: 1,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	n := 0
	for k := range got {
		if strings.HasPrefix(k, EventsReceived) {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d type series, want 3 (2 + other)", n)
	}
}

func TestMiddlewareUsesPatterns(t *testing.T) {
	m := New(WithoutProcessMetrics())
	m.SetGatherRoutes([]string{"dash"})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	mux.HandleFunc("POST /items", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc(GatherPattern, func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("route") != "dash" {
			http.NotFound(w, r)
		}
	})
	mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	h := m.Middleware(mux)
	do := func(method, path string) {
		defer func() { _ = recover() }()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, path, nil))
	}
	for i := range 3 {
		do("GET", "/items/"+string(rune('a'+i)))
	}
	do("POST", "/items")
	do("GET", "/nope/123")
	do("BREW", "/items")
	do("GET", "/v1/gather/dash")
	do("GET", "/v1/gather/secret-name-1")
	do("GET", "/boom")
	got := values(t, m)
	for k, v := range map[string]float64{
		`hub_http_requests_total{code=418,method=GET,pattern=GET /items/{id}}`:        3,
		`hub_http_requests_total{code=200,method=POST,pattern=POST /items}`:           1,
		`hub_http_requests_total{code=404,method=GET,pattern=unmatched}`:              1,
		`hub_http_requests_total{code=405,method=OTHER,pattern=unmatched}`:            1,
		`hub_http_requests_total{code=500,method=GET,pattern=GET /boom}`:              1,
		`hub_http_request_duration_seconds_count{method=GET,pattern=GET /items/{id}}`: 3,
		`hub_gather_duration_seconds_count{code=200,route=dash}`:                      1,
		`hub_gather_duration_seconds_count{code=404,route=other}`:                     1,
		`hub_http_requests_total{code=404,method=GET,pattern=/v1/gather/{route}}`:     1,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for k := range got {
		if strings.Contains(k, "/items/a") || strings.Contains(k, "secret-name") {
			t.Errorf("a raw path leaked into a label: %s", k)
		}
	}
}

func TestMiddlewareKeepsPanics(t *testing.T) {
	m := New(WithoutProcessMetrics())
	h := m.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
	defer func() {
		if p := recover(); !errors.Is(p.(error), http.ErrAbortHandler) {
			t.Fatalf("panic %v, want http.ErrAbortHandler passed on", p)
		}
	}()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	t.Fatal("the panic was swallowed")
}

func TestObserveGather(t *testing.T) {
	m := New(WithoutProcessMetrics())
	m.SetGatherRoutes([]string{"dashboard"})
	m.ObserveGather(&gather.Result{Route: "dashboard", Branches: []gather.BranchResult{
		{Name: "user", Status: gather.StatusOK, Latency: 3 * time.Millisecond},
		{Name: "orders", Status: gather.StatusTimeout, Latency: 500 * time.Millisecond},
	}})
	m.ObserveGather(nil)
	got := values(t, m)
	if got[`hub_gather_branch_duration_seconds_count{branch=user,route=dashboard,status=ok}`] != 1 ||
		got[`hub_gather_branch_duration_seconds_count{branch=orders,route=dashboard,status=timeout}`] != 1 {
		t.Fatalf("branch histograms: %v", got)
	}
}
