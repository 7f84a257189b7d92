package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub/dlq"
)

// runDLQ: hub dlq list|replay|drop, over NATS to the hub's JetStream.
func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: hub dlq list|replay|drop [flags]", errUsage)
	}
	sub, args := args[0], args[1:]
	fs := newFlags("dlq "+sub, stderr)
	nf := addNATSFlags(fs)
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the hub")
	var (
		channel, subscription *string
		all, asJSON           *bool
		limit                 *int
	)
	switch sub {
	case "list":
		channel = fs.String("channel", "", "only this channel")
		subscription = fs.String("subscription", "", "only this subscription")
		limit = fs.Int("limit", 1000, "at most this many")
		asJSON = fs.Bool("json", false, "JSON output")
	case "replay":
		all = fs.Bool("all", false, "replay every dead letter (with -subscription: of that subscription)")
		subscription = fs.String("subscription", "", "with -all: only this subscription")
	case "drop":
	default:
		return fmt.Errorf("%w: unknown dlq command %q (list, replay, drop)", errUsage, sub)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	nc, err := nf.connect("hub dlq")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	store := dlq.NewStore(js, nil)
	switch sub {
	case "list":
		items, err := store.List(ctx, dlq.Filter{Channel: *channel, Subscription: *subscription, Limit: *limit})
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(items)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCHANNEL\tSUBSCRIPTION\tEVENT\tRECIPIENT\tATTEMPTS\tDEAD AT\tREASON")
		for _, it := range items {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", it.ID, it.Channel, it.Subscription, it.EventID, it.Recipient,
				it.Attempts, it.DeadAt.Format(time.RFC3339), it.Reason)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "%d dead letter(s)\n", len(items))
	case "replay":
		var ids []uint64
		if *all {
			if fs.NArg() != 0 {
				return fmt.Errorf("%w: give an ID or -all, not both", errUsage)
			}
			items, err := store.List(ctx, dlq.Filter{Subscription: *subscription, Limit: 100000})
			if err != nil {
				return err
			}
			for _, it := range items {
				ids = append(ids, it.ID)
			}
		} else {
			id, err := oneID(fs.Args())
			if err != nil {
				return err
			}
			ids = []uint64{id}
		}
		failed := 0
		for _, id := range ids {
			dl, err := store.Replay(ctx, id)
			if err != nil {
				failed++
				fmt.Fprintf(stderr, "replay %d: %v\n", id, err)
				continue
			}
			fmt.Fprintf(stdout, "replayed %d: event %s to %s\n", id, dl.EventID, dl.Subscription)
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d replays failed", failed, len(ids))
		}
	case "drop":
		id, err := oneID(fs.Args())
		if err != nil {
			return err
		}
		if err := store.Drop(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "dropped %d\n", id)
	}
	return nil
}

func oneID(args []string) (uint64, error) {
	if len(args) != 1 {
		return 0, fmt.Errorf("%w: one dead letter ID is required", errUsage)
	}
	id, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%w: %q is not a dead letter ID", errUsage, args[0])
	}
	return id, nil
}
