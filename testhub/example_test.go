package testhub_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/hubtest"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/testhub"
)

// A whole hub inside a program: real JetStream in-process (no TCP port),
// one subscription, and a capturing channel standing in for webhooks. In a
// test, testhub.Start(t, ...) does all of this in one call.
func Example_inProcessHub() {
	dir, _ := os.MkdirTemp("", "hub-example")
	defer os.RemoveAll(dir)
	cfg := testhub.TestConfig(dir)
	cfg.Subscriptions = []hub.Subscription{{
		ID: "crm", Channel: "webhook", Events: []string{"order.>"},
		URL: "https://crm.example.com/hooks", Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	}}
	hooks := hubtest.NewCapture()
	n := node.New(cfg, node.WithChannel("webhook", hooks))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer n.Shutdown(context.Background())

	p, _ := publisher.New(n.Conn())
	if _, err := p.Publish(ctx, publisher.Event{ID: "order-1", Type: "order.created"}); err != nil {
		log.Fatal(err)
	}
	got, err := hooks.WaitDelivered(ctx, "order-1", "crm")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got.EventType, "delivered to", got.Subscription, "on attempt", got.Attempt)
	// Output: order.created delivered to crm on attempt 1
}
