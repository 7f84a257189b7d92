// Package smtptest runs a real SMTP server (github.com/emersion/go-smtp) in
// the test process, for the email channel's tests and for any test that
// sends mail through the hub: a random loopback port, optional STARTTLS or
// implicit TLS with a self-signed certificate, optional AUTH PLAIN, and
// shutdown on t.Cleanup.
//
// The server stores every message it accepts and can be told to refuse
// commands (FailNext), to hold DATA (StallData) and to drop its connections
// (DropConnections). Some recipients behave specially, so that a test can
// pick the outcome per delivery:
//
//	reject@...  RCPT TO refused for good: 550 5.1.1 mailbox unavailable
//	later@...   RCPT TO refused for now: 451 4.2.0 mailbox busy
//	slow@...    RCPT TO not answered until the server stops (then 421 4.3.0)
//
// Import it from tests only.
package smtptest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/hubproject/hub/subscribers/internal/changes"
)

// Options configure a Server. The zero value is a plain-text server that
// needs no authentication.
type Options struct {
	// Username and Password, when Username is set, make AUTH PLAIN
	// required before MAIL FROM. go-smtp allows AUTH only over TLS, so set
	// StartTLS or ImplicitTLS as well.
	Username, Password string
	// StartTLS offers STARTTLS with a self-signed certificate (see CAFile).
	StartTLS bool
	// ImplicitTLS speaks TLS from the first byte (SMTPS, port 465 style).
	ImplicitTLS bool
}

// Stages FailNext can refuse.
const (
	StageMail = "MAIL"
	StageRcpt = "RCPT"
	StageData = "DATA"
)

// Message is one message the server accepted.
type Message struct {
	From string   // envelope sender (MAIL FROM)
	To   []string // envelope recipients (RCPT TO) that were accepted
	Data []byte   // the message as sent after DATA, headers and body
	TLS  bool     // sent over TLS (STARTTLS or implicit)
	User string   // the authenticated user, "" without AUTH
}

// Server is a running SMTP server. Its methods are safe for concurrent use.
type Server struct {
	t      testing.TB
	host   string
	port   int
	caFile string
	user   string
	pass   string
	srv    *smtp.Server
	ln     net.Listener
	served chan struct{} // closed when Serve has returned

	closeOnce sync.Once
	stopped   chan struct{} // closed by Close: releases slow@ and stalled DATA

	mu       sync.Mutex
	msgs     []Message
	accepted int
	conns    map[*trackedConn]struct{}
	fails    map[string][]*smtp.SMTPError // stage -> replies to give next
	stall    chan struct{}                // non-nil: DATA blocks until it is closed
	stalled  int                          // DATA commands blocked right now
	changed  changes.Signal               // closed and replaced on every change
}

// Start starts a server on 127.0.0.1 and a random port; it stops on
// t.Cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.StartTLS && opts.ImplicitTLS {
		t.Fatal("smtptest: StartTLS and ImplicitTLS are exclusive")
	}
	s := &Server{
		t:       t,
		user:    opts.Username,
		pass:    opts.Password,
		served:  make(chan struct{}),
		stopped: make(chan struct{}),
		conns:   map[*trackedConn]struct{}{},
		fails:   map[string][]*smtp.SMTPError{},
		changed: changes.New(),
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{s: s, conn: c}, nil
	}))
	srv.Domain = "localhost"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("smtptest: listen: %v", err)
	}
	// Connections are tracked below TLS, so that go-smtp still sees a
	// *tls.Conn for implicit TLS.
	var ln net.Listener = &trackingListener{Listener: raw, s: s}
	if opts.StartTLS || opts.ImplicitTLS {
		cert, caPEM := selfSigned(t)
		s.caFile = filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(s.caFile, caPEM, 0o600); err != nil {
			t.Fatalf("smtptest: %v", err)
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if opts.StartTLS {
			srv.TLSConfig = cfg
		} else {
			ln = tls.NewListener(ln, cfg)
		}
	}
	s.srv, s.ln = srv, ln
	s.host, s.port = "127.0.0.1", raw.Addr().(*net.TCPAddr).Port
	go func() {
		defer close(s.served)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(s.Close)
	return s
}

// Host is the address to dial: 127.0.0.1.
func (s *Server) Host() string { return s.host }

// Port is the port the server listens on.
func (s *Server) Port() int { return s.port }

// Addr is Host:Port.
func (s *Server) Addr() string { return net.JoinHostPort(s.host, strconv.Itoa(s.port)) }

// CAFile is the path of a PEM file holding the server's self-signed
// certificate, which is its own CA (for the email channel's
// smtp.root_ca_file); "" without TLS. The certificate is valid for
// 127.0.0.1 and localhost.
func (s *Server) CAFile() string { return s.caFile }

// Close closes every client connection and stops the server, releasing
// anything StallData or a slow@ recipient holds. Start registers it with
// t.Cleanup; calling it earlier simulates a relay that went away. It is
// idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		close(s.stopped)
		s.stall = nil
		s.dropLocked()
		s.changed.NotifyLocked()
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Shutdown waits for the connection goroutines, which end now
		// that their connections are closed.
		if err := s.srv.Shutdown(ctx); err != nil {
			s.t.Errorf("smtptest: shutdown: %v", err)
		}
		// Shutdown closes only listeners Serve has registered; if nothing
		// connected, Serve may not have got that far yet.
		_ = s.ln.Close()
		<-s.served
	})
}

// FailNext makes the next n commands of a stage (StageMail "MAIL",
// StageRcpt "RCPT" or StageData "DATA") fail with the given reply, e.g.
// FailNext("RCPT", 1, 451, [3]int{4, 3, 0}, "try again later"). Failures
// queue up across calls. An unknown stage panics.
func (s *Server) FailNext(stage string, n int, code int, enhanced [3]int, msg string) {
	switch stage {
	case StageMail, StageRcpt, StageData:
	default:
		panic(fmt.Sprintf("smtptest: FailNext: unknown stage %q (want MAIL, RCPT or DATA)", stage))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.fails[stage] = append(s.fails[stage], &smtp.SMTPError{Code: code, EnhancedCode: enhanced, Message: msg})
	}
}

func (s *Server) takeFail(stage string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.fails[stage]
	if len(q) == 0 {
		return nil
	}
	s.fails[stage] = q[1:]
	return q[0]
}

// StallData makes every DATA command, after the message has been read,
// wait without answering until release is called or the server stops.
// WaitStalled tells when a DATA is being held. release is idempotent.
func (s *Server) StallData() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	s.stall = ch
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			close(ch)
			if s.stall == ch {
				s.stall = nil
			}
		})
	}
}

// WaitStalled waits until at least n DATA commands are being held by
// StallData at the same time, or ctx ends.
func (s *Server) WaitStalled(ctx context.Context, n int) error {
	err := s.changed.Wait(ctx, &s.mu, s.stopped, func() bool { return s.stalled >= n })
	if err != nil {
		return fmt.Errorf("smtptest: waiting for %d stalled DATA commands: %w", n, err)
	}
	return nil
}

// DropConnections closes every open connection from the server side, as
// an idle timeout or a relay restart would. The server keeps listening.
func (s *Server) DropConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked()
}

func (s *Server) dropLocked() {
	for c := range s.conns {
		_ = c.Conn.Close() // not c.Close, which takes s.mu
		delete(s.conns, c)
	}
}

// Connections is how many connections the server has accepted so far.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Messages returns the messages accepted so far, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// WaitMessages waits until at least n messages have been accepted in total
// and returns all of them. When ctx ends or the server stops first, it
// returns those there are and an error.
func (s *Server) WaitMessages(ctx context.Context, n int) ([]Message, error) {
	err := s.changed.Wait(ctx, &s.mu, s.stopped, func() bool { return len(s.msgs) >= n })
	msgs := s.Messages()
	if err != nil {
		return msgs, fmt.Errorf("smtptest: got %d messages, want %d: %w", len(msgs), n, err)
	}
	return msgs, nil
}

// trackingListener counts accepted connections and keeps the open ones, for
// DropConnections and Close.
type trackingListener struct {
	net.Listener
	s *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, s: l.s}
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	l.s.accepted++
	select {
	case <-l.s.stopped:
		_ = c.Close() // accepted while stopping: Close has passed
	default:
		l.s.conns[tc] = struct{}{}
	}
	l.s.changed.NotifyLocked()
	return tc, nil
}

// trackedConn forgets itself on Close.
type trackedConn struct {
	net.Conn
	s *Server
}

func (c *trackedConn) Close() error {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}

type session struct {
	s    *Server
	conn *smtp.Conn
	from string
	to   []string
	user string
}

func (se *session) AuthMechanisms() []string {
	if se.s.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (se *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != se.s.user || pass != se.s.pass {
			return smtp.ErrAuthFailed
		}
		se.user = user
		return nil
	}), nil
}

func (se *session) Mail(from string, _ *smtp.MailOptions) error {
	if se.s.user != "" && se.user == "" {
		return smtp.ErrAuthRequired
	}
	if err := se.s.takeFail(StageMail); err != nil {
		return err
	}
	se.from = from
	return nil
}

// Rcpt refuses reject@ (550) and later@ (451) recipients, and does not
// answer slow@ ones until the server stops.
func (se *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := se.s.takeFail(StageRcpt); err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(to, "reject@"):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "mailbox unavailable"}
	case strings.HasPrefix(to, "later@"):
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "mailbox busy"}
	case strings.HasPrefix(to, "slow@"):
		<-se.s.stopped
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "shutting down"}
	}
	se.to = append(se.to, to)
	return nil
}

func (se *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s := se.s
	s.mu.Lock()
	stall := s.stall
	if stall != nil {
		s.stalled++
		s.changed.NotifyLocked()
	}
	s.mu.Unlock()
	if stall != nil {
		select {
		case <-stall:
		case <-s.stopped:
		}
		s.mu.Lock()
		s.stalled--
		s.changed.NotifyLocked()
		s.mu.Unlock()
	}
	if err := s.takeFail(StageData); err != nil {
		return err
	}
	_, isTLS := se.conn.TLSConnectionState()
	s.mu.Lock()
	s.msgs = append(s.msgs, Message{From: se.from, To: se.to, Data: b, TLS: isTLS, User: se.user})
	s.changed.NotifyLocked()
	s.mu.Unlock()
	return nil
}

func (se *session) Reset()        { se.from, se.to = "", nil }
func (se *session) Logout() error { return nil }

// selfSigned makes a certificate for 127.0.0.1 and localhost that is its
// own CA.
func selfSigned(t testing.TB) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("smtptest: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hub test smtp"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("smtptest: %v", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatalf("smtptest: %v", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("smtptest: %v", err)
	}
	return cert, certPEM
}
