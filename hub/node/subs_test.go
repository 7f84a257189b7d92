package node_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/publisher"
)

// TestRuntimeSubscriptionReceivesEvents: a webhook subscription created
// over HTTP is routed to without a restart, and a 410 disables it, visibly
// in the API.
func TestRuntimeSubscriptionReceivesEvents(t *testing.T) {
	h := startFanout(t, []hub.Subscription{sub("fine", "webhook", "probe.sent")}, func(c *node.Config) { c.HTTP.Listen = "127.0.0.1:0" })
	defer http.DefaultClient.CloseIdleConnections()
	ctx := ctxT(t, 30*time.Second)
	resp, err := http.Post(h.n.HTTPURL()+"/v1/subscriptions", "application/json",
		strings.NewReader(`{"id":"runtime","channel":"webhook","events":["order.>"],"url":"https://receiver.example.com/rt"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var created struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal(b, &created); err != nil || resp.StatusCode != 201 || created.ID != "runtime" || !strings.HasPrefix(created.Secret, "whsec_") {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	if _, err := h.pub.Publish(ctx, publisher.Event{Type: "order.created", ID: "rt-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.hookCh.WaitDelivered(ctx, "rt-1", "runtime"); err != nil {
		t.Fatal(err)
	}

	h.hookCh.FailWith(func(d *hub.Delivery) error {
		if d.Subscription.ID == "runtime" {
			return hub.Gone(io.EOF)
		}
		return nil
	})
	if _, err := h.pub.Publish(ctx, publisher.Event{Type: "order.created", ID: "rt-2"}); err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := http.Get(h.n.HTTPURL() + "/v1/subscriptions/runtime")
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Disabled bool   `json:"disabled"`
			Reason   string `json:"disabled_reason"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if v.Disabled {
			if v.Reason == "" {
				t.Fatal("disabled without a reason")
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("410 did not disable the subscription")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
