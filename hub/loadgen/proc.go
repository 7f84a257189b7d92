package loadgen

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// Proc reads a process's CPU time and memory from /proc: the load
// generator's own process ("self", for an in-process hub) or a hub's pid.
type Proc struct {
	dir   string
	label string
	self  bool
}

// Self is this process.
func Self() *Proc {
	return &Proc{dir: "/proc/self", label: "self (hub in-process, with the load generator and receivers)", self: true}
}

// PID is another process, e.g. a running `hub serve`.
func PID(pid int) *Proc {
	return &Proc{dir: "/proc/" + strconv.Itoa(pid), label: "pid " + strconv.Itoa(pid)}
}

// Usage is one reading.
type Usage struct {
	CPU  time.Duration // user + system
	RSS  int64         // resident bytes now (VmRSS)
	Peak int64         // peak resident bytes since the process started (VmHWM)
	// Goroutines is runtime.NumGoroutine() for Self (0 for another process).
	Goroutines int
	Taken      time.Time
}

// Read takes one reading.
func (p *Proc) Read() (Usage, error) {
	u := Usage{Taken: time.Now()}
	if p.self {
		u.Goroutines = runtime.NumGoroutine()
	}
	stat, err := os.ReadFile(p.dir + "/stat")
	if err != nil {
		return u, fmt.Errorf("process stats: %w", err)
	}
	// The command name (field 2) may hold spaces; fields after its closing
	// parenthesis are fixed: utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, fmt.Errorf("process stats: cannot parse %s/stat", p.dir)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return u, fmt.Errorf("process stats: cannot parse %s/stat", p.dir)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	u.CPU = time.Duration(ut+st) * time.Second / clockTicks
	status, err := os.ReadFile(p.dir + "/status")
	if err != nil {
		return u, fmt.Errorf("process stats: %w", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS":
			u.RSS = kib(v)
		case "VmHWM":
			u.Peak = kib(v)
		}
	}
	return u, nil
}

func kib(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
	return n << 10
}

// Sample is one point of the resident-memory series.
type Sample struct {
	Seconds float64 `json:"t"`
	RSSMiB  float64 `json:"rss_mib"`
	CPUs    float64 `json:"cpu_s"`
	// Goroutines in this process (in-process runs only).
	Goroutines int `json:"goroutines,omitempty"`
}

// sampler reads a Proc every interval until stopped.
type sampler struct {
	p       *Proc
	start   Usage
	mu      sync.Mutex
	samples []Sample
	maxRSS  int64
	maxG    int
	stop    chan struct{}
	done    chan struct{}
}

func startSampler(p *Proc, every time.Duration) (*sampler, error) {
	u, err := p.Read()
	if err != nil {
		return nil, err
	}
	s := &sampler{p: p, start: u, maxRSS: u.RSS, stop: make(chan struct{}), done: make(chan struct{})}
	s.add(u)
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				if u, err := p.Read(); err == nil {
					s.add(u)
				}
			}
		}
	}()
	return s, nil
}

func (s *sampler) add(u Usage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, Sample{
		Seconds:    round3(u.Taken.Sub(s.start.Taken).Seconds()),
		RSSMiB:     mib(u.RSS),
		CPUs:       round3((u.CPU - s.start.CPU).Seconds()),
		Goroutines: u.Goroutines,
	})
	s.maxRSS = max(s.maxRSS, u.RSS)
	s.maxG = max(s.maxG, u.Goroutines)
}

// finish stops sampling and summarises.
func (s *sampler) finish() *ProcReport {
	close(s.stop)
	<-s.done
	end, err := s.p.Read()
	if err == nil {
		s.add(end)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &ProcReport{
		Process:       s.p.label,
		CPUSeconds:    round3((end.CPU - s.start.CPU).Seconds()),
		CPUCores:      round3((end.CPU - s.start.CPU).Seconds() / max(end.Taken.Sub(s.start.Taken).Seconds(), 1e-9)),
		PeakRSSMiB:    mib(end.Peak),
		MaxRSSMiB:     mib(s.maxRSS),
		StartMiB:      mib(s.start.RSS),
		EndMiB:        mib(end.RSS),
		MaxGoroutines: s.maxG,
		Samples:       s.samples,
	}
}

// ProcReport is the hub process's CPU and memory over a run.
type ProcReport struct {
	Process    string  `json:"process"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUCores is CPU seconds per wall second (2.0 = two cores busy).
	CPUCores float64 `json:"cpu_cores"`
	// PeakRSSMiB is VmHWM: the peak since the process started.
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// MaxRSSMiB is the largest VmRSS sampled during the run.
	MaxRSSMiB float64 `json:"max_rss_mib"`
	StartMiB  float64 `json:"start_rss_mib"`
	EndMiB    float64 `json:"end_rss_mib"`
	// MaxGoroutines is the most goroutines sampled (in-process runs only).
	MaxGoroutines int      `json:"max_goroutines,omitempty"`
	Samples       []Sample `json:"samples,omitempty"`
}

func mib(b int64) float64 { return round3(float64(b) / (1 << 20)) }

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }
