// Package gather answers one request by asking several services at once
// (scatter-gather): a route names branches, each a NATS subject; the
// branches run in parallel, each with its own timeout, fallback, cache and
// circuit breaker, and their JSON replies are merged into one object with a
// _meta section saying how each branch fared. Three doors lead in: a NATS
// service on hub.gather.<route> (Start/Stop), an HTTP handler for
// /v1/gather/{route} (HTTPHandler), and the Go API (Gather).
package gather

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/sony/gobreaker/v2"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/publisher"
)

// Header names read from the caller and sent to every branch.
const (
	CorrelationIDHeader = publisher.CorrelationIDHeader // "Hub-Correlation-Id"
	TraceparentHeader   = "traceparent"
	TracestateHeader    = "tracestate"
	// QueueGroup is the queue group of the NATS door, so several hubs
	// share the load of one route.
	QueueGroup = "hub-gather"
)

// ErrUnknownRoute is returned for a route that is not configured.
var ErrUnknownRoute = errors.New("unknown gather route")

// Status says what happened to one branch of a gather.
type Status string

const (
	// StatusOK: the branch answered with JSON.
	StatusOK Status = "ok"
	// StatusCached: answered from the branch cache; no request was sent.
	StatusCached Status = "cached"
	// StatusTimeout: no answer in time. The value is the fallback if one is
	// configured, else the branch is absent from the reply.
	StatusTimeout Status = "timeout"
	// StatusError: no responders, an error reply, a reply that is not JSON,
	// an open circuit breaker, or a payload template that failed. The value
	// is the fallback if one is configured, else the branch is absent.
	StatusError Status = "error"
)

// Option configures a Gatherer.
type Option func(*options)

type options struct {
	log zerolog.Logger
	now func() time.Time
	obs func(*Result)
}

// WithLogger sets the logger (default: none). Branch failures are logged at
// debug level, door failures (a reply that could not be sent) at warn.
func WithLogger(l zerolog.Logger) Option { return func(o *options) { o.log = l } }

// WithObserver sees every finished gather (metrics). It runs on the
// gathering goroutine: keep it quick, and do not keep the Result.
func WithObserver(f func(*Result)) Option { return func(o *options) { o.obs = f } }

// WithClock replaces time.Now for cache expiry (tests).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// Gatherer runs the configured gather routes over one NATS connection. It is
// safe for concurrent use.
type Gatherer struct {
	nc          *nats.Conn
	routes      map[string]*route
	concurrency int
	log         zerolog.Logger
	obs         func(*Result)

	mu  sync.Mutex // guards svc
	svc *service   // the NATS door, while started
}

type route struct {
	name     string
	timeout  time.Duration
	branches []*branch
	// paramsJSON: some branch sends the parameters as JSON, so encode
	// them once per gather rather than once per branch.
	paramsJSON bool
}

type branch struct {
	name       string
	subject    string
	timeout    time.Duration
	required   bool
	fallback   json.RawMessage
	all        bool // mode: all
	maxReplies int
	stallGap   time.Duration
	payload    *template.Template
	cache      *cache
	breaker    *gobreaker.CircuitBreaker[json.RawMessage]
}

// New validates cfg and returns a Gatherer sending branch requests over nc.
func New(cfg Config, nc *nats.Conn, opts ...Option) (*Gatherer, error) {
	if nc == nil {
		return nil, errors.New("gather: nil NATS connection")
	}
	if err := config.Check(&cfg); err != nil {
		return nil, fmt.Errorf("gather config: %w", err)
	}
	o := options{log: zerolog.Nop(), now: time.Now, obs: func(*Result) {}}
	for _, opt := range opts {
		opt(&o)
	}
	cfg = cfg.WithDefaults()
	g := &Gatherer{nc: nc, routes: make(map[string]*route, len(cfg.Routes)), concurrency: cfg.Concurrency, log: o.log, obs: o.obs}
	for _, rc := range cfg.Routes {
		rt := &route{name: rc.Name, timeout: rc.Timeout.D()}
		for _, bc := range rc.Branches {
			b := &branch{
				name:       bc.Name,
				subject:    bc.Subject,
				timeout:    bc.Timeout.D(),
				required:   bc.Required,
				fallback:   bc.Fallback.JSON(),
				all:        bc.Mode == ModeAll,
				maxReplies: bc.MaxReplies,
				stallGap:   bc.StallGap.D(),
			}
			if bc.Payload != "" {
				t, err := parsePayload(bc.Name, bc.Payload)
				if err != nil { // Check compiled it already; kept for safety
					return nil, fmt.Errorf("gather route %s branch %s: payload: %w", rc.Name, bc.Name, err)
				}
				b.payload = t
			} else {
				rt.paramsJSON = true
			}
			if bc.CacheTTL > 0 {
				b.cache = newCache(bc.CacheTTL.D(), bc.CacheSize, o.now)
			}
			if bc.Breaker != nil {
				b.breaker = newBreaker(rc.Name+"/"+bc.Name, *bc.Breaker)
			}
			rt.branches = append(rt.branches, b)
		}
		g.routes[rc.Name] = rt
	}
	return g, nil
}

func newBreaker(name string, bc BreakerConfig) *gobreaker.CircuitBreaker[json.RawMessage] {
	failures := uint32(bc.Failures)
	return gobreaker.NewCircuitBreaker[json.RawMessage](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1, // one trial request when half-open
		Timeout:     bc.OpenFor.D(),
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		// A caller that went away says nothing about the branch's health.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
	})
}

// Routes returns the configured route names, sorted.
func (g *Gatherer) Routes() []string {
	return slices.Sorted(maps.Keys(g.routes))
}

// Result is the outcome of one gather. It marshals to the reply contract:
// each branch's value under its name, then "_meta".
type Result struct {
	Route         string
	CorrelationID string
	// Partial is true when some branch is neither ok nor cached.
	Partial bool
	// Branches are in configuration order.
	Branches []BranchResult
}

// BranchResult is one branch's outcome.
type BranchResult struct {
	Name     string
	Required bool
	Status   Status
	// Value is the branch's JSON (a reply, the cache, or the fallback);
	// nil when the branch failed without a fallback.
	Value json.RawMessage
	// Fallback is true when Value is the configured fallback.
	Fallback bool
	Latency  time.Duration
	Err      error
}

// Value returns the named branch's value.
func (r *Result) Value(branch string) (json.RawMessage, bool) {
	for i := range r.Branches {
		if r.Branches[i].Name == branch {
			return r.Branches[i].Value, r.Branches[i].Value != nil
		}
	}
	return nil, false
}

// Branch returns the named branch's outcome.
func (r *Result) Branch(name string) (BranchResult, bool) {
	for _, b := range r.Branches {
		if b.Name == name {
			return b, true
		}
	}
	return BranchResult{}, false
}

// Failed returns the first required branch (in configuration order) that
// failed, or nil when every required branch answered.
func (r *Result) Failed() *BranchError {
	for _, b := range r.Branches {
		if b.Required && b.Status != StatusOK && b.Status != StatusCached {
			return &BranchError{Route: r.Route, Branch: b.Name, Timeout: b.Status == StatusTimeout, Err: b.Err}
		}
	}
	return nil
}

// BranchError says a required branch failed, so the gather failed.
type BranchError struct {
	Route   string
	Branch  string
	Timeout bool // no answer in time (HTTP 504) rather than an error (502)
	Err     error
}

func (e *BranchError) Error() string {
	if e.Timeout {
		return fmt.Sprintf("gather %s: required branch %s timed out: %v", e.Route, e.Branch, e.Err)
	}
	return fmt.Sprintf("gather %s: required branch %s failed: %v", e.Route, e.Branch, e.Err)
}

func (e *BranchError) Unwrap() error { return e.Err }

// HTTPStatus is 504 for a timeout, 502 otherwise.
func (e *BranchError) HTTPStatus() int {
	if e.Timeout {
		return 504
	}
	return 502
}

// Gather runs every branch of route in parallel and merges their replies.
// params become each branch's request (as JSON, or through its payload
// template). From hdr it takes Hub-Correlation-Id (generated when absent or
// unusable), traceparent and tracestate, and sends them to every branch.
//
// The whole gather is bounded by the route timeout and ctx. When a required
// branch failed the result is returned together with a *BranchError naming
// it; an unknown route gives ErrUnknownRoute.
func (g *Gatherer) Gather(ctx context.Context, routeName string, params map[string]any, hdr nats.Header) (*Result, error) {
	rt, ok := g.routes[routeName]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownRoute, routeName)
	}
	corr := correlationID(hdr)
	// One header for all branches: nats.go only reads it.
	reqHdr := nats.Header{CorrelationIDHeader: {corr}}
	if tp := headerValue(hdr, TraceparentHeader); hub.ValidTraceparent(tp) {
		reqHdr[TraceparentHeader] = []string{tp}
		if ts := headerValue(hdr, TracestateHeader); ts != "" && len(ts) <= 512 {
			reqHdr[TracestateHeader] = []string{ts}
		}
	}
	var paramsJSON []byte
	if rt.paramsJSON {
		var err error
		if paramsJSON, err = encodeParams(params); err != nil {
			return nil, err
		}
	}

	ctx, cancel := context.WithTimeout(ctx, rt.timeout)
	defer cancel()
	res := &Result{Route: rt.name, CorrelationID: corr, Branches: make([]BranchResult, len(rt.branches))}
	var wg sync.WaitGroup
	for i, b := range rt.branches[1:] {
		wg.Go(func() { res.Branches[i+1] = g.runBranch(ctx, b, params, paramsJSON, reqHdr) })
	}
	// The first branch runs here: one goroutine fewer per gather.
	res.Branches[0] = g.runBranch(ctx, rt.branches[0], params, paramsJSON, reqHdr)
	wg.Wait()

	for _, b := range res.Branches {
		if b.Status != StatusOK && b.Status != StatusCached {
			res.Partial = true
			g.log.Debug().Str("route", rt.name).Str("branch", b.Name).Str("status", string(b.Status)).
				Str("correlation_id", corr).Err(b.Err).Msg("gather branch failed")
		}
	}
	g.obs(res)
	if be := res.Failed(); be != nil {
		return res, be
	}
	return res, nil
}

func encodeParams(params map[string]any) ([]byte, error) {
	if len(params) == 0 {
		return []byte("{}"), nil
	}
	b, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("gather: encode params: %w", err)
	}
	return b, nil
}

func (g *Gatherer) runBranch(ctx context.Context, b *branch, params map[string]any, paramsJSON []byte, hdr nats.Header) BranchResult {
	start := time.Now()
	val, status, err := g.callBranch(ctx, b, params, paramsJSON, hdr)
	r := BranchResult{Name: b.name, Required: b.required, Status: status, Value: val, Latency: time.Since(start), Err: err}
	if err != nil && b.fallback != nil {
		r.Value, r.Fallback = b.fallback, true
	}
	return r
}

func (g *Gatherer) callBranch(ctx context.Context, b *branch, params map[string]any, paramsJSON []byte, hdr nats.Header) (json.RawMessage, Status, error) {
	body := paramsJSON
	if b.payload != nil {
		var buf bytes.Buffer
		if err := b.payload.Execute(&buf, params); err != nil {
			return nil, StatusError, fmt.Errorf("payload: %w", err)
		}
		body = buf.Bytes()
	}
	if b.cache != nil {
		if v, ok := b.cache.get(body); ok {
			return v, StatusCached, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	start := time.Now()
	call := func() (json.RawMessage, error) { return b.request(ctx, g.nc, body, hdr) }
	var val json.RawMessage
	var err error
	if b.breaker != nil {
		val, err = b.breaker.Execute(call)
	} else {
		val, err = call()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return nil, StatusTimeout, fmt.Errorf("no reply within %v", time.Since(start).Round(time.Millisecond))
	case errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests):
		return nil, StatusError, fmt.Errorf("circuit breaker open: %w", err)
	case errors.Is(err, nats.ErrNoResponders):
		return nil, StatusError, fmt.Errorf("no responders on %s: %w", b.subject, err)
	case err != nil:
		return nil, StatusError, err
	}
	if b.cache != nil {
		b.cache.put(body, val)
	}
	return val, StatusOK, nil
}

// request sends the branch request: mode first takes the first reply, mode
// all collects replies into a JSON array.
func (b *branch) request(ctx context.Context, nc *nats.Conn, body []byte, hdr nats.Header) (json.RawMessage, error) {
	if !b.all {
		m, err := nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: b.subject, Data: body, Header: hdr})
		if err != nil {
			return nil, err
		}
		return replyJSON(m.Data, m.Header)
	}
	replies, err := publisher.Gather(ctx, nc, b.subject, body,
		publisher.MaxReplies(b.maxReplies), publisher.StallGap(b.stallGap), publisher.Header(hdr))
	if err != nil {
		return nil, err
	}
	size := 2
	for _, r := range replies {
		size += len(r.Data) + 1
	}
	arr := make([]byte, 0, size)
	arr = append(arr, '[')
	for i, r := range replies {
		v, err := replyJSON(r.Data, r.Header)
		if err != nil {
			return nil, fmt.Errorf("reply %d: %w", i+1, err)
		}
		if i > 0 {
			arr = append(arr, ',')
		}
		arr = append(arr, v...)
	}
	return append(arr, ']'), nil
}

// replyJSON checks one reply: a NATS micro service error header or a body
// that is not JSON is a branch error.
func replyJSON(data []byte, h nats.Header) (json.RawMessage, error) {
	if e := h.Get("Nats-Service-Error"); e != "" {
		if code := h.Get("Nats-Service-Error-Code"); code != "" {
			return nil, fmt.Errorf("service error %s: %s", code, e)
		}
		return nil, fmt.Errorf("service error: %s", e)
	}
	if len(data) == 0 {
		return nil, errors.New("empty reply, want JSON")
	}
	if !json.Valid(data) {
		return nil, errors.New("reply is not JSON")
	}
	return data, nil
}

// headerValue looks key up in h case-insensitively: NATS headers keep the
// case they were sent with, HTTP headers are canonicalised.
func headerValue(h nats.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// correlationID returns the caller's id when it is 1-128 printable ASCII
// characters without spaces (anything else could be an injection into
// logs), else a new random one.
func correlationID(h nats.Header) string {
	id := headerValue(h, CorrelationIDHeader)
	if id != "" && len(id) <= 128 {
		ok := true
		for i := 0; i < len(id); i++ {
			if id[i] <= ' ' || id[i] > '~' {
				ok = false
				break
			}
		}
		if ok {
			return id
		}
	}
	return rand.Text()
}

// MarshalJSON writes the reply contract:
//
//	{"<branch>": <value>, ..., "_meta": {"partial": bool, "correlation_id": "...",
//	  "branches": {"<branch>": {"status": "...", "latency_ms": n, "error": "...", "fallback": true}}}}
//
// Branches without a value are left out of the top level but always appear
// in _meta.
func (r *Result) MarshalJSON() ([]byte, error) {
	size := 64
	for _, b := range r.Branches {
		size += len(b.Name) + len(b.Value) + 80
	}
	buf := make([]byte, 0, size)
	buf = append(buf, '{')
	for _, b := range r.Branches {
		if b.Value == nil {
			continue
		}
		buf = strconv.AppendQuote(buf, b.Name) // names are [A-Za-z0-9_-]
		buf = append(buf, ':')
		buf = append(buf, b.Value...)
		buf = append(buf, ',')
	}
	buf = append(buf, `"_meta":`...)
	buf = r.appendMeta(buf)
	return append(buf, '}'), nil
}

func (r *Result) appendMeta(buf []byte) []byte {
	buf = append(buf, `{"partial":`...)
	buf = strconv.AppendBool(buf, r.Partial)
	buf = append(buf, `,"correlation_id":`...)
	buf = appendJSONString(buf, r.CorrelationID)
	buf = append(buf, `,"branches":{`...)
	for i, b := range r.Branches {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendQuote(buf, b.Name)
		buf = append(buf, `:{"status":"`...)
		buf = append(buf, b.Status...)
		buf = append(buf, `","latency_ms":`...)
		ms := math.Round(float64(b.Latency)/float64(time.Millisecond)*1000) / 1000
		buf = strconv.AppendFloat(buf, ms, 'f', -1, 64)
		if b.Err != nil {
			buf = append(buf, `,"error":`...)
			buf = appendJSONString(buf, b.Err.Error())
		}
		if b.Fallback {
			buf = append(buf, `,"fallback":true`...)
		}
		buf = append(buf, '}')
	}
	return append(buf, "}}"...)
}

func appendJSONString(buf []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always encodes
	return append(buf, q...)
}
