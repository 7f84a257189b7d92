package api_test

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/embedded/embeddedtest"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/api"
)

const (
	publishTok = "publish-token-0123456789"
	readTok    = "read-token-0123456789abc"
	adminTok   = "admin-token-0123456789ab"
	limitTok   = "limited-token-0123456789"
	hashedTok  = "hashed-token-0123456789a"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// authServer is the API with tokens and the routes other packages mount,
// each answering 204 and recording the token name it saw.
type authServer struct {
	*api.Server
	url    string
	mu     sync.Mutex
	tokens []string
}

func newAuthServer(t *testing.T, tweak func(*api.Config)) *authServer {
	t.Helper()
	srv := embeddedtest.Start(t)
	js, err := jetstream.New(embeddedtest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ec := hub.DefaultEventsConfig()
	if _, err := hub.EnsureStream(t.Context(), js, hub.EventsStreamConfig(ec)); err != nil {
		t.Fatal(err)
	}
	cfg := api.DefaultConfig()
	cfg.Tokens = api.Tokens{
		{Name: "shop", Token: publishTok, Scopes: []string{api.ScopePublish}},
		{Name: "dashboard", Token: readTok, Scopes: []string{api.ScopeRead}},
		{Name: "ops", Token: adminTok, Scopes: []string{api.ScopeAdmin}},
		{Name: "limited", Token: limitTok, Scopes: []string{api.ScopeRead, api.ScopePublish}, RateLimit: api.RateLimit{RPS: 0.01, Burst: 2}},
		{Name: "hashed", TokenSHA256: sha(hashedTok), Scopes: []string{api.ScopeRead}},
	}
	if tweak != nil {
		tweak(&cfg)
	}
	if err := config.Check(&cfg); err != nil {
		t.Fatal(err)
	}
	a, err := api.New(cfg, ec, js)
	if err != nil {
		t.Fatal(err)
	}
	s := &authServer{Server: a}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.tokens = append(s.tokens, api.TokenName(r.Context()))
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	for _, p := range []string{"GET /v1/dlq", "GET /v1/dlq/{id}", "POST /v1/dlq/{id}/replay", "DELETE /v1/dlq/{id}",
		"GET /v1/subscriptions", "POST /v1/subscriptions", "PATCH /v1/subscriptions/{id}", "DELETE /v1/subscriptions/{id}",
		"GET /metrics", "/v1/gather/{route}", "GET /v1/events/{id}", "GET /v1/events", "GET /v1/stats", "GET /{$}", "GET /ui/", "GET /other/"} {
		a.Handle(p, ok)
	}
	ts := httptest.NewServer(a.Handler())
	t.Cleanup(ts.Close)
	s.url = ts.URL
	return s
}

func (s *authServer) do(t *testing.T, method, path, token string) (*http.Response, []byte) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost && path == "/v1/events" {
		body = strings.NewReader(`{"type":"order.created"}`)
	}
	req, err := http.NewRequest(method, s.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestAuthStatuses(t *testing.T) {
	s := newAuthServer(t, nil)
	defer http.DefaultClient.CloseIdleConnections()
	cases := []struct {
		method, path, token string
		want                int
	}{
		// Health stays open.
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", "", 200},
		{"HEAD", "/healthz", "", 200},
		// No token, a wrong one, or a wrong scheme: 401.
		{"POST", "/v1/events", "", 401},
		{"GET", "/v1/dlq", "", 401},
		{"GET", "/metrics", "", 401},
		{"GET", "/v1/dlq", "wrong-token-0123456789", 401},
		{"GET", "/v1/dlq", publishTok + "x", 401},
		{"GET", "/no/such/route", "", 401},
		// publish: POST /v1/events only.
		{"POST", "/v1/events", publishTok, 202},
		{"GET", "/v1/dlq", publishTok, 403},
		{"GET", "/v1/gather/dashboard", publishTok, 403},
		// read: GET endpoints and gathers, nothing that writes.
		{"GET", "/v1/dlq", readTok, 204},
		{"GET", "/v1/dlq/x", readTok, 204},
		{"GET", "/v1/events/x", readTok, 204},
		{"GET", "/v1/subscriptions", readTok, 204},
		{"GET", "/v1/gather/dashboard", readTok, 204},
		{"POST", "/v1/gather/dashboard", readTok, 204},
		{"GET", "/metrics", readTok, 204},
		{"GET", "/other/", readTok, 204},
		{"GET", "/other/", "", 401},
		{"GET", "/v1/events", readTok, 204},
		{"GET", "/v1/events", publishTok, 403},
		{"GET", "/v1/stats", "", 401},
		{"GET", "/v1/stats", readTok, 204},
		// The dashboard's page and assets are open; its data is not.
		{"GET", "/", "", 204},
		{"GET", "/ui/app.js", "", 204},
		{"HEAD", "/v1/dlq", readTok, 204},
		{"POST", "/v1/events", readTok, 403},
		{"POST", "/v1/dlq/x/replay", readTok, 403},
		{"DELETE", "/v1/dlq/x", readTok, 403},
		{"POST", "/v1/subscriptions", readTok, 403},
		{"PATCH", "/v1/subscriptions/x", readTok, 403},
		{"DELETE", "/v1/subscriptions/x", readTok, 403},
		{"GET", "/v1/dlq", hashedTok, 204},
		// admin: everything.
		{"POST", "/v1/events", adminTok, 202},
		{"POST", "/v1/dlq/x/replay", adminTok, 204},
		{"DELETE", "/v1/dlq/x", adminTok, 204},
		{"POST", "/v1/subscriptions", adminTok, 204},
		{"PATCH", "/v1/subscriptions/x", adminTok, 204},
		{"DELETE", "/v1/subscriptions/x", adminTok, 204},
		{"GET", "/v1/gather/x", adminTok, 204},
		// Authenticated, then the usual answers.
		{"GET", "/no/such/route", readTok, 404},
		{"PUT", "/v1/events", adminTok, 405},
	}
	for _, c := range cases {
		resp, body := s.do(t, c.method, c.path, c.token)
		if resp.StatusCode != c.want {
			t.Errorf("%s %s with %q: %d %s, want %d", c.method, c.path, c.token, resp.StatusCode, body, c.want)
			continue
		}
		switch c.want {
		case 401:
			if h := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") {
				t.Errorf("%s %s: WWW-Authenticate %q", c.method, c.path, h)
			}
			if c.token != "" && !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
				t.Errorf("%s %s: WWW-Authenticate %q lacks invalid_token", c.method, c.path, resp.Header.Get("WWW-Authenticate"))
			}
			checkProblem(t, resp, body, 401)
		case 403:
			checkProblem(t, resp, body, 403)
			if !strings.Contains(string(body), "scope") {
				t.Errorf("403 does not name the scope: %s", body)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tokens) == 0 || s.tokens[0] != "dashboard" {
		t.Fatalf("handlers saw tokens %q", s.tokens)
	}
}

func TestAuthSchemes(t *testing.T) {
	s := newAuthServer(t, nil)
	defer http.DefaultClient.CloseIdleConnections()
	for _, h := range []string{"Basic " + readTok, readTok, "Bearer", "Bearer ", "bearer " + readTok} {
		req, _ := http.NewRequest(http.MethodGet, s.url+"/v1/dlq", nil)
		req.Header.Set("Authorization", h)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		want := 401
		if strings.HasPrefix(h, "bearer ") { // the scheme is case-insensitive
			want = 204
		}
		if resp.StatusCode != want {
			t.Errorf("Authorization %q: %d, want %d", h, resp.StatusCode, want)
		}
	}
}

func checkProblem(t *testing.T, resp *http.Response, body []byte, status int) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != api.ProblemContentType {
		t.Errorf("content type %q", ct)
	}
	var p api.Problem
	if err := json.Unmarshal(body, &p); err != nil || p.Status != status || p.Detail == "" {
		t.Errorf("problem %s (%v)", body, err)
	}
}

func TestMetricsPublic(t *testing.T) {
	s := newAuthServer(t, func(c *api.Config) { c.MetricsPublic = true })
	defer http.DefaultClient.CloseIdleConnections()
	if resp, body := s.do(t, "GET", "/metrics", ""); resp.StatusCode != 204 {
		t.Fatalf("public metrics: %d %s", resp.StatusCode, body)
	}
	if resp, _ := s.do(t, "GET", "/v1/dlq", ""); resp.StatusCode != 401 {
		t.Fatalf("metrics_public opened other routes: %d", resp.StatusCode)
	}
}

func TestRateLimit(t *testing.T) {
	s := newAuthServer(t, nil)
	defer http.DefaultClient.CloseIdleConnections()
	// Burst 2 at one request per 100 s: two pass, the third waits ~100 s.
	for i := range 2 {
		if resp, body := s.do(t, "GET", "/v1/dlq", limitTok); resp.StatusCode != 204 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	resp, body := s.do(t, "POST", "/v1/events", limitTok)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("over the limit: %d %s", resp.StatusCode, body)
	}
	checkProblem(t, resp, body, 429)
	after, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || after < 90 || after > 101 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	// Other tokens have their own buckets; refused requests spent nothing.
	if resp, _ := s.do(t, "GET", "/v1/dlq", readTok); resp.StatusCode != 204 {
		t.Fatalf("another token: %d", resp.StatusCode)
	}
}

func TestRouteScope(t *testing.T) {
	for _, c := range []struct{ method, pattern, want string }{
		{"GET", "GET /healthz", ""},
		{"HEAD", "GET /readyz", ""},
		{"POST", "POST /v1/events", api.ScopePublish},
		{"GET", "/v1/gather/{route}", api.ScopeRead},
		{"POST", "/v1/gather/{route}", api.ScopeRead},
		{"PUT", "/v1/gather/{route}", api.ScopeAdmin},
		{"GET", "GET /v1/something/new", api.ScopeRead},
		{"POST", "POST /v1/something/new", api.ScopeAdmin},
		{"DELETE", "DELETE /v1/dlq/{id}", api.ScopeAdmin},
	} {
		if got := api.RouteScope(c.method, c.pattern); got != c.want {
			t.Errorf("RouteScope(%s, %s) = %q, want %q", c.method, c.pattern, got, c.want)
		}
	}
}

func TestTokensConfig(t *testing.T) {
	type file struct {
		HTTP api.Config `yaml:"http"`
	}
	t.Setenv("HUB_TEST_TOKEN", publishTok)
	good := file{HTTP: api.DefaultConfig()}
	err := config.Decode([]byte(`
http:
  tokens:
    - {name: shop, token_env: HUB_TEST_TOKEN, scopes: [publish], rate_limit: {rps: 100, burst: 200}}
    - {name: ops, token_sha256: `+sha(adminTok)+`, scopes: [admin]}
`), &good)
	if err != nil {
		t.Fatal(err)
	}
	if good.HTTP.Tokens[0].Token.Value() != publishTok || good.HTTP.Tokens[1].RateLimit.RPS != 0 {
		t.Fatalf("decoded %+v", good.HTTP.Tokens)
	}
	cases := map[string]string{
		"{name: a, scopes: [read]}":                                                 "http.tokens[0].token: required",
		"{name: a, token: short, scopes: [read]}":                                   "http.tokens[0].token: must be at least 16",
		"{name: a, token: " + readTok + ", token_sha256: ab, scopes: [read]}":       "set token or token_sha256",
		"{name: a, token_sha256: xyz, scopes: [read]}":                              "http.tokens[0].token_sha256: must be 64 hex digits",
		"{name: a, token: " + readTok + ", scopes: [write]}":                        "http.tokens[0].scopes[0]: must be one of",
		"{name: a, token: " + readTok + ", scopes: []}":                             "http.tokens[0].scopes",
		"{name: a, token: " + readTok + ", scopes: [read], rate_limit: {burst: 5}}": "rate_limit.burst: needs rate_limit.rps",
		"{token: " + readTok + ", scopes: [read]}":                                  "http.tokens[0].name: required",
	}
	for item, want := range cases {
		f := file{HTTP: api.DefaultConfig()}
		err := config.Decode([]byte("http:\n  tokens:\n    - "+item+"\n"), &f)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", item, err, want)
		}
	}
	f := file{HTTP: api.DefaultConfig()}
	err = config.Decode([]byte("http:\n  tokens:\n    - {name: a, token: "+readTok+", scopes: [read]}\n    - {name: a, token_sha256: "+sha(readTok)+", scopes: [read]}\n"), &f)
	for _, want := range []string{`http.tokens[1].name: "a" is already used`, "http.tokens[1].token: the same token as tokens[0]"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("duplicates: %v, want %q", err, want)
		}
	}
}

func TestHTTPTLS(t *testing.T) {
	certs := embeddedtest.NewCerts(t)
	srv := embeddedtest.Start(t)
	js, err := jetstream.New(embeddedtest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	for _, verify := range []bool{false, true} {
		t.Run("verify_clients="+strconv.FormatBool(verify), func(t *testing.T) {
			cfg := api.DefaultConfig()
			cfg.Listen = "127.0.0.1:0"
			cfg.TLS = api.TLSConfig{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, VerifyClients: verify}
			if verify {
				cfg.TLS.CAFile = certs.CAFile
			}
			if err := config.Check(&cfg); err != nil {
				t.Fatal(err)
			}
			a, err := api.New(cfg, hub.DefaultEventsConfig(), js)
			if err != nil {
				t.Fatal(err)
			}
			if a.Scheme() != "https" {
				t.Fatalf("scheme %s", a.Scheme())
			}
			ln, err := a.Listen()
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- a.Serve(ln) }()
			defer func() {
				if err := a.Shutdown(t.Context()); err != nil {
					t.Error(err)
				}
				if err := <-done; err != nil {
					t.Error(err)
				}
			}()
			url := "https://" + ln.Addr().String() + "/healthz"
			get := func(tc *tls.Config) error {
				c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
				defer c.CloseIdleConnections()
				resp, err := c.Get(url)
				if err != nil {
					return err
				}
				_ = resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				return nil
			}
			withCA := &tls.Config{RootCAs: certs.Pool, MinVersion: tls.VersionTLS12}
			if verify {
				withCA.Certificates = []tls.Certificate{certs.ClientPair}
			}
			if err := get(withCA); err != nil {
				t.Fatalf("with the CA: %v", err)
			}
			if err := get(&tls.Config{RootCAs: certs.OtherPool, MinVersion: tls.VersionTLS12}); err == nil {
				t.Fatal("a client without the CA connected")
			}
			if err := get(&tls.Config{RootCAs: certs.Pool, MaxVersion: tls.VersionTLS11}); err == nil {
				t.Fatal("TLS 1.1 accepted")
			}
			if verify {
				if err := get(&tls.Config{RootCAs: certs.Pool, MinVersion: tls.VersionTLS12}); err == nil {
					t.Fatal("connected without a client certificate")
				}
			}
		})
	}
}

func TestTLSConfigValidate(t *testing.T) {
	certs := embeddedtest.NewCerts(t)
	for _, c := range []struct {
		tc   api.TLSConfig
		want string
	}{
		{api.TLSConfig{CertFile: certs.ServerCert, KeyFile: certs.ServerKey}, ""},
		{api.TLSConfig{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, CAFile: certs.CAFile, VerifyClients: true}, ""},
		{api.TLSConfig{CertFile: certs.ServerCert}, "key_file: required"},
		{api.TLSConfig{KeyFile: certs.ServerKey}, "cert_file: required"},
		{api.TLSConfig{CertFile: certs.ServerCert, KeyFile: certs.ClientKey}, "cannot load"},
		{api.TLSConfig{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, VerifyClients: true}, "ca_file: required"},
		{api.TLSConfig{CertFile: certs.ServerCert, KeyFile: certs.ServerKey, CAFile: certs.ServerKey}, "no PEM certificate"},
		{api.TLSConfig{CAFile: certs.CAFile}, "cert_file: required"},
	} {
		err := c.tc.Validate()
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: %v, want %q", c.tc, err, c.want)
		}
	}
}
