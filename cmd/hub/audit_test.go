package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/embedded/embeddedtest"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/subscribers/audit"
)

// requireCommand skips until main.go lists the command.
func requireCommand(t *testing.T, name string) {
	t.Helper()
	_, errOut, _ := runHub(t, "help")
	if !strings.Contains(errOut, "  "+name+" ") {
		t.Skipf("main.go does not list the %q command yet", name)
	}
}

// auditFixture runs an Auditor against an embedded server (listening on
// TCP, for the CLI): one event and its outcomes; it returns the server URL
// and the audit file once the Auditor is closed.
func auditFixture(t *testing.T, eventID string) (url, file string) {
	t.Helper()
	srv := embeddedtest.Start(t)
	nc := embeddedtest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := hub.EnsureStream(ctx, js, hub.EventsStreamConfig(hub.DefaultEventsConfig())); err != nil {
		t.Fatal(err)
	}
	cfg := audit.DefaultConfig()
	cfg.File = filepath.Join(t.TempDir(), "audit.log")
	a, err := audit.New(cfg, js)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	m := &nats.Msg{Subject: "events.order.created", Header: nats.Header{},
		Data: []byte(`{"specversion":"1.0","id":"` + eventID + `","source":"shop","type":"order.created","time":"2026-11-25T12:00:00Z","data":{"id":1}}`)}
	m.Header.Set(jetstream.MsgIDHeader, eventID)
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	o := dispatch.Outcome{Channel: "webhook", Subscription: "crm", EventID: eventID, EventType: "order.created",
		DeliveryID: hub.DeliveryID(eventID, "crm", "")}
	for i, f := range []func(*dispatch.Outcome){
		func(o *dispatch.Outcome) { o.Kind = dispatch.KindRouted }, // not recorded: the attempts carry the routing
		func(o *dispatch.Outcome) {
			o.Kind, o.Attempt, o.Err, o.RetryIn, o.Duration = dispatch.KindFailed, 1, errors.New("503 Service Unavailable"), 5*time.Second, 12*time.Millisecond
			o.Result.Status = 503
		},
		func(o *dispatch.Outcome) {
			o.Kind, o.Attempt, o.Duration = dispatch.KindDelivered, 2, 8*time.Millisecond
			o.Result.Status = 200
		},
	} {
		oc := o
		oc.At = now.Add(time.Duration(i+1) * time.Millisecond)
		f(&oc)
		a.Observe(oc)
	}
	for { // the event record is stored once the consumer acks it
		c, err := js.Consumer(ctx, hub.EventsStream, audit.ConsumerName)
		if err != nil {
			t.Fatal(err)
		}
		if c.CachedInfo().AckFloor.Stream >= ack.Sequence {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("event not recorded")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return srv.ClientURL(), cfg.File
}

func TestAuditVerifyCommand(t *testing.T) {
	requireCommand(t, "audit")
	_, file := auditFixture(t, "ord-1")
	out, errOut, code := runHub(t, "audit", "verify", "-file", file)
	if code != 0 || !strings.HasPrefix(out, "audit chain OK: 3 records\n") {
		t.Fatalf("good file: exit %d %q %q", code, out, errOut)
	}
	out, _, code = runHub(t, "audit", "verify", "-file", file, "-json")
	var rep audit.Report
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Records != 3 || !rep.OK() {
		t.Fatalf("json: exit %d %s", code, out)
	}

	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(good, []byte{'\n'})
	// One byte of line 3 changed.
	tampered := filepath.Join(t.TempDir(), "tampered.log")
	mod := bytes.Clone(good)
	mod[len(lines[0])+len(lines[1])+20] ^= 1
	if err := os.WriteFile(tampered, mod, 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = runHub(t, "audit", "verify", "-file", tampered)
	if code != 1 || !strings.HasPrefix(out, "audit chain BROKEN at line 3 (seq 3): ") || !strings.Contains(errOut, "broken") {
		t.Fatalf("tampered: exit %d %q %q", code, out, errOut)
	}
	// Line 2 removed.
	removed := filepath.Join(t.TempDir(), "removed.log")
	if err := os.WriteFile(removed, bytes.Join([][]byte{lines[0], lines[2]}, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, _, code = runHub(t, "audit", "verify", "-file", removed); code != 1 || !strings.Contains(out, "BROKEN at line 2 (seq 3): seq gap") {
		t.Fatalf("removed: exit %d %q", code, out)
	}
	// A torn tail is not tampering.
	torn := filepath.Join(t.TempDir(), "torn.log")
	if err := os.WriteFile(torn, append(bytes.Clone(good), `{"seq":4,"pr`...), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, _, code = runHub(t, "audit", "verify", "-file", torn); code != 0 || !strings.Contains(out, "torn tail at line 4") {
		t.Fatalf("torn: exit %d %q", code, out)
	}
	if _, _, code = runHub(t, "audit", "verify", "-file", filepath.Join(t.TempDir(), "missing.log")); code != 1 {
		t.Fatalf("missing file: exit %d", code)
	}
	for _, args := range [][]string{{"audit"}, {"audit", "check"}, {"audit", "verify", "extra"}} {
		if _, _, code := runHub(t, args...); code != 2 {
			t.Fatalf("%v: exit %d, want 2", args, code)
		}
	}
}

// TestAuditVerifyFromConfig reads the file's path from -config.
func TestAuditVerifyFromConfig(t *testing.T) {
	requireCommand(t, "audit")
	if _, ok := reflect.TypeFor[node.ChannelsConfig]().FieldByName("Audit"); !ok {
		t.Skip("node.ChannelsConfig has no Audit section yet")
	}
	_, file := auditFixture(t, "ord-2")
	cfg := writeConfig(t, baseConfig(t.TempDir())+"channels:\n  audit: {file: "+file+"}\n")
	out, errOut, code := runHub(t, "audit", "verify", "-config", cfg)
	if code != 0 || !strings.HasPrefix(out, "audit chain OK: 3 records") {
		t.Fatalf("exit %d %q %q", code, out, errOut)
	}
}

func TestTraceCommand(t *testing.T) {
	requireCommand(t, "trace")
	const id = "ord.7.*"
	url, _ := auditFixture(t, id)
	out, errOut, code := runHub(t, "trace", id, "-server", url)
	if code != 0 {
		t.Fatalf("exit %d %s", code, errOut)
	}
	for _, want := range []string{"event ord.7.*  type order.created  source shop", "KIND", "event", "failed", "503 Service Unavailable; retry in 5s", "delivered", "12.0ms", "crm", "SUBSCRIPTION", "delivered  1/1"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, _, code = runHub(t, "trace", "-json", "-server", url, id)
	var tr audit.EventTrace
	if code != 0 || json.Unmarshal([]byte(out), &tr) != nil || len(tr.Timeline) != 3 || tr.Summary["crm"].State != "delivered" {
		t.Fatalf("json: exit %d %s", code, out)
	}
	if _, errOut, code = runHub(t, "trace", "nope", "-server", url); code != 1 || !strings.Contains(errOut, `no audit records for event "nope"`) {
		t.Fatalf("unknown: exit %d %q", code, errOut)
	}
	if _, _, code = runHub(t, "trace", "-server", url); code != 2 {
		t.Fatalf("no id: exit %d", code)
	}
	if _, _, code = runHub(t, "trace", "a", "b", "-server", url); code != 2 {
		t.Fatalf("two ids: exit %d", code)
	}
}

// TestServeAuditTrail runs `hub serve` with the audit trail on: an event
// delivered to a log subscription is traced by `hub trace` and
// GET /v1/events/{id}, and after a clean stop `hub audit verify -config`
// checks the file. It needs node's channels.audit section.
func TestServeAuditTrail(t *testing.T) {
	requireCommand(t, "trace")
	requireCommand(t, "audit")
	if _, ok := reflect.TypeFor[node.ChannelsConfig]().FieldByName("Audit"); !ok {
		t.Skip("node.ChannelsConfig has no Audit section yet")
	}
	dir := t.TempDir()
	cfgPath := writeConfig(t, baseConfig(filepath.Join(dir, "js"))+`
channels:
  audit: {enabled: true, file: `+filepath.Join(dir, "audit.log")+`}
subscriptions:
  - {id: all-log, channel: log, events: [">"]}
`)
	p := startHub(t, cfgPath)
	const id = "ord.9.*"
	if _, errOut, code := runHub(t, "publish", "-server", p.natsURL, "-type", "order.created", "-id", id, "-data", `{"n":9}`); code != 0 {
		t.Fatalf("publish: %s", errOut)
	}
	var tr audit.EventTrace
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, errOut, code := runHub(t, "trace", id, "-server", p.natsURL, "-json")
		if code == 0 && json.Unmarshal([]byte(out), &tr) == nil && tr.Summary["all-log"].State == "delivered" && tr.Event != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace: exit %d %s %s", code, out, errOut)
		}
		<-time.After(50 * time.Millisecond)
	}
	resp, err := http.Get(p.httpURL + "/v1/events/" + url.PathEscape(id))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"state":"delivered"`) {
		t.Fatalf("GET /v1/events/{id}: %d %s", resp.StatusCode, b)
	}
	resp, err = http.Get(p.httpURL + "/v1/events/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("unknown event: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	p.stop(t)
	out, errOut, code := runHub(t, "audit", "verify", "-config", cfgPath)
	if code != 0 || !strings.HasPrefix(out, "audit chain OK: ") {
		t.Fatalf("verify: exit %d %q %q", code, out, errOut)
	}
}
