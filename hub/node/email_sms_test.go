package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dlq"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/email"
	"github.com/hubproject/hub/subscribers/email/smtptest"
	"github.com/hubproject/hub/subscribers/sms"
	"github.com/hubproject/hub/subscribers/sms/twiliotest"
)

// startReal starts an in-process hub with the real email and SMS channels
// against the in-process SMTP server and Twilio-shaped API.
func startReal(t *testing.T, smtpSrv *smtptest.Server, tw *twiliotest.Server) *node.Node {
	t.Helper()
	cfg := testConfig(t.TempDir())
	cfg.NATS.Listen, cfg.HTTP.Listen = "", ""
	// Retry-After is capped at the longest step, so keep one above 1s.
	cfg.Delivery.Backoff = []config.Duration{config.Duration(50 * time.Millisecond), config.Duration(2 * time.Second)}
	cfg.Delivery.MaxAttempts = 4
	cfg.Delivery.AckWait = config.Duration(5 * time.Second)
	ec := email.DefaultConfig()
	ec.SMTP.Host, ec.SMTP.Port, ec.SMTP.TLS = smtpSrv.Host(), smtpSrv.Port(), email.TLSNone
	ec.From = "hub <hub@example.com>"
	cfg.Channels.Email = &ec
	sc := sms.DefaultConfig()
	sc.Twilio.BaseURL, sc.Twilio.AccountSID, sc.Twilio.AuthToken = tw.URL(), tw.AccountSID(), config.Secret(tw.AuthToken())
	sc.Twilio.From = "+15550000000"
	cfg.Channels.SMS = &sc
	cfg.Subscriptions = []hub.Subscription{
		{ID: "confirmation", Channel: "email", Events: []string{"order.created"}, To: "{{ .data.customer.email }}",
			Subject: "Order {{ .data.id }}", Text: "Hi {{ .data.customer.name }}", HTML: "<p>Hi {{ .data.customer.name }}</p>"},
		{ID: "shipped", Channel: "sms", Events: []string{"order.shipped"}, To: "{{ .data.customer.phone }}", Body: "Order {{ .data.id }} shipped"},
	}
	if err := config.Check(&cfg); err != nil {
		t.Fatal(err)
	}
	n := node.New(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, n) })
	return n
}

func order(id, typ, mail, phone string) publisher.Event {
	return publisher.Event{Type: typ, ID: id,
		Data: []byte(`{"id":"` + id + `","customer":{"name":"Ada","email":"` + mail + `","phone":"` + phone + `"}}`)}
}

func TestEmailEndToEnd(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	tw := twiliotest.Start(t, twiliotest.Options{})
	n := startReal(t, srv, tw)
	p, _ := publisher.New(n.Conn())
	ctx := ctxT(t, 30*time.Second)

	// 451 on the first try, then accepted: delivered once, on attempt 2.
	srv.FailNext(smtptest.StageRcpt, 1, 451, [3]int{4, 2, 0}, "try again later")
	if _, err := p.Publish(ctx, order("o-1", "order.created", "ada@example.com", "")); err != nil {
		t.Fatal(err)
	}
	msgs, err := srv.WaitMessages(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	c, err := msgs[0].Decode()
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "Order o-1" || !strings.Contains(c.Text, "Hi Ada") || !strings.Contains(c.HTML, "<p>Hi Ada</p>") ||
		msgs[0].To[0] != "ada@example.com" || !strings.Contains(c.Header.Get("From"), "hub@example.com") ||
		c.Header.Get("Message-Id") != "<"+email.MessageID(hub.DeliveryID("o-1", "confirmation", "ada@example.com"))+">" {
		t.Fatalf("message %+v to %v", c, msgs[0].To)
	}

	// 550: exactly one dead letter whose reason carries 550.
	srv.FailNext(smtptest.StageRcpt, 1, 550, [3]int{5, 1, 1}, "mailbox unavailable")
	if _, err := p.Publish(ctx, order("o-2", "order.created", "gone@example.com", "")); err != nil {
		t.Fatal(err)
	}
	items := waitDLQ(t, ctx, n.DLQ(), dlq.Filter{Subscription: "confirmation"}, 1)
	if len(items) != 1 || !strings.Contains(items[0].Reason, "550") || items[0].Recipient != "gone@example.com" {
		t.Fatalf("dead letters %+v", items)
	}
	// A third mail goes through: the 451 did not cause a second copy of o-1.
	if _, err := p.Publish(ctx, order("o-3", "order.created", "bob@example.com", "")); err != nil {
		t.Fatal(err)
	}
	msgs, err = srv.WaitMessages(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2 (o-1 once, o-3)", len(msgs))
	}
	if items, _ := n.DLQ().List(ctx, dlq.Filter{}); len(items) != 1 {
		t.Fatalf("%d dead letters, want 1", len(items))
	}
}

func TestSMSEndToEnd(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	tw := twiliotest.Start(t, twiliotest.Options{})
	n := startReal(t, srv, tw)
	p, _ := publisher.New(n.Conn())
	ctx := ctxT(t, 30*time.Second)

	// 429 with Retry-After: 1 → the retry waits about a second, then succeeds.
	tw.FailNext(1, 429, 20429, "Too Many Requests", "1")
	start := time.Now()
	if _, err := p.Publish(ctx, order("s-1", "order.shipped", "", "+15551230001")); err != nil {
		t.Fatal(err)
	}
	msgs, err := tw.WaitMessages(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Fatalf("retried after %s, before Retry-After: 1", took)
	}
	if msgs[0].To != "+15551230001" || msgs[0].Body != "Order s-1 shipped" || msgs[0].From != "+15550000000" {
		t.Fatalf("sms %+v", msgs[0])
	}
	// 21211: one dead letter with the code.
	if _, err := p.Publish(ctx, order("s-2", "order.shipped", "", twiliotest.ToInvalid)); err != nil {
		t.Fatal(err)
	}
	items := waitDLQ(t, ctx, n.DLQ(), dlq.Filter{Channel: "sms"}, 1)
	if len(items) != 1 || !strings.Contains(items[0].Reason, "21211") {
		t.Fatalf("dead letters %+v", items)
	}
	// A missing template field is a permanent failure naming it.
	if _, err := p.Publish(ctx, publisher.Event{Type: "order.shipped", ID: "s-3", Data: []byte(`{"id":"s-3"}`)}); err != nil {
		t.Fatal(err)
	}
	items = waitDLQ(t, ctx, n.DLQ(), dlq.Filter{Channel: "sms"}, 2)
	if !strings.Contains(items[1].Reason, "customer") {
		t.Fatalf("render failure reason %q", items[1].Reason)
	}
}
