package chaos

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/dispatch"
)

// consumerState is what JetStream says about a hub consumer.
type consumerState struct {
	AckPending, Redelivered int
	Pending                 uint64
	// Delivered is how many messages JetStream has delivered (consumer
	// sequence), LastStreamSeq the last stream sequence it delivered.
	Delivered, LastStreamSeq uint64
}

func consumerInfo(ctx context.Context, natsURL, stream, name string) (consumerState, error) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return consumerState{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return consumerState{}, err
	}
	c, err := js.Consumer(ctx, stream, name)
	if err != nil {
		return consumerState{}, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return consumerState{}, err
	}
	return consumerState{AckPending: info.NumAckPending, Redelivered: info.NumRedelivered, Pending: info.NumPending,
		Delivered: info.Delivered.Consumer, LastStreamSeq: info.Delivered.Stream}, nil
}

// watchFirstDelivery measures how long after now the receiver answers its
// next request. The returned func stops watching and reports the time, or
// "none" when nothing arrived.
func watchFirstDelivery(ctx context.Context, rcv *Receiver) func() string {
	ctx, cancel := context.WithCancel(ctx)
	since, t0 := rcv.Total(), time.Now()
	res := make(chan string, 1)
	go func() {
		err := rcv.WaitFor(ctx, func(_ map[string]int, total int) bool { return total > since })
		if err != nil {
			res <- "none"
			return
		}
		res <- time.Since(t0).Round(10 * time.Millisecond).String()
	}()
	return func() string {
		cancel()
		return <-res
	}
}

// webhookIDs is the webhook-id each event gets at subscription sub.
func webhookIDs(events map[string]bool, sub string) map[string]bool {
	out := make(map[string]bool, len(events))
	for id := range events {
		out[hub.DeliveryID(id, sub, "")] = true
	}
	return out
}

// finishLedger reads the DLQ into l, records what JetStream says about the
// channels' consumers and the hub's warnings, and returns the dead-lettered
// delivery ids per subscription.
func finishLedger(t *testing.T, l *Ledger, h *Hub, channels ...string) map[string]map[string]bool {
	t.Helper()
	// Settle first: redeliveries still due (after a crash, an expired
	// ack_wait) arrive late, and are counted as duplicates only if the
	// ledger waits for them.
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer scancel()
	t0 := time.Now()
	var last string
	err := poll(sctx, 200*time.Millisecond, func() bool {
		for _, ch := range channels {
			for _, c := range [][2]string{{hub.EventsStream, dispatch.EventsConsumer(ch)}, {hub.DeliveriesStream, dispatch.RetryConsumer(ch)}} {
				st, err := consumerInfo(sctx, h.NATSURL, c[0], c[1])
				if err != nil || st.AckPending != 0 || st.Pending != 0 {
					last = fmt.Sprintf("%s: %+v %v", c[1], st, err)
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		l.Measure("settled", "NO: still pending after %s: %s", time.Since(t0).Round(100*time.Millisecond), last)
	} else {
		l.Measure("settled", "no acks pending, nothing waiting, %s after everything was delivered", time.Since(t0).Round(100*time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dls, ids, n, err := DeadLetters(ctx, h.NATSURL)
	if err != nil {
		t.Fatalf("reading the DLQ: %v", err)
	}
	l.DeadLetters, l.DeadLettered = dls, n
	for _, ch := range channels {
		// The events consumer starts at the first event and sees every
		// one, so what it delivered beyond the last event's sequence was
		// delivered again: after a crash or an expired ack_wait.
		if st, err := consumerInfo(ctx, h.NATSURL, hub.EventsStream, dispatch.EventsConsumer(ch)); err == nil {
			l.Measure("consumer "+dispatch.EventsConsumer(ch), "JetStream delivered %d messages for %d events: %d redeliveries",
				st.Delivered, st.LastStreamSeq, int64(st.Delivered)-int64(st.LastStreamSeq))
		}
		if st, err := consumerInfo(ctx, h.NATSURL, hub.DeliveriesStream, dispatch.RetryConsumer(ch)); err == nil {
			l.Measure("consumer "+dispatch.RetryConsumer(ch), "JetStream delivered %d messages (retry waits, attempts and redeliveries)",
				st.Delivered)
		}
	}
	logMeasures(l, h)
	return ids
}

// logMeasures records the hub's warnings and errors, counted by message,
// with the first line of each.
func logMeasures(l *Ledger, h *Hub) {
	counts := h.LogCounts()
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		first := h.FirstLine(k)
		if len(first) > 400 {
			first = first[:400] + "..."
		}
		l.Measure(h.Name+" log", "%s x%d, first: %s", k, counts[k], first)
	}
}

// checkLedger fails the test on any loss, unexpected delivery, or a number
// of dead letters other than wantDead.
func checkLedger(t *testing.T, l *Ledger, wantDead int) {
	t.Helper()
	if l.Acknowledged != l.Published {
		t.Errorf("%d of %d events acknowledged", l.Acknowledged, l.Published)
	}
	if l.Lost != 0 {
		t.Errorf("%d deliveries lost", l.Lost)
	}
	for _, s := range l.Subscriptions {
		if s.Unexpected != 0 {
			t.Errorf("%s: %d unexpected deliveries", s.Subscription, s.Unexpected)
		}
		if s.Delivered+s.DeadLettered < s.Expected {
			t.Errorf("%s: %d delivered + %d dead-lettered of %d", s.Subscription, s.Delivered, s.DeadLettered, s.Expected)
		}
	}
	if l.DeadLettered != wantDead {
		t.Errorf("%d dead letters, want %d: %+v", l.DeadLettered, wantDead, l.DeadLetters)
	}
}
