package publisher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub"
)

// Atomic batch publish (nats-server 2.12+, a stream with allow_atomic): the
// messages of a batch carry Nats-Batch-Id and Nats-Batch-Sequence (1, 2, …);
// the server stages them and stores none until the last one, which also
// carries Nats-Batch-Commit: 1, arrives. It then stores them all as
// consecutive sequences and answers that last message with one PubAck
// {"seq": last, "batch": id, "count": n}. Only the commit needs a reply
// subject. Under sync: always a batch of any size costs 4 fsyncs (the
// staging store's, then one for the whole batch in the stream; counted
// with strace) instead of one per message.
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
)

// DefaultMaxBatch is nats-server's default limit on the messages of one
// atomic batch (jetstream.limits.max_batch_size).
const DefaultMaxBatch = 1000

// DefaultMaxInflightBatches bounds the atomic batches one Publisher keeps
// open at once; nats-server allows 50 per stream (1000 per server) and
// refuses more with 429.
const DefaultMaxInflightBatches = 16

// JetStream error codes of atomic batch publish (nats-server errors.json).
const (
	errCodeAtomicDisabled        jetstream.ErrorCode = 10174 // stream without allow_atomic
	errCodeAtomicIncomplete      jetstream.ErrorCode = 10176 // a gap, a timeout, or staging failed
	errCodeAtomicTooLarge        jetstream.ErrorCode = 10199 // "atomic publish batch is too large: {limit}"
	errCodeAtomicDuplicate       jetstream.ErrorCode = 10201 // a Nats-Msg-Id already stored, or twice in the batch
	errCodeAtomicTooManyInflight jetstream.ErrorCode = 10210 // over max_batch_inflight_per_stream / _total
	errCodeAtomicHeader          jetstream.ErrorCode = 10177 // a header atomic batches refuse (Nats-Expected-Last-Msg-Id)
	errCodeDuplicateInProcess    jetstream.ErrorCode = 10158 // the id is being stored by another publish (clustered)
)

// atomicRetry is how long a Publisher sends per message after the stream
// said atomic publish is disabled, before trying a batch again.
const atomicRetry = 30 * time.Second

// batchWait bounds waiting for a commit's PubAck when ctx has no deadline;
// it is the server's own limit on an open batch (max_batch_timeout).
const batchWait = 10 * time.Second

// PublishBatch validates and stores events as JetStream atomic batches and
// returns one Ack per event, in order. Each event's id is its Nats-Msg-Id,
// as with Publish.
//
// Validation comes first: if any event is invalid nothing is sent and the
// error is a *ValidationError whose fields carry the event's index
// ("[3].type").
//
// Up to WithMaxBatch events (default 1000, the server's limit) go in one
// atomic batch: all stored, in order, as consecutive stream sequences, or
// none. Longer slices are sent as several batches, one after another; an
// error then means the batches before the failing one are stored (their
// Acks have a Sequence) and the rest are not, except that a lost commit ack
// leaves its batch unknown. Retrying the whole slice with the same ids is
// always safe: what was stored comes back as Duplicate.
//
// Duplicates: an id repeated within events is sent once; the later copies
// get the first one's sequence and Duplicate. The server refuses a whole
// atomic batch holding an id it already stored within the duplicate window
// (error 10201, nothing stored); PublishBatch then publishes that batch one
// message at a time (PubAck each), so the stored ids come back as Duplicate
// with their original sequence and the new ones are stored, as Publish would
// do. The same per-message path is used when the server cannot take the
// batch: a server older than 2.12, a stream without allow_atomic (then for
// 30 s before trying again), too many open batches (429), an incomplete
// batch, or a header atomic batches refuse (set with WithHeader). Events
// sent on that path may be stored only partly if JetStream fails part-way,
// as with PublishAsync.
//
// Speed: the server stages each batch in its own small store, a fixed cost
// per batch. With sync: always that buys 4 fsyncs per batch instead of one
// per event (batches of 100 about 5x, of 1000 about 14x the events/s of
// PublishAsync on the development machine); without fsyncs PublishAsync
// is the faster path (docs/benchmarks.md).
func (p *Publisher) PublishBatch(ctx context.Context, events []Event) ([]Ack, error) {
	acks := make([]Ack, len(events))
	if len(events) == 0 {
		return acks, nil
	}
	msgs := make([]*nats.Msg, len(events))
	var ferrs []hub.FieldError
	for i := range events {
		ev := events[i] // a copy: defaults are not written into the caller's slice
		msg, err := p.prepare(&ev)
		acks[i].ID = ev.ID
		if err != nil {
			ferrs = append(ferrs, indexed(i, err)...)
			continue
		}
		msgs[i] = msg
	}
	if len(ferrs) > 0 {
		return acks, &ValidationError{Errors: ferrs}
	}
	// An id repeated in the call is sent once: the server would refuse the
	// whole atomic batch for it (10201).
	first := make(map[string]int, len(events))
	send := make([]int, 0, len(events))
	dupOf := map[int]int{}
	for i := range events {
		if j, ok := first[acks[i].ID]; ok {
			dupOf[i] = j
			continue
		}
		first[acks[i].ID] = i
		send = append(send, i)
	}
	for start := 0; start < len(send); {
		n := min(p.batchLimit(), len(send)-start)
		if err := p.sendChunk(ctx, msgs, send[start:start+n], acks); err != nil {
			stored := 0
			for _, a := range acks {
				if a.Sequence > 0 {
					stored++
				}
			}
			return acks, fmt.Errorf("publisher: batch: %d of %d events stored: %w", stored, len(events), err)
		}
		start += n
	}
	for i, j := range dupOf {
		acks[i] = Ack{ID: acks[i].ID, Stream: acks[j].Stream, Sequence: acks[j].Sequence, Duplicate: true}
	}
	return acks, nil
}

// indexed prefixes an event's validation errors with its index in a batch.
func indexed(i int, err error) []hub.FieldError {
	var ve *ValidationError
	if !errors.As(err, &ve) {
		return []hub.FieldError{{Field: fmt.Sprintf("[%d]", i), Reason: err.Error()}}
	}
	out := make([]hub.FieldError, len(ve.Errors))
	for k, fe := range ve.Errors {
		f := fmt.Sprintf("[%d]", i)
		if fe.Field != "" {
			f += "." + fe.Field
		}
		out[k] = hub.FieldError{Field: f, Reason: fe.Reason}
	}
	return out
}

func (p *Publisher) batchLimit() int { return max(int(p.maxBatch.Load()), 1) }

// sendChunk stores msgs[idx...] and fills their acks: as one atomic batch
// when the server takes it, else one message at a time.
func (p *Publisher) sendChunk(ctx context.Context, msgs []*nats.Msg, idx []int, acks []Ack) error {
	if len(idx) == 1 || !p.atomicUsable() {
		// One event needs no batch: a plain publish is already atomic.
		return p.sendEach(ctx, msgs, idx, acks)
	}
	stream, last, err := p.sendAtomic(ctx, msgs, idx)
	if err == nil {
		first := last - uint64(len(idx)) + 1
		for k, i := range idx {
			acks[i] = Ack{ID: acks[i].ID, Stream: stream, Sequence: first + uint64(k)}
		}
		return nil
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return err
	}
	// Each error below means the server stored nothing of this batch.
	switch apiErr.ErrorCode {
	case errCodeAtomicTooLarge:
		// The server's max_batch_size is lower than ours: learn it, resend.
		if limit := batchLimitIn(apiErr.Description); limit > 0 && limit < len(idx) {
			p.maxBatch.Store(int64(limit))
			for start := 0; start < len(idx); start += limit {
				if err := p.sendChunk(ctx, msgs, idx[start:min(start+limit, len(idx))], acks); err != nil {
					return err
				}
			}
			return nil
		}
		return p.sendEach(ctx, msgs, idx, acks)
	case errCodeAtomicDisabled:
		p.atomicOffUntil.Store(p.now().Add(atomicRetry).UnixNano())
		return p.sendEach(ctx, msgs, idx, acks)
	case errCodeAtomicDuplicate, errCodeDuplicateInProcess, errCodeAtomicTooManyInflight, errCodeAtomicIncomplete, errCodeAtomicHeader:
		return p.sendEach(ctx, msgs, idx, acks)
	}
	return err
}

var tooLargeRe = regexp.MustCompile(`too large: (\d+)`)

func batchLimitIn(desc string) int {
	m := tooLargeRe.FindStringSubmatch(desc)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// atomicUsable: the connected server knows atomic batches (2.12+; an older
// one would ignore the headers and store each message on its own) and the
// stream has not refused one lately.
func (p *Publisher) atomicUsable() bool {
	if off := p.atomicOffUntil.Load(); off != 0 && p.now().UnixNano() < off {
		return false
	}
	major, minor, ok := serverVersion(p.nc.ConnectedServerVersion())
	return ok && (major > 2 || major == 2 && minor >= 12)
}

func serverVersion(v string) (major, minor int, ok bool) {
	m := versionRe.FindStringSubmatch(v)
	if m == nil {
		return 0, 0, false
	}
	major, _ = strconv.Atoi(m[1])
	minor, _ = strconv.Atoi(m[2])
	return major, minor, true
}

var versionRe = regexp.MustCompile(`^v?(\d+)\.(\d+)`)

// batchAck is the PubAck of a commit (nats.go's PubAck has no batch fields).
type batchAck struct {
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Batch  string              `json:"batch"`
	Count  uint64              `json:"count"`
	Error  *jetstream.APIError `json:"error"`
}

// sendAtomic publishes msgs[idx...] as one atomic batch and returns the
// stream and the sequence of its last message.
func (p *Publisher) sendAtomic(ctx context.Context, msgs []*nats.Msg, idx []int) (string, uint64, error) {
	select {
	case p.inflight <- struct{}{}:
	case <-ctx.Done():
		return "", 0, fmt.Errorf("waiting for a batch slot: %w", ctx.Err())
	}
	defer func() { <-p.inflight }()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, batchWait)
		defer cancel()
	}
	id := hub.NewID() // the server allows 64 bytes; a ULID is 26
	var reply *nats.Msg
	for k, i := range idx {
		m := msgs[i]
		m.Header[batchIDHeader] = []string{id}
		m.Header[batchSeqHeader] = []string{strconv.Itoa(k + 1)}
		if k < len(idx)-1 {
			// A resend after 10199 may have marked this one the commit.
			delete(m.Header, batchCommitHeader)
			// No reply subject: the server then sends nothing until the
			// commit; the connection keeps these in order before it.
			if err := p.nc.PublishMsg(m); err != nil {
				return "", 0, classify(err)
			}
			continue
		}
		m.Header[batchCommitHeader] = []string{"1"}
		var err error
		if reply, err = p.nc.RequestMsgWithContext(ctx, m); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				// No commit ack in time: the batch may or may not be stored.
				return "", 0, fmt.Errorf("%w: batch commit: %w", ErrUnavailable, err)
			}
			return "", 0, classify(err)
		}
	}
	var ack batchAck
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		return "", 0, fmt.Errorf("publisher: batch commit: bad PubAck %q: %w", reply.Data, err)
	}
	if ack.Error != nil {
		return "", 0, ack.Error
	}
	if ack.Batch != id || ack.Count != uint64(len(idx)) || ack.Seq < ack.Count {
		// Not an atomic commit (the server ignored the batch headers):
		// each message was stored on its own, with unknown sequences.
		p.atomicOffUntil.Store(p.now().Add(atomicRetry).UnixNano())
		return "", 0, fmt.Errorf("publisher: batch commit: PubAck %q is not for batch %s of %d: the server ignored the atomic batch headers; retry with the same ids", reply.Data, id, len(idx))
	}
	return ack.Stream, ack.Seq, nil
}

// sendEach publishes msgs[idx...] one by one (async, each acked), the path
// for what an atomic batch cannot take.
func (p *Publisher) sendEach(ctx context.Context, msgs []*nats.Msg, idx []int, acks []Ack) error {
	// Bound the whole call, the retries on a full async window included.
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, batchWait)
		defer cancel()
	}
	futs := make([]jetstream.PubAckFuture, len(idx))
	var firstErr error
	for k, i := range idx {
		m := msgs[i]
		delete(m.Header, batchIDHeader)
		delete(m.Header, batchSeqHeader)
		delete(m.Header, batchCommitHeader)
		for {
			f, err := p.js.PublishMsgAsync(m)
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) && ctx.Err() == nil {
				continue // the async window is full: acks are on their way
			}
			if err != nil {
				firstErr = classify(err)
			}
			futs[k] = f
			break
		}
		if firstErr != nil {
			break
		}
	}
	for k, f := range futs {
		if f == nil {
			continue
		}
		i := idx[k]
		select {
		case pa := <-f.Ok():
			acks[i] = Ack{ID: acks[i].ID, Stream: pa.Stream, Sequence: pa.Sequence, Duplicate: pa.Duplicate}
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = classify(err)
			}
		case <-ctx.Done():
			if firstErr == nil {
				firstErr = fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
			}
		}
	}
	return firstErr
}
