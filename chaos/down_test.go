package chaos

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/webhook"
)

// retryHorizon is the shortest time the retry schedule keeps a delivery
// alive: the sum of the waits after attempts 1 .. maxAttempts-1 (the last
// step repeats), each at its smallest jitter.
func retryHorizon(backoff []time.Duration, maxAttempts int, jitter float64) time.Duration {
	var sum time.Duration
	for n := 1; n < maxAttempts; n++ {
		sum += backoff[min(n-1, len(backoff)-1)]
	}
	return time.Duration(float64(sum) * (1 - jitter))
}

func TestRetryHorizon(t *testing.T) {
	def := []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}
	if got := retryHorizon(def, 8, 0); got != 27*time.Hour+35*time.Minute+5*time.Second {
		t.Errorf("default schedule horizon %s, want 27h35m5s", got)
	}
	if got := retryHorizon(downBackoff, downMaxAttempts, 0.1); got < downFor*3/2 {
		t.Errorf("the receiver-down schedule covers %s, want at least 1.5 times the %s outage", got, downFor)
	}
}

// The receiver-down scenario's schedule: compressed so retries happen
// within the run. 1+2+5+10*11 = 118s of retries (106s at -10% jitter)
// cover the 60s outage with room to spare.
var downBackoff = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second}

const (
	downMaxAttempts = 15
	downFor         = 60 * time.Second
)

// TestChaosReceiverDown: one webhook receiver refuses connections for 60s
// (listener closed, then listening again on the same port) while events
// keep coming; a second subscription's receiver stays up. Everything
// reaches the healthy one during the outage, and the other once it is
// back, with no dead letters.
func TestChaosReceiverDown(t *testing.T) {
	chaosOnly(t)
	const before, during = 1000, 5000
	start := time.Now()
	ctx := ctxFor(t, 10*time.Minute)
	down, healthy := startReceiver(t), startReceiver(t)
	secret := webhook.GenerateSecret()
	cfg := WriteConfig(t, BaseConfig(t.TempDir(), 0)+fmt.Sprintf(`
delivery:
  backoff: [1s, 2s, 5s, 10s]
  max_attempts: %d
channels:
  webhook: {allow_cidrs: [127.0.0.0/8]}
subscriptions:
  - {id: down, channel: webhook, events: [">"], url: %q, secret: %q}
  - {id: healthy, channel: webhook, events: [">"], url: %q, secret: %q}
`, downMaxAttempts, down.URL("down"), secret, healthy.URL("healthy"), secret))
	l := &Ledger{Scenario: "receiver-down", Published: before + during,
		Command: "HUB_CHAOS=1 go test -count=1 -v -run '^TestChaosReceiverDown$' ./chaos/"}
	h := StartHub(t, hubBin, cfg)
	pub, err := NewPublisher(h.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	evs := make([]publisher.Event, before+during)
	for i := range evs {
		evs[i] = publisher.Event{Type: "order.created", ID: fmt.Sprintf("down-%05d", i)}
	}
	if err := pub.PublishAll(ctx, 8, evs[:before]); err != nil {
		t.Fatal(err)
	}
	if err := down.WaitDistinct(ctx, map[string]int{"down": before}); err != nil {
		t.Fatal(err)
	}

	down.Down()
	wentDown := time.Now()
	l.Fault("receiver of subscription down refuses connections for %s, after %d events were delivered", downFor, before)
	if err := pub.PublishAll(ctx, 8, evs[before:]); err != nil {
		t.Fatal(err)
	}
	if err := healthy.WaitDistinct(ctx, map[string]int{"healthy": before + during}); err != nil {
		t.Fatal(err)
	}
	l.Measure("healthy subscription had everything", "%s into the outage", time.Since(wentDown).Round(100*time.Millisecond))
	// The outage itself: the receiver stays down for downFor.
	<-time.After(time.Until(wentDown.Add(downFor)))
	if got := down.Distinct("down"); got != before {
		t.Errorf("%d deliveries reached the receiver while it was down", got-before)
	}
	if err := down.Up(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := down.WaitDistinct(rctx, map[string]int{"down": before + 1}); err != nil {
		t.Errorf("after the receiver came back: %v\n%s", err, h.Tail())
	}
	l.Measure("first delivery after the receiver came back", "%s", time.Since(back).Round(100*time.Millisecond))
	if err := down.WaitDistinct(rctx, map[string]int{"down": before + during}); err != nil {
		t.Errorf("after the receiver came back: %v\n%s", err, h.Tail())
	}
	l.Measure("everything delivered after the receiver came back", "%s", time.Since(back).Round(100*time.Millisecond))
	l.Measure("schedule", "backoff %v, max_attempts %d: retries cover %s (at -10%% jitter)", downBackoff, downMaxAttempts,
		retryHorizon(downBackoff, downMaxAttempts, 0.1))
	l.Stats = pub.Stats()
	deadIDs := finishLedger(t, l, h, "webhook")
	acked := pub.AckedIDs()
	l.Add(Account("down", "webhook", webhookIDs(acked, "down"), down.Counts("down"), deadIDs["down"]))
	l.Add(Account("healthy", "webhook", webhookIDs(acked, "healthy"), healthy.Counts("healthy"), deadIDs["healthy"]))
	h.Stop(t)
	l.Report(t, start)
	checkLedger(t, l, 0)
}
