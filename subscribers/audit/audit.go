// Package audit keeps the hub's audit trail: a record of every event and of
// every delivery outcome (delivered, failed, deferred, dead_lettered,
// replayed, disabled, invalid; one record per attempt, routing included in
// it), written to a hash-chained
// JSONL file and to the AUDIT JetStream stream, and read back per event by
// Trace.
//
// One writer goroutine owns the chain. Events come from a dispatcher that
// reads every event anyway (RecordEvent, WithDispatcherEvents; the hub
// does this), or else from the Auditor's own durable consumer on EVENTS
// (acknowledged once their record is stored in AUDIT); outcomes come from
// Observe, which the dispatchers call on their
// hot path, through a bounded queue. The writer seals each record into the
// chain (seq, prev, hash), appends the batch to the file with one write,
// publishes it to AUDIT asynchronously (records of one event grouped into
// one message) and waits for the acks. The file is fsynced every
// fsync_interval. docs/audit.md has the record format and the guarantees.
package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
)

// ConsumerName is the Auditor's durable consumer on EVENTS.
const ConsumerName = "hub-audit"

// Tuning of the writer.
const (
	// recentEvents is how many EVENTS sequences RecordEvent remembers.
	recentEvents = 64 << 10
	// chunkRecords is the most records published before waiting for acks.
	chunkRecords = 4096
	// maxGroupBytes caps one AUDIT message (records of one subject in a
	// chunk) below the connection's max payload; a larger record goes alone.
	maxGroupBytes = 512 << 10
	// ackTimeout bounds the wait for one chunk's acks before retrying.
	ackTimeout = 10 * time.Second
	// batchInterval is the least time between two batches of the writer.
	batchInterval = 5 * time.Millisecond
	// logEvery rate-limits repeated warnings (drops, store errors).
	logEvery = 10 * time.Second
)

// StreamConfig is the AUDIT stream.
func StreamConfig(c Config) jetstream.StreamConfig {
	maxBytes := int64(c.MaxBytes)
	if maxBytes == 0 {
		maxBytes = -1
	}
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "hub: audit records of every event and delivery outcome",
		Subjects:    []string{SubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.MaxAge.D(),
		MaxBytes:    maxBytes,
		// Dedup of a chunk re-published after a lost ack.
		Duplicates: min(2*time.Minute, c.MaxAge.D()),
		Replicas:   max(c.Replicas, 1),
	}
}

// Auditor writes the audit trail.
type Auditor struct {
	cfg      Config
	js       jetstream.JetStream
	log      zerolog.Logger
	now      func() time.Time
	redact   *redactor
	q        *queue
	settler  *settler
	writerID string // dedup ids of this process's AUDIT messages

	// Owned by the writer goroutine once started.
	file         *chainFile
	chain        chain
	lineBuf      []byte
	groupBufs    [][]byte // message buffers of the last chunk, reused
	groupOf      []int
	lineEnds     []int
	maxGroup     int
	closeFileErr error // read after writerDone

	started     atomic.Bool
	fromDisp    bool    // events come from RecordEvent, not a consumer
	recorded    *seqSet // EVENTS sequences recorded lately (RecordEvent)
	it          jetstream.MessagesContext
	consumeDone chan struct{}
	writerDone  chan struct{}
	stop        chan struct{} // closed when Close gives up waiting: producers and retries stop
	stopOnce    sync.Once
	closeOnce   sync.Once
	closeErr    error

	records      atomic.Uint64
	dropped      atomic.Uint64
	unrecorded   atomic.Uint64 // drops not yet marked by a records_dropped record
	storeErrors  atomic.Uint64
	fileErrors   atomic.Uint64
	lastDropLog  atomic.Int64
	lastStoreLog atomic.Int64
	lastFileLog  atomic.Int64
}

// Option configures an Auditor.
type Option func(*Auditor)

// WithLogger sets the logger.
func WithLogger(l zerolog.Logger) Option { return func(a *Auditor) { a.log = l } }

// WithDispatcherEvents takes the event records from a dispatcher
// (dispatch.WithEventRecorder(a.RecordEvent)) instead of a consumer of the
// Auditor's own: the event is read from EVENTS once instead of twice.
// Start then removes hub-audit, left by a hub that consumed itself.
func WithDispatcherEvents() Option {
	return func(a *Auditor) { a.fromDisp, a.recorded = true, newSeqSet(recentEvents) }
}

// WithClock sets the clock used for record times not given by an outcome.
func WithClock(now func() time.Time) Option { return func(a *Auditor) { a.now = now } }

// New validates cfg and returns an Auditor; Start runs it. With
// cfg.Enabled false every method is a no-op.
func New(cfg Config, js jetstream.JetStream, opts ...Option) (*Auditor, error) {
	if err := config.Check(&cfg); err != nil {
		return nil, fmt.Errorf("audit config:\n%w", err)
	}
	if cfg.Enabled && js == nil {
		return nil, errors.New("audit: no JetStream")
	}
	q := newQueue(cfg.QueueSize)
	a := &Auditor{
		cfg:         cfg,
		js:          js,
		log:         zerolog.Nop(),
		now:         time.Now,
		redact:      newRedactor(cfg.Redact),
		q:           q,
		settler:     newSettler(q),
		writerID:    ulid.Make().String(),
		consumeDone: make(chan struct{}),
		writerDone:  make(chan struct{}),
		stop:        make(chan struct{}),
	}
	for _, o := range opts {
		o(a)
	}
	return a, nil
}

// Start creates the AUDIT stream, opens the file (repairing a torn tail)
// and starts recording. Outcomes observed before Start wait in the queue.
func (a *Auditor) Start(ctx context.Context) (err error) {
	if !a.cfg.Enabled {
		return nil
	}
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("audit: already started")
	}
	defer func() {
		if err != nil {
			a.started.Store(false)
			if a.file != nil {
				_ = a.file.close()
				a.file = nil
			}
		}
	}()
	if _, err := hub.EnsureStream(ctx, a.js, StreamConfig(a.cfg)); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	var first []item
	if a.cfg.File != "" {
		cf, rec, err := openChainFile(a.cfg.File)
		if err != nil {
			return err
		}
		a.file, a.chain = cf, rec.chain
		cf.startSyncer(a.fileError)
		first = a.recovered(rec)
	}
	if a.fromDisp {
		if err := a.removeConsumer(ctx); err != nil {
			return err
		}
	} else {
		cons, err := a.ensureConsumer(ctx)
		if err != nil {
			return err
		}
		// A short pull expiry bounds how long a lost pull request can stall
		// the consumer (seen under heavy CPU contention; the default is 30s).
		it, err := cons.Messages(jetstream.PullMaxMessages(256), jetstream.PullExpiry(5*time.Second))
		if err != nil {
			return fmt.Errorf("audit: consume events: %w", err)
		}
		a.it = it
	}
	a.maxGroup = maxGroupBytes
	if nc := a.js.Conn(); nc != nil && nc.MaxPayload() > 0 {
		a.maxGroup = int(min(int64(maxGroupBytes), nc.MaxPayload()-4<<10))
	}
	go a.writeLoop(first)
	go a.settler.loop(a.writerDone, a.stop)
	if a.it != nil {
		go a.consumeLoop()
	} else {
		close(a.consumeDone)
	}
	return nil
}

// recovered logs what openChainFile repaired and returns the records that
// put it in the chain.
func (a *Auditor) recovered(rec recovery) []item {
	l := a.log.With().Str("file", a.file.path).Logger()
	if rec.completed {
		l.Info().Uint64("seq", rec.chain.seq).Msg("audit: completed the last record, which lacked its newline")
	}
	if rec.restart == nil && rec.tornBytes == 0 {
		return nil
	}
	r := Record{Kind: KindChainRepaired, At: a.now()}
	if rec.tornBytes > 0 {
		r.TruncatedBytes, r.TruncatedAt, r.TruncatedSHA256 = rec.tornBytes, rec.tornAt, rec.tornSHA256
		r.Reason = "torn tail truncated: a write was cut short (crash or power loss)"
		l.Warn().Int64("bytes", rec.tornBytes).Int64("offset", rec.tornAt).Msg("audit: truncated a torn tail; the chain continues after it")
	}
	if rec.restart != nil {
		r.Reason = "the last record is unreadable (" + rec.restart.Error() + "); a new chain starts here"
		l.Error().Err(rec.restart).Msg("audit: the last record of the file is unreadable; starting a new chain (verify will report the break)")
	}
	return []item{{subject: HubSubject, body: appendBody(nil, &r)}}
}

// ConsumerConfig is hub-audit on EVENTS. It acknowledges with AckAll: the
// writer stores records in the order events arrive, so one ack per batch
// (the last event whose records, and all before it, are stored) covers
// the batch. A new consumer starts with new events unless the stream is
// empty, like the dispatchers'; see ensureConsumer.
func ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "hub: audit record of every event",
		FilterSubject: hub.SubjectPrefix + ">",
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		// Bounds the events held in memory between fetch and store.
		MaxAckPending: 2048,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// ensureConsumer creates or updates hub-audit, keeping the start policy
// of an existing one.
func (a *Auditor) ensureConsumer(ctx context.Context) (jetstream.Consumer, error) {
	c, err := hub.EnsureEventsConsumer(ctx, a.js, ConsumerConfig())
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return c, nil
}

// removeConsumer deletes hub-audit if a hub that consumed EVENTS itself
// left it: it would hold every later event as pending for nothing.
func (a *Auditor) removeConsumer(ctx context.Context) error {
	return hub.RetryTransient(ctx, func(ctx context.Context) error {
		err := a.js.DeleteConsumer(ctx, hub.EventsStream, ConsumerName)
		if err == nil || errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil
		}
		return fmt.Errorf("audit: removing consumer %s: %w", ConsumerName, err)
	})
}

// RecordEvent queues the event record of an EVENTS message a dispatcher
// handles (ev: the decoded event, or nil). It is a dispatch.EventRecorder:
// the dispatcher settles the message through Settle, so with wait_stored
// it is acknowledged only after the record is stored. A message seen
// again (a held event coming back, a redelivery) is recorded once per
// process: the EVENTS sequences of the last 64 Ki events are remembered;
// after a restart or on another node it can be recorded again, a true
// record of the same event.
func (a *Auditor) RecordEvent(msg jetstream.Msg, ev *hub.Event) {
	if !a.cfg.Enabled || a.recorded == nil {
		return
	}
	seq, at, ok := ackMetadata(msg.Reply())
	if !ok {
		meta, err := msg.Metadata()
		if err != nil {
			return // not from a consumer: nothing to record
		}
		seq, at = meta.Sequence.Stream, meta.Timestamp
	}
	if a.recorded.has(seq) {
		return
	}
	if _, ok := a.q.put(a.eventItem(msg, seq, at, ev), -1, a.stop); ok {
		a.recorded.add(seq)
	}
}

// Observe records a delivery outcome. It is a dispatch.Observer: it does
// no I/O, it queues the outcome (the writer encodes it). When the queue is
// full it waits up to queue_wait for room (backpressure on the
// dispatcher), then drops the record and counts it. The dispatcher then
// acknowledges the message through Settle.
//
// Routed outcomes are not recorded: the attempt record names the
// subscription, recipient and delivery id, so the trail holds one record
// per event and one per attempt (a render failure is a failed record).
func (a *Auditor) Observe(o dispatch.Outcome) {
	if !a.cfg.Enabled || o.Kind == dispatch.KindUnmatched || o.Kind == dispatch.KindRouted {
		return // unmatched: nothing happened; the event record covers it
	}
	if o.At.IsZero() {
		o.At = a.now()
	}
	if _, ok := a.q.put(item{out: o}, a.cfg.QueueWait.D(), a.stop); !ok {
		a.drop()
	}
}

// Settle runs done (a dispatcher's ack), with wait_stored, once every
// record queued so far is stored, so a message is acknowledged only after
// its outcome records are durable (a crash before that redelivers the
// message, and the attempt is made and recorded again). done runs on the
// Auditor's settle goroutine, after at most the ack timeout, and at once
// after Close has finished or given up. It is a dispatch.WithSettle hook.
func (a *Auditor) Settle(done func()) {
	if !a.cfg.Enabled || !a.cfg.WaitStored || !a.started.Load() {
		done() // before Start there is no writer to wait for
		return
	}
	a.settler.add(done, ackTimeout)
}

func (a *Auditor) drop() {
	total := a.dropped.Add(1)
	a.unrecorded.Add(1)
	if a.every(&a.lastDropLog) {
		a.log.Warn().Uint64("dropped_total", total).Int("queue_size", a.cfg.QueueSize).
			Msg("audit: queue full, delivery records dropped (a records_dropped record marks the gap)")
	}
}

// every reports whether logEvery has passed since *last, and resets it.
func (a *Auditor) every(last *atomic.Int64) bool {
	now := time.Now().UnixNano()
	prev := last.Load()
	return now-prev >= int64(logEvery) && last.CompareAndSwap(prev, now)
}

// Flush waits until every record observed or consumed so far is written to
// the file and stored in AUDIT (or given up after Close's deadline).
func (a *Auditor) Flush(ctx context.Context) error {
	if !a.cfg.Enabled {
		return nil
	}
	if !a.q.waitDone(a.q.last(), -1, ctx.Done()) {
		return fmt.Errorf("audit flush: %w", ctx.Err())
	}
	return nil
}

// Stats are the Auditor's counters, for metrics.
type Stats struct {
	Records     uint64 // records written to the chain
	Dropped     uint64 // delivery records dropped on a full queue
	Queued      int    // records waiting for the writer
	StoreErrors uint64 // records the AUDIT stream never acknowledged
	FileErrors  uint64 // failed writes or fsyncs of the file
}

// Stats returns the counters.
func (a *Auditor) Stats() Stats {
	return Stats{
		Records: a.records.Load(), Dropped: a.dropped.Load(), Queued: a.q.len(),
		StoreErrors: a.storeErrors.Load(), FileErrors: a.fileErrors.Load(),
	}
}

// Close stops consuming events, writes and stores everything queued, and
// fsyncs and closes the file, within ctx. Call it after the dispatchers
// have stopped. It is idempotent.
func (a *Auditor) Close(ctx context.Context) error {
	a.closeOnce.Do(func() { a.closeErr = a.close(ctx) })
	return a.closeErr
}

func (a *Auditor) close(ctx context.Context) error {
	if !a.started.Load() {
		a.q.close()
		a.halt()
		return nil
	}
	var err error
	if a.it != nil {
		// Events fetched but not yet queued are queued (and acked when stored).
		a.it.Drain()
		select {
		case <-a.consumeDone:
		case <-ctx.Done():
			a.halt()
			a.it.Stop()
			<-a.consumeDone
			err = ctx.Err()
		}
	}
	a.q.close()
	select {
	case <-a.writerDone:
	case <-ctx.Done():
		a.halt() // the writer stops retrying, writes what it holds to the file and exits
		<-a.writerDone
		err = ctx.Err()
	}
	<-a.settler.done // runs the last acks: the writer is done, or halted
	if n := a.unrecorded.Load(); n > 0 {
		a.log.Warn().Uint64("dropped", n).Msg("audit: records dropped at shutdown were not marked in the trail")
	}
	if err != nil {
		return fmt.Errorf("audit close: %w", err)
	}
	return a.closeFileErr
}

func (a *Auditor) halt() { a.stopOnce.Do(func() { close(a.stop) }) }

func (a *Auditor) consumeLoop() {
	defer close(a.consumeDone)
	for {
		msg, err := a.it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			a.log.Warn().Err(err).Msg("audit: consume events")
			select {
			case <-a.stop:
				return
			case <-time.After(100 * time.Millisecond): // pace a failing consume
			}
			continue
		}
		// No drops for events: wait for room. If the hub is stopping the
		// message stays unacknowledged and comes back after a restart.
		var seq uint64
		at := a.now()
		if meta, err := msg.Metadata(); err == nil {
			seq, at = meta.Sequence.Stream, meta.Timestamp
		}
		it := a.eventItem(msg, seq, at, nil)
		it.ack = msg
		_, _ = a.q.put(it, -1, a.stop)
	}
}

// eventItem builds the event record of an EVENTS message (stream
// sequence seq, stored at at; ev when the caller decoded it). The id
// follows the dispatcher's rule for envelopes without one, so outcome
// records and the event record agree.
func (a *Auditor) eventItem(msg jetstream.Msg, seq uint64, at time.Time, ev *hub.Event) item {
	r := Record{Kind: KindEvent, At: at, StreamSeq: seq}
	data := msg.Data()
	isJSON := true // a decoded event is
	if ev != nil {
		r.EventID, r.EventType = ev.ID, ev.Type
	} else {
		var head struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		}
		// A field of the wrong type is skipped, not fatal: any other error
		// means the body is not JSON.
		err := json.Unmarshal(data, &head)
		var typeErr *json.UnmarshalTypeError
		isJSON = err == nil || errors.As(err, &typeErr)
		r.EventID, r.EventType = head.ID, head.Type
	}
	if r.EventID == "" {
		r.EventID = msg.Headers().Get(jetstream.MsgIDHeader)
	}
	if r.EventID == "" {
		r.EventID = "seq-" + strconv.FormatUint(r.StreamSeq, 10)
	}
	if r.EventType == "" {
		r.EventType = msg.Subject()[len(hub.SubjectPrefix):]
	}
	subject := EventSubject(r.EventID)
	var ok bool
	switch {
	case isJSON && len(a.redact.paths) == 0 && bytes.IndexByte(data, '\n') < 0 && bytes.IndexByte(data, '\r') < 0:
		// Valid and already one line, the usual case: the writer encodes
		// the record around it, with no copy or buffer on this goroutine.
		return item{subject: subject, event: data, seq: seq,
			out: dispatch.Outcome{Kind: KindEvent, At: r.At, EventID: r.EventID, EventType: r.EventType}}
	case isJSON:
		r.Event, ok = a.redact.event(data)
	}
	switch {
	case ok:
	case len(a.redact.paths) == 0:
		r.Event = appendString(nil, string(data)) // kept as a string
		r.Error = "the stored event is not valid JSON"
	default:
		r.Event = nil // nothing in it could be redacted
		r.Error = "the stored event is not valid JSON; not recorded because redaction is configured"
	}
	return item{subject: subject, body: appendBody(getBody(), &r)}
}

// Event record bodies are built on the dispatcher's goroutines and copied
// into the chain by the writer; pooling them keeps the GC out of the hot
// path (a body over 4 KiB, a large event, is left to the GC).
var bodies = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getBody() []byte { return (*bodies.Get().(*[]byte))[:0] }

func putBody(b []byte) {
	if cap(b) > 4<<10 {
		return // a large event's record: let the GC have it
	}
	bodies.Put(&b)
}
