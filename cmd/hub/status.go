package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/subs"
	"github.com/hubproject/hub/subscribers/audit"
)

// hubStatus is what `hub status` reports (its -json output).
type hubStatus struct {
	Streams     []streamStatus   `json:"streams"`
	Consumers   []consumerStatus `json:"consumers"`
	DeadLetters []deadCount      `json:"dead_letters"`
	Disabled    []disabledSub    `json:"disabled_subscriptions"`
}

type streamStatus struct {
	Name      string         `json:"name"`
	Messages  uint64         `json:"messages"`
	Bytes     uint64         `json:"bytes"`
	FirstSeq  uint64         `json:"first_seq"`
	LastSeq   uint64         `json:"last_seq"`
	Consumers int            `json:"consumers"`
	Replicas  int            `json:"replicas"`
	Cluster   *clusterStatus `json:"cluster,omitempty"`
}

type clusterStatus struct {
	Name   string       `json:"name,omitempty"`
	Leader string       `json:"leader,omitempty"`
	Peers  []peerStatus `json:"peers,omitempty"`
}

type peerStatus struct {
	Name     string `json:"name"`
	Current  bool   `json:"current"`
	Offline  bool   `json:"offline,omitempty"`
	Lag      uint64 `json:"lag,omitempty"`
	ActiveMS int64  `json:"active_ms"`
}

type consumerStatus struct {
	Stream      string `json:"stream"`
	Name        string `json:"name"`
	Channel     string `json:"channel,omitempty"`
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
	Waiting     int    `json:"waiting"`
}

type deadCount struct {
	Channel      string `json:"channel"`
	Subscription string `json:"subscription"`
	Count        uint64 `json:"count"`
}

type disabledSub struct {
	ID     string     `json:"id"`
	Origin string     `json:"origin"` // config or api
	Reason string     `json:"reason,omitempty"`
	Since  *time.Time `json:"since,omitempty"`
}

// statusStreams are the hub's streams, in the order shown.
var statusStreams = []string{hub.EventsStream, hub.DeliveriesStream, hub.DLQStream, hub.AdvisoriesStream, audit.StreamName, "KV_" + subs.Bucket}

// runStatus: hub status, over NATS to the hub's JetStream. With NATS
// users configured it needs a user allowed to read stream and consumer
// info and the subscriptions bucket (the admin role).
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	nf := addNATSFlags(fs)
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the hub")
	asJSON := fs.Bool("json", false, "JSON output")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: hub status takes no arguments", errUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	nc, err := nf.connect("hub status")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	st, err := readStatus(ctx, js)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return writeStatus(stdout, st)
}

func readStatus(ctx context.Context, js jetstream.JetStream) (hubStatus, error) {
	st := hubStatus{Streams: []streamStatus{}, Consumers: []consumerStatus{}, DeadLetters: []deadCount{}, Disabled: []disabledSub{}}
	for _, name := range statusStreams {
		s, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) && name != hub.EventsStream {
			continue // an older hub, or the subscriptions bucket not made yet
		}
		if err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return st, fmt.Errorf("no %s stream: is a hub running there?", name)
			}
			return st, fmt.Errorf("stream %s: %w", name, err)
		}
		info := s.CachedInfo()
		ss := streamStatus{
			Name: name, Messages: info.State.Msgs, Bytes: info.State.Bytes, FirstSeq: info.State.FirstSeq,
			LastSeq: info.State.LastSeq, Consumers: info.State.Consumers, Replicas: info.Config.Replicas,
		}
		if c := info.Cluster; c != nil {
			cs := &clusterStatus{Name: c.Name, Leader: c.Leader}
			for _, p := range c.Replicas {
				cs.Peers = append(cs.Peers, peerStatus{Name: p.Name, Current: p.Current, Offline: p.Offline, Lag: p.Lag, ActiveMS: p.Active.Milliseconds()})
			}
			ss.Cluster = cs
		}
		st.Streams = append(st.Streams, ss)
		if name == hub.EventsStream || name == hub.DeliveriesStream || name == hub.AdvisoriesStream {
			cons, err := consumersOf(ctx, s, name)
			if err != nil {
				return st, err
			}
			st.Consumers = append(st.Consumers, cons...)
		}
		if name == hub.DLQStream && info.State.Msgs > 0 {
			dead, err := deadLetterCounts(ctx, s)
			if err != nil {
				return st, err
			}
			st.DeadLetters = dead
		}
	}
	disabled, err := disabledSubscriptions(ctx, js)
	if err != nil {
		return st, err
	}
	st.Disabled = disabled
	return st, nil
}

// consumersOf lists the durable consumers of a stream (the dashboard's and
// other tools' ephemeral ones are left out).
func consumersOf(ctx context.Context, s jetstream.Stream, stream string) ([]consumerStatus, error) {
	var out []consumerStatus
	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		if ci.Config.Durable == "" {
			continue
		}
		c := consumerStatus{Stream: stream, Name: ci.Name, Pending: ci.NumPending, AckPending: ci.NumAckPending,
			Redelivered: ci.NumRedelivered, Waiting: ci.NumWaiting}
		switch stream {
		case hub.EventsStream:
			c.Channel, _ = strings.CutPrefix(ci.Name, "hub-")
		case hub.DeliveriesStream:
			c.Channel = strings.TrimSuffix(strings.TrimPrefix(ci.Name, "hub-"), "-retry")
		}
		out = append(out, c)
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("consumers of %s: %w", stream, err)
	}
	slices.SortFunc(out, func(a, b consumerStatus) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// deadLetterCounts counts dead letters per dlq.<channel>.<subscription>
// subject.
func deadLetterCounts(ctx context.Context, s jetstream.Stream) ([]deadCount, error) {
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(hub.DLQPrefix+">"))
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	out := []deadCount{}
	for subj, n := range info.State.Subjects {
		ch, sub, ok := strings.Cut(strings.TrimPrefix(subj, hub.DLQPrefix), ".")
		if !ok {
			ch, sub = subj, ""
		}
		out = append(out, deadCount{Channel: ch, Subscription: sub, Count: n})
	}
	slices.SortFunc(out, func(a, b deadCount) int {
		if c := strings.Compare(a.Channel, b.Channel); c != 0 {
			return c
		}
		return strings.Compare(a.Subscription, b.Subscription)
	})
	return out, nil
}

// disabledSubscriptions reads the subscriptions bucket: runtime
// subscriptions (sub.<id>) that are disabled, and config subscriptions
// disabled at runtime (override.<id>). A config subscription with
// disabled: true in the file is not in the bucket.
func disabledSubscriptions(ctx context.Context, js jetstream.JetStream) ([]disabledSub, error) {
	out := []disabledSub{}
	kv, err := js.KeyValue(ctx, subs.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("subscriptions: %w", err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("subscriptions: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return nil, fmt.Errorf("subscriptions: %w", ctx.Err())
		}
		if e == nil { // the current values are all read
			break
		}
		var v struct {
			Disabled       bool       `json:"disabled"`
			DisabledReason string     `json:"disabled_reason"`
			DisabledAt     *time.Time `json:"disabled_at"`
		}
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			continue
		}
		if id, ok := strings.CutPrefix(e.Key(), "sub."); ok && v.Disabled {
			out = append(out, disabledSub{ID: id, Origin: subs.OriginAPI, Reason: v.DisabledReason, Since: v.DisabledAt})
		} else if id, ok := strings.CutPrefix(e.Key(), "override."); ok {
			out = append(out, disabledSub{ID: id, Origin: subs.OriginConfig, Reason: v.DisabledReason, Since: v.DisabledAt})
		}
	}
	slices.SortFunc(out, func(a, b disabledSub) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func writeStatus(w io.Writer, st hubStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tMESSAGES\tBYTES\tFIRST SEQ\tLAST SEQ\tCONSUMERS\tREPLICAS")
	for _, s := range st.Streams {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\n", s.Name, s.Messages, statusBytes(s.Bytes), s.FirstSeq, s.LastSeq, s.Consumers, s.Replicas)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "CONSUMER\tSTREAM\tCHANNEL\tPENDING\tACK PENDING\tREDELIVERED\tWAITING PULLS")
	for _, c := range st.Consumers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\n", c.Name, c.Stream, orDash(c.Channel), c.Pending, c.AckPending, c.Redelivered, c.Waiting)
	}
	fmt.Fprintln(tw)
	if len(st.DeadLetters) == 0 {
		fmt.Fprintln(tw, "DEAD LETTERS: none")
	} else {
		fmt.Fprintln(tw, "DEAD LETTERS\tCHANNEL\tSUBSCRIPTION\tCOUNT")
		var total uint64
		for _, d := range st.DeadLetters {
			fmt.Fprintf(tw, "\t%s\t%s\t%d\n", d.Channel, orDash(d.Subscription), d.Count)
			total += d.Count
		}
		fmt.Fprintf(tw, "\t\ttotal\t%d\n", total)
	}
	fmt.Fprintln(tw)
	if len(st.Disabled) == 0 {
		fmt.Fprintln(tw, "DISABLED SUBSCRIPTIONS: none")
	} else {
		fmt.Fprintln(tw, "DISABLED SUBSCRIPTIONS\tID\tORIGIN\tSINCE\tREASON")
		for _, d := range st.Disabled {
			since := "-"
			if d.Since != nil {
				since = d.Since.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s\n", d.ID, d.Origin, since, orDash(d.Reason))
		}
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "CLUSTER\tSTREAM\tLEADER\tPEERS")
	for _, s := range st.Streams {
		c := s.Cluster
		if c == nil {
			fmt.Fprintf(tw, "-\t%s\t-\t-\n", s.Name)
			continue
		}
		peers := make([]string, 0, len(c.Peers))
		for _, p := range c.Peers {
			state := "current"
			switch {
			case p.Offline:
				state = "offline"
			case !p.Current:
				state = fmt.Sprintf("behind %d", p.Lag)
			}
			peers = append(peers, fmt.Sprintf("%s (%s)", p.Name, state))
		}
		name := c.Name
		if name == "" {
			name = "standalone"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, s.Name, orDash(c.Leader), orDash(strings.Join(peers, ", ")))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func statusBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
