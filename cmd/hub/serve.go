package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub/node"
)

func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	cfgPath := fs.String("config", "configs/hub.yaml", "configuration file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := node.Load(*cfgPath)
	if err != nil {
		return fmt.Errorf("%s:\n%w", *cfgPath, err)
	}
	log := newLogger(cfg.Log, stderr)
	n := node.New(cfg, node.WithLogger(log), node.WithVersion(version))
	start := time.Now()
	// A cluster node waits for a quorum of its peers.
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	err = n.Start(startCtx)
	cancel()
	if err != nil {
		log.Error().Err(err).Msg("hub failed to start")
		return &loggedError{fmt.Errorf("start: %w", err)}
	}
	ev := log.Info().Str("version", version).Int64("startup_ms", time.Since(start).Milliseconds())
	if u := n.NATSURL(); u != "" {
		ev = ev.Str("nats", config.RedactURLs(u))
	} else {
		ev = ev.Str("nats", "in-process only")
	}
	if u := n.HTTPURL(); u != "" {
		ev = ev.Str("http", u)
	}
	ev.Str("store_dir", cfg.NATS.StoreDir).Msg("hub is ready")

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info().Msg("signal received, shutting down")
	case <-n.HTTPDone():
		serveErr = fmt.Errorf("http server stopped: %w", n.HTTPErr())
		log.Error().Err(n.HTTPErr()).Msg("http server stopped; shutting down")
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownBudget(cfg))
	defer cancel()
	if err := n.Shutdown(sctx); err != nil {
		return &loggedError{err} // each failed step was logged
	}
	log.Info().Msg("hub stopped")
	if serveErr != nil {
		return &loggedError{serveErr}
	}
	return nil
}

// loggedError is an error serve already wrote to its log: main sets the
// exit status without printing it again.
type loggedError struct{ err error }

func (e *loggedError) Error() string { return e.err.Error() }
func (e *loggedError) Unwrap() error { return e.err }

// shutdownBudget is the total time a graceful stop may take.
func shutdownBudget(cfg node.Config) time.Duration {
	return 60 * time.Second
}
