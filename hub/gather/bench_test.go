package gather_test

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/examples/dashboard/responders"
	"github.com/hubproject/hub/hub/gather"
)

// Run: go test -run XXX -bench . -benchtime 200x ./hub/gather/
//
// Figures are reported as percentiles over the b.N runs with a baseline
// measured in the same run, because absolute numbers drift on a shared
// machine (DESIGN §6).

// benchDashboard starts the three demo services with delay and a Gatherer
// for the dashboard route (no cache, so every gather sends three requests).
func benchDashboard(b *testing.B, delay time.Duration) (*env, *gather.Gatherer) {
	b.Helper()
	e := newEnv(b)
	stop, err := responders.Start(e.svc, responders.Options{Delay: delay})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stop)
	return e, e.gatherer(b, dashboardYAML)
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// BenchmarkGather3x50ms: three branches each answering after 50 ms,
// gathered in parallel, against the same three requests made one after
// another. Target (DESIGN §6): gather p99 ≤ 55 ms vs ≥ 150 ms sequential.
func BenchmarkGather3x50ms(b *testing.B) {
	e, g := benchDashboard(b, 50*time.Millisecond)
	ctx := context.Background()
	params := map[string]any{"user_id": "42"}
	body, _ := json.Marshal(params)
	subjects := []string{responders.UserSubject, responders.OrdersSubject, responders.PaymentsSubject}
	gathers := make([]time.Duration, 0, b.N)
	sequential := make([]time.Duration, 0, b.N)

	b.ResetTimer()
	for range b.N {
		start := time.Now()
		res, err := g.Gather(ctx, "dashboard", params, nil)
		if err != nil || res.Partial {
			b.Fatalf("gather: %v partial=%v", err, res != nil && res.Partial)
		}
		gathers = append(gathers, time.Since(start))

		start = time.Now()
		for _, s := range subjects {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := e.nc.RequestMsgWithContext(rctx, &nats.Msg{Subject: s, Data: body})
			cancel()
			if err != nil {
				b.Fatal(err)
			}
		}
		sequential = append(sequential, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(gathers)
	slices.Sort(sequential)
	b.ReportMetric(ms(percentile(gathers, 0.50)), "gather_p50_ms")
	b.ReportMetric(ms(percentile(gathers, 0.99)), "gather_p99_ms")
	b.ReportMetric(ms(percentile(sequential, 0.50)), "sequential_p50_ms")
	b.ReportMetric(ms(percentile(sequential, 0.99)), "sequential_p99_ms")
	b.ReportMetric(float64(percentile(sequential, 0.50))/float64(percentile(gathers, 0.50)), "speedup_p50")
}

// BenchmarkGatherOverhead: what the hub adds on top of the requests. Per
// gather, overhead = total gather time (including encoding the reply)
// minus its slowest branch's latency. Baseline in the same run: one plain
// nats.go request to one of the same responders. Branches answer at once
// so the figures are all overhead and transport. Target (DESIGN §6): hub
// overhead p99 ≤ 1 ms.
func BenchmarkGatherOverhead(b *testing.B) {
	e, g := benchDashboard(b, 0)
	ctx := context.Background()
	params := map[string]any{"user_id": "42"}
	body, _ := json.Marshal(params)
	overhead := make([]time.Duration, 0, b.N)
	totals := make([]time.Duration, 0, b.N)
	requests := make([]time.Duration, 0, b.N)

	b.ResetTimer()
	for range b.N {
		start := time.Now()
		res, err := g.Gather(ctx, "dashboard", params, nil)
		if err != nil || res.Partial {
			b.Fatalf("gather: %v", err)
		}
		if _, err := json.Marshal(res); err != nil {
			b.Fatal(err)
		}
		total := time.Since(start)
		var slowest time.Duration
		for _, br := range res.Branches {
			slowest = max(slowest, br.Latency)
		}
		totals = append(totals, total)
		overhead = append(overhead, total-slowest)

		start = time.Now()
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = e.nc.RequestMsgWithContext(rctx, &nats.Msg{Subject: responders.UserSubject, Data: body})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		requests = append(requests, time.Since(start))
	}
	b.StopTimer()
	for _, s := range [][]time.Duration{overhead, totals, requests} {
		slices.Sort(s)
	}
	b.ReportMetric(us(percentile(overhead, 0.50)), "overhead_p50_us")
	b.ReportMetric(us(percentile(overhead, 0.99)), "overhead_p99_us")
	b.ReportMetric(us(percentile(totals, 0.50)), "gather_p50_us")
	b.ReportMetric(us(percentile(totals, 0.99)), "gather_p99_us")
	b.ReportMetric(us(percentile(requests, 0.50)), "request_p50_us")
	b.ReportMetric(us(percentile(requests, 0.99)), "request_p99_us")
}

// BenchmarkGatherParallel64: gathers per second with 64 concurrent callers
// and branches answering at once.
func BenchmarkGatherParallel64(b *testing.B) {
	_, g := benchDashboard(b, 0)
	ctx := context.Background()
	params := map[string]any{"user_id": "42"}
	var next, failed atomic.Int64
	var wg sync.WaitGroup

	b.ResetTimer()
	start := time.Now()
	for range 64 {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				res, err := g.Gather(ctx, "dashboard", params, nil)
				if err != nil || res.Partial {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d gathers failed or were partial", n, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "gathers/s")
}
