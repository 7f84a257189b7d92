// Package email delivers notifications over SMTP with github.com/wneessen/go-mail.
//
// A Sender keeps a small pool of SMTP connections open and reuses them from
// one delivery to the next, because a TLS handshake and AUTH per message
// cost several round trips and relays throttle clients that reconnect for
// every mail. A connection that fails is dropped and redialled on its next
// use; one that went stale while idle is replaced transparently.
//
// Errors carry the retry decision: a 5xx reply is hub.Permanent, a 4xx reply
// or a connection problem is retried. Every message carries a Message-ID
// derived from the delivery id, the same on every retry, so receivers can
// discard duplicates.
package email

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wneessen/go-mail"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/render"
	"github.com/hubproject/hub/subscribers/internal/pace"
)

// Sender is the email channel. It is safe for concurrent use; Send blocks
// while every pooled connection is busy.
type Sender struct {
	cfg     Config
	tlsConf *tls.Config
	limit   *pace.Limiter

	// tokens holds one token per pooled connection: taking one is the
	// right to use a conn from idle.
	tokens chan struct{}
	mu     sync.Mutex
	idle   []*conn // LIFO, so a lightly loaded sender keeps reusing its warm connections

	closing   chan struct{}
	closeOnce sync.Once
	closeMu   sync.Mutex
	collected int // tokens Close has taken back
}

var (
	_ hub.Channel = (*Sender)(nil)
	_ hub.Closer  = (*Sender)(nil)
)

// ErrClosed is returned by Send after Close. It is not permanent: the
// delivery stays queued for the next run.
var ErrClosed = errors.New("email: sender closed")

// Option changes a Sender.
type Option func(*options)

type options struct {
	tlsConf *tls.Config
	maxWait time.Duration
}

// WithTLSConfig replaces the TLS settings built from the config (root CAs,
// skip-verify) with c. ServerName defaults to smtp.host.
func WithTLSConfig(c *tls.Config) Option { return func(o *options) { o.tlsConf = c } }

// WithMaxRateWait sets how long Send may block for the rate limit before it
// returns hub.Defer instead, giving the worker back (default 1s).
func WithMaxRateWait(d time.Duration) Option { return func(o *options) { o.maxWait = d } }

// New validates cfg (zero values take the defaults) and returns a Sender.
// It does not connect: connections are opened on first use.
func New(cfg Config, opts ...Option) (*Sender, error) {
	o := options{maxWait: time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	cfg = cfg.withDefaults()
	if err := config.Check(&cfg); err != nil {
		return nil, fmt.Errorf("email config: %w", err)
	}
	s := &Sender{
		cfg:     cfg,
		limit:   pace.New("email", cfg.RateLimit, o.maxWait),
		tokens:  make(chan struct{}, cfg.PoolSize),
		closing: make(chan struct{}),
	}
	tlsConf, err := cfg.tlsConfig(o.tlsConf)
	if err != nil {
		return nil, err
	}
	s.tlsConf = tlsConf
	for range cfg.PoolSize {
		c, err := newConn(s)
		if err != nil {
			return nil, err
		}
		s.idle = append(s.idle, c)
		s.tokens <- struct{}{}
	}
	return s, nil
}

func (c Config) tlsConfig(override *tls.Config) (*tls.Config, error) {
	if override != nil {
		t := override.Clone()
		if t.ServerName == "" {
			t.ServerName = c.SMTP.Host
		}
		return t, nil
	}
	t := &tls.Config{
		ServerName:         strings.Trim(c.SMTP.Host, "[]"),
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: c.SMTP.InsecureSkipVerify, //nolint:gosec // opt-in, documented as tests/dev only
	}
	if c.SMTP.RootCAFile != "" {
		roots, err := loadRoots(c.SMTP.RootCAFile)
		if err != nil {
			return nil, fmt.Errorf("email config: smtp.root_ca_file: %w", err)
		}
		t.RootCAs = roots
	}
	return t, nil
}

// Send delivers d to d.Recipient. It fills d.Outcome with the SMTP reply
// code and text.
func (s *Sender) Send(ctx context.Context, d *hub.Delivery) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.isClosing() {
		return ErrClosed
	}
	if err := render.ValidEmail(d.Recipient); err != nil {
		return hub.Permanent(fmt.Errorf("email: recipient: %w", err))
	}
	msg, err := s.message(d)
	if err != nil {
		return hub.Permanent(fmt.Errorf("email: %w", err))
	}
	if err := s.limit.Wait(ctx); err != nil {
		return err
	}
	c, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	aborted, err := c.send(ctx, msg)
	s.release(c)
	switch {
	case err == nil:
		d.Outcome = hub.Outcome{Status: 250, Response: clip(msg.ServerResponse())}
		return nil
	case aborted:
		// ctx ended mid-exchange: whatever the server said is moot and
		// the connection was dropped.
		return fmt.Errorf("email: send interrupted: %w", context.Cause(ctx))
	}
	return classify(err, d)
}

func (s *Sender) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// acquire waits for a free pooled connection.
func (s *Sender) acquire(ctx context.Context) (*conn, error) {
	select {
	case <-s.tokens:
	case <-ctx.Done():
		return nil, fmt.Errorf("email: waiting for a connection: %w", ctx.Err())
	case <-s.closing:
		return nil, ErrClosed
	}
	if s.isClosing() { // both were ready and select picked the token
		s.tokens <- struct{}{}
		return nil, ErrClosed
	}
	s.mu.Lock()
	c := s.idle[len(s.idle)-1]
	s.idle = s.idle[:len(s.idle)-1]
	s.mu.Unlock()
	return c, nil
}

func (s *Sender) release(c *conn) {
	if s.isClosing() {
		// Close may have given up waiting for this send; do not leave
		// the connection open behind it.
		c.quit(context.Background(), s.cfg.SMTP.Timeout.D())
	}
	s.mu.Lock()
	s.idle = append(s.idle, c)
	s.mu.Unlock()
	s.tokens <- struct{}{}
}

// Close stops new sends, waits for running ones (until ctx ends) and says
// QUIT on every pooled connection. It is idempotent; after a Close that
// timed out, a later Close finishes the job.
func (s *Sender) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { close(s.closing) })
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	for s.collected < s.cfg.PoolSize {
		select {
		case <-s.tokens:
			s.collected++
		case <-ctx.Done():
			return fmt.Errorf("email: close: %d sends still running: %w", s.cfg.PoolSize-s.collected, ctx.Err())
		}
		s.mu.Lock()
		c := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		s.mu.Unlock()
		c.quit(ctx, s.cfg.SMTP.Timeout.D())
	}
	return nil
}

// SMTPError is a reply from the server refusing a message.
type SMTPError struct {
	Code     int    // 451, 550 ...
	Enhanced string // RFC 3463 status such as "5.1.1"; "" if the server sent none
	Message  string // the server's text
	Stage    string // the command refused: "MAIL FROM", "RCPT TO", "DATA"
	Err      error  // go-mail's *mail.SendError
}

func (e *SMTPError) Error() string {
	var b strings.Builder
	b.WriteString("smtp ")
	b.WriteString(strconv.Itoa(e.Code))
	if e.Enhanced != "" {
		b.WriteByte(' ')
		b.WriteString(e.Enhanced)
	}
	b.WriteString(": ")
	b.WriteString(e.Message)
	if e.Stage != "" {
		b.WriteString(" (at ")
		b.WriteString(e.Stage)
		b.WriteByte(')')
	}
	return b.String()
}

func (e *SMTPError) Unwrap() error { return e.Err }

// Temporary reports whether the server asked to try again later (4xx).
func (e *SMTPError) Temporary() bool { return e.Code/100 == 4 }

// classify turns a failed send into the retry decision: 5xx permanent,
// 4xx and everything else (connection trouble, timeouts, a relay that
// refused our login) retried. A login failure is retried rather than
// dead-lettered because the message is fine; fixing the config delivers it.
func classify(err error, d *hub.Delivery) error {
	var se *mail.SendError
	if errors.As(err, &se) && se.ErrorCode() >= 400 {
		e := &SMTPError{
			Code:     se.ErrorCode(),
			Enhanced: se.EnhancedStatusCode(),
			Message:  replyText(se),
			Stage:    stage(se.Reason),
			Err:      se,
		}
		d.Outcome = hub.Outcome{Status: e.Code, Response: clip(e.Message)}
		if e.Code >= 500 {
			return hub.Permanent(e)
		}
		return e
	}
	var te *textproto.Error // a reply during connect: greeting, STARTTLS, AUTH
	if errors.As(err, &te) {
		d.Outcome = hub.Outcome{Status: te.Code, Response: clip(te.Msg)}
	}
	return fmt.Errorf("email: %w", err)
}

// replyText digs the server's text out of go-mail's error, which keeps
// the reply itself unexported: `sending SMTP RCPT TO command: 550 "5.1.1
// mailbox unavailable", affected recipient(s): ...` (net/textproto quotes
// the text).
func replyText(se *mail.SendError) string {
	s := se.Error()
	code := strconv.Itoa(se.ErrorCode()) + " "
	i := strings.Index(s, code)
	if i < 0 {
		return s
	}
	s = s[i+len(code):]
	if q, err := strconv.QuotedPrefix(s); err == nil {
		s, _ = strconv.Unquote(q)
	} else if j := strings.Index(s, ", affected "); j >= 0 {
		s = s[:j]
	}
	if enh := se.EnhancedStatusCode(); enh != "" {
		s = strings.TrimPrefix(s, enh+" ")
	}
	return strings.TrimSpace(s)
}

func stage(r mail.SendErrReason) string {
	switch r {
	case mail.ErrSMTPMailFrom:
		return "MAIL FROM"
	case mail.ErrSMTPRcptTo:
		return "RCPT TO"
	case mail.ErrSMTPData, mail.ErrSMTPDataClose, mail.ErrWriteContent:
		return "DATA"
	case mail.ErrSMTPReset:
		return "RSET"
	}
	return ""
}

func clip(s string) string {
	const maxResponse = 256
	if len(s) > maxResponse {
		return s[:maxResponse]
	}
	return s
}
