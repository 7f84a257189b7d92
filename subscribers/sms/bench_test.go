package sms_test

import (
	"context"
	"testing"
	"time"
)

// BenchmarkSMS sends through the Twilio provider to the local fake API
// over keep-alive connections, from 2 x GOMAXPROCS goroutines.
func BenchmarkSMS(b *testing.B) {
	f := startTwilio(b)
	s := newSender(b, twilioConfig(f))
	b.SetParallelism(2)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Send(context.Background(), delivery(numOK, "Order 42 shipped")); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sms/s")
	b.StopTimer()
	b.ReportMetric(float64(f.Connections()), "connections")
}
