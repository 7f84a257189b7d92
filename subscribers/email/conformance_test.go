package email_test

import (
	"testing"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/hubtest"
	"github.com/hubproject/hub/subscribers/email"
	"github.com/hubproject/hub/subscribers/email/smtptest"
)

// TestConformance runs the suite every channel must pass against the
// in-process SMTP server (smtptest: reject@ is refused for good, later@
// for now, slow@ never answered).
func TestConformance(t *testing.T) {
	to := func(addr string) func(*testing.T) *hub.Delivery {
		return func(*testing.T) *hub.Delivery {
			return delivery(hub.DeliveryID("evt", "order-confirmation", addr), addr)
		}
	}
	hubtest.Run(t, hubtest.Suite{
		New: func(t *testing.T) hub.Channel {
			s, err := email.New(baseConfig(smtptest.Start(t, smtptest.Options{})))
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		OK:        to("ann@example.com"),
		Permanent: to("reject@example.com"),
		Retryable: to("later@example.com"),
		Slow:      to("slow@example.com"),
	})
}
