package chaos

import (
	"context"
	"fmt"
	"net"
	"net/textproto"
	"time"

	"github.com/hubproject/hub/subscribers/email/smtptest"
)

// DrainMailFailures uses up the MAIL failures queued on an smtptest server
// with FailNext, so that it answers normally again: smtptest has no "fail
// until cleared" mode, so a timed outage queues more failures than the
// hub can use and drains the rest here. It pipelines MAIL commands on one
// connection and stops at the first one accepted; it returns how many
// failures it used. At most limit commands are sent.
func DrainMailFailures(ctx context.Context, addr string, limit int) (int, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(time.Minute))
	}
	tp := textproto.NewConn(conn)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return 0, fmt.Errorf("drain: greeting: %w", err)
	}
	if err := tp.PrintfLine("EHLO drain.localhost"); err != nil {
		return 0, err
	}
	if _, _, err := tp.ReadResponse(250); err != nil {
		return 0, fmt.Errorf("drain: EHLO: %w", err)
	}
	const chunk = 256
	drained := 0
	for sent := 0; sent < limit; {
		n := min(chunk, limit-sent)
		for range n {
			if _, err := tp.W.WriteString("MAIL FROM:<drain@example.com>\r\n"); err != nil {
				return drained, err
			}
		}
		if err := tp.W.Flush(); err != nil {
			return drained, err
		}
		sent += n
		accepted := false
		for range n {
			code, msg, err := tp.ReadResponse(0)
			switch {
			case err != nil:
				return drained, fmt.Errorf("drain: MAIL: %w", err)
			case code/100 == 2:
				accepted = true
			case code/100 == 4:
				drained++
			default:
				return drained, fmt.Errorf("drain: MAIL: unexpected %d %s", code, msg)
			}
		}
		if accepted {
			_ = tp.PrintfLine("QUIT")
			return drained, nil
		}
	}
	return drained, fmt.Errorf("drain: still failing after %d commands", limit)
}

// MailCounts counts an smtptest server's messages by Message-Id header.
type MailCounts struct {
	seen   int
	Counts map[string]int
}

// Update counts the messages not seen yet.
func (m *MailCounts) Update(msgs []smtptest.Message) error {
	if m.Counts == nil {
		m.Counts = map[string]int{}
	}
	for ; m.seen < len(msgs); m.seen++ {
		p, err := msgs[m.seen].Parse()
		if err != nil {
			return err
		}
		m.Counts[p.Header.Get("Message-Id")]++
	}
	return nil
}

// WaitMail waits until every expected Message-Id has arrived at srv.
func WaitMail(ctx context.Context, srv *smtptest.Server, expected map[string]bool) (*MailCounts, error) {
	mc := &MailCounts{}
	for {
		missing := 0
		for id := range expected {
			if mc.Counts[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			return mc, nil
		}
		msgs, err := srv.WaitMessages(ctx, mc.seen+missing)
		if uerr := mc.Update(msgs); uerr != nil {
			return mc, uerr
		}
		if err != nil {
			return mc, fmt.Errorf("%w (%d of %d expected messages arrived)", err, len(expected)-missing, len(expected))
		}
	}
}
