package email

import (
	"fmt"
	"strings"

	"github.com/wneessen/go-mail"

	"github.com/hubproject/hub/hub"
)

// message builds the MIME message for d.
func (s *Sender) message(d *hub.Delivery) (*mail.Msg, error) {
	m := mail.NewMsg(mail.WithNoDefaultUserAgent())
	from, replyTo := s.cfg.From, s.cfg.ReplyTo
	if sub := d.Subscription; sub != nil {
		if sub.From != "" {
			from = sub.From
		}
		if sub.ReplyTo != "" {
			replyTo = sub.ReplyTo
		}
	}
	if err := m.From(from); err != nil {
		return nil, fmt.Errorf("from %q: %w", from, err)
	}
	if err := m.To(d.Recipient); err != nil {
		return nil, fmt.Errorf("recipient: %w", err)
	}
	if replyTo != "" {
		if err := m.ReplyTo(replyTo); err != nil {
			return nil, fmt.Errorf("reply_to %q: %w", replyTo, err)
		}
	}
	m.Subject(oneLine(d.Content.Subject))
	if d.ID != "" {
		m.SetMessageIDWithValue(MessageID(d.ID))
	} else {
		m.SetMessageID()
	}
	m.SetDate()
	// RFC 3834: tells auto-responders (vacation replies) not to answer.
	m.SetGenHeader(mail.Header("Auto-Submitted"), "auto-generated")
	switch text, html := d.Content.Text, d.Content.HTML; {
	case html == "":
		m.SetBodyString(mail.TypeTextPlain, text)
	case text == "":
		m.SetBodyString(mail.TypeTextHTML, html)
	default: // multipart/alternative, the plain part first as RFC 2046 asks
		m.SetBodyString(mail.TypeTextPlain, text)
		m.AddAlternativeString(mail.TypeTextHTML, html)
	}
	return m, nil
}

// oneLine keeps a rendered subject to one header line.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.Fields(s), " ")
}

// MessageIDDomain is the right-hand side of every Message-ID.
const MessageIDDomain = "hub"

// MessageID returns the Message-ID (without angle brackets) for a delivery
// id: "<id>@hub", the same on every retry so receivers can drop duplicates.
// Characters a Message-ID may not hold (RFC 5322 dot-atom-text: no '@',
// spaces, brackets, quotes; no leading, trailing or doubled dots) are
// written as =XX, and '=' itself as =3D, so distinct ids stay distinct. An
// id longer than 200 bytes once escaped is cut and suffixed with a hash.
func MessageID(id string) string {
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c == '.' && i > 0 && i < len(id)-1 && id[i-1] != '.':
			b.WriteByte(c)
		case c != '.' && c != '=' && atext(c):
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "=%02X", c)
		}
	}
	left := b.String()
	if len(left) > maxIDLen {
		left = left[:maxIDLen-17] + "-" + fnv64(id)
	}
	return left + "@" + MessageIDDomain
}

const maxIDLen = 200

// atext reports whether c is an RFC 5322 atext character.
func atext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func fnv64(s string) string {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return fmt.Sprintf("%016x", h)
}
