package publisher

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
)

// gatherTestConns starts a plain nats-server on a random port and returns
// two connections: one for the requester, one for responders. Everything
// is shut down on cleanup, and the test fails if goroutines leak.
func gatherTestConns(t *testing.T) (req, resp *nats.Conn) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs last
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	conn := func() *nats.Conn {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	return conn(), conn()
}

// gatherRespond subscribes fn to subject and flushes, so the subscription
// is known to the server before the test sends anything.
func gatherRespond(t *testing.T, nc *nats.Conn, subject string, fn nats.MsgHandler) {
	t.Helper()
	sub, err := nc.Subscribe(subject, fn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// gatherResponders starts n independent responders (no queue group) on
// subject, each answering its own index.
func gatherResponders(t *testing.T, nc *nats.Conn, subject string, n int) {
	t.Helper()
	for i := range n {
		gatherRespond(t, nc, subject, func(m *nats.Msg) { _ = m.Respond([]byte(strconv.Itoa(i))) })
	}
}

func TestGatherMaxRepliesStopsEarly(t *testing.T) {
	req, resp := gatherTestConns(t)
	gatherResponders(t, resp, "svc.all", 5)

	start := time.Now()
	replies, err := Gather(t.Context(), req, "svc.all", []byte("q"), MaxReplies(3), Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(replies) != 3 {
		t.Fatalf("got %d replies, want 3", len(replies))
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("took %v: did not stop at max replies", el)
	}
	for _, r := range replies {
		if r.Latency <= 0 || r.Subject == "" || len(r.Data) == 0 {
			t.Fatalf("incomplete reply %+v", r)
		}
	}
}

func TestGatherStallGapEndsGather(t *testing.T) {
	req, resp := gatherTestConns(t)
	gatherResponders(t, resp, "svc.all", 5)

	start := time.Now()
	replies, err := Gather(t.Context(), req, "svc.all", nil, StallGap(100*time.Millisecond), Timeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(replies) != 5 {
		t.Fatalf("got %d replies, want 5", len(replies))
	}
	seen := map[string]bool{}
	for _, r := range replies {
		seen[string(r.Data)] = true
	}
	if len(seen) != 5 {
		t.Fatalf("replies not from 5 distinct responders: %v", seen)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("took %v: stall gap did not end the gather", el)
	}
}

func TestGatherDeadlineReturnsWhatArrived(t *testing.T) {
	req, resp := gatherTestConns(t)
	gatherResponders(t, resp, "svc.all", 5)

	const timeout = 200 * time.Millisecond
	start := time.Now()
	replies, err := Gather(t.Context(), req, "svc.all", nil, Timeout(timeout))
	if err != nil {
		t.Fatal(err)
	}
	if len(replies) != 5 {
		t.Fatalf("got %d replies, want 5", len(replies))
	}
	if el := time.Since(start); el < timeout {
		t.Fatalf("returned after %v, before the %v deadline", el, timeout)
	}
}

func TestGatherCtxDeadlineWithoutReplyIsTimeout(t *testing.T) {
	req, resp := gatherTestConns(t)
	gatherRespond(t, resp, "svc.silent", func(*nats.Msg) {}) // listens, never answers

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	replies, err := Gather(ctx, req, "svc.silent", nil)
	if !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("err = %v, want nats.ErrTimeout", err)
	}
	if len(replies) != 0 {
		t.Fatalf("got %d replies", len(replies))
	}
}

func TestGatherSentinelEndsAndIsNotReturned(t *testing.T) {
	req, resp := gatherTestConns(t)
	gatherRespond(t, resp, "svc.stream", func(m *nats.Msg) {
		_ = m.Respond([]byte("a"))
		_ = m.Respond([]byte("b"))
		_ = m.Respond(nil) // sentinel: empty body, no headers
	})

	start := time.Now()
	replies, err := Gather(t.Context(), req, "svc.stream", nil, Timeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(replies) != 2 || string(replies[0].Data) != "a" || string(replies[1].Data) != "b" {
		t.Fatalf("replies = %+v, want a, b", replies)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("took %v: sentinel did not end the gather", el)
	}
}

func TestGatherEmptyReplyWithHeadersIsAReply(t *testing.T) {
	req, resp := gatherTestConns(t)
	gatherRespond(t, resp, "svc.hdr", func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Header.Set("X-Only", "header")
		_ = m.RespondMsg(r)
	})
	replies, err := Gather(t.Context(), req, "svc.hdr", nil, MaxReplies(1), Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(replies) != 1 || replies[0].Header.Get("X-Only") != "header" {
		t.Fatalf("replies = %+v", replies)
	}
}

func TestGatherNoRespondersFast(t *testing.T) {
	req, _ := gatherTestConns(t)

	start := time.Now()
	_, err := Gather(t.Context(), req, "svc.nobody", []byte("x"), Timeout(5*time.Second))
	el := time.Since(start)
	if !errors.Is(err, ErrNoResponders) || !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("err = %v, want ErrNoResponders", err)
	}
	if el > 50*time.Millisecond {
		t.Fatalf("no responders took %v, want < 50ms", el)
	}
}

func TestGatherSendsHeadersAndData(t *testing.T) {
	req, resp := gatherTestConns(t)
	got := make(chan *nats.Msg, 1)
	gatherRespond(t, resp, "svc.echo", func(m *nats.Msg) {
		got <- m
		r := nats.NewMsg(m.Reply)
		r.Data = m.Data
		r.Header.Set("X-From", "echo")
		_ = m.RespondMsg(r)
	})

	h := nats.Header{}
	h.Set(CorrelationIDHeader, "corr-1")
	h.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	replies, err := Gather(t.Context(), req, "svc.echo", []byte("payload"), Header(h), MaxReplies(1))
	if err != nil {
		t.Fatal(err)
	}
	m := <-got
	if m.Header.Get(CorrelationIDHeader) != "corr-1" || m.Header.Get("traceparent") == "" || string(m.Data) != "payload" {
		t.Fatalf("responder got header %v data %q", m.Header, m.Data)
	}
	if len(replies) != 1 || string(replies[0].Data) != "payload" || replies[0].Header.Get("X-From") != "echo" {
		t.Fatalf("replies = %+v", replies)
	}
}

func TestGatherCancelReturnsCtxErr(t *testing.T) {
	req, resp := gatherTestConns(t)
	arrived := make(chan struct{})
	gatherRespond(t, resp, "svc.slow", func(*nats.Msg) { close(arrived) })

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := Gather(ctx, req, "svc.slow", nil, Timeout(10*time.Second))
		done <- err
	}()
	<-arrived // the request is out; the gather is waiting
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestGatherAlwaysUnsubscribes(t *testing.T) {
	req, resp := gatherTestConns(t)
	gatherResponders(t, resp, "svc.all", 2)
	before := req.NumSubscriptions()

	for _, opts := range [][]GatherOption{
		{MaxReplies(1)},
		{StallGap(20 * time.Millisecond)},
		{Timeout(30 * time.Millisecond)},
	} {
		if _, err := Gather(t.Context(), req, "svc.all", nil, opts...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Gather(t.Context(), req, "svc.none", nil); !errors.Is(err, ErrNoResponders) {
		t.Fatal(err)
	}
	if after := req.NumSubscriptions(); after != before {
		t.Fatalf("subscriptions: %d before, %d after", before, after)
	}
}

func TestGatherRoute(t *testing.T) {
	req, resp := gatherTestConns(t)
	gatherRespond(t, resp, GatherSubjectPrefix+"dash", func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Header.Set(GatherStatusHeader, "504")
		r.Header.Set(CorrelationIDHeader, m.Header.Get(CorrelationIDHeader))
		r.Data = fmt.Appendf(nil, `{"got":%s}`, m.Data)
		_ = m.RespondMsg(r)
	})

	h := nats.Header{}
	h.Set(CorrelationIDHeader, "c-9")
	body, status, err := GatherRoute(t.Context(), req, "dash", map[string]any{"user_id": "7"}, Header(h))
	if err != nil {
		t.Fatal(err)
	}
	if status != 504 || string(body) != `{"got":{"user_id":"7"}}` {
		t.Fatalf("status %d body %s", status, body)
	}

	if _, _, err := GatherRoute(t.Context(), req, "missing", nil); !errors.Is(err, ErrNoResponders) {
		t.Fatalf("unknown route: err = %v, want ErrNoResponders", err)
	}
}
