package subs_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/subs"
	"github.com/hubproject/hub/subscribers/webhook"
)

// TestCreateShowsSecretOnce: a create without a secret gets a generated
// one in the answer, the routing list carries it, and no GET shows it.
func TestCreateShowsSecretOnce(t *testing.T) {
	n := newNode(t, newServer(t))
	r := n.do(t, "POST", "/v1/subscriptions",
		`{"events":["order.>"],"url":"https://hooks.example.com/in","headers":{"X-Tenant":"acme","Authorization":"Bearer tok"},"rate_limit":5}`).want(t, 201)
	id, secret := str(r.body, "id"), str(r.body, "secret")
	if !strings.HasPrefix(id, "sub_") || id != strings.ToLower(id) || len(id) != len("sub_")+26 {
		t.Fatalf("generated id %q", id)
	}
	if loc := r.hdr.Get("Location"); loc != "/v1/subscriptions/"+id {
		t.Fatalf("Location %q", loc)
	}
	if _, err := webhook.ParseSecrets(secret); err != nil || !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("generated secret does not parse: %v", err)
	}
	for k, want := range map[string]any{"origin": "api", "channel": "webhook", "url": "https://hooks.example.com/in", "disabled": false, "rate_limit": 5.0} {
		if r.body[k] != want {
			t.Errorf("%s = %v, want %v", k, r.body[k], want)
		}
	}
	if str(r.body, "created_at") == "" || str(r.body, "updated_at") == "" {
		t.Errorf("no timestamps: %s", r.raw)
	}
	if h := r.body["headers"].(map[string]any); h["X-Tenant"] != "acme" || h["Authorization"] != subs.Redacted {
		t.Errorf("headers %v: Authorization must be redacted", h)
	}

	l := n.waitList(t, "the new subscription", func(l []hub.Subscription) bool { _, ok := find(l, id); return ok })
	if s, _ := find(l, id); s.Secret.Value() != secret || s.Headers["Authorization"] != "Bearer tok" {
		t.Fatal("the routing list must carry the real secret and headers")
	}

	for _, path := range []string{"/v1/subscriptions/" + id, "/v1/subscriptions"} {
		g := n.do(t, "GET", path, "").want(t, 200)
		if strings.Contains(g.raw, secret) || strings.Contains(g.raw, `"secret"`) || strings.Contains(g.raw, "Bearer tok") {
			t.Fatalf("GET %s shows a secret: %s", path, g.raw)
		}
	}
}

// TestListMergesConfigFirst: the list holds the config subscriptions, in
// file order, then the runtime ones, each with its origin.
func TestListMergesConfigFirst(t *testing.T) {
	n := newNode(t, newServer(t))
	for _, id := range []string{"b-second", "a-third"} {
		n.do(t, "POST", "/v1/subscriptions", `{"id":"`+id+`","events":["x.y"],"url":"https://x.example.com/","secret":"`+webhook.GenerateSecret()+`"}`).want(t, 201)
	}
	r := n.do(t, "GET", "/v1/subscriptions", "").want(t, 200)
	items := r.body["items"].([]any)
	var got []string
	for _, it := range items {
		m := it.(map[string]any)
		got = append(got, str(m, "id")+":"+str(m, "origin"))
	}
	want := "crm:config mail:config off:config b-second:api a-third:api"
	if strings.Join(got, " ") != want || r.body["count"] != 5.0 {
		t.Fatalf("list %v (count %v), want %s", got, r.body["count"], want)
	}
	g := n.do(t, "GET", "/v1/subscriptions/mail", "").want(t, 200)
	if str(g.body, "origin") != "config" || str(g.body, "channel") != "email" {
		t.Fatalf("GET mail: %s", g.raw)
	}
	n.do(t, "GET", "/v1/subscriptions/nope", "").want(t, 404)
}

// TestPatch: events, url, headers, rate limit, disable and enable, and a
// secret rotation.
func TestPatch(t *testing.T) {
	n := newNode(t, newServer(t))
	n.do(t, "POST", "/v1/subscriptions", `{"id":"p","events":["a.b"],"url":"https://old.example.com/"}`).want(t, 201)
	path := "/v1/subscriptions/p"

	r := n.do(t, "PATCH", path, `{"events":["c.*","d.>"],"url":"https://new.example.com/hook","rate_limit":2}`).want(t, 200)
	if str(r.body, "url") != "https://new.example.com/hook" || len(r.body["events"].([]any)) != 2 || r.body["rate_limit"] != 2.0 {
		t.Fatalf("patched: %s", r.raw)
	}
	n.waitList(t, "patched events", func(l []hub.Subscription) bool {
		s, _ := find(l, "p")
		return s.URL == "https://new.example.com/hook" && s.Matches("d.e.f") && !s.Matches("a.b")
	})

	r = n.do(t, "PATCH", path, `{"disabled":true}`).want(t, 200)
	if r.body["disabled"] != true || str(r.body, "disabled_reason") == "" || str(r.body, "disabled_at") == "" {
		t.Fatalf("disabled: %s", r.raw)
	}
	n.waitList(t, "disabled", func(l []hub.Subscription) bool { s, _ := find(l, "p"); return s.Disabled })
	r = n.do(t, "PATCH", path, `{"disabled":false}`).want(t, 200)
	if r.body["disabled"] != false || r.body["disabled_reason"] != nil || r.body["disabled_at"] != nil {
		t.Fatalf("enabled: %s", r.raw)
	}

	oldS, newS := webhook.GenerateSecret(), webhook.GenerateSecret()
	r = n.do(t, "PATCH", path, `{"secret":"`+oldS+" "+newS+`"}`).want(t, 200)
	if strings.Contains(r.raw, oldS) || strings.Contains(r.raw, newS) {
		t.Fatal("PATCH must not echo the secret")
	}
	n.waitList(t, "rotation", func(l []hub.Subscription) bool {
		s, _ := find(l, "p")
		return s.Secret.Value() == oldS+" "+newS
	})

	n.do(t, "PATCH", path, `{"headers":{"X-A":"1"}}`).want(t, 200)
	r = n.do(t, "PATCH", path, `{"headers":{}}`).want(t, 200)
	if r.body["headers"] != nil {
		t.Fatalf("headers not cleared: %s", r.raw)
	}

	errs := n.do(t, "PATCH", path, `{"events":[],"url":"ftp://x","secret":"whsec_short"}`).want(t, 400).fieldErrors(t)
	if errs["events"] == "" || errs["url"] == "" || errs["secret"] == "" {
		t.Fatalf("bad patch errors %v", errs)
	}
	n.do(t, "PATCH", path, `{}`).want(t, 400)
	n.do(t, "PATCH", path, `{"id":"other"}`).want(t, 400)
	n.do(t, "PATCH", "/v1/subscriptions/nope", `{"disabled":true}`).want(t, 404)
}

// TestDelete: 204, then gone everywhere.
func TestDelete(t *testing.T) {
	n := newNode(t, newServer(t))
	n.do(t, "POST", "/v1/subscriptions", `{"id":"d","events":["a"],"url":"https://x.example.com/"}`).want(t, 201)
	r := n.do(t, "DELETE", "/v1/subscriptions/d", "")
	if r.code != 204 || r.raw != "" {
		t.Fatalf("delete: %d %s", r.code, r.raw)
	}
	n.waitList(t, "deleted", func(l []hub.Subscription) bool { _, ok := find(l, "d"); return !ok })
	n.do(t, "GET", "/v1/subscriptions/d", "").want(t, 404)
	n.do(t, "DELETE", "/v1/subscriptions/d", "").want(t, 404)
	// The id is free again.
	n.do(t, "POST", "/v1/subscriptions", `{"id":"d","events":["a"],"url":"https://x.example.com/"}`).want(t, 201)
}

// TestConfigSubscriptionsReadOnly: a config subscription cannot be edited
// or deleted at runtime, only disabled and enabled again.
func TestConfigSubscriptionsReadOnly(t *testing.T) {
	n := newNode(t, newServer(t))
	for _, c := range []struct{ method, body string }{
		{"PATCH", `{"url":"https://evil.example.com/"}`},
		{"PATCH", `{"disabled":true,"events":["a"]}`},
		{"DELETE", ""},
	} {
		r := n.do(t, c.method, "/v1/subscriptions/crm", c.body).want(t, 409)
		if !strings.Contains(str(r.body, "detail"), "config file") {
			t.Fatalf("%s %s: %s", c.method, c.body, r.raw)
		}
	}
	r := n.do(t, "PATCH", "/v1/subscriptions/crm", `{"disabled":true}`).want(t, 200)
	if r.body["disabled"] != true || str(r.body, "origin") != "config" || str(r.body, "disabled_reason") == "" {
		t.Fatalf("disable config: %s", r.raw)
	}
	n.waitList(t, "crm disabled", func(l []hub.Subscription) bool { s, _ := find(l, "crm"); return s.Disabled })
	r = n.do(t, "PATCH", "/v1/subscriptions/crm", `{"disabled":false}`).want(t, 200)
	if r.body["disabled"] != false {
		t.Fatalf("enable config: %s", r.raw)
	}
	n.waitList(t, "crm enabled", func(l []hub.Subscription) bool { s, _ := find(l, "crm"); return !s.Disabled })
	n.do(t, "PATCH", "/v1/subscriptions/off", `{"disabled":false}`).want(t, 409)
	n.do(t, "POST", "/v1/subscriptions", `{"id":"crm","events":["a"],"url":"https://x.example.com/"}`).want(t, 409)
}

// TestCreateValidation: every bad field is a 400 naming it.
func TestCreateValidation(t *testing.T) {
	n := newNode(t, newServer(t))
	const ok = `"events":["a.b"],"url":"https://x.example.com/"`
	for _, c := range []struct {
		name, body, field, reason string
	}{
		{"bad url", `{"events":["a"],"url":"ftp://x.example.com/"}`, "url", "scheme"},
		{"url with user", `{"events":["a"],"url":"https://u:p@x.example.com/"}`, "url", "user information"},
		{"no url", `{"events":["a"]}`, "url", "empty"},
		{"bad pattern", `{"events":["a.>.b"],"url":"https://x.example.com/"}`, "events[0]", "last token"},
		{"no events", `{"url":"https://x.example.com/"}`, "events", "required"},
		{"bad secret", `{` + ok + `,"secret":"whsec_dG9vc2hvcnQ="}`, "secret", "need at least"},
		{"reserved header", `{` + ok + `,"headers":{"Webhook-Id":"x"}}`, "headers.Webhook-Id", "set by the hub"},
		{"header injection", `{` + ok + `,"headers":{"X-A":"a\r\nX-B: b"}}`, "headers.X-A", "control characters"},
		{"bad header name", `{` + ok + `,"headers":{"X A":"a"}}`, "headers.X A", "header name"},
		{"unknown field", `{` + ok + `,"to":"x@example.com"}`, "to", "unknown field"},
		{"not webhook", `{` + ok + `,"channel":"email"}`, "channel", "only webhook"},
		{"bad id", `{` + ok + `,"id":"a.b"}`, "id", "letters"},
		{"long id", `{` + ok + `,"id":"` + strings.Repeat("a", 65) + `"}`, "id", "64"},
		{"negative rate", `{` + ok + `,"rate_limit":-1}`, "rate_limit", "0"},
		{"events type", `{"events":"a.b","url":"https://x.example.com/"}`, "events", "array of strings"},
		{"events item type", `{"events":[1],"url":"https://x.example.com/"}`, "events", "array of strings"},
		{"headers type", `{` + ok + `,"headers":{"X-A":1}}`, "headers", "object of strings"},
		{"not an object", `["a"]`, "", "JSON object"},
		{"syntax", `{"events":`, "", "cut short"},
		{"trailing", `{` + ok + `} {}`, "", "nothing after"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := n.do(t, "POST", "/v1/subscriptions", c.body).want(t, 400)
			errs := r.fieldErrors(t)
			reason, found := errs[c.field]
			if !found || !strings.Contains(reason, c.reason) {
				t.Fatalf("want %s: ...%s..., got %v", c.field, c.reason, errs)
			}
		})
	}

	// Several bad fields at once are all named; a bad secret is not echoed.
	r := n.do(t, "POST", "/v1/subscriptions", `{"events":["a..b"],"url":"nope","secret":"whsec_notbase64!!"}`).want(t, 400)
	if errs := r.fieldErrors(t); len(errs) != 3 {
		t.Fatalf("want 3 field errors, got %v", errs)
	}
	if strings.Contains(r.raw, "notbase64") {
		t.Fatal("the problem echoes the secret")
	}
	if got := n.store.Views(); len(got) != 3 {
		t.Fatalf("a rejected create stored something: %d subscriptions", len(got))
	}
}

// TestBodyLimits: a body over 64 KiB is a 413, whether or not its length
// is announced; a non-JSON content type is a 415.
func TestBodyLimits(t *testing.T) {
	n := newNode(t, newServer(t))
	big := `{"events":["a"],"url":"https://x.example.com/","headers":{"X-Pad":"` + strings.Repeat("p", subs.MaxBodySize) + `"}}`
	n.do(t, "POST", "/v1/subscriptions", big).want(t, 413)

	req := httptest.NewRequest("POST", "/v1/subscriptions", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1 // chunked: the limit holds while reading
	req.Header.Set("Content-Type", "application/json")
	serve(t, n.mux, req).want(t, 413)

	req = httptest.NewRequest("PATCH", "/v1/subscriptions/crm", strings.NewReader(big))
	serve(t, n.mux, req).want(t, 413)

	req = httptest.NewRequest("POST", "/v1/subscriptions", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "text/plain")
	serve(t, n.mux, req).want(t, 415)
}
