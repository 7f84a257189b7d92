package publisher_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/embedded"
	"github.com/hubproject/hub/publisher"
)

// The two benchmarks run against the same kind of embedded server over TCP,
// so BenchmarkPublish / BenchmarkRawJetStreamAsync is the publisher's cost.
// Both publish ~128-byte events with a Nats-Msg-Id.

var payload = []byte(`{"order":12345,"customer":"c-42","total":99.5,"items":3}`)

func BenchmarkPublish(b *testing.B) {
	nc, _ := setup(b)
	p, err := publisher.New(nc, publisher.WithSource("bench"))
	if err != nil {
		b.Fatal(err)
	}
	ts := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, err := p.PublishAsync(publisher.Event{Type: "order.created", ID: "b-" + strconv.Itoa(i), Time: ts, Data: payload})
		if err != nil {
			b.Fatal(err)
		}
	}
	flush(b, p.Flush)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkRawJetStreamAsync(b *testing.B) {
	nc, _ := setup(b)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	// The same envelope the publisher sends, encoded once.
	body := []byte(`{"specversion":"1.0","id":"b-0","source":"bench","type":"order.created","time":"2026-11-25T12:00:00Z","data":` + string(payload) + `}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m := &nats.Msg{Subject: "events.order.created", Data: body, Header: nats.Header{jetstream.MsgIDHeader: []string{"b-" + strconv.Itoa(i)}}}
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	flush(b, func(ctx context.Context) error {
		select {
		case <-js.PublishAsyncComplete():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func flush(b *testing.B, f func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkIntakeMode compares per-message publishing with atomic batches,
// on a server that fsyncs every write (sync=always) and one that flushes on
// its interval (sync=default). Every event has its id as Nats-Msg-Id and
// every publish is acknowledged; file storage, over TCP.
//
//	mode=async:     PublishAsync, up to 4096 awaiting their PubAck, then Flush
//	mode=batchN:    PublishBatch of N events from 4 goroutines (4 batches open)
//
// Compare with: benchstat -col /mode old.txt (or one file holding all modes).
func BenchmarkIntakeMode(b *testing.B) {
	for _, syncMode := range []string{embedded.SyncAlways, embedded.SyncDefault} {
		for _, mode := range []struct {
			name  string
			batch int
		}{{"async", 0}, {"batch100", 100}, {"batch1000", 1000}} {
			b.Run("sync="+syncMode+"/mode="+mode.name, func(b *testing.B) {
				nc, _ := setupWith(b, func(o *embedded.Options) { o.Sync = syncMode })
				p, err := publisher.New(nc, publisher.WithSource("bench"))
				if err != nil {
					b.Fatal(err)
				}
				ts := time.Now()
				ev := func(i int) publisher.Event {
					return publisher.Event{Type: "order.created", ID: "b-" + strconv.Itoa(i), Time: ts, Data: payload}
				}
				b.ReportAllocs()
				b.ResetTimer()
				if mode.batch == 0 {
					for i := 0; i < b.N; i++ {
						_, err := p.PublishAsync(ev(i))
						for errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
							// The window is full while fsyncs catch up.
							_, err = p.PublishAsync(ev(i))
						}
						if err != nil {
							b.Fatal(err)
						}
					}
					flush(b, p.Flush)
				} else {
					publishBatches(b, p, mode.batch, 4, ev)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// publishBatches publishes b.N events as batches of size from workers
// goroutines, each waiting for its batch's ack before the next.
func publishBatches(b *testing.B, p *publisher.Publisher, size, workers int, ev func(int) publisher.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	starts := make(chan int)
	go func() {
		defer close(starts)
		for i := 0; i < b.N; i += size {
			select {
			case starts <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			evs := make([]publisher.Event, 0, size)
			for start := range starts {
				evs = evs[:0]
				for i := start; i < min(start+size, b.N); i++ {
					evs = append(evs, ev(i))
				}
				if _, err := p.PublishBatch(ctx, evs); err != nil {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}
