package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/webhook"
)

// TestKillShort is the short SIGKILL cycle `make test` runs: 5,000 events
// to two webhook subscriptions, the hub killed once mid-run and restarted
// on the same store, publishers publishing through it.
func TestKillShort(t *testing.T) {
	runKill(t, killRun{name: "kill-short", events: 5000, kills: 1, ackWait: "3s"})
}

// TestChaosKill is the full run: 50,000 events, SIGKILL five times, with
// the default ack_wait (30s), so deliveries in flight at each kill come
// back only after it.
func TestChaosKill(t *testing.T) {
	chaosOnly(t)
	runKill(t, killRun{name: "kill", events: 50000, kills: 5, ackWait: "30s"})
}

type killRun struct {
	name    string
	events  int
	kills   int
	ackWait string
}

func runKill(t *testing.T, k killRun) {
	start := time.Now()
	ctx := ctxFor(t, 10*time.Minute)
	rcv := startReceiver(t)
	secret := webhook.GenerateSecret()
	subs := []string{"crm", "billing"}
	cfg := WriteConfig(t, BaseConfig(t.TempDir(), FreePort(t))+fmt.Sprintf(`
delivery:
  ack_wait: %s
  backoff: [100ms, 200ms, 500ms, 1s]
  max_attempts: 30
channels:
  webhook: {allow_cidrs: [127.0.0.0/8]}
subscriptions:
  - {id: crm, channel: webhook, events: [">"], url: %q, secret: %q}
  - {id: billing, channel: webhook, events: ["order.>"], url: %q, secret: %q}
`, k.ackWait, rcv.URL("crm"), secret, rcv.URL("billing"), secret))
	l := &Ledger{Scenario: k.name, Published: k.events}
	if k.kills == 1 {
		l.Command = "go test -race -count=1 -run '^TestKillShort$' ./chaos/"
	} else {
		l.Command = "HUB_CHAOS=1 go test -count=1 -v -run '^TestChaosKill$' ./chaos/"
	}

	h := StartHub(t, hubBin, cfg)
	pub, err := NewPublisher(h.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	evs := make([]publisher.Event, k.events)
	for i := range evs {
		evs[i] = publisher.Event{Type: "order.created", ID: fmt.Sprintf("%s-%06d", k.name, i), Data: []byte(fmt.Sprintf(`{"n":%d}`, i))}
	}
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.PublishAll(ctx, 16, evs) }()

	var maxReady time.Duration
	var firsts []string
	watch := watchFirstDelivery(ctx, rcv)
	for i := 1; i <= k.kills; i++ {
		// Kill once a share of the events is acknowledged: publishers are
		// mid-publish, the hub mid-delivery (or waiting out ack_wait for
		// what the previous kill left unacknowledged).
		threshold := i * k.events / (k.kills + 1)
		if err := poll(ctx, 5*time.Millisecond, func() bool { return pub.Acked() >= threshold }); err != nil {
			t.Fatalf("waiting for kill %d: %v (acked %d, last publish error %v)\n%s", i, err, pub.Acked(), pub.LastError(), h.Tail())
		}
		acked, got := pub.Acked(), rcv.Total()
		h.Kill(t)
		if first := watch(); i > 1 {
			firsts = append(firsts, first)
		}
		l.Fault("SIGKILL #%d with %d events acknowledged and %d webhook requests answered", i, acked, got)
		t0 := time.Now()
		h = StartHub(t, hubBin, cfg)
		maxReady = max(maxReady, time.Since(t0))
		watch = watchFirstDelivery(ctx, rcv)
		if st, err := consumerInfo(ctx, h.NATSURL, hub.EventsStream, dispatch.EventsConsumer("webhook")); err == nil {
			l.Measure(fmt.Sprintf("restart #%d", i), "consumer hub-webhook: %d acks pending (delivered to the killed hub), %d events waiting",
				st.AckPending, st.Pending)
		}
	}
	if err := <-pubDone; err != nil {
		t.Fatalf("publishing: %v\n%s", err, h.Tail())
	}
	published := time.Since(start)
	acked := pub.AckedIDs()
	want := map[string]int{}
	for _, s := range subs {
		want[s] = len(acked)
	}
	if err := rcv.WaitDistinct(ctx, want); err != nil {
		t.Errorf("not everything delivered: %v\n%s", err, h.Tail())
	}
	firsts = append(firsts, watch())
	l.Measure("first webhook answered after each restart", "%s", strings.Join(firsts, ", "))
	l.Stats = pub.Stats()
	deadIDs := finishLedger(t, l, h, "webhook")
	for _, s := range subs {
		l.Add(Account(s, "webhook", webhookIDs(acked, s), rcv.Counts(s), deadIDs[s]))
	}
	l.Measure("restart to ready (slowest)", "%s", maxReady.Round(time.Millisecond))
	l.Measure("all events acknowledged after", "%s", published.Round(100*time.Millisecond))
	l.Measure("everything delivered after", "%s", time.Since(start).Round(100*time.Millisecond))
	h.Stop(t)
	l.Report(t, start)
	checkLedger(t, l, 0)
}
