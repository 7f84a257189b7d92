package loadgen

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress redraws one status line on a terminal: a bar of the publishing
// (by count or time), then of the deliveries.
type progress struct {
	w     io.Writer
	o     *Options
	st    *pubStats
	start time.Time
	mu    sync.Mutex
	phase string
	done  chan struct{}
	wg    sync.WaitGroup
}

func startProgress(o Options, st *pubStats, start time.Time) *progress {
	p := &progress{w: o.Progress, o: &o, st: st, start: start, phase: "publishing", done: make(chan struct{})}
	if p.w == nil {
		return p
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				p.draw()
				fmt.Fprintln(p.w)
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
	return p
}

func (p *progress) setPhase(s string) {
	p.mu.Lock()
	p.phase = s
	p.mu.Unlock()
}

func (p *progress) stop() {
	close(p.done)
	p.wg.Wait()
}

func (p *progress) draw() {
	p.mu.Lock()
	phase := p.phase
	p.mu.Unlock()
	el := time.Since(p.start)
	pub := p.st.published.Load()
	del := p.o.Recorder.Delivered()
	var frac float64
	if phase == "publishing" {
		if p.o.Count > 0 {
			frac = float64(pub) / float64(p.o.Count)
		} else {
			frac = el.Seconds() / p.o.Duration.Seconds()
		}
	} else if want := pub * int64(p.o.Targets); want > 0 {
		frac = float64(del) / float64(want)
	}
	frac = min(max(frac, 0), 1)
	const width = 24
	n := int(frac * width)
	bar := strings.Repeat("=", n) + strings.Repeat(" ", width-n)
	fmt.Fprintf(p.w, "\r%-13s [%s] %3.0f%%  %6.1fs  published %d (%.0f/s)  delivered %d  errors %d   ",
		phase, bar, frac*100, el.Seconds(), pub, float64(pub)/max(el.Seconds(), 1e-3), del, p.st.errs.Load())
}
