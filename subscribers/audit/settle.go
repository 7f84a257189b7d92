package audit

import (
	"sync"
	"time"
)

// settler runs the dispatchers' settle steps (their acks) once the records
// queued before them are stored: one goroutine for all of them, woken when
// the writer finishes a batch, so a message waiting for its records holds
// no handler goroutine.
type settler struct {
	q      *queue
	mu     sync.Mutex
	wait   []pendingSettle // in ticket order
	closed bool            // the loop has exited: steps run at once
	wake   chan struct{}   // a first step was added
	done   chan struct{}   // closed when the loop has exited
}

type pendingSettle struct {
	ticket   uint64
	deadline time.Time
	done     func()
}

func newSettler(q *queue) *settler {
	return &settler{q: q, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// add runs done once every record queued so far is finished, or after
// timeout (a stuck AUDIT must not stop delivery).
func (s *settler) add(done func(), timeout time.Duration) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		done()
		return
	}
	// The ticket is read under s.mu, so wait stays in ticket order.
	s.wait = append(s.wait, pendingSettle{ticket: s.q.last(), deadline: time.Now().Add(timeout), done: done})
	first := len(s.wait) == 1
	s.mu.Unlock()
	if first {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// ready removes and returns the steps whose records are finished or whose
// deadline passed (all of them when all is set), and the next deadline.
func (s *settler) ready(finished uint64, now time.Time, all bool) (run []func(), next time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = all
	i := 0
	for ; i < len(s.wait); i++ {
		p := s.wait[i]
		if !all && p.ticket > finished && now.Before(p.deadline) {
			next = p.deadline
			break
		}
		run = append(run, p.done)
	}
	n := copy(s.wait, s.wait[i:])
	clear(s.wait[n:])
	s.wait = s.wait[:n]
	return run, next
}

// loop runs until stop is closed (a shutdown that gave up: every step
// still waiting runs, as Settle did when its wait ended) or writerDone is
// (every record is finished, so every step runs).
func (s *settler) loop(writerDone, stop <-chan struct{}) {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		finished, changed := s.q.progress()
		var all bool
		select {
		case <-writerDone:
			all = true
		case <-stop:
			all = true
		default:
		}
		run, next := s.ready(finished, time.Now(), all)
		for _, f := range run {
			f()
		}
		if all {
			return // steps added from now on run at once
		}
		var deadline <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			deadline = timer.C
		}
		select {
		case <-changed:
		case <-s.wake:
		case <-deadline:
		case <-writerDone:
		case <-stop:
		}
	}
}
