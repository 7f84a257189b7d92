package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub/dlq"
)

// Ledger accounts for every event of a scenario.
type Ledger struct {
	Scenario string `json:"scenario"`
	// Command reproduces the run.
	Command  string `json:"command"`
	Duration string `json:"duration"`
	// Published is the distinct events the publishers sent.
	Published int `json:"published"`
	Stats
	// Subscriptions: what each one should have got and what it got.
	Subscriptions []SubLedger `json:"subscriptions"`
	// Duplicates and Lost summed over the subscriptions.
	Duplicates   int `json:"duplicates"`
	Lost         int `json:"lost"`
	DeadLettered int `json:"dead_lettered"`
	// DeadLetters counts the DLQ records by subscription and reason.
	DeadLetters []DeadLetterCount `json:"dead_letters"`
	// Faults are what was done to the system, in order.
	Faults []string `json:"faults"`
	// Measures are scenario-specific figures (peaks, times).
	Measures []Measure `json:"measures,omitempty"`
}

// SubLedger is one subscription's account.
type SubLedger struct {
	Subscription string `json:"subscription"`
	Channel      string `json:"channel"`
	// Expected deliveries: acknowledged events routed to it that should
	// arrive (a poison event is expected in the DLQ instead).
	Expected int `json:"expected"`
	// Delivered is the distinct expected deliveries that arrived.
	Delivered int `json:"delivered"`
	// Received is every request or message, duplicates included.
	Received   int `json:"received"`
	Duplicates int `json:"duplicates"`
	// Lost: expected, not delivered and not dead-lettered.
	Lost int `json:"lost"`
	// Unexpected: arrived though no acknowledged event should have sent it.
	Unexpected   int `json:"unexpected"`
	DeadLettered int `json:"dead_lettered"`
}

// DeadLetterCount is how many DLQ records share a subscription and reason.
type DeadLetterCount struct {
	Subscription string `json:"subscription"`
	Reason       string `json:"reason"`
	Count        int    `json:"count"`
}

// Measure is a named figure.
type Measure struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Account fills a SubLedger from the delivery ids that should arrive
// (expected) and the arrivals counted per id (got); deadIDs are the
// delivery ids found in the DLQ for this subscription.
func Account(sub, channel string, expected map[string]bool, got map[string]int, deadIDs map[string]bool) SubLedger {
	s := SubLedger{Subscription: sub, Channel: channel, Expected: len(expected), DeadLettered: len(deadIDs)}
	for id, n := range got {
		s.Received += n
		if !expected[id] {
			s.Unexpected++
			continue
		}
		s.Delivered++
		s.Duplicates += n - 1
	}
	for id := range expected {
		if got[id] == 0 && !deadIDs[id] {
			s.Lost++
		}
	}
	return s
}

// Add appends a subscription's account and updates the totals.
func (l *Ledger) Add(s SubLedger) {
	l.Subscriptions = append(l.Subscriptions, s)
	l.Duplicates += s.Duplicates
	l.Lost += s.Lost
}

// Measure records a figure.
func (l *Ledger) Measure(name, format string, args ...any) {
	l.Measures = append(l.Measures, Measure{Name: name, Value: fmt.Sprintf(format, args...)})
}

// Fault records what was done.
func (l *Ledger) Fault(format string, args ...any) {
	l.Faults = append(l.Faults, fmt.Sprintf(format, args...))
}

// DeadLetters reads the hub's DLQ and returns the records grouped by
// subscription and reason, and the delivery ids per subscription.
func DeadLetters(ctx context.Context, natsURL string) ([]DeadLetterCount, map[string]map[string]bool, int, error) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return nil, nil, 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, 0, err
	}
	items, err := dlq.NewStore(js, nil).List(ctx, dlq.Filter{Limit: 1_000_000})
	if err != nil {
		return nil, nil, 0, err
	}
	groups := map[[2]string]int{}
	ids := map[string]map[string]bool{}
	for _, dl := range items {
		groups[[2]string{dl.Subscription, dl.Reason}]++
		if ids[dl.Subscription] == nil {
			ids[dl.Subscription] = map[string]bool{}
		}
		ids[dl.Subscription][dl.DeliveryID] = true
	}
	out := make([]DeadLetterCount, 0, len(groups))
	for k, n := range groups {
		out = append(out, DeadLetterCount{Subscription: k[0], Reason: k[1], Count: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Subscription != out[j].Subscription {
			return out[i].Subscription < out[j].Subscription
		}
		return out[i].Reason < out[j].Reason
	})
	return out, ids, len(items), nil
}

// Table renders the ledger for people.
func (l *Ledger) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ledger: %s (%s)\n", l.Scenario, l.Duration)
	fmt.Fprintf(&b, "  command: %s\n", l.Command)
	tw := tabwriter.NewWriter(&b, 2, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  \tpublished\tpublish attempts\tpublish errors\tacknowledged\tacked as duplicate\t\n")
	fmt.Fprintf(tw, "  \t%d\t%d\t%d\t%d\t%d\t\n", l.Published, l.Attempts, l.Errors, l.Acknowledged, l.AckedDuplicate)
	tw.Flush()
	tw = tabwriter.NewWriter(&b, 2, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  subscription\tchannel\texpected\tdelivered\treceived\tduplicates\tlost\tunexpected\tdead-lettered\t\n")
	for _, s := range l.Subscriptions {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", s.Subscription, s.Channel, s.Expected, s.Delivered,
			s.Received, s.Duplicates, s.Lost, s.Unexpected, s.DeadLettered)
	}
	fmt.Fprintf(tw, "  total\t\t\t\t\t%d\t%d\t\t%d\t\n", l.Duplicates, l.Lost, l.DeadLettered)
	tw.Flush()
	for _, d := range l.DeadLetters {
		fmt.Fprintf(&b, "  dead letter x%d %s: %s\n", d.Count, d.Subscription, d.Reason)
	}
	for _, f := range l.Faults {
		fmt.Fprintf(&b, "  fault: %s\n", f)
	}
	for _, m := range l.Measures {
		fmt.Fprintf(&b, "  %s: %s\n", m.Name, m.Value)
	}
	return b.String()
}

// JSON renders the ledger for machines.
func (l *Ledger) JSON() string {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return fmt.Sprintf(`{"error": %q}`, err)
	}
	return string(b)
}

// Report logs the ledger as a table and as JSON, and writes the JSON to
// $HUB_CHAOS_LEDGERS/<scenario>.json when that variable names a directory.
func (l *Ledger) Report(t interface{ Logf(string, ...any) }, start time.Time) {
	l.Duration = time.Since(start).Round(100 * time.Millisecond).String()
	t.Logf("\n%s\n%s", l.Table(), l.JSON())
	if dir := os.Getenv("HUB_CHAOS_LEDGERS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err == nil {
			_ = os.WriteFile(filepath.Join(dir, l.Scenario+".json"), []byte(l.JSON()+"\n"), 0o644)
		}
	}
}
