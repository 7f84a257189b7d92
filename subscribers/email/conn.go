package email

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/wneessen/go-mail"
)

// conn is one pooled SMTP connection: a go-mail Client, dialled once and
// then used for Send after Send. Only the goroutine holding the pool token
// touches it.
type conn struct {
	s      *Sender
	client *mail.Client
	gc     *guardConn // the open socket; nil when disconnected
	att    *attempt   // the running send's cancellation state
}

func newConn(s *Sender) (*conn, error) {
	c := &conn{s: s}
	smtp := s.cfg.SMTP
	opts := []mail.Option{
		mail.WithPort(smtp.Port),
		mail.WithTimeout(smtp.Timeout.D()),
		mail.WithTLSConfig(s.tlsConf),
		// We dial ourselves so a cancelled ctx can interrupt any SMTP
		// exchange (go-mail's Send takes no ctx) and implicit TLS works.
		mail.WithDialContextFunc(c.dial),
		// RSET after each accepted message is redundant (the transaction
		// is over) and costs two round trips; go-mail still resets after a
		// refused MAIL or RCPT.
		mail.WithoutRset(),
	}
	switch smtp.TLS {
	case TLSStartTLS:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	default: // none, or tls where the handshake happens in dial
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	}
	if smtp.Username != "" {
		// PLAIN or LOGIN, whichever the server offers. go-mail sends either
		// only over TLS or to localhost.
		opts = append(opts,
			mail.WithOpportunisticSMTPAuth(mail.SMTPAuthPlain, mail.SMTPAuthLogin),
			mail.WithUsername(smtp.Username),
			mail.WithPassword(smtp.Password.Value()))
	}
	client, err := mail.NewClient(smtp.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("email: %w", err)
	}
	c.client = client
	return c, nil
}

func (c *conn) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	smtp := c.s.cfg.SMTP
	var d net.Dialer
	raw, err := d.DialContext(ctx, network, net.JoinHostPort(smtp.Host, strconv.Itoa(smtp.Port)))
	if err != nil {
		return nil, err
	}
	g := &guardConn{Conn: raw}
	c.gc = g
	if c.att != nil {
		c.att.attach(g)
	}
	if smtp.TLS == TLSImplicit {
		tc := tls.Client(g, c.s.tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.drop()
			return nil, err
		}
		return tc, nil
	}
	return g, nil
}

// send delivers msg on this connection, dialling first if needed. aborted
// reports that ctx ended during the exchange; the connection is then gone.
func (c *conn) send(ctx context.Context, msg *mail.Msg) (aborted bool, err error) {
	a := &attempt{}
	c.att = a
	if c.gc != nil {
		a.attach(c.gc)
	}
	stop := context.AfterFunc(ctx, a.abort)
	err = c.sendOnce(ctx, msg)
	aborted = !stop()
	c.att = nil
	if aborted {
		c.drop() // its deadline is poisoned and the exchange half done
	}
	return aborted, err
}

func (c *conn) sendOnce(ctx context.Context, msg *mail.Msg) error {
	reused := c.gc != nil
	if reused {
		// go-mail checks a connection with NOOP before it extends the
		// deadline; an idle connection's deadline has long passed.
		_ = c.gc.SetDeadline(time.Now().Add(c.s.cfg.SMTP.Timeout.D()))
	} else if err := c.connect(ctx); err != nil {
		return err
	}
	err := c.client.Send(msg)
	var se *mail.SendError
	if err != nil && reused && errors.As(err, &se) && se.Reason == mail.ErrConnCheck && ctx.Err() == nil {
		// The server closed the idle connection (its timeout, a restart).
		// Nothing was sent, so a fresh connection may try once; this is
		// reconnecting, not retrying the delivery.
		c.drop()
		if err := c.connect(ctx); err != nil {
			return err
		}
		err = c.client.Send(msg)
	}
	if err != nil && !reusableAfter(err) {
		c.drop()
	}
	return err
}

func (c *conn) connect(ctx context.Context) error {
	if err := c.client.DialWithContext(ctx); err != nil {
		// go-mail leaves the socket open when EHLO, STARTTLS or AUTH fail.
		c.drop()
		return fmt.Errorf("connect to %s: %w", net.JoinHostPort(c.s.cfg.SMTP.Host, strconv.Itoa(c.s.cfg.SMTP.Port)), err)
	}
	return nil
}

// reusableAfter reports whether the session is still in a known state
// after err: a refusal of MAIL FROM or RCPT TO (go-mail then sends RSET) or
// a reply to the end of DATA (the transaction is over). Anything else - a
// broken socket, a refused DATA command, 421 "closing" - drops it.
func reusableAfter(err error) bool {
	var se *mail.SendError
	if !errors.As(err, &se) {
		return false
	}
	code := se.ErrorCode()
	if code < 400 || code == 421 {
		return false
	}
	switch se.Reason {
	case mail.ErrSMTPMailFrom, mail.ErrSMTPRcptTo, mail.ErrSMTPDataClose:
		return true
	}
	return false
}

// drop closes the socket without a QUIT: it is broken or mid-exchange.
func (c *conn) drop() {
	if c.gc != nil {
		_ = c.gc.Close()
		c.gc = nil
	}
}

// quit says goodbye politely, bounded by ctx and limit.
func (c *conn) quit(ctx context.Context, limit time.Duration) {
	if c.gc == nil {
		return
	}
	deadline := time.Now().Add(min(limit, 5*time.Second))
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.gc.SetDeadline(deadline)
	_ = c.client.Close()
	c.drop()
}

// attempt links one send's ctx to whatever socket the send uses, including
// one it dials after ctx was cancelled.
type attempt struct {
	mu      sync.Mutex
	aborted bool
	g       *guardConn
}

func (a *attempt) attach(g *guardConn) {
	a.mu.Lock()
	a.g = g
	aborted := a.aborted
	a.mu.Unlock()
	if aborted {
		g.abort()
	}
}

func (a *attempt) abort() {
	a.mu.Lock()
	a.aborted = true
	g := a.g
	a.mu.Unlock()
	if g != nil {
		g.abort()
	}
}

// longAgo is a deadline that has passed: it fails blocked reads and writes.
var longAgo = time.Unix(1, 0)

// guardConn is the socket under go-mail. Once aborted, every deadline set on
// it is in the past, so go-mail's own deadline updates cannot revive a
// cancelled exchange.
type guardConn struct {
	net.Conn
	mu      sync.Mutex
	aborted bool
}

func (g *guardConn) abort() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.aborted = true
	_ = g.Conn.SetDeadline(longAgo)
}

func (g *guardConn) SetDeadline(t time.Time) error { return g.setDeadline(t, g.Conn.SetDeadline) }

func (g *guardConn) SetReadDeadline(t time.Time) error {
	return g.setDeadline(t, g.Conn.SetReadDeadline)
}

func (g *guardConn) SetWriteDeadline(t time.Time) error {
	return g.setDeadline(t, g.Conn.SetWriteDeadline)
}

// setDeadline sets a deadline through set, unless the connection was
// aborted: then the deadline stays in the past.
func (g *guardConn) setDeadline(t time.Time, set func(time.Time) error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.aborted {
		t = longAgo
	}
	return set(t)
}
