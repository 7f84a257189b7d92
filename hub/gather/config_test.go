package gather_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub/gather"
)

// file is how cmd/hub composes the section: under "gather:".
type file struct {
	Gather gather.Config `yaml:"gather"`
}

func decodeFile(t *testing.T, text string) (gather.Config, error) {
	t.Helper()
	f := file{Gather: gather.DefaultConfig()}
	err := config.Decode([]byte(text), &f)
	return f.Gather, err
}

func TestConfigDesignExampleAndDefaults(t *testing.T) {
	cfg, err := decodeFile(t, `
gather:
  routes:
    - name: dashboard
      timeout: 2s
      branches:
        - { name: user,     subject: svc.user.get,       timeout: 500ms, required: true }
        - { name: orders,   subject: svc.orders.list,    timeout: 500ms, fallback: [] }
        - { name: payments, subject: svc.payments.list,  timeout: 500ms, fallback: [], cache_ttl: 30s }
    - name: fleet
      branches:
        - { name: nodes, subject: svc.node.status, mode: all, breaker: {} }
`)
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.WithDefaults()
	if d.Concurrency != gather.DefaultConcurrency {
		t.Errorf("concurrency = %d", d.Concurrency)
	}
	dash := d.Routes[0]
	if dash.Timeout.D() != 2*time.Second || dash.Branches[0].Mode != gather.ModeFirst {
		t.Errorf("dashboard = %+v", dash)
	}
	if fb := dash.Branches[1].Fallback; !fb.IsSet() || string(fb.JSON()) != "[]" {
		t.Errorf("orders fallback = %v %s", fb.IsSet(), fb.JSON())
	}
	if dash.Branches[0].Fallback.IsSet() {
		t.Error("user has no fallback but IsSet")
	}
	if p := dash.Branches[2]; p.CacheTTL.D() != 30*time.Second || p.CacheSize != gather.DefaultCacheSize {
		t.Errorf("payments cache = %v / %d", p.CacheTTL, p.CacheSize)
	}
	fleet := d.Routes[1]
	nodes := fleet.Branches[0]
	if fleet.Timeout.D() != gather.DefaultRouteTimeout || nodes.Timeout.D() != gather.DefaultRouteTimeout {
		t.Errorf("fleet timeouts = %v / %v", fleet.Timeout, nodes.Timeout)
	}
	if nodes.StallGap.D() != gather.DefaultStallGap || nodes.CacheSize != 0 {
		t.Errorf("nodes = %+v", nodes)
	}
	if nodes.Breaker == nil || nodes.Breaker.Failures != gather.DefaultBreakerFails || nodes.Breaker.OpenFor.D() != gather.DefaultBreakerOpenFor {
		t.Errorf("nodes breaker = %+v", nodes.Breaker)
	}
}

func TestFallbackValues(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		set  bool
		json string
	}{
		{``, false, ""},
		{`fallback: null`, false, ""},
		{`fallback:`, false, ""},
		{`fallback: []`, true, `[]`},
		{`fallback: {}`, true, `{}`},
		{`fallback: 0`, true, `0`},
		{`fallback: ""`, true, `""`},
		{`fallback: false`, true, `false`},
		{`fallback: {items: [], total: 0, note: n/a}`, true, `{"items":[],"note":"n/a","total":0}`},
		{`fallback: {1: one}`, true, `{"1":"one"}`},
	} {
		cfg, err := decodeFile(t, "gather:\n  routes:\n    - name: r\n      branches:\n        - name: b\n          subject: s.b\n          "+tc.yaml+"\n")
		if err != nil {
			t.Errorf("%q: %v", tc.yaml, err)
			continue
		}
		fb := cfg.Routes[0].Branches[0].Fallback
		if fb.IsSet() != tc.set || string(fb.JSON()) != tc.json {
			t.Errorf("%q: set %v json %s, want %v %s", tc.yaml, fb.IsSet(), fb.JSON(), tc.set, tc.json)
		}
	}

	// The same from JSON (a config API) and via NewFallback.
	var b gather.Branch
	if err := json.Unmarshal([]byte(`{"Fallback": []}`), &b); err != nil || string(b.Fallback.JSON()) != "[]" {
		t.Fatalf("json []: %v %s", err, b.Fallback.JSON())
	}
	if err := json.Unmarshal([]byte(`{"Fallback": null}`), &b); err != nil || b.Fallback.IsSet() {
		t.Fatalf("json null: %v %v", err, b.Fallback.IsSet())
	}
	if fb, err := gather.NewFallback([]string{}); err != nil || string(fb.JSON()) != "[]" {
		t.Fatalf("NewFallback: %v %s", err, fb.JSON())
	}
}

func TestConfigValidationErrors(t *testing.T) {
	_, err := decodeFile(t, `
gather:
  concurrency: -1
  routes:
    - name: dash board
      branches:
        - { name: user, subject: "svc.user.*", required: true, fallback: {} }
        - { name: user, subject: svc..x }
        - { name: _meta, subject: svc.m }
        - { name: m, subject: svc.m, mode: some }
        - { name: f, subject: svc.f, max_replies: 3, stall_gap: 1s }
        - { name: t, subject: svc.t, timeout: 3s, cache_size: 10 }
        - { name: p, subject: svc.p, payload: "{{ .x " }
        - { name: q, subject: "svc q" }
        - { subject: svc.r }
        - { name: s }
    - name: dup
      branches: [{ name: a, subject: a }]
    - name: dup
      branches: []
    - name: ok
      timeout: 1s
      branches: [{ name: a, subject: a, mode: all, max_replies: 2, stall_gap: 10ms, timeout: 1s }]
`)
	var es config.Errors
	if !errors.As(err, &es) {
		t.Fatalf("err = %v, want config.Errors", err)
	}
	got := map[string]string{}
	for _, e := range es {
		got[e.Path] = e.Reason
	}
	for path, want := range map[string]string{
		"gather.concurrency":                       "at least 0",
		"gather.routes[0].name":                    "letters, digits",
		"gather.routes[0].branches[0].subject":     "wildcards",
		"gather.routes[0].branches[0].fallback":    "required branch cannot have a fallback",
		"gather.routes[0].branches[1].name":        "defined twice",
		"gather.routes[0].branches[1].subject":     "empty token",
		"gather.routes[0].branches[2].name":        "reserved",
		"gather.routes[0].branches[3].mode":        "first, all",
		"gather.routes[0].branches[4].max_replies": "mode: all",
		"gather.routes[0].branches[4].stall_gap":   "mode: all",
		"gather.routes[0].branches[5].timeout":     "longer than the route timeout",
		"gather.routes[0].branches[5].cache_size":  "cache_ttl",
		"gather.routes[0].branches[6].payload":     "unclosed action",
		"gather.routes[0].branches[7].subject":     "whitespace",
		"gather.routes[0].branches[8].name":        "required",
		"gather.routes[0].branches[9].subject":     "required",
		"gather.routes[2].name":                    "defined twice",
		"gather.routes[2].branches":                "at least 1",
	} {
		if r, ok := got[path]; !ok || !strings.Contains(r, want) {
			t.Errorf("%s: got %q, want it to mention %q", path, r, want)
		}
		delete(got, path)
	}
	for path, r := range got {
		t.Errorf("unexpected error %s: %s", path, r)
	}
}

func TestConfigUnknownKey(t *testing.T) {
	_, err := decodeFile(t, "gather:\n  routes:\n    - name: r\n      branches: [{name: b, subject: s, fallbak: []}]\n")
	if err == nil || !strings.Contains(err.Error(), `gather.routes[0].branches[0].fallbak: unknown key (did you mean "fallback"?)`) {
		t.Fatalf("err = %v", err)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	e := newEnv(t)
	cfg := gather.Config{Routes: []gather.Route{{Name: "r", Branches: []gather.Branch{{Name: "b", Subject: "a.>"}}}}}
	_, err := gather.New(cfg, e.nc)
	var es config.Errors
	if !errors.As(err, &es) || es[0].Path != "routes[0].branches[0].subject" {
		t.Fatalf("err = %v", err)
	}
	cfg.Routes[0].Branches[0] = gather.Branch{Name: "b", Subject: "a.b", Timeout: -1}
	if _, err := gather.New(cfg, e.nc); err == nil || !strings.Contains(err.Error(), "branches[0].timeout: must not be negative") {
		t.Fatalf("negative timeout: err = %v", err)
	}
	if _, err := gather.New(gather.DefaultConfig(), nil); err == nil {
		t.Fatal("nil connection accepted")
	}
}
