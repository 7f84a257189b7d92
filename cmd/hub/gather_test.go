package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/examples/dashboard/responders"
)

// TestGatherDoors runs the shipped dashboard route against the example
// responders, through the CLI and HTTP.
func TestGatherDoors(t *testing.T) {
	cfgText := baseConfig(t.TempDir()) + `
gather:
  routes:
    - name: dashboard
      timeout: 2s
      branches:
        - {name: user, subject: svc.user.get, timeout: 500ms, required: true}
        - {name: orders, subject: svc.orders.list, timeout: 500ms, fallback: []}
        - {name: payments, subject: svc.payments.list, timeout: 500ms, fallback: [], cache_ttl: 30s}
`
	p := startHub(t, writeConfig(t, cfgText))
	defer p.stop(t)
	// Before any responder runs, the required branch fails: exit 1, 502.
	out, _, code := runHub(t, "gather", "-server", p.natsURL, "dashboard", "user_id=42")
	if code != 1 || !strings.Contains(out, "user") {
		t.Fatalf("without responders: exit %d %s", code, out)
	}
	nc, err := nats.Connect(p.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	stop, err := responders.Start(nc, responders.Options{Delay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	out, errOut, code := runHub(t, "gather", "-server", p.natsURL, "dashboard", "user_id=42")
	if code != 0 {
		t.Fatalf("gather exit %d: %s %s", code, out, errOut)
	}
	var reply struct {
		User any `json:"user"`
		Meta struct {
			Partial  bool                      `json:"partial"`
			Branches map[string]map[string]any `json:"branches"`
		} `json:"_meta"`
	}
	if err := json.Unmarshal([]byte(out), &reply); err != nil || reply.User == nil || reply.Meta.Partial || len(reply.Meta.Branches) != 3 {
		t.Fatalf("reply %s (%v)", out, err)
	}
	resp, err := http.Get(p.httpURL + "/v1/gather/dashboard?user_id=42")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"cached"`) {
		t.Fatalf("HTTP gather %d %s", resp.StatusCode, b)
	}
	resp, err = http.Get(p.httpURL + "/v1/gather/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("unknown route: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
