package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hubproject/hub/subscribers/webhook"
)

func TestStatusCommand(t *testing.T) {
	rejecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusBadRequest)
	}))
	defer rejecting.Close()
	cfg := baseConfig(t.TempDir()) + fmt.Sprintf(`
channels:
  webhook: {allow_cidrs: ["127.0.0.0/8"]}
subscriptions:
  - {id: broken, channel: webhook, events: ["order.>"], url: %q, secret: %q}
  - {id: tail, channel: log, events: [">"]}
`, rejecting.URL, webhook.GenerateSecret())
	p := startHub(t, writeConfig(t, cfg))
	for i := range 3 {
		if _, errOut, code := runHub(t, "publish", "-server", p.natsURL, "-type", "order.created", "-id", fmt.Sprintf("st-%d", i)); code != 0 {
			t.Fatalf("publish: exit %d %s", code, errOut)
		}
	}
	// Wait for the dead letters, then disable the config subscription and
	// a runtime one through the API.
	waitStatus := func(what string, cond func(hubStatus) bool) hubStatus {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, errOut, code := runHub(t, "status", "-server", p.natsURL, "-json")
			if code != 0 {
				t.Fatalf("status -json: exit %d %s", code, errOut)
			}
			var st hubStatus
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				t.Fatalf("status -json output %q: %v", out, err)
			}
			if cond(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("status never showed %s: %s", what, out)
			}
		}
	}
	waitStatus("3 dead letters", func(st hubStatus) bool { return len(st.DeadLetters) == 1 && st.DeadLetters[0].Count == 3 })
	httpDo(t, "PATCH", p.httpURL+"/v1/subscriptions/broken", `{"disabled":true}`, 200)
	httpDo(t, "POST", p.httpURL+"/v1/subscriptions", `{"id":"paused","events":["x.y"],"url":"https://hooks.example.com/in","disabled":true}`, 201)
	st := waitStatus("2 disabled subscriptions", func(st hubStatus) bool { return len(st.Disabled) == 2 })
	if d := st.DeadLetters[0]; d.Channel != "webhook" || d.Subscription != "broken" {
		t.Errorf("dead letters %+v", st.DeadLetters)
	}
	if d := st.Disabled; d[0].ID != "broken" || d[0].Origin != "config" || d[1].ID != "paused" || d[1].Origin != "api" || d[0].Since == nil {
		t.Errorf("disabled %+v", d)
	}
	streams := map[string]streamStatus{}
	for _, s := range st.Streams {
		streams[s.Name] = s
	}
	if ev := streams["EVENTS"]; ev.Messages != 3 || ev.FirstSeq != 1 || ev.LastSeq != 3 || ev.Consumers < 2 || ev.Replicas != 1 {
		t.Errorf("EVENTS %+v", ev)
	}
	for _, name := range []string{"DELIVERIES", "DLQ", "HUB_ADVISORIES", "KV_HUB_SUBSCRIPTIONS"} {
		if _, ok := streams[name]; !ok {
			t.Errorf("no stream %s in %+v", name, st.Streams)
		}
	}
	if c := streams["EVENTS"].Cluster; c == nil || c.Leader == "" {
		t.Errorf("EVENTS cluster info %+v", c)
	}
	consumers := map[string]consumerStatus{}
	for _, c := range st.Consumers {
		consumers[c.Name] = c
	}
	for name, want := range map[string]string{"hub-webhook": "webhook", "hub-webhook-retry": "webhook", "hub-log": "log", "hub-log-retry": "log", "hub-dlq": ""} {
		if c, ok := consumers[name]; !ok || c.Channel != want {
			t.Errorf("consumer %s: %+v (present %v)", name, c, ok)
		}
	}

	out, errOut, code := runHub(t, "status", "-server", p.natsURL)
	if code != 0 {
		t.Fatalf("status: exit %d %s", code, errOut)
	}
	t.Logf("hub status:\n%s", out)
	for _, want := range []string{
		"STREAM", "EVENTS", "KV_HUB_SUBSCRIPTIONS",
		"CONSUMER", "hub-webhook-retry", "hub-dlq",
		"DEAD LETTERS", "broken", "total",
		"DISABLED SUBSCRIPTIONS", "paused", "disabled through the API",
		"CLUSTER", "standalone",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q", want)
		}
	}

	if _, _, code := runHub(t, "status", "-server", p.natsURL, "extra"); code != 2 {
		t.Errorf("an argument: exit %d, want 2", code)
	}
	if _, _, code := runHub(t, "status", "-bogus"); code != 2 {
		t.Errorf("an unknown flag: exit %d, want 2", code)
	}
	if _, errOut, code := runHub(t, "status", "-server", "nats://127.0.0.1:1", "-timeout", "2s"); code != 1 || !strings.Contains(errOut, "connect") {
		t.Errorf("no server: exit %d %s", code, errOut)
	}
	p.stop(t)
}

func httpDo(t *testing.T, method, url, body string, want int) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
}
