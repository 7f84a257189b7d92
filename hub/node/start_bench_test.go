package node_test

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/node"
)

// BenchmarkStartToReady: an in-process hub (embedded JetStream without a
// TCP port, streams, dispatchers, no HTTP) from New to a returned Start,
// on a fresh store each time. Reports the median.
func BenchmarkStartToReady(b *testing.B) {
	var took []time.Duration
	for i := 0; i < b.N; i++ {
		cfg := testConfig(b.TempDir())
		cfg.NATS.Listen, cfg.HTTP.Listen = "", ""
		cfg.Subscriptions = []hub.Subscription{{ID: "all", Channel: "log", Events: []string{">"}}}
		start := time.Now()
		n := node.New(cfg)
		if err := n.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
		b.StopTimer()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = n.Shutdown(ctx)
		cancel()
		b.StartTimer()
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "median-ms")
}
