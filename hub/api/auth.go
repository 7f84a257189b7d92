package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/hubproject/hub/config"
)

// Scopes a token can hold. Admin includes the others.
const (
	ScopePublish = "publish" // POST /v1/events
	ScopeRead    = "read"    // GET endpoints, gathers
	ScopeAdmin   = "admin"   // everything: DLQ replay/drop, subscription writes
)

// scopeOpen marks a route that needs no token.
const scopeOpen = ""

// routeScopes maps each route (request method and mux pattern path) to the
// scope it needs. A route not listed needs read for GET and HEAD, admin
// otherwise, so a route added later is never open by accident.
var routeScopes = map[string]string{
	"GET /healthz": scopeOpen,
	"GET /readyz":  scopeOpen,
	// GET /metrics is open when http.metrics_public is true.
	"GET /metrics": ScopeRead,

	// The dashboard's page and static files hold no data (that comes from
	// /v1/stats and /v1/events, which need read), so a browser can load
	// them before it has a token.
	"GET /{$}":      scopeOpen,
	"GET /ui/":      scopeOpen,
	"GET /v1/stats": ScopeRead,

	"POST /v1/events":     ScopePublish,
	"GET /v1/events":      ScopeRead,
	"GET /v1/events/{id}": ScopeRead,

	"GET /v1/dlq":                   ScopeRead,
	"GET /v1/dlq/{id}":              ScopeRead,
	"POST /v1/dlq/{id}/replay":      ScopeAdmin,
	"DELETE /v1/dlq/{id}":           ScopeAdmin,
	"GET /v1/subscriptions":         ScopeRead,
	"GET /v1/subscriptions/{id}":    ScopeRead,
	"POST /v1/subscriptions":        ScopeAdmin,
	"PATCH /v1/subscriptions/{id}":  ScopeAdmin,
	"DELETE /v1/subscriptions/{id}": ScopeAdmin,

	// A gather only reads; POST carries its parameters as a body.
	"GET /v1/gather/{route}":  ScopeRead,
	"POST /v1/gather/{route}": ScopeRead,
}

// RouteScope is the scope a request to the mux pattern needs ("" when the
// route is open). The pattern may or may not name a method.
func RouteScope(method, pattern string) string {
	if method == http.MethodHead {
		method = http.MethodGet
	}
	path := pattern
	if _, p, ok := strings.Cut(pattern, " "); ok {
		path = p
	}
	if s, ok := routeScopes[method+" "+path]; ok {
		return s
	}
	if method == http.MethodGet {
		return ScopeRead
	}
	return ScopeAdmin
}

// Token is an API token (http.tokens[]): a client sends it as
// "Authorization: Bearer <token>".
type Token struct {
	// Name identifies the token in logs and errors; never the token itself.
	Name string `yaml:"name" validate:"required"`
	// Token is the token in clear (or token_env / token_file); it is
	// hashed at start and only the hash is kept.
	Token config.Secret `yaml:"token"`
	// TokenSHA256 is the hex SHA-256 of the token, so the file holds no
	// usable secret: printf %s "$TOKEN" | sha256sum.
	TokenSHA256 string `yaml:"token_sha256"`
	// Scopes: publish, read, admin (admin includes the others).
	Scopes []string `yaml:"scopes" validate:"min=1,dive,oneof=publish read admin"`
	// RateLimit caps this token's requests (none by default).
	RateLimit RateLimit `yaml:"rate_limit"`
}

// RateLimit is a token bucket: RPS requests per second on average, bursts
// of up to Burst. RPS 0 means no limit.
type RateLimit struct {
	// RPS is the average number of requests per second (0: no limit).
	RPS float64 `yaml:"rps" validate:"gte=0"`
	// Burst is the bucket size (default: rps rounded up, at least 1).
	Burst int `yaml:"burst" validate:"gte=0"`
}

// MinTokenLength is the shortest token accepted in clear.
const MinTokenLength = 16

// Tokens is the list of API tokens.
type Tokens []Token

// Validate checks each token's form and that names and tokens are unique.
// Paths are relative to the list ("[1].name").
func (ts Tokens) Validate() error {
	var errs config.Errors
	names := map[string]int{}
	hashes := map[[32]byte]int{}
	for i, t := range ts {
		p := fmt.Sprintf("[%d]", i)
		if j, dup := names[t.Name]; dup && t.Name != "" {
			errs.Add(p+".name", "%q is already used by tokens[%d]", t.Name, j)
		}
		names[t.Name] = i
		switch {
		case t.Token.IsSet() && t.TokenSHA256 != "":
			errs.Add(p+".token", "set token or token_sha256, not both")
		case !t.Token.IsSet() && t.TokenSHA256 == "":
			errs.Add(p+".token", "required: token (or token_env / token_file) or token_sha256")
		case t.Token.IsSet() && len(t.Token.Value()) < MinTokenLength:
			errs.Add(p+".token", "must be at least %d characters (e.g. openssl rand -hex 32)", MinTokenLength)
		}
		if t.TokenSHA256 != "" {
			if _, err := decodeSHA256(t.TokenSHA256); err != nil {
				errs.Add(p+".token_sha256", "%v", err)
			}
		}
		if h, err := t.hash(); err == nil {
			if j, dup := hashes[h]; dup {
				errs.Add(p+".token", "the same token as tokens[%d]: give each client its own", j)
			}
			hashes[h] = i
		}
		if t.RateLimit.Burst > 0 && t.RateLimit.RPS == 0 {
			errs.Add(p+".rate_limit.burst", "needs rate_limit.rps")
		}
	}
	return errs.Err()
}

// HasScope reports whether the token grants scope.
func (t *Token) HasScope(scope string) bool {
	return scope == scopeOpen || slices.Contains(t.Scopes, scope) || slices.Contains(t.Scopes, ScopeAdmin)
}

func (t *Token) hash() ([32]byte, error) {
	if t.Token.IsSet() {
		return sha256.Sum256([]byte(t.Token.Value())), nil
	}
	return decodeSHA256(t.TokenSHA256)
}

func decodeSHA256(s string) ([32]byte, error) {
	var h [32]byte
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(h) {
		return h, errors.New("must be 64 hex digits (the SHA-256 of the token)")
	}
	copy(h[:], b)
	return h, nil
}

// TLSConfig serves TLS on a port (http.tls, nats.tls).
type TLSConfig struct {
	// CertFile is the PEM certificate with its chain; with key_file it
	// turns TLS on.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of cert_file.
	KeyFile string `yaml:"key_file"`
	// CAFile is a PEM bundle of the CAs client certificates must chain to.
	CAFile string `yaml:"ca_file"`
	// VerifyClients requires a client certificate from a CA in ca_file.
	VerifyClients bool `yaml:"verify_clients"`
}

// Enabled reports whether TLS is configured.
func (c *TLSConfig) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// Validate checks that the files are set together and can be loaded.
func (c *TLSConfig) Validate() error {
	var errs config.Errors
	switch {
	case c.CertFile == "" && c.KeyFile != "":
		errs.Add("cert_file", "required with key_file")
	case c.CertFile != "" && c.KeyFile == "":
		errs.Add("key_file", "required with cert_file")
	case c.CertFile != "":
		if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
			errs.Add("cert_file", "cannot load the certificate and key: %v", err)
		}
	}
	if (c.CAFile != "" || c.VerifyClients) && !c.Enabled() {
		errs.Add("cert_file", "required with ca_file and verify_clients")
	}
	if c.VerifyClients && c.CAFile == "" {
		errs.Add("ca_file", "required with verify_clients: the CAs client certificates must chain to")
	}
	if c.CAFile != "" {
		if _, err := loadCAs(c.CAFile); err != nil {
			errs.Add("ca_file", "%v", err)
		}
	}
	return errs.Err()
}

// ServerConfig builds the server side: TLS 1.2 or later, and client
// certificates required when VerifyClients is set.
func (c *TLSConfig) ServerConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if c.CAFile != "" {
		pool, err := loadCAs(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.VerifyClientCertIfGiven
		if c.VerifyClients {
			tc.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return tc, nil
}

// MutualConfig is for links where each side is client and server (cluster
// routes): the certificate is presented both ways and the peer's must chain
// to CAFile.
func (c *TLSConfig) MutualConfig() (*tls.Config, error) {
	tc, err := c.ServerConfig()
	if err != nil {
		return nil, err
	}
	tc.RootCAs = tc.ClientCAs
	if tc.ClientCAs != nil {
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

func loadCAs(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read the CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no PEM certificate in %s", file)
	}
	return pool, nil
}

// authToken is a configured token as the server keeps it: its hash, never
// the token.
type authToken struct {
	tok   Token // Token and TokenSHA256 cleared
	hash  [32]byte
	limit *rate.Limiter // nil: unlimited
}

// auth authenticates and authorises API requests.
type auth struct {
	tokens        []authToken
	metricsPublic bool
}

func newAuth(cfg Config) (*auth, error) {
	a := &auth{metricsPublic: cfg.MetricsPublic}
	for _, t := range cfg.Tokens {
		h, err := t.hash()
		if err != nil {
			return nil, fmt.Errorf("http.tokens %s: %w", t.Name, err)
		}
		at := authToken{tok: t, hash: h}
		at.tok.Token, at.tok.TokenSHA256 = "", ""
		if rl := t.RateLimit; rl.RPS > 0 {
			burst := rl.Burst
			if burst <= 0 {
				burst = max(1, int(math.Ceil(rl.RPS)))
			}
			at.limit = rate.NewLimiter(rate.Limit(rl.RPS), burst)
		}
		a.tokens = append(a.tokens, at)
	}
	return a, nil
}

// lookup finds the token whose hash matches presented, comparing with every
// configured hash in constant time.
func (a *auth) lookup(presented string) *authToken {
	h := sha256.Sum256([]byte(presented))
	var found *authToken
	for i := range a.tokens {
		if subtle.ConstantTimeCompare(h[:], a.tokens[i].hash[:]) == 1 {
			found = &a.tokens[i]
		}
	}
	return found
}

type tokenKey struct{}

// TokenName is the name of the token that authenticated the request ("" on
// an open API or route).
func TokenName(ctx context.Context) string {
	s, _ := ctx.Value(tokenKey{}).(string)
	return s
}

// authorize answers 401, 403 or 429 and returns false when the request may
// not go on; otherwise it returns the request, carrying the token name.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, pattern string) (*http.Request, bool) {
	a := s.auth
	if a == nil || len(a.tokens) == 0 {
		return r, true // no tokens: an open API, on loopback only (node.Config.Validate)
	}
	scope := RouteScope(r.Method, pattern)
	switch {
	case pattern == "":
		scope = ScopeRead // unknown route: authenticate before saying 404 or 405
	case a.metricsPublic && isMetrics(pattern) && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		scope = scopeOpen
	}
	if scope == scopeOpen {
		return r, true
	}
	presented, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="hub"`)
		Error(w, http.StatusUnauthorized, "this endpoint needs an API token: send Authorization: Bearer <token>")
		return r, false
	}
	t := a.lookup(presented)
	if t == nil {
		s.log.Debug().Str("remote_addr", r.RemoteAddr).Str("path", r.URL.Path).Msg("invalid API token")
		w.Header().Set("WWW-Authenticate", `Bearer realm="hub", error="invalid_token"`)
		Error(w, http.StatusUnauthorized, "the API token is not valid")
		return r, false
	}
	if !t.tok.HasScope(scope) {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="hub", error="insufficient_scope", scope=%q`, scope))
		Error(w, http.StatusForbidden, fmt.Sprintf("token %q lacks the %s scope %s %s needs", t.tok.Name, scope, r.Method, r.URL.Path))
		return r, false
	}
	if t.limit != nil {
		if res := t.limit.Reserve(); res.OK() {
			if d := res.Delay(); d > 0 {
				res.Cancel()
				RetryLater(w, http.StatusTooManyRequests, roundUp(d), fmt.Sprintf("token %q is over its rate limit (%g requests/s)", t.tok.Name, t.tok.RateLimit.RPS))
				return r, false
			}
		}
	}
	return r.WithContext(context.WithValue(r.Context(), tokenKey{}, t.tok.Name)), true
}

func isMetrics(pattern string) bool {
	_, p, ok := strings.Cut(pattern, " ")
	if !ok {
		p = pattern
	}
	return p == "/metrics"
}

// bearer extracts the token of "Authorization: Bearer <token>".
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// roundUp rounds d up to whole seconds (at least one) for Retry-After.
func roundUp(d time.Duration) time.Duration {
	return max(time.Second, (d+time.Second-1)/time.Second*time.Second)
}

// secure sets up the server's authentication and TLS from its config.
func (s *Server) secure() error {
	a, err := newAuth(s.cfg)
	if err != nil {
		return err
	}
	s.auth = a
	// net/http's own messages (TLS handshake failures, recovered panics)
	// go to the hub's logger instead of stderr.
	s.srv.ErrorLog = log.New(serverLog{s.log}, "", 0)
	if s.cfg.TLS.Enabled() {
		tc, err := s.cfg.TLS.ServerConfig()
		if err != nil {
			return fmt.Errorf("http.tls: %w", err)
		}
		s.srv.TLSConfig = tc
	}
	return nil
}

// serverLog adapts net/http's error log to zerolog. Failed TLS handshakes
// are routine on a public port (scanners, clients without the CA): debug.
type serverLog struct{ l zerolog.Logger }

func (w serverLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	ev := w.l.Warn()
	if strings.Contains(msg, "TLS handshake error") {
		ev = w.l.Debug()
	}
	ev.Msg(msg)
	return len(p), nil
}

// Scheme is "https" when the API serves TLS, "http" otherwise.
func (s *Server) Scheme() string {
	if s.cfg.TLS.Enabled() {
		return "https"
	}
	return "http"
}
