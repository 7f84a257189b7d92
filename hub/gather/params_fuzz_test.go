package gather_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/hub/gather"
)

// FuzzHTTPParams sends arbitrary query strings and bodies through the HTTP
// door: parameter parsing, encoding them into branch requests (JSON and a
// payload template) and merging the replies. Whatever the input, the
// handler does not panic and answers JSON: 200 with a merged object, 400
// naming a bad request, or 404 for an unknown route. The echo responder
// proves accepted parameters reach the branch intact. Seeds live in
// testdata/fuzz.
func FuzzHTTPParams(f *testing.F) {
	e := newEnv(f)
	respond(f, e.svc, "svc.echo", 0, func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: m.Data} })
	g := e.gatherer(f, `
routes:
  - name: echo
    timeout: 5s
    branches:
      - {name: params, subject: svc.echo, required: true}
      - {name: shaped, subject: svc.echo, payload: '{"id": {{ printf "%q" (print .id) }}}', fallback: null}
      - {name: missing, subject: svc.nobody, fallback: []}
`)
	h := http.NewServeMux()
	h.Handle("/v1/gather/{route}", g.HTTPHandler())

	f.Add("GET", "echo", "user_id=42&tag=a&tag=b", []byte(nil))
	f.Add("POST", "echo", "", []byte(`{"user_id": 12345678901234567890, "nested": {"a": [1, 2.5e300, null]}}`))
	f.Add("POST", "echo", "", []byte(`{"a":1} {"b":2}`))
	f.Add("POST", "echo", "", []byte(`[1,2]`))
	f.Add("POST", "echo", "", []byte("{\"\\ud800\": \"\xff\"}"))
	f.Add("GET", "echo", "%zz=1&=&a=%00", []byte(nil))
	f.Add("GET", "nope", "a=1", []byte(nil))
	f.Add("PUT", "echo", "", []byte(`{}`))
	f.Fuzz(func(t *testing.T, method, route, query string, body []byte) {
		switch method {
		case "GET", "POST", "HEAD", "PUT":
		default:
			method = "POST"
		}
		if strings.ContainsAny(route, "/?#%") || route == "" || route == "." || route == ".." {
			route = "echo"
		}
		req := httptest.NewRequest(method, "/v1/gather/x", bytes.NewReader(body))
		req.URL.Path = "/v1/gather/" + route
		req.URL.RawPath = ""
		req.URL.RawQuery = query
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		res := rec.Result()
		ct := res.Header.Get("Content-Type")
		if method == "HEAD" {
			return
		}
		switch res.StatusCode {
		case http.StatusOK:
			if ct != gather.ContentTypeJSON {
				t.Fatalf("200 with content type %q", ct)
			}
			var merged map[string]json.RawMessage
			if err := json.Unmarshal(rec.Body.Bytes(), &merged); err != nil {
				t.Fatalf("200 body is not a JSON object: %v\n%s", err, rec.Body.Bytes())
			}
			if _, ok := merged["_meta"]; !ok {
				t.Fatalf("no _meta: %s", rec.Body.Bytes())
			}
			if route == "echo" && string(merged["params"]) == "" {
				t.Fatalf("required branch missing from a 200: %s", rec.Body.Bytes())
			}
			if route == "echo" && method == "POST" && json.Valid(body) && len(bytes.TrimSpace(body)) > 0 {
				// The branch got the body's object back: same keys.
				var in, out map[string]json.RawMessage
				if json.Unmarshal(body, &in) == nil && json.Unmarshal(merged["params"], &out) == nil && len(in) != len(out) {
					t.Fatalf("params changed on the way: %s -> %s", body, merged["params"])
				}
			}
		case http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed:
			if ct != gather.ContentTypeProblem {
				t.Fatalf("%d with content type %q", res.StatusCode, ct)
			}
			var p gather.Problem
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != res.StatusCode || p.Title == "" {
				t.Fatalf("bad problem (%v): %s", err, rec.Body.Bytes())
			}
			if res.StatusCode == http.StatusNotFound && route == "echo" {
				t.Fatalf("known route answered 404: %s", rec.Body.Bytes())
			}
		default:
			t.Fatalf("status %d: %s", res.StatusCode, rec.Body.Bytes())
		}
	})
}
