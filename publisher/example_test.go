package publisher_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/embedded"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/publisher"
)

// exampleServer stands in for a running hub: an embedded JetStream server
// with the EVENTS stream. In an app, connect to the hub's NATS URL instead.
func exampleServer() (*nats.Conn, func()) {
	dir, err := os.MkdirTemp("", "hub-example")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	srv, err := embedded.Start(ctx, embedded.Options{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		log.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if _, err := hub.EnsureStream(ctx, js, hub.EventsStreamConfig(hub.DefaultEventsConfig())); err != nil {
		log.Fatal(err)
	}
	return nc, func() {
		nc.Close()
		_ = srv.Shutdown(ctx)
		os.RemoveAll(dir)
	}
}

func ExamplePublisher_Publish() {
	nc, stop := exampleServer()
	defer stop()

	p, err := publisher.New(nc, publisher.WithSource("shop"))
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev := publisher.Event{ID: "order-42", Type: "order.created", Data: []byte(`{"id":42}`)}
	ack, err := p.Publish(ctx, ev)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ack.ID, ack.Sequence, ack.Duplicate)

	// A retry with the same id is stored once.
	ack, _ = p.Publish(ctx, ev)
	fmt.Println(ack.ID, ack.Sequence, ack.Duplicate)
	// Output:
	// order-42 1 false
	// order-42 1 true
}

func ExamplePublisher_PublishBatch() {
	nc, stop := exampleServer()
	defer stop()

	p, err := publisher.New(nc, publisher.WithSource("shop"))
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// One JetStream atomic batch: all three stored, in order, or none.
	acks, err := p.PublishBatch(ctx, []publisher.Event{
		{ID: "order-1", Type: "order.created"},
		{ID: "order-2", Type: "order.created"},
		{ID: "order-1", Type: "order.created"}, // the same id: stored once
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range acks {
		fmt.Println(a.ID, a.Sequence, a.Duplicate)
	}
	// Output:
	// order-1 1 false
	// order-2 2 false
	// order-1 1 true
}

func ExampleGather() {
	nc, stop := exampleServer()
	defer stop()

	// Two instances of a quote service answer the same subject.
	for _, price := range []string{"10", "12"} {
		sub, _ := nc.Subscribe("svc.quote", func(m *nats.Msg) { _ = m.Respond([]byte(price)) })
		defer sub.Unsubscribe()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	replies, err := publisher.Gather(ctx, nc, "svc.quote", []byte(`{"sku":"a1"}`), publisher.MaxReplies(2))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(replies), "replies")

	// Nobody listens: an error at once, not a timeout.
	_, err = publisher.Gather(ctx, nc, "svc.nobody", nil)
	fmt.Println(err == publisher.ErrNoResponders)
	// Output:
	// 2 replies
	// true
}
