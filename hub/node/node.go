package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/hubproject/hub/embedded"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/api"
)

// Node is one running hub.
type Node struct {
	cfg Config
	log zerolog.Logger

	srv *embedded.Server
	nc  *nats.Conn
	js  jetstream.JetStream

	api      *api.Server
	ln       net.Listener
	httpDone chan error

	shutdownOnce sync.Once
	shutdownErr  error
}

// Option configures a Node.
type Option func(*Node)

// WithLogger sets the root logger.
func WithLogger(l zerolog.Logger) Option { return func(n *Node) { n.log = l } }

// New returns a Node for cfg; Start runs it.
func New(cfg Config, opts ...Option) *Node {
	n := &Node{cfg: cfg, log: zerolog.Nop()}
	for _, o := range opts {
		o(n)
	}
	return n
}

// Start brings the hub up: NATS, streams, workers, then intake last, so
// nothing is accepted before it can be processed. On error everything
// started so far is stopped again.
func (n *Node) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = n.Shutdown(sctx)
		}
	}()
	if err := n.startNATS(ctx); err != nil {
		return err
	}
	js, err := jetstream.New(n.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	n.js = js
	if _, err := hub.EnsureStream(ctx, js, hub.EventsStreamConfig(n.cfg.Events)); err != nil {
		return err
	}
	if n.cfg.HTTP.Listen != "" {
		a, err := api.New(n.cfg.HTTP, n.cfg.Events, js, api.WithLogger(n.log.With().Str("component", "http").Logger()))
		if err != nil {
			return err
		}
		ln, err := a.Listen()
		if err != nil {
			return err
		}
		n.api, n.ln, n.httpDone = a, ln, make(chan error, 1)
		go func() { n.httpDone <- a.Serve(ln) }()
	}
	return nil
}

func (n *Node) startNATS(ctx context.Context) error {
	c := n.cfg.NATS
	if !c.Embedded {
		opts := []nats.Option{nats.Name("hub"), nats.MaxReconnects(-1)}
		if c.CredsFile != "" {
			opts = append(opts, nats.UserCredentials(c.CredsFile))
		}
		nc, err := nats.Connect(c.URL, opts...)
		if err != nil {
			return fmt.Errorf("connect to NATS at %s: %w", c.URL, err)
		}
		n.nc = nc
		return nil
	}
	l := n.log
	srv, err := embedded.Start(ctx, embedded.Options{
		Listen:     c.Listen,
		StoreDir:   c.StoreDir,
		Sync:       c.Sync,
		MaxMemory:  int64(c.MaxMemory),
		MaxStore:   int64(c.MaxStore),
		MaxPayload: int32(c.MaxPayload),
		Logger:     &l,
	})
	if err != nil {
		return err
	}
	n.srv = srv
	nc, err := srv.Connect("hub")
	if err != nil {
		return err
	}
	n.nc = nc
	return nil
}

// NATSURL is where outside NATS clients connect ("" when in-process only).
func (n *Node) NATSURL() string {
	if n.srv != nil {
		return n.srv.ClientURL()
	}
	return n.cfg.NATS.URL
}

// HTTPAddr is the bound HTTP address ("" when HTTP is off).
func (n *Node) HTTPAddr() string {
	if n.ln == nil {
		return ""
	}
	return n.ln.Addr().String()
}

// HTTPURL is the base URL of the HTTP API ("" when HTTP is off).
func (n *Node) HTTPURL() string {
	if a := n.HTTPAddr(); a != "" {
		return "http://" + a
	}
	return ""
}

// Conn is the hub's own (in-process when embedded) NATS connection.
func (n *Node) Conn() *nats.Conn { return n.nc }

// JetStream is the hub's JetStream context.
func (n *Node) JetStream() jetstream.JetStream { return n.js }

// Embedded is the embedded server (nil with external NATS).
func (n *Node) Embedded() *embedded.Server { return n.srv }

// HTTPDone reports the HTTP server's exit (nil channel when HTTP is off).
func (n *Node) HTTPDone() <-chan error { return n.httpDone }

// Shutdown stops the hub in order, each step with its own deadline within
// ctx: stop intake (HTTP), drain consumers, close channels, drain the NATS
// connection, stop the embedded server. It is safe to call more than once.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() { n.shutdownErr = n.shutdown(ctx) })
	return n.shutdownErr
}

func (n *Node) shutdown(ctx context.Context) error {
	var errs []error
	step := func(name string, limit time.Duration, f func(context.Context) error) {
		sctx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		start := time.Now()
		if err := f(sctx); err != nil {
			errs = append(errs, fmt.Errorf("shutdown %s: %w", name, err))
			n.log.Warn().Err(err).Str("step", name).Msg("shutdown step failed")
			return
		}
		n.log.Debug().Str("step", name).Int64("duration_ms", time.Since(start).Milliseconds()).Msg("shutdown step done")
	}
	if n.api != nil {
		step("http", 10*time.Second, func(ctx context.Context) error {
			if err := n.api.Shutdown(ctx); err != nil {
				return err
			}
			return <-n.httpDone
		})
	}
	if n.nc != nil {
		step("nats connection", 10*time.Second, func(ctx context.Context) error {
			return drainConn(ctx, n.nc)
		})
	}
	if n.srv != nil {
		step("embedded server", 20*time.Second, n.srv.Shutdown)
	}
	return errors.Join(errs...)
}

// drainConn drains the connection (flushing pending publishes and acks) and
// waits until it is closed.
func drainConn(ctx context.Context, nc *nats.Conn) error {
	if nc.IsClosed() {
		return nil
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		if strings.Contains(err.Error(), "closed") {
			return nil
		}
		nc.Close()
		return err
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		nc.Close()
		return ctx.Err()
	}
}
