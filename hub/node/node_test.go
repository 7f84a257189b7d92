package node_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/publisher"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig(dir string) node.Config {
	cfg := node.DefaultConfig()
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.NATS.StoreDir = dir
	cfg.HTTP.Listen = "127.0.0.1:0"
	return cfg
}

func start(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	n := node.New(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

func stop(t *testing.T, n *node.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestEventsSurviveRestart: events stored before a shutdown are there after
// a restart on the same store dir, and their ids still dedup.
func TestEventsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	n := start(t, testConfig(dir))
	nc, err := nats.Connect(n.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	p, _ := publisher.New(nc)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		if _, err := p.Publish(ctx, publisher.Event{Type: "order.created", ID: "keep-" + string(rune('0'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	nc.Close()
	stop(t, n)

	n = start(t, testConfig(dir))
	defer stop(t, n)
	st, err := n.JetStream().Stream(ctx, hub.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := st.Info(ctx)
	if info.State.Msgs != 10 {
		t.Fatalf("after restart the stream holds %d events, want 10", info.State.Msgs)
	}
	p, _ = publisher.New(n.Conn())
	a, err := p.Publish(ctx, publisher.Event{Type: "order.created", ID: "keep-3"})
	if err != nil || !a.Duplicate {
		t.Fatalf("re-publish after restart: %+v %v", a, err)
	}
}

// TestShutdownIsGracefulAndLeakFree: an in-flight HTTP server and NATS
// clients are stopped in order and no goroutine is left (goleak in TestMain).
func TestShutdownIsGracefulAndLeakFree(t *testing.T) {
	n := start(t, testConfig(t.TempDir()))
	resp, err := http.Post(n.HTTPURL()+"/v1/events", "application/json", strings.NewReader(`{"type":"a"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
	stop(t, n)
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
	if n.Conn().IsConnected() {
		t.Fatal("connection still open")
	}
}

func TestInProcessOnly(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.NATS.Listen = ""
	cfg.HTTP.Listen = ""
	n := start(t, cfg)
	defer stop(t, n)
	if n.NATSURL() != "" || n.HTTPURL() != "" {
		t.Fatalf("listening: %q %q", n.NATSURL(), n.HTTPURL())
	}
	p, _ := publisher.New(n.Conn())
	if _, err := p.Publish(context.Background(), publisher.Event{Type: "a"}); err != nil {
		t.Fatal(err)
	}
}

func TestConfigRules(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.NATS.Listen = "0.0.0.0:4222"
	cfg.NATS.StoreDir = ""
	cfg.Events.MaxEventSize = 2 << 20
	err := cfg.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"nats.listen", "nats.store_dir: required", "events.max_event_size"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q missing %q", err, want)
		}
	}
}
