package main

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/webhook"
)

// freePorts returns n ports free on loopback right now. Cluster routes need
// fixed ports; the window between closing and the hub binding them is tiny.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// TestClusterNodeKilled: three hub processes form one JetStream cluster;
// 20,000 events are published through all three while one node is
// SIGKILLed and restarted. Every (event, subscription) is delivered, the
// publisher on the killed node reconnects and goes on, and the restarted
// node catches up.
func TestClusterNodeKilled(t *testing.T) {
	// Three hubs on two cores compete with the parallel race suite: `make
	// test` runs this on its own after it (make test-cluster, 20-40 s).
	if os.Getenv("HUB_CLUSTER_TEST") == "" {
		t.Skip("set HUB_CLUSTER_TEST=1 (make test-cluster, part of make test) to run the 3-node kill test")
	}
	const events, subs = 20000, 2
	rcv := newReceiver()
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	secret := webhook.GenerateSecret()
	ports := freePorts(t, 6)
	routes := fmt.Sprintf(`["nats://127.0.0.1:%d", "nats://127.0.0.1:%d", "nats://127.0.0.1:%d"]`, ports[3], ports[4], ports[5])
	cfgs := make([]string, 3)
	for i := range cfgs {
		cfgs[i] = writeConfig(t, fmt.Sprintf(`
log: {level: info, format: json}
nats:
  name: hub-%d
  listen: "127.0.0.1:%d"
  store_dir: %q
  cluster: {name: test, listen: "127.0.0.1:%d", routes: %s}
http: {listen: "127.0.0.1:0"}
delivery: {backoff: [100ms, 500ms], ack_wait: 5s, concurrency: {webhook: 32}}
channels:
  webhook: {allow_cidrs: [127.0.0.0/8]}
subscriptions:
  - {id: crm, channel: webhook, events: [">"], url: %q, secret: %q}
  - {id: billing, channel: webhook, events: ["order.>"], url: %q, secret: %q}
`, i+1, ports[i], t.TempDir(), ports[3+i], routes, srv.URL+"/crm", secret, srv.URL+"/billing", secret))
	}
	// Start all three at once: each waits for a quorum of the others.
	procs := make([]*hubProc, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			procs[i], errs[i] = startHubErr(t, cfgs[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var published atomic.Int64
	var pubWG sync.WaitGroup
	for k := 0; k < 3; k++ {
		nc, err := nats.Connect(procs[k].natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		pub, _ := publisher.New(nc)
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			for i := k; i < events; i += 3 {
				ev := publisher.Event{Type: "order.created", ID: fmt.Sprintf("c-%05d", i)}
				// Retry with the same id until stored: dedup makes it safe.
				for {
					pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
					_, err := pub.Publish(pctx, ev)
					pcancel()
					if err == nil {
						break
					}
					if ctx.Err() != nil {
						t.Errorf("publish %s: %v", ev.ID, err)
						return
					}
				}
				published.Add(1)
			}
		}()
	}
	waitPublished := func(n int64) {
		for published.Load() < n {
			select {
			case <-ctx.Done():
				t.Fatalf("only %d published", published.Load())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	// Kill node 2 a third of the way through, restart it at two thirds.
	waitPublished(events / 3)
	if err := procs[1].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-procs[1].done
	waitPublished(events * 2 / 3)
	procs[1] = startHub(t, cfgs[1])
	pubWG.Wait()
	if err := rcv.waitFor(ctx, func(distinct, _ int) bool { return distinct >= events*subs }); err != nil {
		t.Fatal(err)
	}

	// The restarted node catches up: every replica current, no lag.
	nc, err := nats.Connect(procs[1].natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for {
		st, err := js.Stream(ctx, "EVENTS")
		if err == nil {
			info := st.CachedInfo()
			ok := info.State.Msgs == events && info.Cluster != nil && len(info.Cluster.Replicas) == 2
			for _, r := range info.Cluster.Replicas {
				ok = ok && r.Current && r.Lag == 0
			}
			if ok {
				t.Logf("EVENTS: %d messages, leader %s, replicas %+v", info.State.Msgs, info.Cluster.Leader, info.Cluster.Replicas)
				break
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("replicas did not catch up: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	for _, p := range procs {
		p.stop(t)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	dups := 0
	for _, c := range rcv.counts {
		dups += c - 1
	}
	t.Logf("%d events through 3 nodes, one SIGKILLed and restarted: %d distinct deliveries, %d duplicates", events, len(rcv.counts), dups)
}
