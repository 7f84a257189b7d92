package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/examples/dashboard/responders"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/webhook"
)

// startNATSServer builds and runs a real nats-server process with JetStream
// (not embedded) on a random port, and returns its client URL.
func startNATSServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nats-server")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		t.Fatalf("build nats-server: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-js", "-a", "127.0.0.1", "-p", "-1", "-sd", t.TempDir())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if i := strings.Index(line, "Listening for client connections on "); i >= 0 {
				select {
				case urls <- "nats://" + strings.TrimSpace(line[i+len("Listening for client connections on "):]):
				default:
				}
			}
		}
	}()
	select {
	case u := <-urls:
		return u
	case <-time.After(60 * time.Second):
		t.Fatal("nats-server did not start")
	}
	return ""
}

// TestExternalNATS runs the hub against a separate nats-server process:
// it embeds nothing, and fan-out and gather work the same.
func TestExternalNATS(t *testing.T) {
	natsURL := startNATSServer(t)
	rcv := newReceiver()
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	secret := webhook.GenerateSecret()
	cfg := writeConfig(t, fmt.Sprintf(`
log: {level: info, format: json}
nats: {embedded: false, url: %q}
http: {listen: "127.0.0.1:0"}
delivery: {backoff: [100ms]}
channels:
  webhook: {allow_cidrs: [127.0.0.0/8]}
subscriptions:
  - {id: a, channel: webhook, events: [">"], url: %q, secret: %q}
  - {id: b, channel: webhook, events: ["order.>"], url: %q, secret: %q}
gather:
  routes:
    - name: dashboard
      branches:
        - {name: user, subject: svc.user.get, timeout: 500ms, required: true}
        - {name: orders, subject: svc.orders.list, timeout: 500ms, fallback: []}
`, natsURL, srv.URL+"/a", secret, srv.URL+"/b", secret))
	p := startHub(t, cfg)
	defer p.stop(t)
	if p.natsURL != natsURL {
		t.Fatalf("hub reports NATS at %q, want the external %q", p.natsURL, natsURL)
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pub, _ := publisher.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 200
	for i := 0; i < n; i++ {
		if _, err := pub.PublishAsync(publisher.Event{Type: "order.created", ID: fmt.Sprintf("x-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rcv.waitFor(ctx, func(distinct, _ int) bool { return distinct >= 2*n }); err != nil {
		t.Fatal(err)
	}
	stop, err := responders.Start(nc, responders.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get(p.httpURL + "/v1/gather/dashboard?user_id=7")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"user"`) || !strings.Contains(string(b), `"orders"`) {
		t.Fatalf("gather through external NATS: %d %s", resp.StatusCode, b)
	}
}
