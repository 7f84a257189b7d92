package email_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wneessen/go-mail"

	"github.com/hubproject/hub/subscribers/email"
	"github.com/hubproject/hub/subscribers/email/smtptest"
)

// The two benchmarks send the same message to the in-process SMTP server
// from the same number of goroutines: one through the Sender's pool of
// reused connections, one the naive way, a new connection per mail.
const benchParallelism = 2 // x GOMAXPROCS goroutines

func BenchmarkEmailPooled(b *testing.B) {
	srv := smtptest.Start(b, smtptest.Options{})
	cfg := baseConfig(srv)
	cfg.PoolSize = 4
	s := newSender(b, cfg)
	var n atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d := delivery("bench-"+strconv.FormatInt(n.Add(1), 10), "ann@example.com")
			if err := s.Send(context.Background(), d); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "emails/s")
	b.StopTimer()
	b.ReportMetric(float64(srv.Connections()), "connections")
}

func BenchmarkEmailDialPerMail(b *testing.B) {
	srv := smtptest.Start(b, smtptest.Options{})
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		c, err := mail.NewClient(srv.Host(), mail.WithPort(srv.Port()), mail.WithTLSPolicy(mail.NoTLS))
		if err != nil {
			b.Error(err)
			return
		}
		for pb.Next() {
			m := mail.NewMsg()
			_ = m.From("hub <hub@example.com>")
			_ = m.To("ann@example.com")
			m.Subject("Order 42 ✓")
			m.SetMessageIDWithValue(email.MessageID("bench"))
			m.SetBodyString(mail.TypeTextPlain, "Hi Ann,\nyour order shipped.")
			m.AddAlternativeString(mail.TypeTextHTML, "<p>Hi <b>Ann</b></p>")
			if err := c.DialAndSendWithContext(context.Background(), m); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "emails/s")
	b.StopTimer()
	b.ReportMetric(float64(srv.Connections()), "connections")
}
