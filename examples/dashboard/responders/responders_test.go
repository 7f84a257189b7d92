package responders_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/hubproject/hub/examples/dashboard/responders"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func conns(t *testing.T) (client, svc *nats.Conn) {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	c := func() *nats.Conn {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	return c(), c()
}

func request(t *testing.T, nc *nats.Conn, subject, body string) *nats.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, subject, []byte(body))
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	return m
}

func TestRespondersAnswerPlausibleJSON(t *testing.T) {
	client, svc := conns(t)
	var counted atomic.Int64
	stop, err := responders.Start(svc, responders.Options{Counter: func(string) { counted.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	var user struct{ ID, Name, Email, Tier string }
	if err := json.Unmarshal(request(t, client, responders.UserSubject, `{"user_id":"7"}`).Data, &user); err != nil {
		t.Fatal(err)
	}
	if user.ID != "7" || user.Name == "" || user.Email == "" {
		t.Fatalf("user = %+v", user)
	}
	var orders []struct {
		ID     string  `json:"id"`
		UserID string  `json:"user_id"`
		Total  float64 `json:"total"`
	}
	if err := json.Unmarshal(request(t, client, responders.OrdersSubject, `{"user_id":7}`).Data, &orders); err != nil {
		t.Fatal(err)
	}
	if len(orders) == 0 || orders[0].UserID != "7" || orders[0].Total <= 0 {
		t.Fatalf("orders = %+v", orders)
	}
	var payments []map[string]any
	if err := json.Unmarshal(request(t, client, responders.PaymentsSubject, ``).Data, &payments); err != nil {
		t.Fatal(err)
	}
	// The same user gets the same data every time.
	again := request(t, client, responders.OrdersSubject, `{"user_id":"7"}`).Data
	first := request(t, client, responders.OrdersSubject, `{"user_id":"7"}`).Data
	if string(again) != string(first) {
		t.Fatalf("data not stable: %s vs %s", again, first)
	}
	if m := request(t, client, responders.UserSubject, `not json`); m.Header.Get("Nats-Service-Error-Code") != "400" {
		t.Fatalf("bad request answered %v %s", m.Header, m.Data)
	}
	if n := counted.Load(); n != 6 {
		t.Fatalf("counter saw %d requests, want 6", n)
	}
}

func TestRespondersFailRate(t *testing.T) {
	client, svc := conns(t)
	stop, err := responders.Start(svc, responders.Options{FailRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	m := request(t, client, responders.PaymentsSubject, `{}`)
	if m.Header.Get("Nats-Service-Error") == "" || m.Header.Get("Nats-Service-Error-Code") != "500" {
		t.Fatalf("fail rate 1 answered %v %s", m.Header, m.Data)
	}
	if _, err := responders.Start(svc, responders.Options{FailRate: 2}); err == nil {
		t.Fatal("fail rate 2 accepted")
	}
}

func TestRespondersDelayOverlaps(t *testing.T) {
	client, svc := conns(t)
	const delay = 100 * time.Millisecond
	stop, err := responders.Start(svc, responders.Options{Delay: delay})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	start := time.Now()
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { request(t, client, responders.UserSubject, `{}`) })
	}
	wg.Wait()
	el := time.Since(start)
	if el < delay {
		t.Fatalf("answered after %v, before the %v delay", el, delay)
	}
	if el > 3*delay-10*time.Millisecond {
		t.Fatalf("3 concurrent requests took %v: delays did not overlap", el)
	}
}

func TestStopCancelsDelayedReplies(t *testing.T) {
	client, svc := conns(t)
	arrived := make(chan struct{}, 1)
	stop, err := responders.Start(svc, responders.Options{Delay: time.Minute, Counter: func(string) { arrived <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		_, err := client.RequestWithContext(ctx, responders.UserSubject, nil)
		errc <- err
	}()
	<-arrived
	start := time.Now()
	stop()
	if el := time.Since(start); el > time.Second {
		t.Fatalf("stop took %v with a reply pending for a minute", el)
	}
	if err := <-errc; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request after stop: %v, want a timeout (reply cancelled)", err)
	}
}
