package chaos

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/email"
	"github.com/hubproject/hub/subscribers/email/smtptest"
	"github.com/hubproject/hub/subscribers/webhook"
)

// emailConfig is a hub with the email channel on srv (plain SMTP), an email
// subscription "receipts" whose recipient comes from .data.customer.email,
// and a webhook subscription "hooks" on rcv for every event.
func emailConfig(t *testing.T, srv *smtptest.Server, rcv *Receiver) string {
	return WriteConfig(t, BaseConfig(t.TempDir(), 0)+fmt.Sprintf(`
delivery:
  backoff: [1s, 2s, 5s, 10s]
  max_attempts: %d
channels:
  email: {smtp: {host: %s, port: %d, tls: none}, from: "hub <hub@example.com>", pool_size: 8}
  webhook: {allow_cidrs: [127.0.0.0/8]}
subscriptions:
  - id: receipts
    channel: email
    events: [order.created]
    to: "{{ .data.customer.email }}"
    subject: "Order {{ .data.id }}"
    text: "Hi {{ .data.customer.name }}, thanks for order {{ .data.id }}."
  - {id: hooks, channel: webhook, events: [">"], url: %q, secret: %q}
`, downMaxAttempts, srv.Host(), srv.Port(), rcv.URL("hooks"), webhook.GenerateSecret()))
}

func orderEvent(prefix string, i int) publisher.Event {
	id := fmt.Sprintf("%s-%05d", prefix, i)
	return publisher.Event{Type: "order.created", ID: id,
		Data: []byte(fmt.Sprintf(`{"id":%q,"customer":{"name":"Customer %d","email":"c%d@example.com"}}`, id, i, i))}
}

// mailIDs is the Message-Id each good order event gets at "receipts".
func mailIDs(evs []publisher.Event, skip string) map[string]bool {
	out := map[string]bool{}
	for i, ev := range evs {
		if ev.ID == skip {
			continue
		}
		out["<"+email.MessageID(hub.DeliveryID(ev.ID, "receipts", fmt.Sprintf("c%d@example.com", i)))+">"] = true
	}
	return out
}

// TestChaosSMTP451: the SMTP relay answers every MAIL with 451 for 30s
// while orders keep coming; every email arrives once it recovers, none is
// dead-lettered, and the webhook subscription of the same events is not
// held back.
func TestChaosSMTP451(t *testing.T) {
	chaosOnly(t)
	const before, during = 500, 2000
	const queued = 100_000 // more 451s than the hub can use in 30s
	const outage = 30 * time.Second
	start := time.Now()
	ctx := ctxFor(t, 10*time.Minute)
	srv := smtptest.Start(t, smtptest.Options{})
	rcv := startReceiver(t)
	h := StartHub(t, hubBin, emailConfig(t, srv, rcv))
	l := &Ledger{Scenario: "smtp-451", Published: before + during,
		Command: "HUB_CHAOS=1 go test -count=1 -v -run '^TestChaosSMTP451$' ./chaos/"}
	pub, err := NewPublisher(h.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	evs := make([]publisher.Event, before+during)
	for i := range evs {
		evs[i] = orderEvent("smtp", i)
	}
	if err := pub.PublishAll(ctx, 8, evs[:before]); err != nil {
		t.Fatal(err)
	}
	if _, err := WaitMail(ctx, srv, mailIDs(evs[:before], "")); err != nil {
		t.Fatal(err)
	}

	srv.FailNext(smtptest.StageMail, queued, 451, [3]int{4, 3, 0}, "try again later")
	failing := time.Now()
	l.Fault("SMTP relay answers MAIL with 451 4.3.0 for %s, after %d emails were delivered", outage, before)
	if err := pub.PublishAll(ctx, 8, evs[before:]); err != nil {
		t.Fatal(err)
	}
	if err := rcv.WaitDistinct(ctx, map[string]int{"hooks": before + during}); err != nil {
		t.Fatal(err)
	}
	l.Measure("webhook subscription had everything", "%s into the SMTP outage", time.Since(failing).Round(100*time.Millisecond))
	// The outage itself.
	<-time.After(time.Until(failing.Add(outage)))
	sentDuring := len(srv.Messages()) - before
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	drained, err := DrainMailFailures(dctx, srv.Addr(), queued)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	l.Measure("451 answers the hub got", "%d", queued-drained)
	if sentDuring != 0 {
		t.Errorf("%d emails accepted during the outage", sentDuring)
	}
	mc, err := WaitMail(ctx, srv, mailIDs(evs, ""))
	if err != nil {
		t.Errorf("after the relay recovered: %v\n%s", err, h.Tail())
	}
	l.Measure("every email delivered after the relay recovered", "%s", time.Since(healed).Round(100*time.Millisecond))
	l.Stats = pub.Stats()
	deadIDs := finishLedger(t, l, h, "email", "webhook")
	l.Add(Account("receipts", "email", mailIDs(evs, ""), mc.Counts, mailDead(evs, deadIDs["receipts"])))
	l.Add(Account("hooks", "webhook", webhookIDs(pub.AckedIDs(), "hooks"), rcv.Counts("hooks"), deadIDs["hooks"]))
	h.Stop(t)
	l.Report(t, start)
	checkLedger(t, l, 0)
}

// mailDead maps dead-lettered delivery ids to the Message-Ids they would
// have had; one without a recipient (a template that failed) stays as is.
func mailDead(evs []publisher.Event, dead map[string]bool) map[string]bool {
	out := make(map[string]bool, len(dead))
	for id := range dead {
		out[id] = true
	}
	for i, ev := range evs {
		id := hub.DeliveryID(ev.ID, "receipts", fmt.Sprintf("c%d@example.com", i))
		if dead[id] {
			delete(out, id)
			out["<"+email.MessageID(id)+">"] = true
		}
	}
	return out
}

// TestChaosPoison: one event among 10,000 lacks .data.customer.email, which
// the email subscription's recipient template needs. It becomes exactly one
// dead letter whose reason names the field; every good email arrives, and
// the webhook subscription (no template) gets all 10,001.
func TestChaosPoison(t *testing.T) {
	chaosOnly(t)
	const good = 10000
	start := time.Now()
	ctx := ctxFor(t, 10*time.Minute)
	srv := smtptest.Start(t, smtptest.Options{})
	rcv := startReceiver(t)
	h := StartHub(t, hubBin, emailConfig(t, srv, rcv))
	l := &Ledger{Scenario: "poison", Published: good + 1,
		Command: "HUB_CHAOS=1 go test -count=1 -v -run '^TestChaosPoison$' ./chaos/"}
	pub, err := NewPublisher(h.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	evs := make([]publisher.Event, 0, good+1)
	for i := range good {
		if i == good/2 {
			evs = append(evs, publisher.Event{Type: "order.created", ID: "poison", Data: []byte(`{"id":"poison"}`)})
			l.Fault("event %q published as number %d of %d: its data has no customer", "poison", i+1, good+1)
		}
		evs = append(evs, orderEvent("good", len(evs)))
	}
	if err := pub.PublishAll(ctx, 8, evs); err != nil {
		t.Fatal(err)
	}
	mc, err := WaitMail(ctx, srv, mailIDs(evs, "poison"))
	if err != nil {
		t.Errorf("good emails: %v\n%s", err, h.Tail())
	}
	if err := rcv.WaitDistinct(ctx, map[string]int{"hooks": good + 1}); err != nil {
		t.Errorf("webhooks: %v", err)
	}
	// The dead letter is written from a JetStream advisory, asynchronously.
	if err := poll(ctx, 100*time.Millisecond, func() bool {
		_, _, n, err := DeadLetters(ctx, h.NATSURL)
		return err == nil && n >= 1
	}); err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	l.Stats = pub.Stats()
	deadIDs := finishLedger(t, l, h, "email", "webhook")
	l.Add(Account("receipts", "email", mailIDs(evs, "poison"), mc.Counts, mailDead(evs, deadIDs["receipts"])))
	l.Add(Account("hooks", "webhook", webhookIDs(pub.AckedIDs(), "hooks"), rcv.Counts("hooks"), deadIDs["hooks"]))
	h.Stop(t)
	l.Report(t, start)
	checkLedger(t, l, 1)
	if len(l.DeadLetters) == 1 {
		d := l.DeadLetters[0]
		if d.Subscription != "receipts" || !strings.Contains(d.Reason, "customer") {
			t.Errorf("dead letter %+v: want subscription receipts and a reason naming .data.customer", d)
		}
	}
	poisonDLV := hub.DeliveryID("poison", "receipts", "")
	if !deadIDs["receipts"][poisonDLV] {
		t.Errorf("the dead letter is not the poison event's delivery %s: %v", poisonDLV, deadIDs)
	}
}
