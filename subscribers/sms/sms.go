// Package sms delivers notifications as text messages through Twilio's
// Messages API or any HTTP SMS gateway (the generic provider).
//
// One pooled keep-alive HTTP client serves every send. Errors carry the
// retry decision: throttling (429) and server errors (5xx) are retried,
// honouring Retry-After; a refused message (bad number, unsubscribed
// recipient, other 4xx) is hub.Permanent with the provider's code and
// message as the reason. The auth token is sent only in the Authorization
// header and never appears in an error.
package sms

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/render"
	"github.com/hubproject/hub/subscribers/internal/pace"
)

// Sender is the SMS channel; safe for concurrent use.
type Sender struct {
	cfg    Config
	client *http.Client
	limit  *pace.Limiter
	p      provider

	mu       sync.Mutex
	closed   bool
	inflight int
	drained  chan struct{} // closed when closed and no send runs
}

var (
	_ hub.Channel = (*Sender)(nil)
	_ hub.Closer  = (*Sender)(nil)
)

// ErrClosed is returned by Send after Close. It is not permanent.
var ErrClosed = errors.New("sms: sender closed")

// provider turns a message into a request and a response into the retry
// decision.
type provider interface {
	request(ctx context.Context, to, body, from string) (*http.Request, error)
	result(resp *http.Response, payload []byte, d *hub.Delivery) error
	defaultFrom() string
}

// Option changes a Sender.
type Option func(*options)

type options struct {
	client  *http.Client
	maxWait time.Duration
}

// WithHTTPClient replaces the pooled client (a proxy, custom TLS roots).
// Its Timeout is left as given.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.client = c } }

// WithMaxRateWait sets how long Send may block for the rate limit before it
// returns hub.Defer instead, giving the worker back (default 1s).
func WithMaxRateWait(d time.Duration) Option { return func(o *options) { o.maxWait = d } }

// New validates cfg (zero values take the defaults) and returns a Sender.
func New(cfg Config, opts ...Option) (*Sender, error) {
	o := options{maxWait: time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	cfg = cfg.withDefaults()
	if err := config.Check(&cfg); err != nil {
		return nil, fmt.Errorf("sms config: %w", err)
	}
	s := &Sender{
		cfg:     cfg,
		client:  o.client,
		limit:   pace.New("sms", cfg.RateLimit, o.maxWait),
		drained: make(chan struct{}),
	}
	if s.client == nil {
		s.client = newHTTPClient(cfg.Timeout.D())
	}
	switch cfg.Provider {
	case ProviderGeneric:
		t, err := bodyTemplate(cfg.Generic.Body)
		if err != nil {
			return nil, fmt.Errorf("sms config: generic.body: %w", err)
		}
		s.p = &generic{cfg: cfg.Generic, body: t}
	default:
		s.p = newTwilio(cfg.Twilio)
	}
	return s, nil
}

func newHTTPClient(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Keep a connection per concurrent worker alive; the default of 2 idle
	// connections per host would make every third worker reconnect.
	tr.MaxIdleConns = 64
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		// An API that redirects a POST is misconfigured; following would
		// turn it into a GET and lose the message.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Send texts d.Content.Text to d.Recipient and fills d.Outcome with the
// HTTP status and the provider's message id (Twilio's sid).
func (s *Sender) Send(ctx context.Context, d *hub.Delivery) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !s.begin() {
		return ErrClosed
	}
	defer s.end()
	if err := render.ValidPhone(d.Recipient); err != nil {
		return hub.Permanent(fmt.Errorf("sms: recipient: %w", err))
	}
	if strings.TrimSpace(d.Content.Text) == "" {
		return hub.Permanent(errors.New("sms: empty message body"))
	}
	from := s.p.defaultFrom()
	if d.Subscription != nil && d.Subscription.From != "" {
		from = d.Subscription.From
	}
	req, err := s.p.request(ctx, d.Recipient, d.Content.Text, from)
	if err != nil {
		return hub.Permanent(fmt.Errorf("sms: %w", err))
	}
	if err := s.limit.Wait(ctx); err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("sms: %w", redact(err))
	}
	payload, err := readBody(resp)
	if err != nil {
		return fmt.Errorf("sms: reading the response: %w", err)
	}
	d.Outcome = hub.Outcome{Status: resp.StatusCode}
	return s.p.result(resp, payload, d)
}

const maxResponse = 64 << 10

// readBody reads up to 64 KiB and drains a little more, so the keep-alive
// connection can be reused; a huge body costs a new connection instead.
func readBody(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	return b, err
}

// redact keeps the request URL's query string (a generic gateway may take
// its API key there) out of the error, but keeps what it wraps for errors.Is.
func redact(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	u, perr := url.Parse(ue.URL)
	if perr != nil {
		return ue.Err
	}
	u.RawQuery, u.User, u.Fragment = "", nil, ""
	return fmt.Errorf("%s %s: %w", ue.Op, u.String(), ue.Err)
}

func (s *Sender) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.inflight++
	return true
}

func (s *Sender) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	if s.closed && s.inflight == 0 {
		close(s.drained)
	}
}

// Close stops new sends, waits for running ones until ctx ends, and closes
// idle connections. It is idempotent.
func (s *Sender) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		if s.inflight == 0 {
			close(s.drained)
		}
	}
	s.mu.Unlock()
	select {
	case <-s.drained:
	case <-ctx.Done():
		return fmt.Errorf("sms: close: sends still running: %w", ctx.Err())
	}
	s.client.CloseIdleConnections()
	return nil
}

// retryable classifies a throttled or failed-on-the-server response: retried,
// after Retry-After when the server gave one.
func retryable(resp *http.Response, err error) error {
	if d, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		return hub.RetryAfter(err, d)
	}
	return err
}

// retryAfter parses Retry-After: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// snippet is the start of a response body for an error reason.
func snippet(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// generic is any HTTP gateway, the request body rendered from a template.
type generic struct {
	cfg  GenericConfig
	body *template.Template
}

func (g *generic) defaultFrom() string { return g.cfg.From }

func (g *generic) request(ctx context.Context, to, body, from string) (*http.Request, error) {
	var b strings.Builder
	if err := g.body.Execute(&b, bodyData(to, body, from)); err != nil {
		return nil, fmt.Errorf("generic body: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, strings.ToUpper(g.cfg.Method), g.cfg.URL, strings.NewReader(b.String()))
	if err != nil {
		return nil, err
	}
	for k, v := range g.cfg.Headers {
		req.Header.Set(k, v.Value())
	}
	req.Header.Set("Content-Type", g.cfg.ContentType)
	return req, nil
}

func (g *generic) result(resp *http.Response, payload []byte, d *hub.Delivery) error {
	code := resp.StatusCode
	// The body stays in the attempt record, not in the error: errors are
	// logged, and a gateway may echo the message or the number.
	d.Outcome.Response = snippet(payload)
	err := fmt.Errorf("sms gateway http %d (response in the attempt record)", code)
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500:
		return retryable(resp, err)
	case code >= 300 && code < 400:
		return hub.Permanent(fmt.Errorf("sms gateway http %d: redirect not followed; fix generic.url", code))
	}
	return hub.Permanent(err)
}
