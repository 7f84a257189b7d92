package email_test

import (
	"context"
	"errors"
	"fmt"
	netmail "net/mail"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/subscribers/email"
	"github.com/hubproject/hub/subscribers/email/smtptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func baseConfig(srv *smtptest.Server) email.Config {
	cfg := email.DefaultConfig()
	cfg.SMTP.Host = srv.Host()
	cfg.SMTP.Port = srv.Port()
	cfg.SMTP.TLS = email.TLSNone
	cfg.SMTP.Timeout = config.Duration(30 * time.Second)
	cfg.From = "hub <hub@example.com>"
	return cfg
}

func newSender(t testing.TB, cfg email.Config, opts ...email.Option) *email.Sender {
	t.Helper()
	s, err := email.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func delivery(id, to string) *hub.Delivery {
	return &hub.Delivery{
		ID:           id,
		Recipient:    to,
		Subscription: &hub.Subscription{ID: "order-confirmation", Channel: "email"},
		Content:      hub.Content{Subject: "Order 42 ✓", Text: "Hi Ann,\nyour order shipped.", HTML: "<p>Hi <b>Ann</b></p>"},
		Attempt:      1,
	}
}

// decode takes a received message apart, failing the test if it cannot.
func decode(t testing.TB, m smtptest.Message) smtptest.Content {
	t.Helper()
	c, err := m.Decode()
	if err != nil {
		t.Fatalf("%v\n%s", err, m.Data)
	}
	return c
}

// waitMessages waits up to 10s for n messages in total.
func waitMessages(t testing.TB, srv *smtptest.Server, n int) []smtptest.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, err := srv.WaitMessages(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// waitStalled waits up to 10s for a DATA command held by StallData.
func waitStalled(t testing.TB, srv *smtptest.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.WaitStalled(ctx, 1); err != nil {
		t.Fatal(err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestDeliversMultipartMessage(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	cfg := baseConfig(srv)
	cfg.ReplyTo = "support@example.com"
	s := newSender(t, cfg)
	d := delivery("01HZX/order-confirmation/ann@example.com", "Ann Lee <ann@example.com>")
	if err := s.Send(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if d.Outcome.Status != 250 {
		t.Errorf("Outcome = %+v", d.Outcome)
	}
	msgs := waitMessages(t, srv, 1)
	got := msgs[0]
	if got.From != "hub@example.com" || len(got.To) != 1 || got.To[0] != "ann@example.com" {
		t.Errorf("envelope from %q to %q", got.From, got.To)
	}
	p := decode(t, got)
	if from, err := p.Header.AddressList("From"); err != nil || from[0].Address != "hub@example.com" || from[0].Name != "hub" {
		t.Errorf("From = %v, %v", from, err)
	}
	if to, err := p.Header.AddressList("To"); err != nil || to[0].Address != "ann@example.com" || to[0].Name != "Ann Lee" {
		t.Errorf("To = %v, %v", to, err)
	}
	if rt, err := p.Header.AddressList("Reply-To"); err != nil || rt[0].Address != "support@example.com" {
		t.Errorf("Reply-To = %v, %v", rt, err)
	}
	if p.Subject != "Order 42 ✓" {
		t.Errorf("Subject = %q", p.Subject)
	}
	if id := p.Header.Get("Message-Id"); id != "<01HZX/order-confirmation/ann=40example.com@hub>" {
		t.Errorf("Message-ID = %q", id)
	}
	if p.Header.Get("Auto-Submitted") != "auto-generated" || p.Header.Get("Date") == "" {
		t.Errorf("headers: %v", p.Header)
	}
	if p.Parts != 2 || p.Text != "Hi Ann,\r\nyour order shipped." && p.Text != "Hi Ann,\nyour order shipped." {
		t.Errorf("text part (%d parts) = %q", p.Parts, p.Text)
	}
	if p.HTML != "<p>Hi <b>Ann</b></p>" {
		t.Errorf("html part = %q", p.HTML)
	}
}

func TestSinglePartAndOverrides(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	s := newSender(t, baseConfig(srv))

	text := delivery("t", "a@example.com")
	text.Content.HTML = ""
	text.Subscription.From = "Billing <billing@example.com>"
	text.Subscription.ReplyTo = "noreply@example.com"
	text.Content.Subject = "two\r\nlines"
	html := delivery("h", "b@example.com")
	html.Content.Text = ""
	for _, d := range []*hub.Delivery{text, html} {
		if err := s.Send(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	msgs := waitMessages(t, srv, 2)
	pt, ph := decode(t, msgs[0]), decode(t, msgs[1])
	if pt.Parts != 1 || !strings.HasPrefix(pt.Text, "Hi Ann") || pt.HTML != "" {
		t.Errorf("text-only: %+v", pt)
	}
	if msgs[0].From != "billing@example.com" || pt.Header.Get("From") != `"Billing" <billing@example.com>` {
		t.Errorf("subscription from not used: %q / %q", msgs[0].From, pt.Header.Get("From"))
	}
	if rt, _ := pt.Header.AddressList("Reply-To"); len(rt) != 1 || rt[0].Address != "noreply@example.com" {
		t.Errorf("Reply-To = %v", rt)
	}
	if pt.Subject != "two lines" {
		t.Errorf("subject = %q, want one line", pt.Subject)
	}
	if ph.Parts != 1 || ph.HTML != "<p>Hi <b>Ann</b></p>" || ph.Text != "" {
		t.Errorf("html-only: %+v", ph)
	}
}

func TestStartTLSAndAuth(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{StartTLS: true, Username: "hub", Password: "s3cret"})
	cfg := baseConfig(srv)
	cfg.SMTP.TLS = email.TLSStartTLS
	cfg.SMTP.RootCAFile = srv.CAFile()
	cfg.SMTP.Username = "hub"
	cfg.SMTP.Password = "s3cret"
	s := newSender(t, cfg)
	for i := range 3 {
		if err := s.Send(context.Background(), delivery("tls-"+itoa(i), "ann@example.com")); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range waitMessages(t, srv, 3) {
		if !m.TLS || m.User != "hub" {
			t.Errorf("message sent with TLS=%v user=%q", m.TLS, m.User)
		}
	}
	if n := srv.Connections(); n != 1 {
		t.Errorf("%d connections for 3 sequential mails, want 1", n)
	}

	t.Run("wrong password is retried, not dead-lettered", func(t *testing.T) {
		bad := cfg
		bad.SMTP.Password = "wrong"
		s := newSender(t, bad)
		d := delivery("bad-pass", "ann@example.com")
		err := s.Send(context.Background(), d)
		if err == nil || hub.IsPermanent(err) || !strings.Contains(err.Error(), "535") {
			t.Fatalf("err = %v", err)
		}
		if strings.Contains(err.Error(), "wrong") {
			t.Errorf("error leaks the password: %v", err)
		}
		if d.Outcome.Status != 535 {
			t.Errorf("Outcome = %+v", d.Outcome)
		}
	})
	t.Run("unknown certificate is refused", func(t *testing.T) {
		untrusted := cfg
		untrusted.SMTP.RootCAFile = ""
		s := newSender(t, untrusted)
		err := s.Send(context.Background(), delivery("x", "ann@example.com"))
		if err == nil || hub.IsPermanent(err) || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("insecure_skip_verify", func(t *testing.T) {
		skip := cfg
		skip.SMTP.RootCAFile = ""
		skip.SMTP.InsecureSkipVerify = true
		s := newSender(t, skip)
		if err := s.Send(context.Background(), delivery("skip", "ann@example.com")); err != nil {
			t.Fatal(err)
		}
	})
}

func TestStartTLSRequiredByConfig(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{}) // offers no STARTTLS
	cfg := baseConfig(srv)
	cfg.SMTP.TLS = email.TLSStartTLS
	s := newSender(t, cfg)
	err := s.Send(context.Background(), delivery("x", "ann@example.com"))
	if err == nil || hub.IsPermanent(err) || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("err = %v", err)
	}
	if len(srv.Messages()) != 0 {
		t.Fatal("sent in clear text")
	}
}

func TestImplicitTLS(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{ImplicitTLS: true, Username: "hub", Password: "pw"})
	cfg := baseConfig(srv)
	cfg.SMTP.TLS = email.TLSImplicit
	cfg.SMTP.RootCAFile = srv.CAFile()
	cfg.SMTP.Username, cfg.SMTP.Password = "hub", "pw"
	s := newSender(t, cfg)
	if err := s.Send(context.Background(), delivery("smtps", "ann@example.com")); err != nil {
		t.Fatal(err)
	}
	if m := waitMessages(t, srv, 1)[0]; !m.TLS || m.User != "hub" {
		t.Fatalf("TLS=%v user=%q", m.TLS, m.User)
	}
}

func TestConnectionsAreReused(t *testing.T) {
	t.Run("concurrent", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{})
		cfg := baseConfig(srv)
		cfg.PoolSize = 2
		s := newSender(t, cfg)
		const workers, each = 8, 10
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					if err := s.Send(context.Background(), delivery("c-"+itoa(w)+"-"+itoa(i), "ann@example.com")); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		waitMessages(t, srv, workers*each)
		if n := srv.Connections(); n > cfg.PoolSize {
			t.Fatalf("%d mails used %d connections, pool_size is %d", workers*each, n, cfg.PoolSize)
		}
	})
	t.Run("sequential uses one warm connection", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{})
		s := newSender(t, baseConfig(srv)) // pool_size 4
		for i := range 20 {
			if err := s.Send(context.Background(), delivery("s-"+itoa(i), "ann@example.com")); err != nil {
				t.Fatal(err)
			}
		}
		waitMessages(t, srv, 20)
		if n := srv.Connections(); n != 1 {
			t.Fatalf("%d connections, want 1", n)
		}
	})
}

func TestTemporaryFailureIsRetryable(t *testing.T) {
	for _, kind := range []string{"RCPT", "DATA"} {
		t.Run(kind, func(t *testing.T) {
			srv := smtptest.Start(t, smtptest.Options{})
			s := newSender(t, baseConfig(srv))
			srv.FailNext(kind, 1, 451, [3]int{4, 3, 0}, "try again later")
			d := delivery("tmp", "ann@example.com")
			err := s.Send(context.Background(), d)
			if err == nil || hub.IsPermanent(err) {
				t.Fatalf("err = %v, want retryable", err)
			}
			var se *email.SMTPError
			if !errors.As(err, &se) || se.Code != 451 || se.Enhanced != "4.3.0" || !se.Temporary() {
				t.Fatalf("err = %#v", err)
			}
			if !strings.HasPrefix(err.Error(), "smtp 451 4.3.0: try again later") {
				t.Errorf("message %q", err)
			}
			if d.Outcome.Status != 451 {
				t.Errorf("Outcome = %+v", d.Outcome)
			}
			// The retry goes through, on the same connection.
			if err := s.Send(context.Background(), d); err != nil {
				t.Fatalf("second send: %v", err)
			}
			if d.Outcome.Status != 250 {
				t.Errorf("Outcome = %+v", d.Outcome)
			}
			waitMessages(t, srv, 1)
			if n := srv.Connections(); n != 1 {
				t.Errorf("%d connections, want the refusing one reused", n)
			}
		})
	}
}

func TestPermanentFailure(t *testing.T) {
	cases := []struct {
		kind string
		code int
		enh  [3]int
		msg  string
		want string
	}{
		{"RCPT", 550, [3]int{5, 1, 1}, "mailbox unavailable", "smtp 550 5.1.1: mailbox unavailable (at RCPT TO)"},
		{"DATA", 554, [3]int{5, 6, 0}, "content rejected", "smtp 554 5.6.0: content rejected (at DATA)"},
	}
	for _, tc := range cases {
		t.Run(tc.kind, func(t *testing.T) {
			srv := smtptest.Start(t, smtptest.Options{})
			s := newSender(t, baseConfig(srv))
			srv.FailNext(tc.kind, 1, tc.code, tc.enh, tc.msg)
			d := delivery("perm", "ann@example.com")
			err := s.Send(context.Background(), d)
			if !hub.IsPermanent(err) {
				t.Fatalf("err = %v, want permanent", err)
			}
			if err.Error() != tc.want {
				t.Errorf("reason %q, want %q", err, tc.want)
			}
			if d.Outcome.Status != tc.code {
				t.Errorf("Outcome = %+v", d.Outcome)
			}
			// The connection survives a refusal.
			if err := s.Send(context.Background(), delivery("next", "ann@example.com")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestInvalidRecipientIsPermanent(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	s := newSender(t, baseConfig(srv))
	for _, to := range []string{"", "not-an-address", "a@b.c\r\nBcc: evil@example.com"} {
		err := s.Send(context.Background(), delivery("x", to))
		if !hub.IsPermanent(err) || !strings.Contains(err.Error(), "recipient") {
			t.Errorf("Send to %q = %v, want permanent", to, err)
		}
	}
	if n := srv.Connections(); n != 0 {
		t.Errorf("connected %d times for invalid recipients", n)
	}
}

func TestMessageID(t *testing.T) {
	cases := map[string]string{
		"01HZX":                    "01HZX@hub",
		"01HZX/sub/ann@x.io":       "01HZX/sub/ann=40x.io@hub",
		"a b<c>\"d\"":              "a=20b=3Cc=3E=22d=22@hub",
		".lead..double.trail.":     "=2Elead.=2Edouble.trail=2E@hub",
		"eq=sign":                  "eq=3Dsign@hub",
		"ünï":                      "=C3=BCn=C3=AF@hub",
		"evt/sms/+15551234567":     "evt/sms/+15551234567@hub",
		"x\r\nBcc: evil@example.c": "x=0D=0ABcc=3A=20evil=40example.c@hub",
	}
	for id, want := range cases {
		if got := email.MessageID(id); got != want {
			t.Errorf("MessageID(%q) = %q, want %q", id, got, want)
		}
		if _, err := netmail.ParseAddress("<" + email.MessageID(id) + ">"); err != nil {
			t.Errorf("MessageID(%q) is not addr-spec shaped: %v", id, err)
		}
	}
	long1, long2 := strings.Repeat("@", 300)+"1", strings.Repeat("@", 300)+"2"
	m1, m2 := email.MessageID(long1), email.MessageID(long2)
	if m1 == m2 || len(m1) > 210 || m1 != email.MessageID(long1) {
		t.Errorf("long ids: %q %q", m1, m2)
	}
}

func TestReconnectsAfterServerDropsConnection(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	s := newSender(t, baseConfig(srv))
	if err := s.Send(context.Background(), delivery("1", "ann@example.com")); err != nil {
		t.Fatal(err)
	}
	srv.DropConnections() // as an idle timeout or a relay restart would
	if err := s.Send(context.Background(), delivery("2", "ann@example.com")); err != nil {
		t.Fatalf("send after the server dropped the idle connection: %v", err)
	}
	waitMessages(t, srv, 2)
	if n := srv.Connections(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestContextCancel(t *testing.T) {
	t.Run("during DATA", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{})
		s := newSender(t, baseConfig(srv)) // 30s SMTP timeout: only ctx can end it
		release := srv.StallData()
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- s.Send(ctx, delivery("stall", "ann@example.com")) }()
		waitStalled(t, srv)
		start := time.Now()
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) || hub.IsPermanent(err) {
				t.Fatalf("err = %v", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("returned %v after cancel", d)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Send ignored ctx cancellation")
		}
		release()
		// The interrupted connection was dropped; the next send dials anew.
		if err := s.Send(context.Background(), delivery("after", "ann@example.com")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("waiting for a pooled connection", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{})
		cfg := baseConfig(srv)
		cfg.PoolSize = 1
		s := newSender(t, cfg)
		release := srv.StallData()
		errc := make(chan error, 1)
		go func() { errc <- s.Send(context.Background(), delivery("busy", "ann@example.com")) }()
		waitStalled(t, srv)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := s.Send(ctx, delivery("waits", "ann@example.com")); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
		release()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("already cancelled", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{})
		s := newSender(t, baseConfig(srv))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.Send(ctx, delivery("x", "ann@example.com")); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		if srv.Connections() != 0 {
			t.Fatal("connected with a cancelled ctx")
		}
	})
}

func TestConcurrentSendsWithFailures(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	cfg := baseConfig(srv)
	cfg.PoolSize = 3
	s := newSender(t, cfg)
	srv.FailNext("RCPT", 5, 451, [3]int{4, 0, 0}, "busy")
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, temp := 0, 0
	for w := range 6 {
		wg.Go(func() {
			for i := range 20 {
				err := s.Send(context.Background(), delivery("r-"+itoa(w)+"-"+itoa(i), "ann@example.com"))
				mu.Lock()
				switch {
				case err == nil:
					ok++
				case !hub.IsPermanent(err):
					temp++
				default:
					t.Errorf("unexpected permanent error: %v", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ok != 115 || temp != 5 {
		t.Fatalf("ok=%d temp=%d, want 115 and 5", ok, temp)
	}
	waitMessages(t, srv, 115)
	if n := srv.Connections(); n > 3 {
		t.Fatalf("%d connections for pool_size 3", n)
	}
}

func TestClose(t *testing.T) {
	t.Run("idempotent", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{})
		s, err := email.New(baseConfig(srv))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(context.Background(), delivery("1", "ann@example.com")); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := s.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		err = s.Send(context.Background(), delivery("2", "ann@example.com"))
		if !errors.Is(err, email.ErrClosed) || hub.IsPermanent(err) {
			t.Fatalf("Send after Close = %v", err)
		}
	})
	t.Run("waits for a running send", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{})
		s, err := email.New(baseConfig(srv))
		if err != nil {
			t.Fatal(err)
		}
		release := srv.StallData()
		errc := make(chan error, 1)
		go func() { errc <- s.Send(context.Background(), delivery("slow", "ann@example.com")) }()
		waitStalled(t, srv)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Close with a send running = %v", err)
		}
		release()
		if err := <-errc; err != nil {
			t.Fatalf("running send: %v", err)
		}
		if err := s.Close(context.Background()); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

func TestRateLimit(t *testing.T) {
	t.Run("spaces sends", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{})
		cfg := baseConfig(srv)
		cfg.RateLimit = 20
		s := newSender(t, cfg)
		start := time.Now()
		for i := range 5 {
			if err := s.Send(context.Background(), delivery("r"+itoa(i), "ann@example.com")); err != nil {
				t.Fatal(err)
			}
		}
		if d := time.Since(start); d < 180*time.Millisecond {
			t.Fatalf("5 sends at 20/s took %v, want >= 200ms", d)
		}
	})
	t.Run("defers a long wait", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{})
		cfg := baseConfig(srv)
		cfg.RateLimit = 0.1 // one per 10s
		s := newSender(t, cfg, email.WithMaxRateWait(time.Second))
		if err := s.Send(context.Background(), delivery("1", "ann@example.com")); err != nil {
			t.Fatal(err)
		}
		err := s.Send(context.Background(), delivery("2", "ann@example.com"))
		d, ok := hub.DeferDelay(err)
		if !ok || d < 5*time.Second || hub.IsPermanent(err) {
			t.Fatalf("err = %v (defer %v, %v)", err, d, ok)
		}
		if len(srv.Messages()) != 1 {
			t.Fatal("deferred mail was sent")
		}
	})
}

func TestConfig(t *testing.T) {
	type root struct {
		Email email.Config `yaml:"email"`
	}
	t.Setenv("SMTP_PASSWORD", "from-env")
	good := `
email:
  smtp: { host: smtp.example.com, port: 587, tls: starttls, username: hub, password_env: SMTP_PASSWORD, timeout: 10s }
  from: "hub <hub@example.com>"
  reply_to: support@example.com
  pool_size: 2
  rate_limit: 5
`
	r := root{Email: email.DefaultConfig()}
	if err := config.Decode([]byte(good), &r); err != nil {
		t.Fatal(err)
	}
	if r.Email.SMTP.Password.Value() != "from-env" || r.Email.PoolSize != 2 || r.Email.SMTP.Timeout.D() != 10*time.Second {
		t.Fatalf("decoded %+v", r.Email)
	}
	if _, err := email.New(r.Email); err != nil {
		t.Fatal(err)
	}

	bad := `
email:
  smtp: { host: smtp.example.com, tls: ssl, username: hub, insecure: true }
  from: "not an address"
  pool_size: -1
`
	r = root{Email: email.DefaultConfig()}
	err := config.Decode([]byte(bad), &r)
	if err == nil || !strings.Contains(err.Error(), "email.smtp.insecure: unknown key") {
		t.Fatalf("unknown key: %v", err)
	}
	bad = strings.Replace(bad, "insecure: true", "insecure_skip_verify: true", 1)
	err = config.Decode([]byte(bad), &r)
	for _, want := range []string{
		"email.from: \"not an address\" is not an email address",
		"email.pool_size: must be at least 0",
		"email.smtp.password: required when smtp.username is set",
		"email.smtp.tls: must be one of: none, starttls, tls",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("errors:\n%v\nmissing %q", err, want)
		}
	}

	cfg := email.Config{From: "hub@example.com", SMTP: email.SMTPConfig{Host: "smtp.example.com", TLS: "none", Username: "u", Password: "hunter2", RootCAFile: "/nonexistent.pem"}}
	_, err = email.New(cfg)
	for _, want := range []string{"smtp.tls: none would send the password in clear text", "smtp.root_ca_file: cannot read"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New errors:\n%v\nmissing %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(fmt.Sprintf("%+v %#v", cfg, cfg), "hunter2") {
		t.Error("password printed")
	}
	if _, err := email.New(email.Config{From: "hub@example.com"}); err == nil || !strings.Contains(err.Error(), "smtp.host: required") {
		t.Errorf("missing host: %v", err)
	}
}
