package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/examples/dashboard/responders"
	"github.com/hubproject/hub/hub/gather"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunServesUntilCancelled(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	client, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-server", ns.ClientURL(), "-delay", "0s"}) }()

	// Poll until the responders are up (the program connects on its own).
	deadline := time.Now().Add(10 * time.Second)
	for {
		rctx, rcancel := context.WithTimeout(t.Context(), time.Second)
		m, err := client.RequestWithContext(rctx, responders.UserSubject, []byte(`{"user_id":"1"}`))
		rcancel()
		if err == nil {
			if len(m.Data) == 0 {
				t.Fatal("empty reply")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("responders never answered: %v", err)
		}
		<-time.After(10 * time.Millisecond) // poll interval: no reply means not up yet
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := run(t.Context(), []string{"-nope"}); err == nil {
		t.Fatal("bad flag accepted")
	}
}

// TestHubYAMLRoute checks the example's route config loads and, with the
// demo services running, answers a complete dashboard.
func TestHubYAMLRoute(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	stop, err := responders.Start(nc, responders.Options{Delay: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	var file struct {
		Gather gather.Config `yaml:"gather"`
	}
	file.Gather = gather.DefaultConfig()
	if err := config.LoadFile("hub.yaml", &file); err != nil {
		t.Fatal(err)
	}
	g, err := gather.New(file.Gather, nc)
	if err != nil {
		t.Fatal(err)
	}
	res, err := g.Gather(t.Context(), "dashboard", map[string]any{"user_id": "42"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Partial {
		b, _ := json.Marshal(res)
		t.Fatalf("partial dashboard: %s", b)
	}
}
