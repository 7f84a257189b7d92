package node_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dlq"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/publisher"
)

func doJSON(t *testing.T, method, url string) (int, string, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

func TestDLQOverHTTP(t *testing.T) {
	h := startFanout(t, []hub.Subscription{sub("broken", "webhook", "order.created"), sub("fine", "webhook", "order.created", "probe.sent")},
		func(c *node.Config) { c.HTTP.Listen = "127.0.0.1:0" })
	defer http.DefaultClient.CloseIdleConnections()
	var failing atomic.Bool
	failing.Store(true)
	h.hookCh.FailWith(func(d *hub.Delivery) error {
		if d.Subscription.ID == "broken" && failing.Load() {
			return hub.Permanent(errors.New("400 Bad Request"))
		}
		return nil
	})
	ctx := ctxT(t, 30*time.Second)
	for i := 0; i < 2; i++ {
		if _, err := h.pub.Publish(ctx, publisher.Event{Type: "order.created", ID: fmt.Sprintf("h%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitDLQ(t, ctx, h.n.DLQ(), dlq.Filter{}, 2)
	base := h.n.HTTPURL()

	code, _, body := doJSON(t, "GET", base+"/v1/dlq?subscription=broken")
	var list struct {
		Items []dlq.DeadLetter `json:"items"`
		Count int              `json:"count"`
	}
	if err := json.Unmarshal(body, &list); err != nil || code != 200 || list.Count != 2 || list.Items[0].Reason != "400 Bad Request" {
		t.Fatalf("list: %d %s", code, body)
	}
	if code, _, body := doJSON(t, "GET", base+"/v1/dlq?channel=email"); code != 200 || !strings.Contains(string(body), `"count":0`) {
		t.Fatalf("filtered list: %d %s", code, body)
	}
	first, second := list.Items[0], list.Items[1]
	if code, _, body := doJSON(t, "GET", fmt.Sprintf("%s/v1/dlq/%d", base, first.ID)); code != 200 || !strings.Contains(string(body), first.DeliveryID) {
		t.Fatalf("get: %d %s", code, body)
	}

	failing.Store(false)
	code, _, body = doJSON(t, "POST", fmt.Sprintf("%s/v1/dlq/%d/replay", base, first.ID))
	if code != 202 || !strings.Contains(string(body), first.DeliveryID) {
		t.Fatalf("replay: %d %s", code, body)
	}
	if _, err := h.hookCh.WaitDelivered(ctx, first.EventID, "broken"); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := doJSON(t, "DELETE", fmt.Sprintf("%s/v1/dlq/%d", base, second.ID)); code != 204 {
		t.Fatalf("drop: %d", code)
	}
	if items, _ := h.n.DLQ().List(ctx, dlq.Filter{}); len(items) != 0 {
		t.Fatalf("DLQ not empty after replay and drop: %+v", items)
	}
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"POST", fmt.Sprintf("/v1/dlq/%d/replay", first.ID), 404},
		{"DELETE", "/v1/dlq/999999", 404},
		{"GET", "/v1/dlq/abc", 400},
		{"GET", "/v1/dlq?limit=0", 400},
		{"GET", "/v1/dlq?channel=a.b", 400},
	} {
		code, ct, body := doJSON(t, c.method, base+c.path)
		if code != c.status || ct != "application/problem+json" {
			t.Errorf("%s %s: %d %s %s", c.method, c.path, code, ct, body)
		}
	}
}
