package chaos

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/publisher"
)

// Publisher publishes events the way a careful app does through hub
// restarts: a connection that reconnects forever, a deadline on each
// publish, and on any error the same event again (same id, so the hub's
// dedup stores it once). It counts what it sent and what was acknowledged.
type Publisher struct {
	nc *nats.Conn
	p  *publisher.Publisher

	attempts  atomic.Int64 // publish calls, retries included
	errs      atomic.Int64 // publish calls that failed
	acked     atomic.Int64 // distinct events acknowledged
	dupAcks   atomic.Int64 // acknowledged as a duplicate: stored by an earlier attempt whose ack was lost
	mu        sync.Mutex
	ackedIDs  map[string]bool
	lastError error
}

// NewPublisher connects to url (several comma-separated URLs for a
// cluster) and keeps reconnecting; opts are added to the defaults.
func NewPublisher(url string, opts ...nats.Option) (*Publisher, error) {
	nc, err := nats.Connect(url, append([]nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
		nats.ReconnectJitter(10*time.Millisecond, 10*time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(-1), // no buffering while down: fail fast and retry
	}, opts...)...)
	if err != nil {
		return nil, err
	}
	p, err := publisher.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &Publisher{nc: nc, p: p, ackedIDs: map[string]bool{}}, nil
}

// Close closes the connection.
func (p *Publisher) Close() { p.nc.Close() }

// Publish stores one event, retrying with the same id until it is
// acknowledged or ctx ends. A validation error is returned at once.
func (p *Publisher) Publish(ctx context.Context, ev publisher.Event) error {
	for ctx.Err() == nil {
		p.attempts.Add(1)
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ack, err := p.p.Publish(pctx, ev)
		cancel()
		if err == nil {
			p.record(ev.ID, ack.Duplicate)
			return nil
		}
		var ve *publisher.ValidationError
		if errors.As(err, &ve) {
			return err
		}
		p.errs.Add(1)
		p.mu.Lock()
		p.lastError = err
		p.mu.Unlock()
		// Pace the retries while the hub is down.
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("publish %s: %w (last error: %v)", ev.ID, ctx.Err(), p.LastError())
}

func (p *Publisher) record(id string, dup bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ackedIDs[id] {
		return
	}
	p.ackedIDs[id] = true
	p.acked.Add(1)
	if dup {
		p.dupAcks.Add(1)
	}
}

// PublishAll publishes evs from workers goroutines, each event retried
// until acknowledged. It returns the first error (ctx ending, an invalid
// event).
func (p *Publisher) PublishAll(ctx context.Context, workers int, evs []publisher.Event) error {
	next := make(chan publisher.Event)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range next {
				if err := p.Publish(ctx, ev); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for _, ev := range evs {
		select {
		case next <- ev:
		case err = <-errc:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	return err
}

// Acked is how many distinct events were acknowledged so far.
func (p *Publisher) Acked() int { return int(p.acked.Load()) }

// AckedIDs returns the acknowledged event ids.
func (p *Publisher) AckedIDs() map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]bool, len(p.ackedIDs))
	for k := range p.ackedIDs {
		out[k] = true
	}
	return out
}

// LastError is the last publish error, nil if none.
func (p *Publisher) LastError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastError
}

// Stats are the publisher's counters.
type Stats struct {
	Attempts       int `json:"publish_attempts"`
	Errors         int `json:"publish_errors"`
	Acknowledged   int `json:"acknowledged"`
	AckedDuplicate int `json:"acknowledged_as_duplicate"`
}

// Stats returns the counters.
func (p *Publisher) Stats() Stats {
	return Stats{
		Attempts: int(p.attempts.Load()), Errors: int(p.errs.Load()),
		Acknowledged: int(p.acked.Load()), AckedDuplicate: int(p.dupAcks.Load()),
	}
}
