package chaos

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// hubBin is the hub binary TestMain builds.
var hubBin string

// TestMain builds cmd/hub once, without the race detector (HUB_CHAOS_RACE=1
// adds it): the hub is the system under test and runs several times faster
// that way; the test process itself (publishers, receivers, the ledger)
// runs under -race in `make test`. HUB_CHAOS_BIN=path runs the scenarios
// against an existing binary instead, e.g. a release build.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hubchaos")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if hubBin = os.Getenv("HUB_CHAOS_BIN"); hubBin == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		hubBin, err = BuildHub(ctx, dir, os.Getenv("HUB_CHAOS_RACE") == "1")
		cancel()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// chaosOnly skips a long scenario unless HUB_CHAOS=1 (make chaos).
func chaosOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("HUB_CHAOS") != "1" {
		t.Skip("long chaos scenario: run with HUB_CHAOS=1 (make chaos)")
	}
}

// poll calls cond every interval until it holds or ctx ends. For
// conditions no one can signal (a counter in another process).
func poll(ctx context.Context, every time.Duration, cond func() bool) error {
	tk := time.NewTicker(every)
	defer tk.Stop()
	for !cond() {
		select {
		case <-tk.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func startReceiver(t *testing.T) *Receiver {
	t.Helper()
	r, err := StartReceiver(t)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
