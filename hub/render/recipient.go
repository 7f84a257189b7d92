package render

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"

	"github.com/go-playground/validator/v10"
)

// recipientV checks addresses with validator/v10's email and e164 rules. It
// is configured once here and only read afterwards (validator is safe for
// concurrent use), so it is not mutable state.
var recipientV = validator.New()

// ValidEmail checks an email recipient: a bare address (jane@example.com) or
// one with a display name (Jane Doe <jane@example.com>). The address part
// must pass validator's email rule. The error says why, for the DLQ reason.
func ValidEmail(s string) error {
	if s == "" {
		return errors.New("empty email address")
	}
	if strings.ContainsAny(s, "\r\n\x00") {
		return fmt.Errorf("email address %q contains a line break or NUL", s)
	}
	addr := s
	if strings.ContainsAny(s, "<\"") {
		a, err := mail.ParseAddress(s)
		if err != nil {
			return fmt.Errorf("%q is not a valid email address: %w", s, err)
		}
		addr = a.Address
	}
	if err := recipientV.Var(addr, "email"); err != nil {
		return fmt.Errorf("%q is not a valid email address", s)
	}
	return nil
}

// ValidPhone checks an SMS recipient is an E.164 number: a plus, a country
// code and up to 15 digits, no spaces (+15551234567).
func ValidPhone(s string) error {
	if s == "" {
		return errors.New("empty phone number")
	}
	// validator's e164 makes the plus optional; providers need it to tell
	// a country code from a local number, so it is required here.
	if err := recipientV.Var(s, "e164"); err != nil || s[0] != '+' {
		return fmt.Errorf("%q is not an E.164 phone number (such as +15551234567)", s)
	}
	return nil
}
