package audit

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub/dispatch"
)

// item is one record waiting for the writer: encoded members (body), or
// an outcome or event the writer encodes (Observe: the encoding, redaction
// and subject run on the writer, off the dispatchers' short-lived send
// goroutines, whose stacks would grow for it).
type item struct {
	subject string
	body    []byte           // the record's members, see appendBody; nil: out
	out     dispatch.Outcome // the record when body is nil (Kind KindEvent: an event record)
	event   []byte           // an event record's event: compact JSON, one line
	seq     uint64           // an event record's EVENTS sequence
	ack     jetstream.Msg    // EVENTS message to acknowledge once stored, or nil
}

// queue hands records from many producers to the one writer. Every item
// gets a ticket (1, 2, ...); the writer reports how far items are done, so
// a producer can wait for its own record to be stored without a channel
// per record.
type queue struct {
	mu      sync.Mutex
	items   []item
	spare   []item // the writer's last batch, reused
	max     int
	issued  atomic.Uint64 // ticket of the last item put; written under mu
	done    uint64        // every ticket up to this one is stored or given up
	doneCh  chan struct{} // closed when done moves
	spaceCh chan struct{} // closed when the writer takes items
	wake    chan struct{} // tells the writer there is work
	closing chan struct{} // closed by close
	closed  bool
}

func newQueue(max int) *queue {
	return &queue{max: max, doneCh: make(chan struct{}), spaceCh: make(chan struct{}), wake: make(chan struct{}, 1), closing: make(chan struct{})}
}

// put adds it. When the queue is full it waits for space up to wait
// (forever when wait < 0) or until stop is closed. ok is false when the
// item was not queued.
func (q *queue) put(it item, wait time.Duration, stop <-chan struct{}) (ticket uint64, ok bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return 0, false
		}
		if len(q.items) < q.max {
			q.items = append(q.items, it)
			t := q.issued.Add(1)
			first := len(q.items) == 1
			q.mu.Unlock()
			// Only the first item can find the writer waiting: with items
			// queued it takes them after its linger anyway.
			if first {
				select {
				case q.wake <- struct{}{}:
				default:
				}
			}
			return t, true
		}
		space := q.spaceCh
		q.mu.Unlock()
		if wait == 0 {
			return 0, false
		}
		var timeout <-chan time.Time
		if wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			}
			timeout = timer.C
		}
		select {
		case <-space:
		case <-timeout:
			return 0, false
		case <-stop:
			return 0, false
		}
	}
}

// take returns every queued item and the ticket of the first; empty when
// there is nothing. Space is freed at once: the writer holds at most one
// batch besides the queue.
func (q *queue) take() (batch []item, first uint64, closed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil, 0, q.closed
	}
	batch = q.items
	q.items = q.spare[:0]
	q.spare = nil
	first = q.issued.Load() - uint64(len(batch)) + 1
	close(q.spaceCh)
	q.spaceCh = make(chan struct{})
	return batch, first, q.closed
}

// recycle gives a processed batch's storage back.
func (q *queue) recycle(batch []item) {
	clear(batch)
	q.mu.Lock()
	if q.spare == nil && cap(batch) <= 4*q.max {
		q.spare = batch[:0]
	}
	q.mu.Unlock()
}

// markDone records that every ticket up to t is finished.
func (q *queue) markDone(t uint64) {
	q.mu.Lock()
	if t > q.done {
		q.done = t
		close(q.doneCh)
		q.doneCh = make(chan struct{})
	}
	q.mu.Unlock()
}

// waitDone waits until ticket t is finished, or stop is closed, or wait
// passes (wait < 0: no limit).
func (q *queue) waitDone(t uint64, wait time.Duration, stop <-chan struct{}) bool {
	var timeout <-chan time.Time
	for {
		q.mu.Lock()
		if q.done >= t {
			q.mu.Unlock()
			return true
		}
		ch := q.doneCh
		q.mu.Unlock()
		if timeout == nil && wait >= 0 {
			timer := time.NewTimer(wait)
			defer timer.Stop()
			timeout = timer.C
		}
		select {
		case <-ch:
		case <-timeout:
			return false
		case <-stop:
			return false
		}
	}
}

// progress returns how far tickets are finished and a channel closed when
// that moves.
func (q *queue) progress() (done uint64, changed <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.done, q.doneCh
}

// last is the ticket of the last item put. It takes no lock (Settle calls
// it for every message); an item's ticket is issued after the item is
// queued, so every ticket up to last is in the queue or done.
func (q *queue) last() uint64 { return q.issued.Load() }

// len is how many items wait.
func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// close refuses further items; the writer drains what is queued.
func (q *queue) close() {
	q.mu.Lock()
	if !q.closed {
		close(q.closing)
	}
	q.closed = true
	close(q.spaceCh) // producers waiting for room see closed
	q.spaceCh = make(chan struct{})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
