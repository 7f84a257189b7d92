package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hubproject/hub/publisher"
)

// runGather: hub gather ROUTE key=value ... sends the parameters to the
// route's NATS door and prints the merged reply. Exit 0 on 200, 1 otherwise.
func runGather(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("gather", stderr)
	nf := addNATSFlags(fs)
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the reply")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return fmt.Errorf("%w: hub gather ROUTE [key=value ...]", errUsage)
	}
	route := fs.Arg(0)
	params := map[string]any{}
	for _, kv := range fs.Args()[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("%w: parameter %q is not key=value", errUsage, kv)
		}
		// Strings, as in an HTTP query: the same request hits the same cache entry.
		params[k] = v
	}
	nc, err := nf.connect("hub gather")
	if err != nil {
		return err
	}
	defer nc.Close()
	body, status, err := publisher.GatherRoute(ctx, nc, route, params, publisher.Timeout(*timeout))
	if err != nil {
		return err
	}
	var pretty any
	if json.Unmarshal(body, &pretty) == nil {
		b, _ := json.MarshalIndent(pretty, "", "  ")
		body = b
	}
	fmt.Fprintln(stdout, string(body))
	if status != 200 {
		return fmt.Errorf("route %s answered %d", route, status)
	}
	return nil
}
