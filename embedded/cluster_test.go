package embedded_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/embedded"
)

// TestClusterRestartWaitsForMetaLeader: a node restarted on its store while
// its peers are down must not report ready. Its recovered meta log reads as
// current before it knows any leader, and the hub's first stream calls then
// go unanswered. Restarted together, the three are ready.
func TestClusterRestartWaitsForMetaLeader(t *testing.T) {
	const nodes = 3
	var ports, routes []string
	var lns []net.Listener
	for range nodes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().String())
		routes = append(routes, "nats://"+ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	stores := make([]string, nodes)
	for i := range stores {
		stores[i] = t.TempDir()
	}
	opts := func(i int, ready time.Duration) embedded.Options {
		return embedded.Options{
			Listen: "127.0.0.1:0", StoreDir: stores[i], ServerName: fmt.Sprintf("n%d", i+1), ReadyTimeout: ready,
			Cluster: &embedded.Cluster{Name: "c", Listen: ports[i], Routes: routes},
		}
	}
	startAll := func() []*embedded.Server {
		t.Helper()
		srvs := make([]*embedded.Server, nodes)
		errs := make([]error, nodes)
		var wg sync.WaitGroup
		for i := range srvs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				srvs[i], errs[i] = embedded.Start(context.Background(), opts(i, time.Minute))
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				shutdownAll(t, srvs)
				t.Fatalf("node %d: %v", i+1, err)
			}
		}
		return srvs
	}

	srvs := startAll()
	// An R3 stream, so the meta log has assignments to recover.
	nc, err := srvs[0].Connect("test")
	if err != nil {
		shutdownAll(t, srvs)
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx := ctxT(t, time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = js.CreateStream(cctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: nodes})
		cancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			nc.Close()
			shutdownAll(t, srvs)
			t.Fatalf("create R3 stream: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	nc.Close()
	shutdownAll(t, srvs)

	// Alone, the restarted node has no quorum and no meta leader.
	s, err := embedded.Start(context.Background(), opts(0, 2*time.Second))
	if err == nil {
		shutdownAll(t, []*embedded.Server{s})
		t.Fatal("a node restarted without its peers reported ready")
	}
	if !strings.Contains(err.Error(), "meta") {
		t.Fatalf("error does not say what it waited for: %v", err)
	}

	// Started together, the three find their leader and are all ready.
	shutdownAll(t, startAll())
}

func shutdownAll(t *testing.T, srvs []*embedded.Server) {
	t.Helper()
	for _, s := range srvs {
		if s == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		cancel()
	}
}
