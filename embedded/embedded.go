// Package embedded runs the nats-server with JetStream inside the hub
// process. The hub's own clients connect in-process (nats.InProcessServer),
// so they never touch TCP; outside clients use the listen address.
package embedded

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/hubproject/hub/config"
)

// Sync says when JetStream file writes reach the disk.
const (
	// SyncDefault flushes on the server's interval (2 minutes): fast, but a
	// power loss can lose acknowledged writes from the last interval.
	SyncDefault = "default"
	// SyncAlways fsyncs every write before acknowledging it.
	SyncAlways = "always"
)

// Options configures the embedded server.
type Options struct {
	// Listen is the client address ("127.0.0.1:4222", port 0 or -1 for a
	// random port); empty means in-process only, no TCP listener.
	Listen string
	// StoreDir holds the JetStream file store.
	StoreDir string
	// Sync is SyncDefault or SyncAlways.
	Sync string
	// MaxMemory and MaxStore cap JetStream's memory and file storage
	// (0: server default, which is a share of the machine).
	MaxMemory int64
	MaxStore  int64
	// MaxPayload is the largest message the server accepts (0: 1 MiB).
	MaxPayload int32
	// ServerName names the node (default "hub").
	ServerName string
	// ReadyTimeout bounds the wait for the server to accept clients (default 10s).
	ReadyTimeout time.Duration
	// Logger receives the server's log lines (nil: silent).
	Logger *zerolog.Logger
	// Users, when any, make the client port require authentication; each
	// user's role limits what it may publish and subscribe to. The hub's
	// own in-process connections (Connect) use an internal nkey user made
	// at start, with no limits. Without users anyone who reaches the
	// port may do anything: keep Listen on loopback then.
	Users []User
	// TLS, if set, makes TLS required on the client port (in-process
	// connections skip it). Set ClientAuth and ClientCAs to require client
	// certificates; MinVersion should be TLS 1.2 or later.
	TLS *tls.Config
	// ClusterTLS, if set, secures cluster routes; it applies only when
	// Configure sets up a cluster (server.Options.Cluster.Port).
	ClusterTLS *tls.Config
	// Cluster, when set, joins this server to a NATS cluster: JetStream
	// then replicates streams across the nodes.
	Cluster *Cluster
	// Configure, if set, can adjust the server options before start.
	Configure func(*server.Options) error
}

// Cluster is this node's part of a NATS cluster.
type Cluster struct {
	// Name is the cluster's name, the same on every node.
	Name string
	// Listen is the route address (host:port) other nodes connect to.
	Listen string
	// Routes are the other nodes' route URLs (nats://host:port); listing
	// this node too is harmless.
	Routes []string
}

// tlsTimeout bounds a TLS handshake on the client and cluster ports.
const tlsTimeout = 2 * time.Second

// Server is a running embedded nats-server.
type Server struct {
	ns   *server.Server
	opts Options
	// internalKey authenticates Connect when Users is set.
	internalKey nkeys.KeyPair
	// clustered: routes are configured, so readiness needs the meta leader.
	clustered bool
}

// Start starts the server and waits until it accepts clients and JetStream
// is ready.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embedded: store dir is required")
	}
	if o.Sync == "" {
		o.Sync = SyncDefault
	}
	if o.Sync != SyncDefault && o.Sync != SyncAlways {
		return nil, fmt.Errorf("embedded: sync must be %q or %q, not %q", SyncDefault, SyncAlways, o.Sync)
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 10 * time.Second
	}
	if o.ServerName == "" {
		o.ServerName = "hub"
	}
	storeDir, err := filepath.Abs(o.StoreDir)
	if err != nil {
		return nil, fmt.Errorf("embedded: store dir: %w", err)
	}
	if err := os.MkdirAll(storeDir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded: create store dir: %w", err)
	}
	so := &server.Options{
		ServerName:         o.ServerName,
		JetStream:          true,
		StoreDir:           storeDir,
		JetStreamMaxMemory: o.MaxMemory,
		JetStreamMaxStore:  o.MaxStore,
		MaxPayload:         o.MaxPayload,
		NoSigs:             true, // the hub owns signal handling
		NoSystemAccount:    false,
	}
	if o.MaxMemory == 0 {
		so.JetStreamMaxMemory = 256 << 20
	}
	if o.Sync == SyncAlways {
		so.SyncAlways = true
	}
	if o.Listen == "" {
		so.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded: listen %q: %w", o.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded: listen port %q: %w", port, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		so.Host, so.Port = host, p
	}
	var internalKey nkeys.KeyPair
	if len(o.Users) > 0 {
		if internalKey, err = applyAuth(so, o.Users); err != nil {
			return nil, fmt.Errorf("embedded: auth: %w", err)
		}
	}
	if o.TLS != nil {
		so.TLSConfig = o.TLS
		so.TLS = true
		so.TLSVerify = o.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		so.TLSTimeout = tlsTimeout.Seconds()
	}
	if c := o.Cluster; c != nil {
		host, port, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded: cluster listen %q: %w", c.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p <= 0 {
			return nil, fmt.Errorf("embedded: cluster listen port %q must be a fixed port", port)
		}
		so.Cluster.Name, so.Cluster.Host, so.Cluster.Port = c.Name, host, p
		so.Routes = server.RoutesFromStr(strings.Join(c.Routes, ","))
		if len(c.Routes) > 0 && len(so.Routes) == 0 {
			return nil, fmt.Errorf("embedded: cluster routes %s are not URLs", config.RedactURLs(strings.Join(c.Routes, ",")))
		}
	}
	if o.Configure != nil {
		if err := o.Configure(so); err != nil {
			return nil, fmt.Errorf("embedded: configure: %w", err)
		}
	}
	if o.ClusterTLS != nil && so.Cluster.Port != 0 {
		so.Cluster.TLSConfig = o.ClusterTLS
		so.Cluster.TLSTimeout = tlsTimeout.Seconds()
	}
	// The monitoring port (/varz, /connz) would show connections and
	// subjects to anyone who reaches it: the hub keeps it off.
	if so.HTTPPort != 0 || so.HTTPSPort != 0 {
		return nil, errors.New("embedded: the NATS monitoring port must stay off (HTTPPort/HTTPSPort)")
	}
	ns, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	if o.Logger != nil {
		ns.SetLoggerV2(&natsLogger{l: o.Logger.With().Str("component", "nats").Logger()}, false, false, false)
	}
	ns.Start()
	deadline := o.ReadyTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < deadline {
		deadline = time.Until(d)
	}
	if !ns.ReadyForConnections(deadline) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("embedded: server not ready after %s (is %s in use?)", deadline, o.Listen)
	}
	s := &Server{ns: ns, opts: o, internalKey: internalKey, clustered: so.Cluster.Port != 0}
	// Wait until JetStream can answer (streams recovered; in a cluster,
	// joined to the meta leader) so the first stream call after Start does
	// not race recovery.
	if err := s.waitJetStream(ctx, deadline); err != nil {
		s.shutdownNow()
		return nil, err
	}
	return s, nil
}

// waitJetStream polls until JetStream is ready or limit passes. In a
// cluster JetStreamIsCurrent alone is not enough: a node restarted on its
// store reads as current (recovered commit == applied, no leader known yet)
// while it still replays its meta log and forms its routes, and API
// requests sent then can go unanswered. The server's meta health check
// also wants a known meta leader, recent contact with it and the meta
// recovery done.
func (s *Server) waitJetStream(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	nextLog := time.Now().Add(waitLogEvery)
	for {
		why := s.jetStreamNotReady()
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("embedded: JetStream did not become ready within %s: %s", limit, why)
		}
		if l := s.opts.Logger; l != nil && time.Now().After(nextLog) {
			l.Info().Str("waiting_for", why).Msg("waiting for JetStream")
			nextLog = time.Now().Add(waitLogEvery)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("embedded: waiting for JetStream (%s): %w", why, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitLogEvery spaces the log lines of a long wait for JetStream.
const waitLogEvery = 10 * time.Second

// jetStreamNotReady says why JetStream cannot serve yet ("" when it can).
func (s *Server) jetStreamNotReady() string {
	if !s.ns.JetStreamEnabled() {
		return "JetStream not enabled yet"
	}
	if !s.clustered && !s.ns.JetStreamIsClustered() {
		// Standalone: streams are recovered once JetStream is enabled.
		return ""
	}
	if h := s.ns.Healthz(&server.HealthzOptions{JSMetaOnly: true}); h.Error != "" {
		return h.Error
	}
	if !s.ns.JetStreamIsCurrent() {
		return "JetStream meta layer not current"
	}
	return ""
}

// ClientURL is the URL outside clients use ("" when in-process only).
func (s *Server) ClientURL() string {
	if s.opts.Listen == "" {
		return ""
	}
	return s.ns.ClientURL()
}

// Addr is the TCP address the server listens on (nil when in-process only).
func (s *Server) Addr() net.Addr {
	if s.opts.Listen == "" {
		return nil
	}
	return s.ns.Addr()
}

// NATSServer exposes the underlying server for tests and advanced wiring.
func (s *Server) NATSServer() *server.Server { return s.ns }

// Connect returns an in-process client connection: no TCP, no loopback
// round trips. Options are applied after the in-process one.
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	all := []nats.Option{
		nats.InProcessServer(s.ns),
		nats.Name(name),
		nats.MaxReconnects(-1),
	}
	if s.internalKey != nil {
		pub, err := s.internalKey.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("embedded: internal key: %w", err)
		}
		all = append(all, nats.Nkey(pub, s.internalKey.Sign))
	}
	all = append(all, opts...)
	nc, err := nats.Connect("", all...)
	if err != nil {
		return nil, fmt.Errorf("embedded: in-process connect: %w", err)
	}
	return nc, nil
}

// Shutdown stops the server, waiting until it has flushed and closed its
// stores or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.shutdownNow()
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("embedded: shutdown: %w", ctx.Err())
	}
}

func (s *Server) shutdownNow() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// natsLogger adapts the server's logger to zerolog. Notices are debug: the
// hub logs what an operator needs itself.
type natsLogger struct{ l zerolog.Logger }

func (n *natsLogger) Noticef(format string, v ...any) { n.l.Debug().Msgf(format, v...) }
func (n *natsLogger) Warnf(format string, v ...any)   { n.l.Warn().Msgf(format, v...) }
func (n *natsLogger) Fatalf(format string, v ...any)  { n.l.Error().Msgf(format, v...) }
func (n *natsLogger) Errorf(format string, v ...any)  { n.l.Error().Msgf(format, v...) }
func (n *natsLogger) Debugf(format string, v ...any)  { n.l.Trace().Msgf(format, v...) }
func (n *natsLogger) Tracef(format string, v ...any)  { n.l.Trace().Msgf(format, v...) }
