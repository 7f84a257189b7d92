package sms

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/template"
	"time"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub/render"
)

// Providers.
const (
	ProviderTwilio  = "twilio"
	ProviderGeneric = "generic"
)

// DefaultTwilioBaseURL is Twilio's REST API.
const DefaultTwilioBaseURL = "https://api.twilio.com"

// DefaultGenericBody is the generic provider's body when none is configured.
const DefaultGenericBody = `{"to":{{ json .to }},"from":{{ json .from }},"body":{{ json .body }}}`

// Config is the SMS channel's configuration, channels.sms in the YAML.
type Config struct {
	// Provider is twilio (default) or generic.
	Provider string        `yaml:"provider" validate:"omitempty,oneof=twilio generic"`
	Twilio   TwilioConfig  `yaml:"twilio"`
	Generic  GenericConfig `yaml:"generic"`
	// Timeout bounds one API request (0: 10s).
	Timeout config.Duration `yaml:"timeout"`
	// RateLimit caps messages per second to the provider (0: none).
	RateLimit float64 `yaml:"rate_limit" validate:"gte=0"`
}

// TwilioConfig is Twilio's Messages API.
type TwilioConfig struct {
	BaseURL    string        `yaml:"base_url"` // default https://api.twilio.com
	AccountSID string        `yaml:"account_sid"`
	AuthToken  config.Secret `yaml:"auth_token"` // or auth_token_env / auth_token_file
	// From is the sending number (E.164), short code or alphanumeric sender
	// id; a subscription's from overrides it.
	From string `yaml:"from"`
	// MessagingServiceSID sends through a Messaging Service instead of (or
	// as well as) From.
	MessagingServiceSID string `yaml:"messaging_service_sid"`
}

// GenericConfig is any HTTP SMS gateway: one request per message.
type GenericConfig struct {
	URL    string `yaml:"url"`
	Method string `yaml:"method"` // POST (default), PUT or PATCH
	// Headers are sent with every request. Values are secrets (they often
	// carry API keys) and never printed; use ${VAR} to read them from the
	// environment.
	Headers map[string]config.Secret `yaml:"headers"`
	// Body is a Go template over .to, .body and .from producing the request
	// body, with the functions of hub/render (json, default, upper, lower,
	// formatTime). Default: DefaultGenericBody, a JSON object.
	Body        string `yaml:"body"`
	ContentType string `yaml:"content_type"` // default application/json
	From        string `yaml:"from"`         // .from in the body; a subscription's from overrides it
}

// DefaultConfig returns the defaults. Twilio needs account_sid, auth_token
// and from or messaging_service_sid; generic needs url.
func DefaultConfig() Config {
	return Config{
		Provider: ProviderTwilio,
		Twilio:   TwilioConfig{BaseURL: DefaultTwilioBaseURL},
		Generic:  GenericConfig{Method: "POST", ContentType: "application/json"},
		Timeout:  config.Duration(10 * time.Second),
	}
}

// withDefaults fills zero values, so a Config built in code needs only
// the settings it cares about.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Provider == "" {
		c.Provider = d.Provider
	}
	if c.Twilio.BaseURL == "" {
		c.Twilio.BaseURL = d.Twilio.BaseURL
	}
	if c.Generic.Method == "" {
		c.Generic.Method = d.Generic.Method
	}
	if c.Generic.ContentType == "" {
		c.Generic.ContentType = d.Generic.ContentType
	}
	if c.Generic.Body == "" {
		c.Generic.Body = DefaultGenericBody
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	return c
}

// Validate checks the settings of the chosen provider. Paths are relative
// to channels.sms.
func (c *Config) Validate() error {
	var errs config.Errors
	switch c.Provider {
	case ProviderTwilio, "":
		t := &c.Twilio
		if t.BaseURL != "" {
			if err := httpURL(t.BaseURL); err != nil {
				errs.Add("twilio.base_url", "%v", err)
			}
		}
		if t.AccountSID == "" {
			errs.Add("twilio.account_sid", "required")
		} else if strings.ContainsAny(t.AccountSID, "/?#% ") {
			errs.Add("twilio.account_sid", "%q is not an account SID (AC...)", t.AccountSID)
		}
		if !t.AuthToken.IsSet() {
			errs.Add("twilio.auth_token", "required (use auth_token_env or auth_token_file)")
		}
		if t.From == "" && t.MessagingServiceSID == "" {
			errs.Add("twilio.from", "required: set from, messaging_service_sid or both")
		}
	case ProviderGeneric:
		g := &c.Generic
		if g.URL == "" {
			errs.Add("generic.url", "required")
		} else if err := httpURL(g.URL); err != nil {
			errs.Add("generic.url", "%v", err)
		}
		switch strings.ToUpper(g.Method) {
		case "", "POST", "PUT", "PATCH":
		default:
			errs.Add("generic.method", "must be one of: POST, PUT, PATCH")
		}
		for k := range g.Headers {
			if !validHeaderName(k) {
				errs.Add("generic.headers."+k, "not a valid HTTP header name")
			}
		}
		if g.Body != "" {
			if _, err := bodyTemplate(g.Body); err != nil {
				errs.Add("generic.body", "%v", err)
			}
		}
	}
	return errs.Err()
}

func httpURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		shown := s // the path and query may carry an API key: show the start only
		if err == nil && u.Host != "" {
			shown = u.Scheme + "://" + u.Host
		} else if i := strings.IndexAny(s, "?@"); i >= 0 {
			shown = s[:i] + "…"
		}
		return fmt.Errorf("%q is not an http(s) URL", shown)
	}
	return nil
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// bodyTemplate compiles the generic body and runs it once over sample
// values, so a misspelt field (.To for .to) fails at load, not per message.
func bodyTemplate(src string) (*template.Template, error) {
	t, err := template.New("body").Funcs(render.Funcs()).Option("missingkey=error").Parse(src)
	if err == nil {
		err = t.Execute(io.Discard, bodyData("+15551234567", "sample", "+15550000000"))
	}
	if err != nil {
		return nil, errors.New(strings.Replace(err.Error(), "template: body:", "template: line ", 1))
	}
	return t, nil
}

// bodyData is what the generic body template sees.
func bodyData(to, body, from string) map[string]any {
	return map[string]any{"to": to, "body": body, "from": from}
}
