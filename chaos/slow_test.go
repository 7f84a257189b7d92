package chaos

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/webhook"
)

// TestChaosSlowReceiver: two receivers answer every request only after 25s
// and 45s, against the default 30s ack_wait (channels.webhook.timeout is
// 60s, above both). The dispatcher calls InProgress every ack_wait/3, so
// JetStream does not redeliver under a send that is still running: each
// receiver is asked once per event, and nothing is retried.
func TestChaosSlowReceiver(t *testing.T) {
	chaosOnly(t)
	const perSub = 8
	delays := map[string]time.Duration{"slow25": 25 * time.Second, "slow45": 45 * time.Second}
	start := time.Now()
	ctx := ctxFor(t, 10*time.Minute)
	rcvs := map[string]*Receiver{}
	for sub, d := range delays {
		rcvs[sub] = startReceiver(t)
		// The slow answer is the scenario.
		rcvs[sub].SetDelay(sub, d)
	}
	secret := webhook.GenerateSecret()
	// stalled_max_in_flight: 0 so that the stall cap (a separate
	// mechanism) does not defer any request: this is about AckWait.
	cfg := WriteConfig(t, BaseConfig(t.TempDir(), 0)+fmt.Sprintf(`
delivery:
  ack_wait: 30s
  backoff: [1s, 2s, 5s, 10s]
  max_attempts: 5
channels:
  webhook: {allow_cidrs: [127.0.0.0/8], timeout: 60s, stalled_max_in_flight: 0}
subscriptions:
  - {id: slow25, channel: webhook, events: [slow.a], url: %q, secret: %q}
  - {id: slow45, channel: webhook, events: [slow.b], url: %q, secret: %q}
`, rcvs["slow25"].URL("slow25"), secret, rcvs["slow45"].URL("slow45"), secret))
	h := StartHub(t, hubBin, cfg)
	l := &Ledger{Scenario: "slow-receiver", Published: 2 * perSub,
		Command: "HUB_CHAOS=1 go test -count=1 -v -run '^TestChaosSlowReceiver$' ./chaos/"}
	l.Fault("subscription slow25 answers after 25s, slow45 after 45s; ack_wait 30s, webhook timeout 60s")
	pub, err := NewPublisher(h.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var evs []publisher.Event
	for i := range perSub {
		evs = append(evs,
			publisher.Event{Type: "slow.a", ID: fmt.Sprintf("slow-a-%d", i)},
			publisher.Event{Type: "slow.b", ID: fmt.Sprintf("slow-b-%d", i)})
	}
	if err := pub.PublishAll(ctx, 4, evs); err != nil {
		t.Fatal(err)
	}
	for sub, r := range rcvs {
		if err := r.WaitDistinct(ctx, map[string]int{sub: perSub}); err != nil {
			t.Fatalf("%s: %v\n%s", sub, err, h.Tail())
		}
	}
	l.Measure("all answered after", "%s", time.Since(start).Round(100*time.Millisecond))
	// Wait for the acks to land, then ask JetStream what it redelivered.
	var ev, rt consumerState
	if err := poll(ctx, 100*time.Millisecond, func() bool {
		ev, err = consumerInfo(ctx, h.NATSURL, hub.EventsStream, dispatch.EventsConsumer("webhook"))
		if err != nil {
			return false
		}
		rt, err = consumerInfo(ctx, h.NATSURL, hub.DeliveriesStream, dispatch.RetryConsumer("webhook"))
		return err == nil && ev.AckPending == 0 && rt.AckPending == 0
	}); err != nil {
		t.Fatalf("acks pending: %v %+v %+v", err, ev, rt)
	}
	l.Stats = pub.Stats()
	deadIDs := finishLedger(t, l, h, "webhook")
	acked := pub.AckedIDs()
	for _, sub := range []string{"slow25", "slow45"} {
		want := map[string]bool{}
		for id := range acked {
			if (sub == "slow25") == (id[5] == 'a') {
				want[hub.DeliveryID(id, sub, "")] = true
			}
		}
		l.Add(Account(sub, "webhook", want, rcvs[sub].Counts(sub), deadIDs[sub]))
		var gaps []string
		for _, at := range rcvs[sub].Arrivals() {
			for i := 1; i < len(at); i++ {
				gaps = append(gaps, at[i].Sub(at[i-1]).Round(100*time.Millisecond).String())
			}
		}
		sort.Strings(gaps)
		l.Measure(sub+" repeated requests", "%d (gaps after the first: %v)", len(gaps), gaps)
	}
	h.Stop(t)
	l.Report(t, start)
	checkLedger(t, l, 0)
	if ev.Redelivered != 0 || rt.Delivered != 0 || l.Duplicates != 0 {
		t.Errorf("slow sends were redelivered or retried: events consumer %+v, retry consumer %+v, %d duplicates", ev, rt, l.Duplicates)
	}
}

// TestChaosSlowBacklog is the slow receiver with a backlog, on a time
// scale of 1/10 (ack_wait 3s, answers after 4.5s, as 30s and 45s) so that
// it runs in about a minute. With more events than delivery.concurrency,
// the events waiting for a free slot are not kept alive by InProgress:
// JetStream redelivers them after ack_wait, and a redelivered copy is sent
// again. The ledger counts those as duplicates, never as losses.
func TestChaosSlowBacklog(t *testing.T) {
	chaosOnly(t)
	const events, concurrency = 8, 2
	const answerAfter = 4500 * time.Millisecond
	start := time.Now()
	ctx := ctxFor(t, 10*time.Minute)
	rcv := startReceiver(t)
	// The slow answer is the scenario.
	rcv.SetDelay("slow", answerAfter)
	cfg := WriteConfig(t, BaseConfig(t.TempDir(), 0)+fmt.Sprintf(`
delivery:
  ack_wait: 3s
  backoff: [1s, 2s]
  max_attempts: 5
  concurrency: {webhook: %d}
channels:
  webhook: {allow_cidrs: [127.0.0.0/8], timeout: 20s, stalled_max_in_flight: 0}
subscriptions:
  - {id: slow, channel: webhook, events: [">"], url: %q, secret: %q}
`, concurrency, rcv.URL("slow"), webhook.GenerateSecret()))
	h := StartHub(t, hubBin, cfg)
	l := &Ledger{Scenario: "slow-backlog", Published: events,
		Command: "HUB_CHAOS=1 go test -count=1 -v -run '^TestChaosSlowBacklog$' ./chaos/"}
	l.Fault("receiver answers after %s; ack_wait 3s; delivery.concurrency.webhook %d; %d events at once", answerAfter, concurrency, events)
	pub, err := NewPublisher(h.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var evs []publisher.Event
	for i := range events {
		evs = append(evs, publisher.Event{Type: "slow.c", ID: fmt.Sprintf("backlog-%d", i)})
	}
	if err := pub.PublishAll(ctx, 4, evs); err != nil {
		t.Fatal(err)
	}
	if err := rcv.WaitDistinct(ctx, map[string]int{"slow": events}); err != nil {
		t.Fatalf("%v\n%s", err, h.Tail())
	}
	l.Measure("all delivered after", "%s (%s if each were sent once)", time.Since(start).Round(100*time.Millisecond),
		time.Duration(events/concurrency)*answerAfter)
	// Let JetStream's redeliveries play out: wait until nothing is pending.
	if err := poll(ctx, 100*time.Millisecond, func() bool {
		st, err := consumerInfo(ctx, h.NATSURL, hub.EventsStream, dispatch.EventsConsumer("webhook"))
		return err == nil && st.AckPending == 0 && st.Pending == 0 && rcv.InFlight() == 0
	}); err != nil {
		t.Fatal(err)
	}
	l.Stats = pub.Stats()
	deadIDs := finishLedger(t, l, h, "webhook")
	l.Add(Account("slow", "webhook", webhookIDs(pub.AckedIDs(), "slow"), rcv.Counts("slow"), deadIDs["slow"]))
	h.Stop(t)
	l.Report(t, start)
	checkLedger(t, l, 0)
}
