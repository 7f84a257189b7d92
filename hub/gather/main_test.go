package gather_test

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub/gather"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startNATS starts a plain nats-server (no JetStream: gather needs none) on
// a random loopback port, shut down on cleanup.
func startNATS(tb testing.TB) *server.Server {
	tb.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		tb.Fatal(err)
	}
	ns.Start()
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(5 * time.Second) {
		tb.Fatal("nats-server not ready")
	}
	return ns
}

func connect(tb testing.TB, ns *server.Server) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// env is a server with one connection for the gatherer and one for the
// branch services, as in production where they are different processes.
type env struct {
	ns  *server.Server
	nc  *nats.Conn // the gatherer's
	svc *nats.Conn // the responders'
}

func newEnv(tb testing.TB) *env {
	ns := startNATS(tb)
	return &env{ns: ns, nc: connect(tb, ns), svc: connect(tb, ns)}
}

// gatherer decodes a YAML gather section through the project's strict
// loader and builds a Gatherer on e.nc.
func (e *env) gatherer(tb testing.TB, yamlText string, opts ...gather.Option) *gather.Gatherer {
	tb.Helper()
	cfg := gather.DefaultConfig()
	if err := config.Decode([]byte(yamlText), &cfg); err != nil {
		tb.Fatalf("config: %v", err)
	}
	g, err := gather.New(cfg, e.nc, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// responder answers on one subject after a delay, counting requests and
// keeping the last one. Delayed replies run on timers so concurrent
// requests overlap; cleanup cancels pending ones and waits for running ones.
type responder struct {
	count atomic.Int64
	got   chan *nats.Msg // every request, if the test reads them (buffered)

	mu      sync.Mutex
	stopped bool
	timers  map[*time.Timer]struct{}
	wg      sync.WaitGroup
}

// respond subscribes a responder; reply builds the answer (nil: stay
// silent). queue "" means every responder on the subject answers.
func respond(tb testing.TB, nc *nats.Conn, subject string, delay time.Duration, reply func(m *nats.Msg) *nats.Msg) *responder {
	tb.Helper()
	r := &responder{got: make(chan *nats.Msg, 1024), timers: map[*time.Timer]struct{}{}}
	send := func(m *nats.Msg) {
		if out := reply(m); out != nil {
			out.Subject = m.Reply
			_ = nc.PublishMsg(out)
		}
	}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		r.count.Add(1)
		select {
		case r.got <- m:
		default:
		}
		if delay <= 0 {
			send(m)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.stopped {
			return
		}
		r.wg.Add(1)
		var t *time.Timer
		t = time.AfterFunc(delay, func() {
			defer r.wg.Done()
			r.mu.Lock()
			delete(r.timers, t)
			r.mu.Unlock()
			send(m)
		})
		r.timers[t] = struct{}{}
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = sub.Unsubscribe()
		r.mu.Lock()
		r.stopped = true
		for t := range r.timers {
			if t.Stop() {
				r.wg.Done()
			}
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// jsonReply answers body.
func jsonReply(body string) func(*nats.Msg) *nats.Msg {
	return func(*nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte(body)} }
}

// silent never answers.
func silent(*nats.Msg) *nats.Msg { return nil }

// decode unmarshals a merged reply.
type reply struct {
	Values map[string]json.RawMessage
	Meta   struct {
		Partial       bool   `json:"partial"`
		CorrelationID string `json:"correlation_id"`
		Branches      map[string]struct {
			Status    string  `json:"status"`
			LatencyMS float64 `json:"latency_ms"`
			Error     string  `json:"error"`
			Fallback  bool    `json:"fallback"`
		} `json:"branches"`
	}
}

func decodeReply(tb testing.TB, b []byte) reply {
	tb.Helper()
	var r reply
	if err := json.Unmarshal(b, &r.Values); err != nil {
		tb.Fatalf("reply is not a JSON object: %v\n%s", err, b)
	}
	meta, ok := r.Values["_meta"]
	if !ok {
		tb.Fatalf("reply has no _meta: %s", b)
	}
	delete(r.Values, "_meta")
	if err := json.Unmarshal(meta, &r.Meta); err != nil {
		tb.Fatalf("bad _meta: %v\n%s", err, meta)
	}
	return r
}

func marshal(tb testing.TB, res *gather.Result) []byte {
	tb.Helper()
	b, err := json.Marshal(res)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
