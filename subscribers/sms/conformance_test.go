package sms_test

import (
	"testing"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/hubtest"
	"github.com/hubproject/hub/subscribers/sms"
)

// TestConformance runs the suite every channel must pass against the fake
// Twilio API.
func TestConformance(t *testing.T) {
	to := func(num string) func(*testing.T) *hub.Delivery {
		return func(*testing.T) *hub.Delivery { return delivery(num, "Order 42 shipped") }
	}
	hubtest.Run(t, hubtest.Suite{
		New: func(t *testing.T) hub.Channel {
			s, err := sms.New(twilioConfig(startTwilio(t)))
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		OK:        to(numOK),
		Permanent: to(numInvalid),
		Retryable: to(numServerErr),
		Slow:      to(numHang),
	})
}
