// Package webhook is the hub's webhook channel: it POSTs each delivery's
// CloudEvent to the subscription's URL, signed per the Standard Webhooks
// spec (https://www.standardwebhooks.com), and turns the answer into the
// hub's retry decision.
//
// One pooled keep-alive transport serves every endpoint. Redirects are
// never followed. An SSRF guard in the dialer refuses internal addresses
// (see Guard). A circuit breaker per endpoint stops requests to an endpoint
// that keeps failing and defers its deliveries without spending attempts,
// and a subscription's rate_limit is enforced per subscription.
//
// Each request carries webhook-id (the delivery id, stable across
// retries), webhook-timestamp and webhook-signature (one "v1,<base64
// HMAC-SHA256>" per secret of the subscription, for rotation), plus
// Content-Type application/cloudevents+json, User-Agent hub/<version>, the
// subscription's headers and the event's traceparent. Receivers verify it
// with the sub-package verify, or with any Standard Webhooks library.
//
// Send classifies the answer with the hub's error classes:
//
//	2xx                      delivered (nil)
//	3xx                      retried on the schedule (redirects are not followed)
//	408, 429, 5xx            retried; after Retry-After (seconds or date) when given: hub.RetryAfter
//	410 Gone                 hub.Gone: dead-lettered, subscription disabled
//	other 4xx                hub.Permanent: dead-lettered
//	network error, timeout   retried on the schedule
//	SSRF guard refusal       hub.Permanent
//	breaker open, rate limit hub.Defer: waits without spending an attempt
//
// The status and the first max_response_bytes of the body go to
// Delivery.Outcome. Errors name the endpoint's host, never the full URL
// (it may carry a token), the secret or the body.
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
)

// ContentType is the body's media type: a structured-mode CloudEvent.
const ContentType = "application/cloudevents+json"

// Transport limits that are not worth a config key.
const (
	dialTimeout        = 10 * time.Second
	tlsTimeout         = 10 * time.Second
	idleConnTimeout    = 90 * time.Second
	maxIdleConns       = 512      // across all endpoints; each idle conn costs two goroutines and buffers
	maxResponseHeaders = 64 << 10 // a hostile receiver cannot make us buffer megabytes of headers
	maxDrainBytes      = 64 << 10 // read this much of an unread body to keep the connection; more closes it
	maxRetryAfter      = 24 * time.Hour
)

// Sender is the webhook channel. It implements hub.Channel and hub.Closer
// and is safe for concurrent use.
type Sender struct {
	cfg       Config
	guard     *Guard
	transport *http.Transport
	client    *http.Client
	log       zerolog.Logger
	userAgent string
	breakers  *lru[*breaker] // nil when the breaker is disabled
	flights   *lru[*flight]
	limiters  *lru[*rate.Limiter]
	closed    atomic.Bool
}

var (
	_ hub.Channel = (*Sender)(nil)
	_ hub.Gate    = (*Sender)(nil)
	_ hub.Closer  = (*Sender)(nil)
)

// Option configures a Sender.
type Option func(*options)

type options struct {
	log     zerolog.Logger
	version string
}

// WithLogger sets the logger (default: none). The sender logs circuit
// breaker state changes only; delivery errors are returned, not logged.
func WithLogger(l zerolog.Logger) Option { return func(o *options) { o.log = l } }

// WithVersion sets the hub version sent in the User-Agent (hub/<version>).
func WithVersion(v string) Option { return func(o *options) { o.version = v } }

// New validates cfg and returns a Sender.
func New(cfg Config, opts ...Option) (*Sender, error) {
	if err := config.Check(&cfg); err != nil {
		return nil, fmt.Errorf("webhook config: %w", err)
	}
	o := options{log: zerolog.Nop(), version: "dev"}
	for _, opt := range opts {
		opt(&o)
	}
	guard, err := NewGuard(cfg.AllowPrivateNetworks, cfg.AllowCIDRs)
	if err != nil {
		return nil, fmt.Errorf("webhook config: allow_cidrs: %w", err)
	}
	dialer := &net.Dialer{Timeout: min(dialTimeout, cfg.Timeout.D()), KeepAlive: 30 * time.Second}
	if !cfg.AllowPrivateNetworks {
		dialer.Control = guard.control
	}
	tr := &http.Transport{
		// No proxy, ever: through a proxy the guard would only see the
		// proxy's address, not the endpoint's.
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true, // a custom DialContext turns HTTP/2 off unless asked
		MaxIdleConns:           max(maxIdleConns, cfg.MaxIdleConnsPerHost),
		MaxIdleConnsPerHost:    cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:        idleConnTimeout,
		TLSHandshakeTimeout:    tlsTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: maxResponseHeaders,
		// We read only the first bytes of a response; do not ask for gzip.
		DisableCompression: true,
	}
	s := &Sender{
		cfg:       cfg,
		guard:     guard,
		transport: tr,
		client: &http.Client{
			Transport: tr,
			// A redirect is a failure: following it would let an endpoint
			// point the hub anywhere, and the signature is not for it.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		log:       o.log.With().Str("channel", "webhook").Logger(),
		userAgent: "hub/" + o.version,
		limiters:  newLRU[*rate.Limiter](maxTracked),
		flights:   newLRU[*flight](maxTracked),
	}
	if cfg.Breaker.Enabled {
		s.breakers = newLRU[*breaker](maxTracked)
	}
	return s, nil
}

// CheckAddr reports whether the SSRF guard lets this sender connect to ip:
// nil, or a *RefusedError naming the range.
func (s *Sender) CheckAddr(ip netip.Addr) error { return s.guard.Check(ip) }

// ErrCircuitOpen is wrapped in the hub.Defer error of a Send the endpoint's
// circuit breaker stopped: nothing was sent.
var ErrCircuitOpen = errors.New("circuit breaker open")

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("webhook: sender closed")

// Close releases idle connections. It is idempotent; Sends still in flight
// finish, and Sends after Close return ErrClosed (a retryable error).
func (s *Sender) Close(context.Context) error {
	if !s.closed.Swap(true) {
		s.transport.CloseIdleConnections()
	}
	return nil
}

// Blocked reports whether every send to sub's endpoint would be deferred
// now by its circuit breaker, and until when (hub.Gate). A subscription
// whose URL comes from its recipients is never reported blocked.
func (s *Sender) Blocked(sub *hub.Subscription) (time.Time, bool) {
	if s.breakers == nil || sub == nil || sub.URL == "" {
		return time.Time{}, false
	}
	u, err := parseEndpoint(sub.URL)
	if err != nil {
		return time.Time{}, false
	}
	b, ok := s.breakers.peek(endpointKey(u))
	if !ok {
		return time.Time{}, false
	}
	return b.blocked()
}

// Send POSTs d.EventJSON to the subscription's URL. See the package
// documentation for how answers are classified.
func (s *Sender) Send(ctx context.Context, d *hub.Delivery) (err error) {
	if s.closed.Load() {
		return ErrClosed
	}
	if d == nil || d.Subscription == nil {
		return hub.Permanent(errors.New("webhook: delivery has no subscription"))
	}
	if d.ID == "" || !validHeaderValue(d.ID) {
		return hub.Permanent(errors.New("webhook: delivery id is empty or not usable as webhook-id"))
	}
	sub := d.Subscription
	raw := sub.URL
	if raw == "" {
		raw = d.Recipient
	}
	u, err := parseEndpoint(raw)
	if err != nil {
		return hub.Permanent(fmt.Errorf("webhook subscription %s: %w", sub.ID, err))
	}
	keys, err := ParseSecrets(sub.Secret.Value())
	if err != nil {
		return hub.Permanent(fmt.Errorf("webhook %s: subscription %s secret: %w", u.Host, sub.ID, err))
	}
	if err := checkHeaders(sub.Headers); err != nil {
		return hub.Permanent(fmt.Errorf("webhook %s: subscription %s: %w", u.Host, sub.ID, err))
	}

	if s.breakers != nil {
		key := endpointKey(u)
		b := s.breakers.get(key, func() *breaker { return newBreaker(key, s.cfg.Breaker, s.cfg.Timeout.D()+rateLimitMaxWait, s.log) })
		done, berr := b.allow()
		if berr != nil {
			detail := "after repeated failures"
			if errors.Is(berr, gobreaker.ErrTooManyRequests) {
				detail = "(half-open: waiting for the probe request)"
			}
			return hub.Defer(fmt.Errorf("webhook %s: %w %s; not sent", u.Host, ErrCircuitOpen, detail), b.wait())
		}
		defer func() { done(breakerResult(ctx, err)) }()
	}

	if err := s.waitRate(ctx, sub, u.Host); err != nil {
		return err
	}
	fl := s.flights.get(endpointKey(u), newFlight)
	if !fl.enter(s.cfg.StalledMaxInFlight) {
		return hub.Defer(fmt.Errorf("webhook %s: endpoint stalled with %d requests in flight; not sent", u.Host, s.cfg.StalledMaxInFlight), stallDefer)
	}
	err = s.post(ctx, d, u, keys)
	fl.leave()
	if s.closed.Load() {
		// Closed while this request was out: its connection went back to
		// the pool after Close emptied it.
		s.transport.CloseIdleConnections()
	}
	return err
}

// breakerResult tells the breaker what a Send's error says about the
// endpoint: answers (2xx, and 4xx which are the sender's fault) are
// successes; retryable failures count; what never reached the endpoint,
// or was cut short by the caller, is excluded.
func breakerResult(ctx context.Context, err error) error {
	var refused *RefusedError
	_, deferred := hub.DeferDelay(err)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil, deferred, errors.As(err, &refused):
		return errBreakerNotSent
	case hub.IsPermanent(err):
		return nil
	}
	return errBreakerFailed
}

// waitRate enforces the subscription's rate limit: a short wait blocks,
// a long one defers the delivery.
func (s *Sender) waitRate(ctx context.Context, sub *hub.Subscription, host string) error {
	perSecond := sub.RateLimit
	if perSecond <= 0 {
		return nil
	}
	lim := s.limiters.get(sub.ID, func() *rate.Limiter {
		return rate.NewLimiter(rate.Limit(perSecond), burstFor(perSecond))
	})
	if lim.Limit() != rate.Limit(perSecond) { // changed through the API
		lim.SetLimit(rate.Limit(perSecond))
		lim.SetBurst(burstFor(perSecond))
	}
	now := time.Now()
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		return hub.Defer(fmt.Errorf("webhook %s: subscription %s: rate limiter refused", host, sub.ID), time.Second)
	}
	delay := r.DelayFrom(now)
	if delay <= 0 {
		return nil
	}
	if delay > rateLimitMaxWait {
		r.CancelAt(now)
		return hub.Defer(fmt.Errorf("webhook %s: subscription %s is over its rate limit of %g/s", host, sub.ID, perSecond), delay)
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return fmt.Errorf("webhook %s: %w", host, ctx.Err())
	}
}

// post makes the request and classifies the answer.
func (s *Sender) post(ctx context.Context, d *hub.Delivery, u *url.URL, keys [][]byte) error {
	host := u.Host
	timeout := s.cfg.Timeout.D()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	d.Outcome = hub.Outcome{}
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, u.String(), bytes.NewReader(d.EventJSON))
	if err != nil {
		return hub.Permanent(fmt.Errorf("webhook %s: %w", host, err))
	}
	h := req.Header
	for k, v := range d.Subscription.Headers {
		h.Set(k, v)
	}
	now := time.Now()
	h.Set("Content-Type", ContentType)
	h.Set("User-Agent", s.userAgent)
	h.Set(HeaderID, d.ID)
	h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	h.Set(HeaderSignature, signKeys(keys, d.ID, now.Unix(), d.EventJSON))
	if d.Event != nil {
		// W3C trace context, from the CloudEvents distributed tracing extension.
		for _, k := range [...]string{"traceparent", "tracestate"} {
			if v, ok := d.Event.Extensions[k].(string); ok && v != "" && validHeaderValue(v) {
				h.Set(k, v)
			}
		}
	}
	// A nil Idempotency-Key marks the POST as safe to replay without
	// sending the header: the transport then retries it on a fresh
	// connection when a kept-alive one turns out to be closed. Receivers
	// dedup on webhook-id, so a replay is harmless.
	h["Idempotency-Key"] = nil

	resp, err := s.client.Do(req)
	if err != nil {
		return requestError(ctx, rctx, host, timeout, err)
	}
	defer func() {
		// Drain a bounded amount so the connection can be reused.
		_, _ = io.CopyN(io.Discard, resp.Body, maxDrainBytes)
		_ = resp.Body.Close()
	}()

	d.Outcome = hub.Outcome{Status: resp.StatusCode}
	if n := s.cfg.MaxResponseBytes; n > 0 {
		buf := make([]byte, n)
		// A body that breaks off does not change the status already read.
		got, _ := io.ReadFull(resp.Body, buf)
		d.Outcome.Response = strings.ToValidUTF8(string(buf[:got]), "\uFFFD")
	}
	return classify(host, resp.StatusCode, resp.Header.Get("Retry-After"), now)
}

func statusOK(code int) bool { return code >= 200 && code < 300 }

// requestError classifies a failed request: the caller's cancellation is
// returned as such, an SSRF refusal is permanent, anything else (DNS,
// connect, TLS, timeout, reset) is retried.
func requestError(ctx, rctx context.Context, host string, timeout time.Duration, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("webhook %s: %w", host, ctx.Err())
	}
	// url.Error repeats the full URL, which may carry a token in its path
	// or query; errors name the host only.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var refused *RefusedError
	if errors.As(err, &refused) {
		return hub.Permanent(fmt.Errorf("webhook %s: %w", host, refused))
	}
	if errors.Is(rctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("webhook %s: no response within %s: %w", host, timeout, err)
	}
	return fmt.Errorf("webhook %s: %w", host, err)
}

// StatusError is a non-2xx answer from an endpoint. Send returns it
// wrapped with the retry decision.
type StatusError struct {
	Host string // host[:port] of the endpoint
	Code int    // HTTP status code
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("webhook %s: %d %s", e.Host, e.Code, http.StatusText(e.Code))
	if e.Code >= 300 && e.Code < 400 {
		msg += " (redirects are not followed; point the subscription at the final URL)"
	}
	return strings.TrimSpace(msg)
}

// classify turns a status code into the retry decision:
// 2xx delivered; 410 gone; other 4xx except 408 and 429 permanent;
// 408, 429 and 5xx retried, after Retry-After when given; 3xx and anything
// else retried on the schedule.
func classify(host string, code int, retryAfter string, now time.Time) error {
	if statusOK(code) {
		return nil
	}
	err := &StatusError{Host: host, Code: code}
	switch {
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500 && code < 600:
		if d, ok := parseRetryAfter(retryAfter, now); ok {
			return hub.RetryAfter(err, d)
		}
		return err
	case code == http.StatusGone:
		return hub.Gone(err)
	case code >= 400 && code < 500:
		return hub.Permanent(err)
	}
	return err
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true // too many digits for int64 is still "a long time"
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), maxRetryAfter), true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
