package hubtest_test

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/hubtest"
	sublog "github.com/hubproject/hub/subscribers/log"
)

func delivery(sub string) *hub.Delivery {
	return &hub.Delivery{ID: "dlv_x", Event: &hub.Event{ID: "e", Type: "a.b"}, Subscription: &hub.Subscription{ID: sub}, Attempt: 1}
}

func TestCaptureConformance(t *testing.T) {
	hubtest.Run(t, hubtest.Suite{
		New: func(t *testing.T) hub.Channel {
			c := hubtest.NewCapture()
			c.FailWith(func(d *hub.Delivery) error {
				switch d.Subscription.ID {
				case "permanent":
					return hub.Permanent(hubtest.ErrTransient)
				case "retry":
					return hubtest.ErrTransient
				}
				return nil
			})
			return c
		},
		OK:        func(*testing.T) *hub.Delivery { return delivery("ok") },
		Permanent: func(*testing.T) *hub.Delivery { return delivery("permanent") },
		Retryable: func(*testing.T) *hub.Delivery { return delivery("retry") },
	})
}

func TestLogConformance(t *testing.T) {
	hubtest.Run(t, hubtest.Suite{
		New: func(*testing.T) hub.Channel { return sublog.New(zerolog.Nop()) },
		OK:  func(*testing.T) *hub.Delivery { return delivery("ok") },
	})
}

func TestCaptureWait(t *testing.T) {
	c := hubtest.NewCapture()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.WaitDelivered(ctx, "e", "ok")
		done <- err
	}()
	if err := c.Send(ctx, delivery("ok")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
