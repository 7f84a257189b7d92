package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
)

func TestAppendStringIsJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `quote " and \ backslash`, "new\nline\r\ttab\x00\x1f", "é ☃ 𝄞", "bad \xff utf8", "\u2028\u2029", "<&>"} {
		b := appendString(nil, s)
		if bytes.ContainsAny(b, "\n\r") {
			t.Fatalf("%q encodes with a raw line break: %s", s, b)
		}
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%q: %s is not JSON: %v", s, b, err)
		}
		want := strings.ToValidUTF8(s, "\uFFFD")
		if back != want {
			t.Fatalf("round trip %q -> %q", want, back)
		}
	}
}

// plain8 must agree with the byte table for every byte at every position
// (the fast path of appendString).
func TestPlain8(t *testing.T) {
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 8; pos++ {
			w := []byte("abcdefgh")
			w[pos] = byte(c)
			if got := plain8(binary.LittleEndian.Uint64(w)); got != plain[c] {
				t.Fatalf("byte %#x at %d: plain8 %v, table %v", c, pos, got, plain[c])
			}
		}
	}
}

// appendTime and appendMillis are fast forms of AppendFormat(RFC3339Nano)
// and AppendFloat('f', -1): the bytes must be the same.
func TestFastFormatsMatchStandard(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	times := []time.Time{{}, time.Unix(0, 0), time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 100, time.FixedZone("x", 3600)), time.Date(12000, 1, 1, 0, 0, 0, 5, time.UTC),
		time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(999, 12, 31, 23, 59, 59, 999999999, time.UTC)}
	for range 100000 {
		times = append(times, time.Unix(rng.Int64N(1<<35), rng.Int64N(1e9)), time.Unix(rng.Int64N(1<<35), rng.Int64N(1e3)*1e6))
	}
	for _, tm := range times {
		if got, want := string(appendTime(nil, tm)), tm.UTC().Format(time.RFC3339Nano); got != want {
			t.Fatalf("%v: %s, want %s", tm, got, want)
		}
	}
	ms := []float64{0.001, 0.01, 0.1, 1, 1.5, 999.999, 1234567.891, 1e-7, 0.0005, 2.5e300, -3.25, math.Inf(1), float64(1<<53) / 1000}
	for range 100000 {
		ms = append(ms, float64(rng.Int64N(1e12))/1000, float64(rng.Int64N(1e6))/1000, rng.Float64()*100)
	}
	for _, v := range ms {
		if got, want := string(appendMillis(nil, v)), strconv.FormatFloat(v, 'f', -1, 64); got != want {
			t.Fatalf("%v: %s, want %s", v, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a\nb", "\xff", "\u2028", `"\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%q: %s: %v", s, b, err)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("%q -> %q", s, back)
		}
		if bytes.IndexByte(b, '\n') >= 0 {
			t.Fatal("raw newline")
		}
	})
}

// A derived delivery id is left out only when a reader of the line can
// derive it again: not for an id the dispatcher did not derive, and not
// from text the line cannot hold as it is (invalid UTF-8 becomes U+FFFD).
func TestDerivedDeliveryIDRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name      string
		o         dispatch.Outcome
		wantInRec bool
	}{
		{"derived", dispatch.Outcome{EventID: "ord-1", Subscription: "crm", Recipient: "ann@example.com", DerivedID: true}, false},
		{"not derived", dispatch.Outcome{EventID: "ord-1", Subscription: "crm", Recipient: "ann@example.com", DeliveryID: "dlv_other"}, true},
		{"invalid utf-8 recipient", dispatch.Outcome{EventID: "ord-1", Subscription: "crm", Recipient: "bob\xff@example.com", DerivedID: true}, true},
		{"invalid utf-8 event id", dispatch.Outcome{EventID: "ord-\xc3", Subscription: "crm", DerivedID: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Kind, o.At, o.Channel, o.Attempt = dispatch.KindDelivered, time.Now(), "email", 1
			if o.DeliveryID == "" {
				o.DeliveryID = hub.DeliveryID(o.EventID, o.Subscription, o.Recipient)
			}
			r := recordFromOutcome(o)
			var back Record
			line := append(appendBody([]byte("{"), &r), '}')
			if err := json.Unmarshal(line, &back); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			if got := bytes.Contains(line, []byte(`"delivery_id"`)); got != tc.wantInRec {
				t.Fatalf("delivery_id in the record: %v, want %v: %s", got, tc.wantInRec, line)
			}
			if got := back.ResolvedDeliveryID(); got != o.DeliveryID {
				t.Fatalf("resolved %q, want %q", got, o.DeliveryID)
			}
		})
	}
}

func TestBodyRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC)
	o := dispatch.Outcome{
		Kind: dispatch.KindFailed, At: at, Channel: "webhook", Subscription: "crm", EventID: "a.b.*", EventType: "order.created",
		DeliveryID: "dlv_x", Recipient: "https://crm.example.com/h", Attempt: 2, Duration: 1500 * time.Microsecond,
		Err: errors.New("503 Service Unavailable"), RetryIn: 5 * time.Minute,
	}
	o.Result.Status, o.Result.Response = 503, "busy\n"
	r := recordFromOutcome(o)
	var c chain
	line := c.seal(nil, appendBody(nil, &r))
	var back Record
	if err := json.Unmarshal(line, &back); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	if back.Seq != 1 || back.Prev != "" || back.Kind != "failed" || !back.At.Equal(at) || back.EventID != "a.b.*" ||
		back.Attempt != 2 || back.LatencyMS != 1.5 || back.RetryInMS != 300000 || back.Status != 503 ||
		back.Error != "503 Service Unavailable" || back.Response != "busy\n" || back.Hash != c.prevString() {
		t.Fatalf("round trip: %+v", back)
	}
	if _, err := parseLine(line); err != nil {
		t.Fatalf("sealed line does not verify: %v", err)
	}
	line2 := c.seal(nil, appendBody(nil, &r))
	li, err := parseLine(line2)
	if err != nil || *li.Seq != 2 || *li.Prev != back.Hash {
		t.Fatalf("second line %+v %v", li, err)
	}
}

func TestRedactEvent(t *testing.T) {
	r := newRedactor([]string{"data.customer.phone", "data.items.sku", "data.list.1", "subject", "data.missing.x", "recipient"})
	in := []byte(`{"id":"e1", "type":"order.created","subject":"ann@example.com",
		"data":{"customer":{"phone":"+15551234567","name":"Ann"},"items":[{"sku":"S1","n":1},{"sku":"S2"}],"list":["a","b","c"],"big":12345678901234567890}}`)
	out, ok := r.event(in)
	if !ok {
		t.Fatal("not redacted")
	}
	for _, secret := range []string{"+15551234567", "S1", "S2", `"b"`, "ann@example.com"} {
		if bytes.Contains(out, []byte(secret)) {
			t.Fatalf("%s still in %s", secret, out)
		}
	}
	for _, kept := range []string{`"name":"Ann"`, `"n":1`, `"a"`, `"c"`, `12345678901234567890`, `"id":"e1"`} {
		if !bytes.Contains(out, []byte(kept)) {
			t.Fatalf("%s lost from %s", kept, out)
		}
	}
	if bytes.IndexByte(out, '\n') >= 0 {
		t.Fatal("newline in output")
	}
	rec := Record{Recipient: "+15551234567", Error: "x"}
	r.outcome(&rec)
	if rec.Recipient != Redacted || rec.Error != "x" {
		t.Fatalf("outcome redaction %+v", rec)
	}
	// No paths: compacted as is; not JSON: refused.
	plain := newRedactor(nil)
	if out, ok := plain.event([]byte("{\n \"a\" : 1 }")); !ok || string(out) != `{"a":1}` {
		t.Fatalf("compact: %s %v", out, ok)
	}
	if _, ok := r.event([]byte(`{"a":`)); ok {
		t.Fatal("invalid JSON accepted")
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Redact = []string{"data.phone", "id", "a..b", "", "data.phone", "with space"}
	err := c.Validate()
	for _, want := range []string{"redact[1]: \"id\" cannot be redacted", "redact[2]: \"a..b\": empty segment", "redact[3]: empty path", "redact[4]: \"data.phone\" is already listed", "redact[5]"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
}

// writeChain writes n sealed records to path and returns the lines.
func writeChain(t *testing.T, path string, n int) [][]byte {
	t.Helper()
	var c chain
	var lines [][]byte
	var all []byte
	for i := 0; i < n; i++ {
		r := Record{Kind: dispatch.KindDelivered, At: time.Unix(int64(i), 0), EventID: "e", Subscription: "s"}
		l := c.seal(nil, appendBody(nil, &r))
		lines = append(lines, l)
		all = append(append(all, l...), '\n')
	}
	if err := os.WriteFile(path, all, 0o600); err != nil {
		t.Fatal(err)
	}
	return lines
}

func TestOpenChainFileRecovery(t *testing.T) {
	dir := t.TempDir()
	t.Run("new file", func(t *testing.T) {
		cf, rec, err := openChainFile(filepath.Join(dir, "sub", "new.log"))
		if err != nil {
			t.Fatal(err)
		}
		defer cf.close()
		if rec.chain.seq != 0 || rec.chain.prevString() != "" || rec.tornBytes != 0 || rec.restart != nil {
			t.Fatalf("%+v", rec)
		}
	})
	t.Run("intact", func(t *testing.T) {
		p := filepath.Join(dir, "intact.log")
		lines := writeChain(t, p, 3)
		cf, rec, err := openChainFile(p)
		if err != nil {
			t.Fatal(err)
		}
		defer cf.close()
		li, _ := parseLine(lines[2])
		if rec.chain.seq != 3 || rec.chain.prevString() != li.Hash || rec.tornBytes != 0 {
			t.Fatalf("%+v", rec)
		}
	})
	t.Run("torn tail truncated", func(t *testing.T) {
		p := filepath.Join(dir, "torn.log")
		writeChain(t, p, 3)
		st, _ := os.Stat(p)
		f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		f.Write([]byte(`{"seq":4,"prev":"ab`))
		f.Close()
		cf, rec, err := openChainFile(p)
		if err != nil {
			t.Fatal(err)
		}
		defer cf.close()
		if rec.chain.seq != 3 || rec.tornBytes != 19 || rec.tornAt != st.Size() || cf.size != st.Size() {
			t.Fatalf("%+v size %d", rec, cf.size)
		}
		if st2, _ := os.Stat(p); st2.Size() != st.Size() {
			t.Fatalf("not truncated: %d", st2.Size())
		}
	})
	t.Run("whole record without newline completed", func(t *testing.T) {
		p := filepath.Join(dir, "complete.log")
		lines := writeChain(t, p, 3)
		all, _ := os.ReadFile(p)
		os.WriteFile(p, all[:len(all)-1], 0o600) // drop the last newline
		cf, rec, err := openChainFile(p)
		if err != nil {
			t.Fatal(err)
		}
		defer cf.close()
		li, _ := parseLine(lines[2])
		if !rec.completed || rec.tornBytes != 0 || rec.chain.seq != 3 || rec.chain.prevString() != li.Hash {
			t.Fatalf("%+v", rec)
		}
		if got, _ := os.ReadFile(p); !bytes.Equal(got, all) {
			t.Fatal("newline not restored")
		}
	})
	t.Run("no complete line", func(t *testing.T) {
		p := filepath.Join(dir, "partial.log")
		os.WriteFile(p, []byte(`{"seq":1,"pr`), 0o600)
		cf, rec, err := openChainFile(p)
		if err != nil {
			t.Fatal(err)
		}
		defer cf.close()
		if rec.chain.seq != 0 || rec.tornBytes != 12 || rec.tornAt != 0 {
			t.Fatalf("%+v", rec)
		}
	})
	// A last line that cannot be chained to starts a new chain: garbage,
	// or a hash that is not a SHA-256 at all.
	for name, corrupt := range map[string]func(lines [][]byte) []byte{
		"unreadable last line restarts": func(lines [][]byte) []byte {
			return append(append(append(lines[0], '\n'), lines[1]...), "\n\x00\x00\x00\n"...)
		},
		"a last hash that is no SHA-256 restarts": func(lines [][]byte) []byte {
			bad := bytes.Replace(lines[1], []byte(`"hash":"`), []byte(`"hash":"`+strings.Repeat("A", 40)), 1)
			return append(append(append(lines[0], '\n'), bad...), '\n')
		},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "a.log")
			os.WriteFile(p, corrupt(writeChain(t, p, 2)), 0o600)
			cf, rec, err := openChainFile(p)
			if err != nil {
				t.Fatal(err)
			}
			defer cf.close()
			if rec.restart == nil || rec.chain.seq != 0 {
				t.Fatalf("%+v", rec)
			}
		})
	}
	t.Run("long lines across chunks", func(t *testing.T) {
		p := filepath.Join(dir, "long.log")
		var c chain
		var all []byte
		for i := 0; i < 3; i++ {
			r := Record{Kind: KindEvent, At: time.Unix(0, 0), EventID: "e", Event: []byte(`"` + strings.Repeat("x", 100<<10) + `"`)}
			all = append(append(all, c.seal(nil, appendBody(nil, &r))...), '\n')
		}
		os.WriteFile(p, append(all, "torn"...), 0o600)
		cf, rec, err := openChainFile(p)
		if err != nil {
			t.Fatal(err)
		}
		defer cf.close()
		if rec.chain.seq != 3 || rec.chain.prevString() != c.prevString() || rec.tornBytes != 4 {
			t.Fatalf("%+v", rec)
		}
	})
}

func TestVerifyFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.log")
	lines := writeChain(t, p, 5)
	rep, err := VerifyFile(p)
	if err != nil || !rep.OK() || rep.Records != 5 || rep.FirstSeq != 1 || rep.LastSeq != 5 || rep.TornTail != nil {
		t.Fatalf("%+v %v", rep, err)
	}
	// Every single-byte change of every line is caught at that line.
	for i := range lines {
		for j := range lines[i] {
			mod := make([][]byte, len(lines))
			copy(mod, lines)
			mod[i] = bytes.Clone(lines[i])
			mod[i][j] ^= 1
			writeLines(t, p, mod)
			rep, err := VerifyFile(p)
			if err != nil || rep.OK() || rep.Break.Line != i+1 {
				t.Fatalf("line %d byte %d changed: %+v %v", i+1, j, rep.Break, err)
			}
		}
	}
	// A removed line is named by its seq.
	for i := 0; i < len(lines)-1; i++ {
		mod := append(append([][]byte{}, lines[:i]...), lines[i+1:]...)
		writeLines(t, p, mod)
		rep, _ := VerifyFile(p)
		if rep.OK() || rep.Break.Line != i+1 || !strings.Contains(rep.Break.Reason, "missing") {
			t.Fatalf("line %d removed: %+v", i+1, rep.Break)
		}
	}
}

func writeLines(t *testing.T, p string, lines [][]byte) {
	t.Helper()
	var b []byte
	for _, l := range lines {
		b = append(append(b, l...), '\n')
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestQueueBackpressure(t *testing.T) {
	q := newQueue(2)
	stop := make(chan struct{})
	for i := 0; i < 2; i++ {
		if _, ok := q.put(item{}, 0, stop); !ok {
			t.Fatal("put into a queue with room failed")
		}
	}
	if _, ok := q.put(item{}, 0, stop); ok {
		t.Fatal("put into a full queue without waiting succeeded")
	}
	if _, ok := q.put(item{}, time.Millisecond, stop); ok {
		t.Fatal("put into a full queue succeeded after its wait")
	}
	// A waiting producer gets in once the writer takes the batch.
	got := make(chan uint64)
	go func() {
		tk, _ := q.put(item{}, -1, stop)
		got <- tk
	}()
	batch, first, _ := q.take()
	if len(batch) != 2 || first != 1 {
		t.Fatalf("take: %d items from %d", len(batch), first)
	}
	if tk := <-got; tk != 3 {
		t.Fatalf("ticket %d, want 3", tk)
	}
	// waitDone follows markDone.
	done := make(chan bool)
	go func() { done <- q.waitDone(3, -1, stop) }()
	q.markDone(2)
	q.markDone(3)
	if !<-done {
		t.Fatal("waitDone failed")
	}
	// close releases a producer waiting for room, and refuses new items.
	q.put(item{}, 0, stop)
	go func() {
		_, ok := q.put(item{}, -1, stop)
		done <- ok
	}()
	q.close()
	if <-done {
		t.Fatal("put succeeded after close")
	}
}

// hexLine seals body the way trails before 2026-11-26 did: hashes in hex.
func hexLine(seq uint64, prev string, body []byte) (line []byte, hash string) {
	line = fmt.Appendf(nil, `{"seq":%d,"prev":"%s",%s}`, seq, prev, body)
	sum := sha256.Sum256(line)
	hash = hex.EncodeToString(sum[:])
	return append(line[:len(line)-1], `,"hash":"`+hash+`"}`...), hash
}

// A trail written with hex hashes is continued after an upgrade (the first
// new record's prev is the old hash in base64url) and verifies as one
// chain; a change in the old part is still caught at its line.
func TestHexTrailUpgrade(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.log")
	var old [][]byte
	prev := ""
	for i := 1; i <= 3; i++ {
		r := Record{Kind: dispatch.KindDelivered, At: time.Unix(int64(i), 0), EventID: "e", Subscription: "s"}
		var l []byte
		l, prev = hexLine(uint64(i), prev, appendBody(nil, &r))
		old = append(old, l)
	}
	writeLines(t, p, old)
	cf, rec, err := openChainFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if rec.chain.seq != 3 || rec.chain.prevString() != canonicalHash(prev) || len(rec.chain.prevString()) != b64Len {
		t.Fatalf("chain %+v, want seq 3 after hex %s", rec.chain, prev)
	}
	c := rec.chain
	r := Record{Kind: dispatch.KindDelivered, At: time.Unix(4, 0), EventID: "e", Subscription: "s"}
	if err := cf.write(append(c.seal(nil, appendBody(nil, &r)), '\n')); err != nil {
		t.Fatal(err)
	}
	if err := cf.close(); err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyFile(p)
	if err != nil || !rep.OK() || rep.Records != 4 || rep.LastHash != c.prevString() {
		t.Fatalf("%+v %v", rep, err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(data, []byte{'\n'}), []byte{'\n'})
	// Upper-casing a hex digit of line 2's hash spells the same digest: it
	// is a changed byte all the same.
	mod := append([][]byte{}, lines...)
	h := hexHashOf(t, lines[1])
	mod[1] = bytes.Replace(lines[1], []byte(h), []byte(strings.ToUpper(h)), 1)
	writeLines(t, p, mod)
	if rep, _ := VerifyFile(p); rep.OK() || rep.Break.Line != 2 {
		t.Fatalf("upper-cased hash: %+v", rep.Break)
	}
}

func hexHashOf(t *testing.T, line []byte) string {
	t.Helper()
	li, err := parseLine(line)
	if err != nil || len(li.Hash) != hexLen {
		t.Fatalf("%s: %v", line, err)
	}
	return li.Hash
}

// The syncer's write-back, fdatasync and page dropping leave the file
// whole: megabytes written in chunks verify after close.
func TestSyncerKeepsFileWhole(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.log")
	cf, rec, err := openChainFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var failed atomic.Int64
	cf.startSyncer(func(error) { failed.Add(1) })
	c := rec.chain
	n := 0
	for cf.size < 3*writebackChunk {
		var buf []byte
		for range 200 {
			n++
			r := Record{Kind: dispatch.KindDelivered, At: time.Unix(int64(n), 0), EventID: "e-" + strconv.Itoa(n), Subscription: "s"}
			buf = append(c.seal(buf, appendBody(nil, &r)), '\n')
		}
		if err := cf.write(buf); err != nil {
			t.Fatal(err)
		}
		if n%2000 == 0 {
			cf.requestSync()
		}
	}
	if err := cf.close(); err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyFile(p)
	if err != nil || !rep.OK() || rep.Records != n || failed.Load() != 0 {
		t.Fatalf("%+v %v (%d records written, %d sync failures)", rep, err, n, failed.Load())
	}
}

// BenchmarkSealOutcome is the writer's CPU per attempt record: encode an
// outcome and seal it into the chain (no I/O).
func BenchmarkSealOutcome(b *testing.B) {
	o := dispatch.Outcome{Kind: dispatch.KindDelivered, At: time.Now(), Channel: "webhook", Subscription: "crm",
		EventID: "e-123456", DeliveryID: "dlv_abcdefghijklmnopqrstuvwxyz", Attempt: 1, Duration: 1234 * time.Microsecond}
	c := newChain(0, strings.Repeat("a", b64Len))
	buf := make([]byte, 0, 1<<20)
	b.ReportAllocs()
	for b.Loop() {
		if len(buf) > 1<<19 {
			buf = buf[:0]
		}
		r := recordFromOutcome(o)
		var start int
		buf, start = c.open(buf)
		buf = c.close(appendBody(buf, &r), start)
	}
}
