package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	vals := []uint64{0, 1, 127, 128, 129, 255, 256, 257, 1000, 1023, 1024, 1 << 20, 1<<20 + 1, 123456789, 1<<62 - 1, 1 << 62, math.MaxInt64}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		vals = append(vals, r.Uint64N(math.MaxInt64))
		vals = append(vals, r.Uint64N(1<<uint(r.IntN(40)+1)))
	}
	prev := -1
	slices.Sort(vals)
	for _, v := range vals {
		b := bucketOf(v)
		if b < 0 || b >= numBuckets {
			t.Fatalf("value %d: bucket %d out of range", v, b)
		}
		lo, hi := bucketRange(b)
		if v < lo || v > hi {
			t.Fatalf("value %d in bucket %d [%d, %d]", v, b, lo, hi)
		}
		// Relative width of a bucket: under 1/128 of its values.
		if v >= subCount && float64(hi-lo) > float64(lo)/subCount {
			t.Fatalf("bucket %d [%d, %d] wider than 1/%d", b, lo, hi, subCount)
		}
		if b < prev {
			t.Fatalf("buckets not monotonic at %d", v)
		}
		prev = b
	}
	// Adjacent buckets tile the range with no gaps.
	for b := 1; b < numBuckets-subCount; b++ {
		_, hiPrev := bucketRange(b - 1)
		lo, _ := bucketRange(b)
		if lo != hiPrev+1 {
			t.Fatalf("gap between buckets %d and %d: %d, %d", b-1, b, hiPrev, lo)
		}
	}
}

func TestQuantilesMatchExact(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var h Histogram
	var exact []time.Duration
	for i := 0; i < 100000; i++ {
		// A long-tailed mix: mostly ~200µs, some ms, a few seconds.
		d := time.Duration(r.ExpFloat64() * float64(200*time.Microsecond))
		if r.IntN(100) == 0 {
			d = time.Duration(r.Float64() * float64(2*time.Second))
		}
		h.Record(d)
		exact = append(exact, d)
	}
	slices.Sort(exact)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		want := exact[max(int(math.Ceil(q*float64(len(exact))))-1, 0)]
		got := h.Quantile(q)
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 0.01 {
			t.Errorf("q%g: got %v, want %v (%.2f%% off)", q, got, want, rel*100)
		}
	}
	if h.Min() != exact[0] || h.Max() != exact[len(exact)-1] {
		t.Errorf("min/max %v %v, want %v %v", h.Min(), h.Max(), exact[0], exact[len(exact)-1])
	}
	var sum time.Duration
	for _, d := range exact {
		sum += d
	}
	if mean := sum / time.Duration(len(exact)); h.Mean() != mean {
		t.Errorf("mean %v, want %v", h.Mean(), mean)
	}
	s := h.Summary()
	if !(s.Min <= s.P50 && s.P50 <= s.P90 && s.P90 <= s.P99 && s.P99 <= s.P999 && s.P999 <= s.Max) || s.Count != 100000 {
		t.Errorf("summary out of order: %+v", s)
	}
}

func TestHistogramEdges(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Min() != 0 || h.Max() != 0 || h.Mean() != 0 || h.Summary().Count != 0 {
		t.Fatal("empty histogram is not all zero")
	}
	h.Record(-time.Second) // clocks disagree: counted as 0
	h.Record(0)
	if h.Count() != 2 || h.Max() != 0 || h.Quantile(1) != 0 {
		t.Fatalf("zero values: count %d max %v", h.Count(), h.Max())
	}
	var one Histogram
	one.Record(1234567 * time.Nanosecond)
	for _, q := range []float64{0, 0.5, 1} {
		if got := one.Quantile(q); got != 1234567 {
			t.Errorf("one sample q%g = %v (clamped to min and max)", q, got)
		}
	}
	var big Histogram
	big.Record(time.Duration(math.MaxInt64))
	if top := time.Duration(math.MaxInt64 - 1); big.Max() != top || big.Min() != top || big.Quantile(0.5) != top {
		t.Errorf("largest duration: %v", big.Quantile(0.5))
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, all Histogram
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * time.Microsecond
		all.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(&Histogram{})
	if m.Summary() != all.Summary() {
		t.Fatalf("merged %+v, want %+v", m.Summary(), all.Summary())
	}
}

func TestHistogramConcurrent(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10000; i++ {
				h.Record(time.Duration(g*10000+i) * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	if h.Count() != 80000 || h.Min() != 0 || h.Max() != 79999*time.Microsecond {
		t.Fatalf("count %d min %v max %v", h.Count(), h.Min(), h.Max())
	}
	if p := h.Quantile(0.5); math.Abs(float64(p-40*time.Millisecond)) > 0.01*float64(40*time.Millisecond) {
		t.Fatalf("p50 %v", p)
	}
}
