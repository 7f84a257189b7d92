package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/hubproject/hub/embedded"
	"github.com/hubproject/hub/embedded/embeddedtest"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/api"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	url    string
	js     jetstream.JetStream
	stream jetstream.Stream
}

func setup(t *testing.T) *fixture { return setupTB(t) }

func setupTB(t testing.TB) *fixture { return setupWith(t, embedded.SyncDefault) }

// setupWith starts a server with sync (embedded.SyncDefault or SyncAlways)
// and the API with opts.
func setupWith(t testing.TB, sync string, opts ...api.Option) *fixture {
	t.Helper()
	srv := embeddedtest.Start(t, func(o *embedded.Options) { o.Sync = sync })
	nc := embeddedtest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ec := hub.DefaultEventsConfig()
	ec.MaxEventSize = 1024
	ec.MaxBatch = 5
	if _, bench := t.(*testing.B); bench {
		ec.MaxBatch = 1000
	}
	st, err := hub.EnsureStream(ctx, js, hub.EventsStreamConfig(ec))
	if err != nil {
		t.Fatal(err)
	}
	cfg := api.DefaultConfig()
	cfg.MaxBodySize = 4096
	if _, bench := t.(*testing.B); bench {
		cfg.MaxBodySize = 8 << 20
	}
	a, err := api.New(cfg, ec, js, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(a.Handler())
	t.Cleanup(ts.Close)
	return &fixture{url: ts.URL, js: js, stream: st}
}

func (f *fixture) post(t *testing.T, ct string, body io.Reader, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.url+"/v1/events", body)
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (f *fixture) msgs(t *testing.T) uint64 {
	t.Helper()
	info, err := f.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

type result struct {
	ID        string `json:"id"`
	Sequence  uint64 `json:"sequence"`
	Duplicate bool   `json:"duplicate"`
}

func TestPostEventAndDuplicate(t *testing.T) {
	f := setup(t)
	body := `{"type":"order.created","id":"ord-1","data":{"id":1}}`
	resp, b := f.post(t, "application/json", strings.NewReader(body))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var r1 result
	if err := json.Unmarshal(b, &r1); err != nil || r1.ID != "ord-1" || r1.Sequence != 1 || r1.Duplicate {
		t.Fatalf("first answer %s", b)
	}
	resp, b = f.post(t, "application/cloudevents+json", strings.NewReader(body))
	var r2 result
	if err := json.Unmarshal(b, &r2); err != nil || resp.StatusCode != 202 || !r2.Duplicate || r2.Sequence != 1 {
		t.Fatalf("second answer %d %s", resp.StatusCode, b)
	}
	if n := f.msgs(t); n != 1 {
		t.Fatalf("stream holds %d events, want 1", n)
	}
	// The stored event is the validated envelope with defaults filled.
	m, err := f.stream.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "events.order.created" || m.Header.Get(jetstream.MsgIDHeader) != "ord-1" {
		t.Fatalf("stored %s %v", m.Subject, m.Header)
	}
	ev, err := hub.DecodeEvent(m.Data, "", 0, time.Now())
	if err != nil || ev.Source != "hub/http" || ev.SpecVersion != "1.0" {
		t.Fatalf("stored event %s: %v", m.Data, err)
	}
}

func TestPostGeneratesID(t *testing.T) {
	f := setup(t)
	resp, b := f.post(t, "application/json", strings.NewReader(`{"type":"a"}`))
	var r result
	if err := json.Unmarshal(b, &r); err != nil || resp.StatusCode != 202 || len(r.ID) != 26 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}

func TestPostBatch(t *testing.T) {
	for _, atomic := range []bool{true, false} {
		t.Run(fmt.Sprintf("atomic=%v", atomic), func(t *testing.T) {
			f := setupWith(t, embedded.SyncDefault, api.WithAtomicBatches(atomic))
			resp, b := f.post(t, "application/cloudevents-batch+json", strings.NewReader(`[{"type":"a","id":"1"},{"type":"b","id":"2"},{"type":"a","id":"1"}]`))
			if resp.StatusCode != 202 {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			var rs []result
			if err := json.Unmarshal(b, &rs); err != nil || len(rs) != 3 || rs[0].ID != "1" || rs[1].ID != "2" || !rs[2].Duplicate ||
				rs[0].Sequence != 1 || rs[1].Sequence != 2 || rs[2].Sequence != 1 {
				t.Fatalf("answer %s", b)
			}
			if n := f.msgs(t); n != 2 {
				t.Fatalf("stored %d, want 2", n)
			}
		})
	}
}

// TestPostBatchIsAtomic: with WithAtomicBatches a batch is stored as one
// JetStream atomic batch, in order; a later batch holding an id already
// stored still answers per event (the publisher sends that one per message).
func TestPostBatchIsAtomic(t *testing.T) {
	f := setupWith(t, embedded.SyncAlways, api.WithAtomicBatches(true))
	resp, b := f.post(t, "application/json", strings.NewReader(`[{"type":"a","id":"p1"},{"type":"b","id":"p2"},{"type":"c","id":"p3"}]`))
	if resp.StatusCode != 202 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var rs []result
	if err := json.Unmarshal(b, &rs); err != nil || len(rs) != 3 {
		t.Fatalf("answer %s", b)
	}
	ctx := context.Background()
	batchID := ""
	for i, r := range rs {
		if r.Sequence != uint64(i+1) || r.Duplicate {
			t.Fatalf("result %d: %+v", i, r)
		}
		m, err := f.stream.GetMsg(ctx, r.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		id := m.Header.Get("Nats-Batch-Id")
		if m.Header.Get(jetstream.MsgIDHeader) != r.ID || id == "" || (batchID != "" && id != batchID) {
			t.Fatalf("seq %d headers %v: not one atomic batch", r.Sequence, m.Header)
		}
		batchID = id
	}
	resp, b = f.post(t, "application/json", strings.NewReader(`[{"type":"a","id":"p4"},{"type":"b","id":"p2"}]`))
	rs = nil
	if err := json.Unmarshal(b, &rs); err != nil || resp.StatusCode != 202 || len(rs) != 2 ||
		rs[0].Sequence != 4 || rs[0].Duplicate || rs[1].Sequence != 2 || !rs[1].Duplicate {
		t.Fatalf("second batch: %d %s", resp.StatusCode, b)
	}
	if n := f.msgs(t); n != 4 {
		t.Fatalf("stored %d, want 4", n)
	}
}

func TestPostBatchWithOneBadEventStoresNothing(t *testing.T) {
	f := setup(t)
	resp, b := f.post(t, "application/json", strings.NewReader(`[{"type":"a"},{"type":"a","id":"x"},{"type":"order..created"},{"id":"y"}]`))
	p := problem(t, resp, b, http.StatusBadRequest)
	want := map[string]bool{"[2].type": false, "[3].type": false}
	for _, fe := range p.Errors {
		if _, ok := want[fe.Field]; ok {
			want[fe.Field] = true
		}
	}
	for f, seen := range want {
		if !seen {
			t.Errorf("no error for %s in %s", f, b)
		}
	}
	if !strings.Contains(p.Detail, "nothing was stored") {
		t.Errorf("detail %q", p.Detail)
	}
	if n := f.msgs(t); n != 0 {
		t.Fatalf("stored %d events from a rejected batch", n)
	}
}

func TestPostBinaryMode(t *testing.T) {
	f := setup(t)
	resp, b := f.post(t, "application/json", strings.NewReader(`{"id":7}`),
		"ce-specversion", "1.0", "ce-type", "order.shipped", "ce-id", "bin-1", "ce-source", "shop", "ce-traceparent", "00-x-y-01")
	if resp.StatusCode != 202 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	m, err := f.stream.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := hub.DecodeEvent(m.Data, "", 0, time.Now())
	if err != nil || ev.ID != "bin-1" || ev.Type != "order.shipped" || string(ev.Data) != `{"id":7}` || ev.Extensions["traceparent"] != "00-x-y-01" {
		t.Fatalf("stored %s (%v)", m.Data, err)
	}
	// Non-JSON data is kept as data_base64.
	resp, b = f.post(t, "text/plain", strings.NewReader("hello"), "ce-specversion", "1.0", "ce-type", "note.added", "ce-id", "bin-2")
	if resp.StatusCode != 202 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	m, _ = f.stream.GetMsg(context.Background(), 2)
	if !bytes.Contains(m.Data, []byte(`"data_base64":"aGVsbG8="`)) {
		t.Fatalf("stored %s", m.Data)
	}
}

type problemBody struct {
	Type   string           `json:"type"`
	Title  string           `json:"title"`
	Status int              `json:"status"`
	Detail string           `json:"detail"`
	Errors []hub.FieldError `json:"errors"`
}

func problem(t *testing.T, resp *http.Response, body []byte, status int) problemBody {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != api.ProblemContentType {
		t.Fatalf("content type %q: %s", ct, body)
	}
	var p problemBody
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem body %s: %v", body, err)
	}
	if p.Status != status || p.Title == "" || !strings.HasPrefix(p.Type, "urn:hub:problem:") || p.Detail == "" {
		t.Fatalf("incomplete problem %s", body)
	}
	return p
}

// unsized hides the length so the request is sent chunked and the limit
// must hold while reading.
type unsized struct{ io.Reader }

func TestErrorStatuses(t *testing.T) {
	f := setup(t)
	big := `{"type":"a","data":"` + strings.Repeat("x", 2000) + `"}`
	cases := []struct {
		name   string
		ct     string
		body   io.Reader
		hdr    []string
		status int
		field  string
	}{
		{"malformed JSON", "application/json", strings.NewReader(`{"type":`), nil, 400, ""},
		{"wrong JSON type", "application/json", strings.NewReader(`{"type":["a"]}`), nil, 400, "type"},
		{"missing type", "application/json", strings.NewReader(`{"id":"1"}`), nil, 400, "type"},
		{"bad type", "application/json", strings.NewReader(`{"type":"order created"}`), nil, 400, "type"},
		{"long id", "application/json", strings.NewReader(`{"type":"a","id":"` + strings.Repeat("i", 129) + `"}`), nil, 400, "id"},
		{"empty batch", "application/json", strings.NewReader(`[]`), nil, 400, "[]"},
		{"batch of numbers", "application/json", strings.NewReader(`[1]`), nil, 400, "[0]"},
		{"batch type needs array", "application/cloudevents-batch+json", strings.NewReader(`{"type":"a"}`), nil, 400, ""},
		{"empty body", "application/json", strings.NewReader(``), nil, 400, ""},
		{"bad ce-time", "application/json", strings.NewReader(`{}`), []string{"ce-specversion", "1.0", "ce-type", "a", "ce-time", "noon"}, 400, "time"},
		{"oversize event", "application/json", strings.NewReader(big), nil, 413, ""},
		{"oversize event chunked", "application/json", unsized{strings.NewReader(big)}, nil, 413, ""},
		{"oversize body chunked", "application/json", unsized{strings.NewReader("[" + strings.Repeat(`{"type":"a"},`, 400) + `{"type":"a"}]`)}, nil, 413, ""},
		{"batch over max_batch", "application/json", strings.NewReader(`[{"type":"a"},{"type":"a"},{"type":"a"},{"type":"a"},{"type":"a"},{"type":"a"}]`), nil, 413, ""},
		{"text/plain", "text/plain", strings.NewReader(`{"type":"a"}`), nil, 415, ""},
		{"no content type", "", strings.NewReader(`{"type":"a"}`), nil, 415, ""},
		{"unparseable content type", "application/json; =", strings.NewReader(`{"type":"a"}`), nil, 415, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, b := f.post(t, c.ct, c.body, c.hdr...)
			p := problem(t, resp, b, c.status)
			if c.field != "" {
				found := false
				for _, fe := range p.Errors {
					found = found || strings.HasPrefix(fe.Field, c.field)
				}
				if !found {
					t.Fatalf("no error naming %q: %s", c.field, b)
				}
			}
		})
	}
	if n := f.msgs(t); n != 0 {
		t.Fatalf("%d events stored by rejected requests", n)
	}
	// Routing errors are problems too.
	resp, err := http.Get(f.url + "/v1/nothing")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	problem(t, resp, b, 404)
	resp, err = http.Get(f.url + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	problem(t, resp, b, 405)
}

func TestUnavailable(t *testing.T) {
	f := setup(t)
	resp, err := http.Get(f.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readyz %d", resp.StatusCode)
	}
	if err := f.js.DeleteStream(context.Background(), hub.EventsStream); err != nil {
		t.Fatal(err)
	}
	r, b := f.post(t, "application/json", strings.NewReader(`{"type":"a","id":"z"}`))
	problem(t, r, b, http.StatusServiceUnavailable)
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	r, b = f.post(t, "application/json", strings.NewReader(`[{"type":"a","id":"z"}]`))
	problem(t, r, b, http.StatusServiceUnavailable)
	resp, err = http.Get(f.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	problem(t, resp, b, http.StatusServiceUnavailable)
	_ = fmt.Sprint()
}
