package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/subscribers/audit"
)

// runTrace: hub trace <event-id>, the event's delivery timeline from the
// AUDIT stream, over NATS.
func runTrace(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("trace", stderr)
	server := fs.String("server", "nats://127.0.0.1:4222", "NATS URL of the hub")
	asJSON := fs.Bool("json", false, "print the trace as JSON")
	since := fs.Duration("since", 0, "read records from this long ago on (default: found from the event)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the hub")
	// Flags may come before or after the event id.
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var id string
	if fs.NArg() > 0 {
		id = fs.Arg(0)
		if err := parseFlags(fs, fs.Args()[1:]); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("%w: one event id, got also %q", errUsage, fs.Arg(0))
		}
	}
	if id == "" {
		return fmt.Errorf("%w: hub trace EVENT-ID [-server URL] [-json]", errUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	nc, err := nats.Connect(*server, nats.Name("hub trace"))
	if err != nil {
		return fmt.Errorf("connect %s: %w", *server, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var opts []audit.TraceOption
	if *since > 0 {
		opts = append(opts, audit.Since(time.Now().Add(-*since)))
	}
	tr, err := audit.Trace(ctx, js, id, opts...)
	if errors.Is(err, audit.ErrNoRecords) {
		return fmt.Errorf("no audit records for event %q", id)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(tr)
	}
	printTrace(stdout, tr)
	return nil
}

func printTrace(w io.Writer, tr *audit.EventTrace) {
	var ev struct {
		Type   string    `json:"type"`
		Source string    `json:"source"`
		Time   time.Time `json:"time"`
	}
	_ = json.Unmarshal(tr.Event, &ev)
	if len(tr.Event) > 0 {
		fmt.Fprintf(w, "event %s  type %s  source %s  time %s\n\n", tr.EventID, ev.Type, ev.Source, ev.Time.Format(time.RFC3339Nano))
	} else {
		fmt.Fprintf(w, "event %s (no event record: audit was off when it was stored, or it aged out)\n\n", tr.EventID)
	}
	start := tr.Timeline[0].At
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\t+MS\tKIND\tSUBSCRIPTION\tCHANNEL\tRECIPIENT\tATTEMPT\tSTATUS\tLATENCY\tDETAIL")
	for _, r := range tr.Timeline {
		fmt.Fprintf(tw, "%s\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.At.UTC().Format("15:04:05.000"), float64(r.At.Sub(start).Microseconds())/1000, r.Kind,
			dash(r.Subscription), dash(r.Channel), dash(r.Recipient), num(r.Attempt), num(r.Status), latency(r.LatencyMS), detail(r))
	}
	tw.Flush()
	if len(tr.Summary) == 0 {
		return
	}
	fmt.Fprintln(w)
	subs := make([]string, 0, len(tr.Summary))
	for s := range tr.Summary {
		subs = append(subs, s)
	}
	sort.Strings(subs)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBSCRIPTION\tCHANNEL\tSTATE\tDELIVERED\tATTEMPTS\tLAST ERROR")
	for _, s := range subs {
		st := tr.Summary[s]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d\t%s\n", s, dash(st.Channel), st.State, st.Delivered, st.Deliveries, st.Attempts, dash(st.LastError))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func num(n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

func latency(ms float64) string {
	switch {
	case ms == 0:
		return "-"
	case ms < 1:
		return fmt.Sprintf("%.3fms", ms)
	}
	return fmt.Sprintf("%.1fms", ms)
}

// detail is the rest of a record in a few words.
func detail(r audit.Record) string {
	var parts []string
	if r.Error != "" {
		parts = append(parts, r.Error)
	}
	if r.Reason != "" {
		parts = append(parts, r.Reason)
	}
	if r.Permanent && r.Kind == "failed" {
		parts = append(parts, "permanent")
	}
	if r.RetryInMS > 0 {
		parts = append(parts, "retry in "+(time.Duration(r.RetryInMS)*time.Millisecond).String())
	}
	if r.DLQID > 0 {
		parts = append(parts, fmt.Sprintf("dead letter %d", r.DLQID))
	}
	if r.Kind == audit.KindEvent && r.StreamSeq > 0 {
		parts = append(parts, fmt.Sprintf("stored, EVENTS seq %d", r.StreamSeq))
	}
	return strings.Join(parts, "; ")
}
