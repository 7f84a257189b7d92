package loadgen

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram records durations in log-spaced buckets, as HdrHistogram does:
// every power of two is split into 128 linear sub-buckets, so a reported
// value is within 0.8 % of a recorded one, from 1 ns to the largest
// time.Duration, in a fixed 58 KiB. Record is lock-free and safe for
// concurrent use; the zero value is ready.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // nanoseconds; wraps only after 584 years of samples
	min    atomic.Int64  // 0 with no samples; stored as value+1
	max    atomic.Int64
}

const (
	subBits    = 7
	subCount   = 1 << subBits // sub-buckets per power of two
	numBuckets = (64 - subBits + 1) * subCount
)

// bucketOf maps a non-negative value to its bucket. Values below subCount
// have a bucket each; above, the top subBits+1 bits pick one.
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(v) - 1 // position of the highest bit, ≥ subBits
	shift := e - subBits
	return (shift+1)*subCount + int(v>>shift) - subCount
}

// bucketRange is the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < subCount {
		return uint64(i), uint64(i)
	}
	shift := i/subCount - 1
	mant := uint64(i%subCount + subCount)
	lo = mant << shift
	return lo, lo + (1 << shift) - 1
}

// Record adds one duration; a negative one (clocks disagree) counts as 0.
func (h *Histogram) Record(d time.Duration) {
	v := min(max(int64(d), 0), math.MaxInt64-1) // min is stored as value+1

	h.counts[bucketOf(uint64(v))].Add(1)
	h.n.Add(1)
	h.sum.Add(uint64(v))
	for {
		m := h.min.Load()
		if m != 0 && m-1 <= v || h.min.CompareAndSwap(m, v+1) {
			break
		}
	}
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Min and Max are the exact extremes (0 with no samples).
func (h *Histogram) Min() time.Duration {
	if m := h.min.Load(); m > 0 {
		return time.Duration(m - 1)
	}
	return 0
}

// Max is the largest recorded value.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Mean is the average of the recorded values.
func (h *Histogram) Mean() time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}

// Quantile returns the value below which the fraction q (0..1) of the
// samples fall: the midpoint of the bucket holding the sample of rank
// ⌈q·n⌉, clamped to the exact min and max. It is 0 with no samples.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(min(max(q, 0), 1) * float64(n)))
	rank = max(rank, 1)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			lo, hi := bucketRange(i)
			v := time.Duration(lo + (hi-lo)/2)
			return min(max(v, h.Min()), h.Max())
		}
	}
	return h.Max()
}

// Merge adds every sample of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.Count() == 0 {
		return
	}
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	h.sum.Add(o.sum.Load())
	mn, mx := int64(o.Min()), int64(o.Max())
	for {
		m := h.min.Load()
		if m != 0 && m-1 <= mn || h.min.CompareAndSwap(m, mn+1) {
			break
		}
	}
	for {
		m := h.max.Load()
		if mx <= m || h.max.CompareAndSwap(m, mx) {
			break
		}
	}
}

// Percentiles is a histogram summary in milliseconds, as the JSON report
// and the tables print it.
type Percentiles struct {
	Count uint64  `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

// Summary returns the count, min, mean, p50, p90, p99, p99.9 and max.
func (h *Histogram) Summary() Percentiles {
	return Percentiles{
		Count: h.Count(),
		Min:   ms(h.Min()),
		Mean:  ms(h.Mean()),
		P50:   ms(h.Quantile(0.50)),
		P90:   ms(h.Quantile(0.90)),
		P99:   ms(h.Quantile(0.99)),
		P999:  ms(h.Quantile(0.999)),
		Max:   ms(h.Max()),
	}
}

// ms is d in milliseconds, rounded to the microsecond.
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
