package smtptest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
)

// Parse parses m.Data as an RFC 5322 message.
func (m Message) Parse() (*mail.Message, error) {
	return mail.ReadMessage(bytes.NewReader(m.Data))
}

// Content is a message taken apart: its header, its decoded subject and
// its text and HTML bodies.
type Content struct {
	Header  mail.Header
	Subject string // RFC 2047 encoded words decoded
	Text    string // the text/plain body, transfer encoding undone; "" if none
	HTML    string // the text/html body, transfer encoding undone; "" if none
	Parts   int    // 1 for a single-part message, else the parts of multipart/alternative
}

// Decode parses the message and extracts its text and HTML bodies, from a
// single text/plain or text/html message or a multipart/alternative one,
// undoing quoted-printable and base64. Any other part is an error. A single-part body loses the line break
// that ends it.
func (m Message) Decode() (Content, error) {
	msg, err := m.Parse()
	if err != nil {
		return Content{}, fmt.Errorf("smtptest: parse message: %w", err)
	}
	c := Content{Header: msg.Header}
	if c.Subject, err = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil {
		return c, fmt.Errorf("smtptest: subject: %w", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return c, fmt.Errorf("smtptest: content type: %w", err)
	}
	put := func(ct string, body []byte) error {
		c.Parts++
		switch {
		case strings.HasPrefix(ct, "text/plain"):
			c.Text = string(body)
		case strings.HasPrefix(ct, "text/html"):
			c.HTML = string(body)
		default:
			return fmt.Errorf("smtptest: unexpected part %s", ct)
		}
		return nil
	}
	if mt == "multipart/alternative" {
		mr := multipart.NewReader(msg.Body, params["boundary"])
		for {
			part, err := mr.NextPart() // undoes quoted-printable itself
			if err == io.EOF {
				return c, nil
			}
			if err != nil {
				return c, fmt.Errorf("smtptest: multipart: %w", err)
			}
			b, err := io.ReadAll(transferDecoder(part, part.Header.Get("Content-Transfer-Encoding")))
			if err != nil {
				return c, fmt.Errorf("smtptest: multipart: %w", err)
			}
			if err := put(part.Header.Get("Content-Type"), b); err != nil {
				return c, err
			}
		}
	}
	b, err := io.ReadAll(transferDecoder(msg.Body, msg.Header.Get("Content-Transfer-Encoding")))
	if err != nil {
		return c, fmt.Errorf("smtptest: body: %w", err)
	}
	return c, put(mt, bytes.TrimRight(b, "\r\n")) // the line break ending the body
}

// transferDecoder undoes a Content-Transfer-Encoding: quoted-printable or
// base64; other encodings (7bit, 8bit, binary) need nothing.
func transferDecoder(r io.Reader, cte string) io.Reader {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, r) // skips line breaks itself
	}
	return r
}
