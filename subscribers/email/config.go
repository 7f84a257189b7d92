package email

import (
	"crypto/x509"
	"fmt"
	"net/mail"
	"os"
	"strings"
	"time"

	"github.com/hubproject/hub/config"
)

// TLS modes.
const (
	TLSNone     = "none"     // plain SMTP: local relays and test servers only
	TLSStartTLS = "starttls" // upgrade with STARTTLS; refuse a server without it
	TLSImplicit = "tls"      // TLS from the first byte (SMTPS, port 465)
)

// Config is the email channel's configuration, channels.email in the YAML.
type Config struct {
	SMTP SMTPConfig `yaml:"smtp"`
	// From is the default sender, "hub <hub@example.com>"; a
	// subscription's from overrides it.
	From string `yaml:"from" validate:"required"`
	// ReplyTo is the default Reply-To; a subscription's reply_to overrides it.
	ReplyTo string `yaml:"reply_to"`
	// PoolSize is how many SMTP connections are kept open and reused (0: 4).
	PoolSize int `yaml:"pool_size" validate:"gte=0,lte=256"`
	// RateLimit caps messages per second across the pool (0: none).
	RateLimit float64 `yaml:"rate_limit" validate:"gte=0"`
}

// SMTPConfig is the relay the channel sends through.
type SMTPConfig struct {
	Host string `yaml:"host" validate:"required"`
	// Port 0 picks the usual port for the TLS mode: 25, 587 or 465.
	Port int `yaml:"port" validate:"gte=0,lte=65535"`
	// TLS is none, starttls (default) or tls.
	TLS      string        `yaml:"tls" validate:"omitempty,oneof=none starttls tls"`
	Username string        `yaml:"username"`
	Password config.Secret `yaml:"password"` // or password_env / password_file
	// InsecureSkipVerify accepts any server certificate: tests and dev only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// RootCAFile is a PEM bundle to trust instead of the system roots, for
	// a relay with a private or self-signed certificate.
	RootCAFile string `yaml:"root_ca_file"`
	// Timeout bounds connecting and each SMTP exchange (0: 30s).
	Timeout config.Duration `yaml:"timeout"`
}

// DefaultConfig returns the defaults; smtp.host and from must still be set.
func DefaultConfig() Config {
	return Config{
		SMTP: SMTPConfig{
			TLS:     TLSStartTLS,
			Timeout: config.Duration(30 * time.Second),
		},
		PoolSize: 4,
	}
}

// withDefaults fills zero values, so a Config built in code needs only
// the settings it cares about.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.SMTP.TLS == "" {
		c.SMTP.TLS = d.SMTP.TLS
	}
	if c.SMTP.Timeout == 0 {
		c.SMTP.Timeout = d.SMTP.Timeout
	}
	if c.PoolSize == 0 {
		c.PoolSize = d.PoolSize
	}
	if c.SMTP.Port == 0 {
		switch c.SMTP.TLS {
		case TLSNone:
			c.SMTP.Port = 25
		case TLSImplicit:
			c.SMTP.Port = 465
		default:
			c.SMTP.Port = 587
		}
	}
	return c
}

// Validate checks the rules that span fields; the validate tags cover the
// rest. Paths are relative to channels.email.
func (c *Config) Validate() error {
	var errs config.Errors
	if c.From != "" {
		if err := validAddress(c.From); err != nil {
			errs.Add("from", "%v", err)
		}
	}
	if c.ReplyTo != "" {
		if err := validAddress(c.ReplyTo); err != nil {
			errs.Add("reply_to", "%v", err)
		}
	}
	s := &c.SMTP
	switch {
	case s.Username != "" && !s.Password.IsSet():
		errs.Add("smtp.password", "required when smtp.username is set (use password_env or password_file)")
	case s.Username == "" && s.Password.IsSet():
		errs.Add("smtp.username", "required when a password is set")
	}
	// go-mail refuses to send credentials in clear text except to the
	// local host; say so at load rather than on every delivery.
	if s.Username != "" && s.TLS == TLSNone && !isLocal(s.Host) {
		errs.Add("smtp.tls", "none would send the password in clear text to %s; use starttls or tls", s.Host)
	}
	if s.RootCAFile != "" {
		if _, err := loadRoots(s.RootCAFile); err != nil {
			errs.Add("smtp.root_ca_file", "%v", err)
		}
	}
	return errs.Err()
}

// validAddress checks a sender address the way go-mail will parse it.
// It is looser than the recipient check (render.ValidEmail): a dev relay's
// hub@localhost is a fine sender.
func validAddress(s string) error {
	if _, err := mail.ParseAddress(s); err != nil {
		return fmt.Errorf("%q is not an email address: %w", s, err)
	}
	return nil
}

// isLocal mirrors go-mail's own test for where clear-text auth is allowed.
func isLocal(host string) bool {
	switch strings.Trim(host, "[]") {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}

func loadRoots(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}
