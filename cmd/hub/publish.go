package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hubproject/hub/publisher"
)

func runPublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("publish", stderr)
	nf := addNATSFlags(fs)
	typ := fs.String("type", "", "event type, e.g. order.created (required)")
	id := fs.String("id", "", "event id (generated when empty); the dedup key")
	source := fs.String("source", "hub/cli", "event source")
	subject := fs.String("subject", "", "CloudEvents subject")
	data := fs.String("data", "", "event data as JSON, or @file to read it from a file")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the hub")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *typ == "" {
		return fmt.Errorf("%w: -type is required", errUsage)
	}
	ev := publisher.Event{Type: *typ, ID: *id, Source: *source, Subject: *subject}
	if *data != "" {
		raw := []byte(*data)
		if name, ok := strings.CutPrefix(*data, "@"); ok {
			b, err := os.ReadFile(name)
			if err != nil {
				return fmt.Errorf("read -data file: %w", err)
			}
			raw = b
		}
		if !json.Valid(raw) {
			return fmt.Errorf("%w: -data is not valid JSON", errUsage)
		}
		ev.Data = raw
		ev.DataContentType = "application/json"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	nc, err := nf.connect("hub publish")
	if err != nil {
		return err
	}
	defer nc.Close()
	p, err := publisher.New(nc)
	if err != nil {
		return err
	}
	ack, err := p.Publish(ctx, ev)
	if err != nil {
		return err
	}
	out, _ := json.Marshal(ack)
	fmt.Fprintln(stdout, string(out))
	return nil
}
