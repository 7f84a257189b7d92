package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/embedded"
	"github.com/hubproject/hub/embedded/embeddedtest"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
	"github.com/hubproject/hub/subscribers/audit"
)

// env is an embedded JetStream with the hub's streams.
type env struct {
	js  jetstream.JetStream
	nc  *nats.Conn
	url string
	srv *embedded.Server
}

func newEnv(t testing.TB) *env {
	t.Helper()
	srv := embeddedtest.Start(t)
	nc := embeddedtest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ec := hub.DefaultEventsConfig()
	ctx := ctxT(t, 30*time.Second)
	for _, sc := range []jetstream.StreamConfig{hub.EventsStreamConfig(ec), hub.DeliveriesStreamConfig(ec), hub.DLQStreamConfig(ec, hub.DefaultDeliveryConfig())} {
		if _, err := hub.EnsureStream(ctx, js, sc); err != nil {
			t.Fatal(err)
		}
	}
	return &env{js: js, nc: nc, url: srv.ClientURL(), srv: srv}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func testConfig(t testing.TB) audit.Config {
	c := audit.DefaultConfig()
	c.File = filepath.Join(t.TempDir(), "audit.log")
	return c
}

// start starts an Auditor closed on cleanup.
func (e *env) start(t testing.TB, cfg audit.Config) *audit.Auditor {
	t.Helper()
	a, err := audit.New(cfg, e.js)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeAuditor(t, a) })
	return a
}

func closeAuditor(t testing.TB, a *audit.Auditor) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// publish stores an event in EVENTS as a NATS publisher would.
func (e *env) publish(t testing.TB, id, typ, data string) uint64 {
	t.Helper()
	body := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"test","type":%q,"time":"2026-11-25T12:00:00Z","data":%s}`, id, typ, data)
	m := &nats.Msg{Subject: hub.SubjectPrefix + typ, Data: []byte(body), Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, id)
	ack, err := e.js.PublishMsg(ctxT(t, 10*time.Second), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// waitConsumed waits until the audit consumer has acknowledged every event
// up to seq: their records are then written and stored.
func (e *env) waitConsumed(t testing.TB, seq uint64) {
	t.Helper()
	ctx := ctxT(t, 2*time.Minute) // generous: benchmarks run on a shared machine
	for {
		c, err := e.js.Consumer(ctx, hub.EventsStream, audit.ConsumerName)
		if err != nil {
			t.Fatal(err)
		}
		info := c.CachedInfo()
		if info.AckFloor.Stream >= seq {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("audit consumer acked up to %d, want %d", info.AckFloor.Stream, seq)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func readLines(t testing.TB, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatalf("file does not end with a newline")
	}
	return bytes.Split(b[:len(b)-1], []byte{'\n'})
}

func decode(t testing.TB, line []byte) audit.Record {
	t.Helper()
	var r audit.Record
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return r
}

// outcomes is one of each kind for an event, in the order a dispatcher,
// the DLQ and a replay would report them.
func outcomes(eventID string, at time.Time) []dispatch.Outcome {
	base := dispatch.Outcome{Channel: "webhook", EventID: eventID, EventType: "order.created", Subscription: "crm",
		DeliveryID: hub.DeliveryID(eventID, "crm", ""), Recipient: "https://crm.example.com/hook"}
	var out []dispatch.Outcome
	add := func(f func(o *dispatch.Outcome)) {
		o := base
		at = at.Add(time.Millisecond)
		o.At = at
		f(&o)
		out = append(out, o)
	}
	add(func(o *dispatch.Outcome) { o.Kind = dispatch.KindRouted })
	add(func(o *dispatch.Outcome) {
		o.Kind, o.Attempt, o.Duration, o.Err, o.RetryIn = dispatch.KindFailed, 1, 3*time.Millisecond, errors.New("503 Service Unavailable"), 5*time.Second
		o.Result.Status = 503
	})
	add(func(o *dispatch.Outcome) {
		o.Kind, o.Attempt, o.Err, o.RetryIn = dispatch.KindDeferred, 2, errors.New("circuit open"), time.Second
	})
	add(func(o *dispatch.Outcome) {
		o.Kind, o.Attempt, o.Err, o.Permanent = dispatch.KindFailed, 2, errors.New("422 Unprocessable Entity"), true
		o.Result.Status, o.Result.Response = 422, `{"error":"schema"}`
	})
	add(func(o *dispatch.Outcome) {
		o.Kind, o.Attempt, o.Reason, o.DLQID, o.Permanent = dispatch.KindDeadLettered, 2, "422 Unprocessable Entity", 7, true
	})
	add(func(o *dispatch.Outcome) { o.Kind, o.DLQID = dispatch.KindReplayed, 7 })
	add(func(o *dispatch.Outcome) {
		o.Kind, o.Attempt, o.Duration = dispatch.KindDelivered, 1, 2*time.Millisecond
		o.Result.Status = 200
	})
	return out
}

func TestRecordsEveryEventAndOutcome(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(t)
	a, err := audit.New(cfg, e.js)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 60*time.Second)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ids := []string{"a.b.*", "a.b.>", "a.b", "ord-1"}
	var last uint64
	for _, id := range ids {
		last = e.publish(t, id, "order.created", `{"n":1}`)
	}
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var observed int
	for _, id := range ids {
		for _, o := range outcomes(id, at) {
			a.Observe(o)
			if o.Kind != dispatch.KindRouted { // routing is in the attempt records
				observed++
			}
		}
	}
	// Subscription-level records without an event, and an unmatched
	// outcome that is not recorded.
	a.Observe(dispatch.Outcome{Kind: dispatch.KindDisabled, At: at, Subscription: "crm", Reason: "410 Gone"})
	a.Observe(dispatch.Outcome{Kind: dispatch.KindUnmatched, At: at, EventID: "a.b", Channel: "email"})
	observed++
	e.waitConsumed(t, last)
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st.Records != uint64(len(ids)+observed) || st.Dropped != 0 || st.StoreErrors != 0 || st.FileErrors != 0 {
		t.Fatalf("stats %+v", st)
	}
	closeAuditor(t, a)
	if err := a.Close(ctx); err != nil { // idempotent
		t.Fatal(err)
	}

	lines := readLines(t, cfg.File)
	if len(lines) != len(ids)+observed {
		t.Fatalf("%d lines, want %d", len(lines), len(ids)+observed)
	}
	events := map[string]int{}
	kinds := map[string]int{}
	for i, l := range lines {
		r := decode(t, l)
		if r.Seq != uint64(i+1) {
			t.Fatalf("line %d has seq %d", i+1, r.Seq)
		}
		kinds[r.Kind]++
		if r.Kind == audit.KindEvent {
			events[r.EventID]++
			if r.EventType != "order.created" || r.StreamSeq == 0 || !bytes.Contains(r.Event, []byte(`"data":{"n":1}`)) {
				t.Fatalf("event record %s", l)
			}
		}
	}
	for _, id := range ids {
		if events[id] != 1 {
			t.Fatalf("event %q has %d records", id, events[id])
		}
	}
	for k, n := range map[string]int{"routed": 0, "failed": 8, "deferred": 4, "dead_lettered": 4, "replayed": 4, "delivered": 4, "disabled": 1} {
		if kinds[k] != n {
			t.Errorf("%d %s records, want %d", kinds[k], k, n)
		}
	}
	rep, err := audit.VerifyFile(cfg.File)
	if err != nil || !rep.OK() || rep.Records != len(lines) || rep.TornTail != nil || len(rep.Repairs) != 0 {
		t.Fatalf("verify: %+v %v", rep, err)
	}

	// The stream holds the same lines, byte for byte.
	streamLines := map[string]bool{}
	for _, m := range streamMessages(t, e.js, audit.SubjectPrefix+">") {
		for _, l := range bytes.Split(bytes.TrimSuffix(m.Data, []byte{'\n'}), []byte{'\n'}) {
			streamLines[string(l)] = true
		}
	}
	for i, l := range lines {
		if !streamLines[string(l)] {
			t.Fatalf("line %d is not in the AUDIT stream", i+1)
		}
	}
	if len(streamLines) != len(lines) {
		t.Fatalf("%d distinct lines in the stream, %d in the file", len(streamLines), len(lines))
	}

	tamperedCopy := func(f func([][]byte) [][]byte) string {
		p := filepath.Join(t.TempDir(), "tampered.log")
		mod := f(append([][]byte(nil), lines...))
		var b []byte
		for _, l := range mod {
			b = append(append(b, l...), '\n')
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Change one byte anywhere in a line: that line is named.
	for i := range lines {
		for _, j := range []int{0, 5, len(lines[i]) / 2, len(lines[i]) - 10, len(lines[i]) - 1} {
			p := tamperedCopy(func(ls [][]byte) [][]byte {
				ls[i] = bytes.Clone(ls[i])
				ls[i][j] ^= 0x01
				return ls
			})
			rep, err := audit.VerifyFile(p)
			if err != nil || rep.OK() || rep.Break.Line != i+1 {
				t.Fatalf("byte %d of line %d changed: %+v %v", j, i+1, rep.Break, err)
			}
		}
	}
	// Remove one line: the missing seq is named.
	for i := 0; i < len(lines)-1; i++ {
		p := tamperedCopy(func(ls [][]byte) [][]byte { return append(ls[:i:i], ls[i+1:]...) })
		rep, _ := audit.VerifyFile(p)
		if rep.OK() || rep.Break.Line != i+1 || !strings.Contains(rep.Break.Reason, fmt.Sprintf("record seq %d is missing", i+1)) {
			t.Fatalf("line %d removed: %+v", i+1, rep.Break)
		}
	}
}

// streamMessages reads every AUDIT message on subject.
func streamMessages(t testing.TB, js jetstream.JetStream, subject string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	st, err := js.Stream(ctx, audit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			t.Fatal(err)
		}
		if subject == audit.SubjectPrefix+">" || m.Subject == subject {
			out = append(out, m)
		}
	}
	return out
}

func TestTornTailRepairedOnRestart(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(t)
	a := e.start(t, cfg)
	at := time.Now()
	for _, o := range outcomes("t1", at) {
		a.Observe(o)
	}
	closeAuditor(t, a)
	n := len(readLines(t, cfg.File))

	// A crash in the middle of a write leaves a partial line.
	torn := []byte(`{"seq":8,"prev":"3f2a","kind":"deliv`)
	f, err := os.OpenFile(cfg.File, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(torn)
	f.Close()
	rep, err := audit.VerifyFile(cfg.File)
	if err != nil || !rep.OK() || rep.TornTail == nil || rep.TornTail.Line != n+1 || rep.TornTail.Bytes != int64(len(torn)) || rep.Records != n {
		t.Fatalf("torn file: %+v %v", rep, err)
	}

	// The next Auditor truncates it, records the repair and continues.
	a = e.start(t, cfg)
	for _, o := range outcomes("t2", at)[:3] { // routed (not recorded), failed, deferred
		a.Observe(o)
	}
	closeAuditor(t, a)
	rep, err = audit.VerifyFile(cfg.File)
	if err != nil || !rep.OK() || rep.TornTail != nil || rep.Records != n+3 || len(rep.Repairs) != 1 {
		t.Fatalf("after repair: %+v %v", rep, err)
	}
	if r := rep.Repairs[0]; r.Line != n+1 || r.Seq != uint64(n+1) || r.TruncatedBytes != int64(len(torn)) {
		t.Fatalf("repair %+v", r)
	}
	lines := readLines(t, cfg.File)
	if r := decode(t, lines[n]); r.Kind != audit.KindChainRepaired || r.TruncatedSHA256 == "" || r.Reason == "" {
		t.Fatalf("repair record %+v", r)
	}
	// The repair is in the stream too, on audit.hub.
	if ms := streamMessages(t, e.js, audit.HubSubject); len(ms) != 1 || !bytes.Contains(ms[0].Data, []byte(audit.KindChainRepaired)) {
		t.Fatalf("audit.hub: %d messages", len(ms))
	}
}

func TestTraceOneEvent(t *testing.T) {
	e := newEnv(t)
	a := e.start(t, testConfig(t))
	ctx := ctxT(t, 60*time.Second)
	// Ids that would be wildcards or extra tokens in a subject, and one
	// that shares a's subject bucket.
	ids := []string{"a.b.*", "a.b.>", "a.b", "a", hub.NewID()}
	for i := 0; ; i++ {
		if id := fmt.Sprintf("collide-%d", i); audit.EventSubject(id) == audit.EventSubject("a.b.*") {
			ids = append(ids, id)
			break
		}
	}
	var last uint64
	for _, id := range ids {
		last = e.publish(t, id, "order.created", `{}`)
		for _, o := range outcomes(id, time.Now()) {
			a.Observe(o)
		}
	}
	e.waitConsumed(t, last)
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		tr, err := audit.Trace(ctx, e.js, id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		want := []string{"event", "failed", "deferred", "failed", "dead_lettered", "replayed", "delivered"}
		var got []string
		for _, r := range tr.Timeline {
			if r.EventID != id {
				t.Fatalf("trace of %s has a record of %s", id, r.EventID)
			}
			got = append(got, r.Kind)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("%s: timeline %v, want %v", id, got, want)
		}
		var ev struct{ ID string }
		if err := json.Unmarshal(tr.Event, &ev); err != nil || ev.ID != id {
			t.Fatalf("%s: event %s", id, tr.Event)
		}
		s := tr.Summary["crm"]
		if s.State != "delivered" || s.Deliveries != 1 || s.Delivered != 1 || s.Attempts != 3 || s.DLQID != 7 || s.Channel != "webhook" {
			t.Fatalf("%s: summary %+v", id, s)
		}
	}
	if _, err := audit.Trace(ctx, e.js, "no-such-event"); !errors.Is(err, audit.ErrNoRecords) {
		t.Fatalf("unknown event: %v", err)
	}
	// A line written to audit.> by something else, without a valid hash,
	// is left out and counted.
	forged := `{"seq":1,"prev":"","kind":"delivered","at":"2026-11-25T12:00:00Z","event_id":"a.b.*","subscription":"crm","hash":"` + strings.Repeat("0", 64) + `"}` + "\n"
	if _, err := e.js.Publish(ctx, audit.EventSubject("a.b.*"), []byte(forged)); err != nil {
		t.Fatal(err)
	}
	tr, err := audit.Trace(ctx, e.js, "a.b.*")
	if err != nil || tr.Unverified != 1 || len(tr.Timeline) != 7 {
		t.Fatalf("forged line: %+v %v", tr, err)
	}
}

func TestRedactionInStreamAndFile(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(t)
	cfg.Redact = []string{"data.customer.phone", "data.items.sku", "subject", "recipient"}
	a := e.start(t, cfg)
	ctx := ctxT(t, 30*time.Second)
	body := `{"specversion":"1.0","id":"r1","source":"t","type":"order.created","subject":"ann@example.com",` +
		`"data":{"customer":{"phone":"+15551234567","name":"Ann"},"items":[{"sku":"SKU-SECRET-1"},{"sku":"SKU-SECRET-2"}]}}`
	m := &nats.Msg{Subject: "events.order.created", Data: []byte(body), Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, "r1")
	ack, err := e.js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	a.Observe(dispatch.Outcome{Kind: dispatch.KindDelivered, At: time.Now(), Channel: "sms", Subscription: "shipped-sms",
		EventID: "r1", EventType: "order.created", DeliveryID: "dlv_1", Recipient: "+15551234567", Attempt: 1})
	e.waitConsumed(t, ack.Sequence)
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	closeAuditor(t, a)
	file, err := os.ReadFile(cfg.File)
	if err != nil {
		t.Fatal(err)
	}
	var stream []byte
	for _, m := range streamMessages(t, e.js, audit.SubjectPrefix+">") {
		stream = append(stream, m.Data...)
	}
	for name, b := range map[string][]byte{"file": file, "stream": stream} {
		for _, secret := range []string{"+15551234567", "SKU-SECRET", "ann@example.com"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds %s", name, secret)
			}
		}
		if !bytes.Contains(b, []byte(`"name":"Ann"`)) || bytes.Count(b, []byte(audit.Redacted)) != 5 {
			t.Errorf("%s: redaction wrong:\n%s", name, b)
		}
	}
	tr, err := audit.Trace(ctx, e.js, "r1")
	if err != nil || !bytes.Contains(tr.Event, []byte(`"phone":"[redacted]"`)) || tr.Timeline[1].Recipient != audit.Redacted {
		t.Fatalf("trace %+v %v", tr, err)
	}
}

func TestTraceHTTP(t *testing.T) {
	e := newEnv(t)
	a := e.start(t, testConfig(t))
	ctx := ctxT(t, 30*time.Second)
	ids := []string{"a.b.>", "x/y?z#1", "ord-9"}
	var last uint64
	for _, id := range ids {
		last = e.publish(t, id, "order.created", `{"n":2}`)
		for _, o := range outcomes(id, time.Now())[:2] {
			a.Observe(o)
		}
	}
	e.waitConsumed(t, last)
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.Mount(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(id string) (*http.Response, []byte) {
		resp, err := http.Get(srv.URL + "/v1/events/" + url.PathEscape(id))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	for _, id := range ids {
		resp, b := get(id)
		var body struct {
			Event    map[string]any                     `json:"event"`
			Timeline []audit.Record                     `json:"timeline"`
			Summary  map[string]audit.SubscriptionState `json:"summary"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &body) != nil || body.Event["id"] != id || len(body.Timeline) != 2 ||
			body.Summary["crm"].State != "retrying" || body.Summary["crm"].LastError != "503 Service Unavailable" {
			t.Fatalf("%s: %d %s", id, resp.StatusCode, b)
		}
	}
	resp, b := get("nope")
	if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(b), "nope") {
		t.Fatalf("unknown: %d %s", resp.StatusCode, b)
	}
}

func TestDisabledIsNoOp(t *testing.T) {
	cfg := audit.DefaultConfig()
	cfg.Enabled = false
	a, err := audit.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 5*time.Second)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	a.Observe(dispatch.Outcome{Kind: dispatch.KindDelivered, EventID: "x"})
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.New(audit.Config{Enabled: true}, nil); err == nil {
		t.Fatal("invalid config accepted")
	}
}

// TestDropsAreMarked fills a tiny queue before the writer runs: the
// records that did not fit are counted and marked in the trail.
func TestDropsAreMarked(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(t)
	cfg.QueueSize, cfg.QueueWait = 16, 0
	a, err := audit.New(cfg, e.js)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		a.Observe(dispatch.Outcome{Kind: dispatch.KindDelivered, At: time.Now(), EventID: fmt.Sprint("d", i), Subscription: "s", Attempt: 1})
	}
	if st := a.Stats(); st.Dropped != 4 || st.Queued != 16 {
		t.Fatalf("stats %+v", st)
	}
	ctx := ctxT(t, 30*time.Second)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	closeAuditor(t, a)
	lines := readLines(t, cfg.File)
	if len(lines) != 17 {
		t.Fatalf("%d lines, want 16 records and a records_dropped", len(lines))
	}
	if r := decode(t, lines[0]); r.Kind != audit.KindRecordsDropped || r.Count != 4 {
		t.Fatalf("first record %+v", r)
	}
	if rep, err := audit.VerifyFile(cfg.File); err != nil || !rep.OK() {
		t.Fatalf("verify %+v %v", rep, err)
	}
}

// TestOddEventBodies: a pretty-printed event is stored on one line, a body
// that is not JSON is kept as a string, or left out when redaction is on.
func TestOddEventBodies(t *testing.T) {
	for _, redact := range []bool{false, true} {
		t.Run(fmt.Sprintf("redact=%v", redact), func(t *testing.T) {
			e := newEnv(t)
			cfg := testConfig(t)
			if redact {
				cfg.Redact = []string{"data.secret"}
			}
			a := e.start(t, cfg)
			ctx := ctxT(t, 30*time.Second)
			var last uint64
			for _, m := range []*nats.Msg{
				{Subject: "events.pretty", Data: []byte("{\n  \"id\": \"p1\",\n  \"type\": \"pretty\",\n  \"data\": {\"secret\": \"s3\"}\n}\n")},
				{Subject: "events.broken", Data: []byte(`not json at all`), Header: nats.Header{jetstream.MsgIDHeader: []string{"b1"}}},
			} {
				ack, err := e.js.PublishMsg(ctx, m)
				if err != nil {
					t.Fatal(err)
				}
				last = ack.Sequence
			}
			e.waitConsumed(t, last)
			closeAuditor(t, a)
			lines := readLines(t, cfg.File)
			recs := map[string]audit.Record{}
			for _, l := range lines {
				r := decode(t, l)
				recs[r.EventID] = r
			}
			p, b := recs["p1"], recs["b1"]
			if p.EventType != "pretty" || !bytes.Contains(p.Event, []byte(`"type":"pretty"`)) || p.Error != "" {
				t.Fatalf("pretty: %+v", p)
			}
			if redact != bytes.Contains(p.Event, []byte(audit.Redacted)) {
				t.Fatalf("pretty, redact %v: %s", redact, p.Event)
			}
			if b.EventType != "broken" || b.Error == "" {
				t.Fatalf("broken: %+v", b)
			}
			if want := !redact; want != (string(b.Event) == `"not json at all"`) {
				t.Fatalf("broken body, redact %v: %s", redact, b.Event)
			}
			if rep, err := audit.VerifyFile(cfg.File); err != nil || !rep.OK() {
				t.Fatalf("verify %+v %v", rep, err)
			}
		})
	}
}
