package audit

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub/dispatch"
)

// writeLoop is the writer goroutine: it owns the chain, the file and the
// AUDIT publishes.
func (a *Auditor) writeLoop(first []item) {
	defer close(a.writerDone)
	if len(first) > 0 {
		a.process(first, 0)
	}
	var syncTimer *time.Timer
	var lastTake time.Time
	for {
		if n := a.unrecorded.Swap(0); n > 0 {
			r := Record{Kind: KindRecordsDropped, At: a.now(), Count: n, Reason: "queue full for queue_wait"}
			a.process([]item{{subject: HubSubject, body: appendBody(nil, &r)}}, 0)
		}
		a.linger(lastTake)
		batch, firstTicket, closed := a.q.take()
		if len(batch) > 0 {
			lastTake = time.Now()
			a.process(batch, firstTicket)
			a.q.recycle(batch)
			a.maybeSync(false)
			continue
		}
		if closed {
			break
		}
		var syncC <-chan time.Time
		if a.file != nil && a.file.dirty {
			d := a.cfg.FsyncInterval.D() - time.Since(a.file.lastSync)
			if syncTimer == nil {
				syncTimer = time.NewTimer(d)
			} else {
				syncTimer.Reset(d)
			}
			syncC = syncTimer.C
		}
		select {
		case <-a.q.wake:
		case <-syncC:
			a.maybeSync(true)
		}
	}
	if syncTimer != nil {
		syncTimer.Stop()
	}
	if a.file != nil {
		if err := a.file.close(); err != nil {
			a.fileErrors.Add(1)
			a.closeFileErr = fmt.Errorf("audit: closing the file: %w", err) // Close returns it; its caller logs
		}
	}
}

// linger keeps batches from following each other closer than
// batchInterval: under load the records of a few milliseconds go out
// together, in at most one AUDIT message per subject, instead of a few
// messages for every handful of events. A quiet trail writes at once.
func (a *Auditor) linger(lastTake time.Time) {
	wait := batchInterval - time.Since(lastTake)
	if wait <= 0 || a.q.len() >= chunkRecords {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-a.q.closing:
	case <-a.stop:
	}
}

// maybeSync asks for an fsync of the file when fsync_interval has passed
// (or now).
func (a *Auditor) maybeSync(now bool) {
	if a.file == nil || !a.file.dirty || (!now && time.Since(a.file.lastSync) < a.cfg.FsyncInterval.D()) {
		return
	}
	a.file.requestSync()
}

func (a *Auditor) fileError(err error) {
	a.fileErrors.Add(1)
	if a.every(&a.lastFileLog) {
		a.log.Error().Err(err).Msg("audit: file write failed; records still go to the AUDIT stream, verify will show the gap")
	}
}

// process seals, writes and stores a batch, chunk by chunk, and marks the
// tickets done (firstTicket 0: items without tickets).
func (a *Auditor) process(batch []item, firstTicket uint64) {
	for start := 0; start < len(batch); start += chunkRecords {
		end := min(start+chunkRecords, len(batch))
		a.writeChunk(batch[start:end])
		if firstTicket > 0 {
			a.q.markDone(firstTicket + uint64(end) - 1)
		}
	}
}

// group is one AUDIT message: the lines of one subject in a chunk.
type group struct {
	msg  *nats.Msg
	size int
	err  error
}

func (a *Auditor) writeChunk(chunk []item) {
	buf := a.lineBuf[:0]
	var groups []*group
	bySubject := make(map[string]int, 16)
	groupOf := slices.Grow(a.groupOf[:0], len(chunk))[:len(chunk)]
	ends := slices.Grow(a.lineEnds[:0], len(chunk))[:len(chunk)]
	a.groupOf, a.lineEnds = groupOf, ends
	for i := range chunk {
		it := &chunk[i]
		off := len(buf)
		switch {
		case it.body != nil:
			buf = a.chain.seal(buf, it.body)
			putBody(it.body)
		default:
			var r Record
			if it.out.Kind == KindEvent {
				r = Record{Kind: KindEvent, At: it.out.At, EventID: it.out.EventID, EventType: it.out.EventType,
					StreamSeq: it.seq, Event: it.event}
			} else {
				r = a.outcomeRecord(it.out)
				it.subject = EventSubject(r.EventID)
			}
			var start int
			buf, start = a.chain.open(buf)
			buf = a.chain.close(appendBody(buf, &r), start)
		}
		buf = append(buf, '\n')
		ends[i] = len(buf)
		size := len(buf) - off
		gi, ok := bySubject[it.subject]
		if !ok || groups[gi].size+size > a.maxGroup {
			g := &group{msg: &nats.Msg{Subject: it.subject, Header: nats.Header{}}}
			g.msg.Header.Set(jetstream.MsgIDHeader, a.writerID+"-"+strconv.FormatUint(a.chain.seq, 10))
			gi = len(groups)
			bySubject[it.subject] = gi
			groups = append(groups, g)
		}
		groups[gi].size += size // the bytes are copied once, below
		groupOf[i] = gi
	}
	for _, g := range groups {
		g.msg.Data = a.groupBuf(g.size)
	}
	off := 0
	for i := range chunk {
		g := groups[groupOf[i]]
		g.msg.Data = append(g.msg.Data, buf[off:ends[i]]...)
		off = ends[i]
	}
	a.records.Add(uint64(len(chunk)))
	if a.file != nil {
		if err := a.file.write(buf); err != nil {
			a.fileError(err)
		}
	}
	if cap(buf) <= 4<<20 {
		a.lineBuf = buf[:0]
	}
	a.store(groups)
	// AckAll: acknowledge the last event whose record, and every event
	// record before it, is stored. An event after a record that was not
	// stored comes back and is recorded again.
	var last jetstream.Msg
	for i, it := range chunk {
		if it.ack == nil {
			continue
		}
		if groups[groupOf[i]].err != nil {
			break
		}
		last = it.ack
	}
	if last != nil {
		_ = last.Ack()
	}
	// Once every message is acknowledged the client holds none of them.
	for _, g := range groups {
		if g.err != nil {
			return
		}
	}
	for _, g := range groups {
		if len(a.groupBufs) < 32 && cap(g.msg.Data) <= a.maxGroup {
			a.groupBufs = append(a.groupBufs, g.msg.Data[:0])
		}
	}
}

// outcomeRecord is an outcome's record as written: redacted, and with its
// delivery id back when the recipient it would be derived from is.
func (a *Auditor) outcomeRecord(o dispatch.Outcome) Record {
	r := recordFromOutcome(o)
	a.redact.outcome(&r)
	if r.Recipient != o.Recipient {
		r.DeliveryID = o.DeliveryID
	}
	return r
}

// groupBuf returns an empty buffer with room for n bytes.
func (a *Auditor) groupBuf(n int) []byte {
	for i, b := range a.groupBufs {
		if cap(b) >= n {
			a.groupBufs = slices.Delete(a.groupBufs, i, i+1)
			return b
		}
	}
	return make([]byte, 0, max(n, 64<<10))
}

// store publishes the groups to AUDIT and waits for their acks, retrying
// what failed (same dedup id, so a lost ack cannot store a group twice)
// until it is stored or Close gives up.
func (a *Auditor) store(groups []*group) {
	pending := groups
	backoff := 100 * time.Millisecond
	for len(pending) > 0 {
		futs := make([]jetstream.PubAckFuture, len(pending))
		for i, g := range pending {
			futs[i], g.err = a.js.PublishMsgAsync(g.msg)
		}
		timer := time.NewTimer(ackTimeout)
		expired := false
		var retry []*group
		for i, g := range pending {
			if futs[i] == nil {
				retry = append(retry, g)
				continue
			}
			if expired {
				select {
				case <-futs[i].Ok():
					g.err = nil
				default:
					g.err = jetstream.ErrAsyncPublishTimeout
				}
			} else {
				select {
				case <-futs[i].Ok():
					g.err = nil
				case err := <-futs[i].Err():
					g.err = err
				case <-timer.C:
					expired = true
					g.err = jetstream.ErrAsyncPublishTimeout
				case <-a.stop:
					g.err = errors.New("stopped")
				}
			}
			if g.err != nil {
				if permanent(g.err) {
					a.giveUp(g, "rejected")
					g.err = nil // acknowledge its events: retrying cannot help
					continue
				}
				retry = append(retry, g)
			}
		}
		timer.Stop()
		if len(retry) == 0 {
			return
		}
		if a.every(&a.lastStoreLog) {
			a.log.Warn().Err(retry[0].err).Int("messages", len(retry)).Msg("audit: storing records in AUDIT failed; retrying")
		}
		select {
		case <-a.stop:
			for _, g := range retry {
				a.giveUp(g, "shutdown deadline")
			}
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		pending = retry
	}
}

func (a *Auditor) giveUp(g *group, why string) {
	n := 0
	for _, c := range g.msg.Data {
		if c == '\n' {
			n++
		}
	}
	a.storeErrors.Add(uint64(n))
	a.log.Error().Err(g.err).Str("why", why).Int("records", n).Int("bytes", len(g.msg.Data)).
		Msg("audit: records not stored in AUDIT (they are in the file)")
}

// permanent reports whether publishing again cannot succeed.
func permanent(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		return true
	}
	return errors.Is(err, nats.ErrMaxPayload)
}
