// Package embeddedtest starts an embedded JetStream server for tests: a
// random port, a t.TempDir() store, and shutdown on t.Cleanup.
package embeddedtest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/embedded"
)

// Start starts a server listening on a random loopback port.
func Start(t testing.TB, opts ...func(*embedded.Options)) *embedded.Server {
	t.Helper()
	o := embedded.Options{Listen: "127.0.0.1:0", StoreDir: t.TempDir()}
	for _, f := range opts {
		f(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := embedded.Start(ctx, o)
	if err != nil {
		t.Fatalf("start embedded server: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown embedded server: %v", err)
		}
	})
	return s
}

// Connect opens an in-process connection closed on t.Cleanup.
func Connect(t testing.TB, s *embedded.Server) *nats.Conn {
	t.Helper()
	nc, err := s.Connect(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// ConnectTCP opens a TCP connection to the server's client port, as an
// outside client would, closed on t.Cleanup.
func ConnectTCP(t testing.TB, s *embedded.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
