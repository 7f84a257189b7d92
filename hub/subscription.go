package hub

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/hubproject/hub/config"
)

// Subscription is one row of the fan-out table: which events go to which
// channel, and the channel-specific settings (templates for email and SMS,
// URL and secret for webhooks). Subscriptions come from the config file or,
// for webhooks, from the HTTP API.
type Subscription struct {
	// ID is unique: letters, digits, '_' and '-', at most 64.
	ID string `yaml:"id" json:"id" validate:"required,max=64"`
	// Channel is log, webhook, email or sms.
	Channel string `yaml:"channel" json:"channel" validate:"required"`
	// Events are the event types to deliver, with NATS wildcards (order.*, order.>).
	Events []string `yaml:"events" json:"events" validate:"required,min=1"`
	// Disabled stops deliveries to the subscription.
	Disabled bool `yaml:"disabled" json:"disabled"`

	// To (email, SMS) is a template yielding one recipient or several
	// (comma-separated or a JSON array); each is its own delivery.
	To string `yaml:"to" json:"to,omitempty"`
	// Subject (email) is a template.
	Subject string `yaml:"subject" json:"subject,omitempty"`
	// Text (email) is the text part's template.
	Text string `yaml:"text" json:"text,omitempty"`
	// HTML (email) is the HTML part's template (html/template escaping).
	HTML string `yaml:"html" json:"html,omitempty"`
	// Body (SMS) is the message template.
	Body string `yaml:"body" json:"body,omitempty"`
	// From (email, SMS) overrides the channel's sender.
	From string `yaml:"from" json:"from,omitempty"`
	// ReplyTo (email) overrides the channel's Reply-To.
	ReplyTo string `yaml:"reply_to" json:"reply_to,omitempty"`

	// URL (webhook) receives a POST per delivery.
	URL string `yaml:"url" json:"url,omitempty"`
	// Secret is one or more space-separated whsec_ secrets; with several,
	// each request carries one signature per secret (rotation).
	Secret config.Secret `yaml:"secret" json:"-"`
	// Headers (webhook) are added to every request.
	Headers map[string]string `yaml:"headers" json:"headers,omitempty"`
	// RateLimit caps deliveries per second to this subscription (0: none).
	RateLimit float64 `yaml:"rate_limit" json:"rate_limit,omitempty" validate:"gte=0"`

	// Origin is "config" or "api"; config subscriptions are read-only at runtime.
	Origin string `yaml:"-" json:"origin,omitempty"`
}

var subIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate checks the fields every channel shares: the id is usable in a
// NATS subject and every pattern is a valid event pattern. Channel-specific
// fields are checked by the channel's owner.
func (s *Subscription) Validate() error {
	var errs config.Errors
	if s.ID != "" && !subIDRe.MatchString(s.ID) {
		errs.Add("id", "%q may contain only letters, digits, '_' and '-'", s.ID)
	}
	for i, p := range s.Events {
		if err := ValidPattern(p); err != nil {
			errs.Add(fmt.Sprintf("events[%d]", i), "%v", err)
		}
	}
	return errs.Err()
}

// ValidPattern checks an event pattern: dot-separated tokens as in event
// types, where a token may be the NATS wildcard * and the last may be >.
func ValidPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty pattern")
	}
	toks := strings.Split(p, ".")
	for i, t := range toks {
		switch {
		case t == "*":
		case t == ">":
			if i != len(toks)-1 {
				return fmt.Errorf("%q: '>' must be the last token", p)
			}
		case !typeTokenRe.MatchString(t):
			return fmt.Errorf("%q: token %q must be letters, digits, '_', '-', or a wildcard (* or >)", p, t)
		}
	}
	return nil
}

var typeTokenRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// MatchType reports whether an event type matches a pattern with NATS
// wildcard semantics (* one token, > one or more trailing tokens).
func MatchType(pattern, typ string) bool {
	for {
		pt, prest, pmore := strings.Cut(pattern, ".")
		if pt == ">" {
			return typ != ""
		}
		tt, trest, tmore := strings.Cut(typ, ".")
		if pt != "*" && pt != tt {
			return false
		}
		if !pmore || !tmore {
			return pmore == tmore
		}
		pattern, typ = prest, trest
	}
}

// Matches reports whether the subscription wants events of this type.
func (s *Subscription) Matches(typ string) bool {
	for _, p := range s.Events {
		if MatchType(p, typ) {
			return true
		}
	}
	return false
}
