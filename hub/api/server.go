// Package api is the hub's HTTP API: event intake, health, and the routes
// other packages mount (DLQ, gather, subscriptions). Errors are RFC 9457
// application/problem+json bodies that name the field and the reason.
package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/publisher"
)

// Config configures the HTTP listener.
type Config struct {
	// Listen is host:port; empty disables the HTTP API.
	Listen string `yaml:"listen"`
	// MaxBodySize caps a request body (a batch); one event is also held to
	// events.max_event_size.
	MaxBodySize config.ByteSize `yaml:"max_body_size" validate:"gt=0"`
	// ReadHeaderTimeout bounds reading the request headers (no slowloris).
	ReadHeaderTimeout config.Duration `yaml:"read_header_timeout" validate:"gt=0"`
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout config.Duration `yaml:"read_timeout" validate:"gt=0"`
	// WriteTimeout bounds writing the response.
	WriteTimeout config.Duration `yaml:"write_timeout" validate:"gt=0"`
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout config.Duration `yaml:"idle_timeout" validate:"gt=0"`
	// MaxHeaderBytes caps the request headers.
	MaxHeaderBytes config.ByteSize `yaml:"max_header_bytes" validate:"gt=0"`
	// Tokens authenticate requests (Authorization: Bearer); without any
	// the API is open and may listen on loopback only (docs/security.md).
	Tokens Tokens `yaml:"tokens" validate:"dive"`
	// MetricsPublic serves GET /metrics without a token.
	MetricsPublic bool `yaml:"metrics_public"`
	// Metrics serves GET /metrics (Prometheus).
	Metrics bool `yaml:"metrics"`
	// Dashboard serves the web dashboard at / (and /v1/stats, GET /v1/events).
	Dashboard bool `yaml:"dashboard"`
	// TLS serves HTTPS.
	TLS TLSConfig `yaml:"tls"`
}

// DefaultConfig returns the defaults written in configs/hub.yaml.
func DefaultConfig() Config {
	return Config{
		Listen:            "127.0.0.1:8080",
		MaxBodySize:       8 << 20,
		ReadHeaderTimeout: config.Duration(5 * time.Second),
		ReadTimeout:       config.Duration(30 * time.Second),
		WriteTimeout:      config.Duration(60 * time.Second),
		IdleTimeout:       config.Duration(120 * time.Second),
		MaxHeaderBytes:    64 << 10,
		Metrics:           true,
		Dashboard:         true,
	}
}

// Server serves the HTTP API.
type Server struct {
	cfg    Config
	events hub.EventsConfig
	js     jetstream.JetStream
	pub    *publisher.Publisher
	log    zerolog.Logger
	mux    *http.ServeMux
	srv    *http.Server
	auth   *auth
	// handler is serveHTTP inside every middleware given to Use.
	handler http.Handler
	now     func() time.Time
	// atomicBatches: a batch is stored as JetStream atomic batches
	// (WithAtomicBatches).
	atomicBatches bool
}

// Option configures a Server.
type Option func(*Server)

// WithLogger sets the logger.
func WithLogger(l zerolog.Logger) Option { return func(s *Server) { s.log = l } }

// WithAtomicBatches chooses how a batch (POST /v1/events with a JSON array)
// is stored. On: as one JetStream atomic batch (several when it holds more
// than publisher.DefaultMaxBatch events), all or nothing, 4 fsyncs a batch:
// about 3x the events/s when the server fsyncs every write (nats.sync:
// always). Off (the default): one async publish per event, about 5x faster
// when writes are not fsynced (sync: default, where staging an atomic batch
// costs more than it saves); a failure part-way may store part of the
// batch, and a retry with the same ids completes it. Turn it on with
// sync: always.
func WithAtomicBatches(on bool) Option { return func(s *Server) { s.atomicBatches = on } }

// New returns a Server publishing through js.
func New(cfg Config, events hub.EventsConfig, js jetstream.JetStream, opts ...Option) (*Server, error) {
	s := &Server{cfg: cfg, events: events, js: js, log: zerolog.Nop(), mux: http.NewServeMux(), now: time.Now}
	s.handler = http.HandlerFunc(s.serveHTTP)
	for _, o := range opts {
		o(s)
	}
	pub, err := publisher.New(js.Conn(), publisher.WithSource("hub/http"), publisher.WithMaxEventSize(int(events.MaxEventSize)),
		publisher.WithHeader(hub.HeaderIntake, "http"), publisher.WithValidatedEvents())
	if err != nil {
		return nil, err
	}
	s.pub = pub
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout.D(),
		ReadTimeout:       cfg.ReadTimeout.D(),
		WriteTimeout:      cfg.WriteTimeout.D(),
		IdleTimeout:       cfg.IdleTimeout.D(),
		MaxHeaderBytes:    int(cfg.MaxHeaderBytes),
	}
	if err := s.secure(); err != nil {
		return nil, err
	}
	s.mux.HandleFunc("POST /v1/events", s.postEvents)
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	return s, nil
}

// Handle mounts another handler (DLQ, gather, subscriptions).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler is the API as an http.Handler, for tests and embedding.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) })
}

// Use wraps every request, matched or not, in mw (the last one added runs
// first). Call it before Serve. After next returns, mw finds the mux
// pattern that served the request in r.Pattern ("" for none).
func (s *Server) Use(mw func(http.Handler) http.Handler) { s.handler = mw(s.handler) }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := s.mux.Handler(r)
	r.Pattern = pattern // for the middleware given to Use: authorize passes on a copy of r
	r, ok := s.authorize(w, r, pattern)
	if !ok {
		return
	}
	if pattern == "" {
		// Not found and method-not-allowed still answer as problems.
		rec := &statusCapture{ResponseWriter: w}
		h.ServeHTTP(discardBody{rec}, r)
		status := rec.status
		if status == 0 {
			status = http.StatusNotFound
		}
		Error(w, status, fmt.Sprintf("%s %s: %s", r.Method, r.URL.Path, http.StatusText(status)))
		return
	}
	// The mux itself sets the path values ({id}, {route}).
	s.mux.ServeHTTP(w, r)
}

// Listen binds the configured address; Serve then serves on it. Split so the
// caller can print the bound address before serving.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("http listen %s: %w", s.cfg.Listen, err)
	}
	return ln, nil
}

// Serve serves until Shutdown; it returns nil after a clean shutdown.
func (s *Server) Serve(ln net.Listener) error {
	serve := s.srv.Serve
	if s.srv.TLSConfig != nil {
		serve = func(ln net.Listener) error { return s.srv.ServeTLS(ln, "", "") }
	}
	if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting requests and waits for in-flight ones.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil {
		// Out of time: cut the requests still running rather than leave
		// them on top of a hub that goes on shutting down.
		_ = s.srv.Close()
		return fmt.Errorf("http shutdown: requests still running were cut: %w", err)
	}
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.js.Stream(ctx, hub.EventsStream); err != nil {
		RetryLater(w, http.StatusServiceUnavailable, time.Second, "JetStream is not ready: "+err.Error())
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

type statusCapture struct {
	http.ResponseWriter
	status int
}

func (c *statusCapture) WriteHeader(code int) { c.status = code }

// discardBody swallows the default handler's text body; we write a problem.
type discardBody struct{ *statusCapture }

func (d discardBody) Write(b []byte) (int, error) { return len(b), nil }
