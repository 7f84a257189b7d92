package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hubproject/hub/embedded"
	"github.com/hubproject/hub/hub/api"
)

// BenchmarkHTTPIntakeBatch posts batches of 100 events over keep-alive
// connections from 4 clients; reports events/s stored.
func BenchmarkHTTPIntakeBatch(b *testing.B) { benchIntakeBatch(b, setupBench(b)) }

// BenchmarkHTTPIntakeBatchMode is BenchmarkHTTPIntakeBatch with the server
// fsyncing every write or not (sync=always|default), and each request's
// batch stored as one JetStream atomic batch or one publish per event
// (atomic=on|off, api.WithAtomicBatches). Compare with benchstat -col /atomic.
func BenchmarkHTTPIntakeBatchMode(b *testing.B) {
	for _, sync := range []string{embedded.SyncAlways, embedded.SyncDefault} {
		for _, atomic := range []bool{true, false} {
			name := "sync=" + sync + "/atomic=off"
			if atomic {
				name = "sync=" + sync + "/atomic=on"
			}
			b.Run(name, func(b *testing.B) { benchIntakeBatch(b, setupWith(b, sync, api.WithAtomicBatches(atomic))) })
		}
	}
}

func benchIntakeBatch(b *testing.B, f *fixture) {
	const batch, clients = 100, 4
	bodies := make(chan []byte, 64)
	go func() {
		defer close(bodies)
		for i := 0; i < b.N; i += batch {
			var buf bytes.Buffer
			buf.WriteByte('[')
			for j := 0; j < batch; j++ {
				if j > 0 {
					buf.WriteByte(',')
				}
				fmt.Fprintf(&buf, `{"type":"order.created","id":"b-%d-%d","data":{"order":12345,"total":99.5}}`, i, j)
			}
			buf.WriteByte(']')
			bodies <- buf.Bytes()
		}
	}()
	b.ResetTimer()
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for body := range bodies {
				resp, err := http.Post(f.url+"/v1/events", "application/json", bytes.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 202 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkHTTPIntakeSingle1k posts one event per request at 1,000/s and
// reports the request latency percentiles.
func BenchmarkHTTPIntakeSingle1k(b *testing.B) {
	f := setupBench(b)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		<-tick.C
		body := []byte(`{"type":"order.created","id":"s-` + strconv.Itoa(i) + `","data":{"order":12345}}`)
		start := time.Now()
		resp, err := http.Post(f.url+"/v1/events", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

func setupBench(b *testing.B) *fixture {
	b.Helper()
	return setupTB(b)
}
