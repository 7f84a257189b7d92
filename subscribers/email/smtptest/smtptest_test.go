package smtptest_test

import (
	"context"
	"errors"
	"net/smtp"
	"net/textproto"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubproject/hub/subscribers/email/smtptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// send delivers one message with the standard library's client.
func send(srv *smtptest.Server, to, data string) error {
	return smtp.SendMail(srv.Addr(), nil, "hub@example.com", []string{to}, []byte(data))
}

func TestMessagesAndWait(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- send(srv, "ann@example.com", "Subject: =?utf-8?q?caf=C3=A9?=\r\nContent-Type: text/plain; charset=utf-8\r\n"+
			"Content-Transfer-Encoding: base64\r\n\r\nSGkgQW5uLA0K\r\neW91ciBvcmRlciBzaGlwcGVkLg==\r\n")
	}()
	msgs, err := srv.WaitMessages(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.From != "hub@example.com" || len(m.To) != 1 || m.To[0] != "ann@example.com" || m.TLS || m.User != "" {
		t.Fatalf("message %+v", m)
	}
	c, err := m.Decode()
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "café" || c.Text != "Hi Ann,\r\nyour order shipped." || c.HTML != "" || c.Parts != 1 {
		t.Fatalf("decoded %+v", c)
	}
	if n := srv.Connections(); n != 1 {
		t.Errorf("%d connections", n)
	}

	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	if got, err := srv.WaitMessages(short, 2); !errors.Is(err, context.DeadlineExceeded) || len(got) != 1 {
		t.Fatalf("WaitMessages past the deadline = %d, %v", len(got), err)
	}
	srv.Close()
	if _, err := srv.WaitMessages(ctx, 2); err == nil {
		t.Fatal("WaitMessages on a stopped server did not fail")
	}
	srv.Close() // idempotent; t.Cleanup calls it again
}

func TestFailNextAndSpecialRecipients(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.FailNext("MAIL", 1, 421, [3]int{4, 7, 0}, "not now")
	srv.FailNext("DATA", 1, 554, [3]int{5, 6, 0}, "content rejected")
	for _, tc := range []struct {
		to   string
		code int
		msg  string
	}{
		{"ann@example.com", 421, "4.7.0 not now"},
		{"ann@example.com", 554, "5.6.0 content rejected"},
		{"reject@example.com", 550, "5.1.1 mailbox unavailable"},
		{"later@example.com", 451, "4.2.0 mailbox busy"},
		{"ann@example.com", 0, ""},
	} {
		err := send(srv, tc.to, "Subject: x\r\n\r\nx\r\n")
		var te *textproto.Error
		if tc.code == 0 && err != nil || tc.code != 0 && (!errors.As(err, &te) || te.Code != tc.code || te.Msg != tc.msg) {
			t.Errorf("send to %s = %v, want %d %s", tc.to, err, tc.code, tc.msg)
		}
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("%d messages, want 1", n)
	}
	defer func() {
		if recover() == nil {
			t.Error("FailNext with an unknown stage did not panic")
		}
	}()
	srv.FailNext("HELO", 1, 500, [3]int{5, 0, 0}, "x")
}

// Close releases a stalled DATA and a slow@ recipient and returns.
func TestCloseReleasesHeldCommands(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.StallData()
	errc := make(chan error, 2)
	go func() { errc <- send(srv, "ann@example.com", "Subject: x\r\n\r\nx\r\n") }()
	go func() { errc <- send(srv, "slow@example.com", "Subject: x\r\n\r\nx\r\n") }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.WaitStalled(ctx, 1); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	for range 2 {
		select {
		case <-errc:
		case <-ctx.Done():
			t.Fatal("a client still waits after Close")
		}
	}
}

func TestDropConnections(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	c, err := smtp.Dial(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		t.Fatal(err)
	}
	srv.DropConnections()
	if err := c.Noop(); err == nil {
		t.Fatal("connection survived DropConnections")
	}
	if err := send(srv, "ann@example.com", "Subject: x\r\n\r\nx\r\n"); err != nil {
		t.Fatalf("send after DropConnections: %v", err)
	}
	if n := srv.Connections(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}
