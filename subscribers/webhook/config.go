package webhook

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/hubproject/hub/config"
)

// Config configures the webhook channel (channels.webhook in the hub's
// config file).
type Config struct {
	// Timeout bounds one request: connect, TLS, sending the body, the
	// response headers and reading the recorded part of the response.
	Timeout config.Duration `yaml:"timeout" validate:"gt=0"`
	// AllowPrivateNetworks turns the SSRF guard off, so endpoints on
	// loopback, private and link-local addresses can be reached. Only for
	// development or a hub that serves one trusted network.
	AllowPrivateNetworks bool `yaml:"allow_private_networks"`
	// AllowCIDRs opens specific ranges (e.g. 10.1.2.0/24 for an internal
	// receiver) while the rest of the guard stays on.
	AllowCIDRs []string `yaml:"allow_cidrs"`
	// MaxIdleConnsPerHost is how many keep-alive connections are kept per
	// endpoint; set it near the webhook concurrency so a busy endpoint does
	// not reconnect for every request.
	MaxIdleConnsPerHost int `yaml:"max_idle_conns_per_host" validate:"gte=1"`
	// MaxResponseBytes is how much of a response body is recorded in the
	// attempt record (the rest is discarded).
	MaxResponseBytes int `yaml:"max_response_bytes" validate:"gte=0,lte=65536"`
	// Breaker is the per-endpoint circuit breaker.
	Breaker BreakerConfig `yaml:"breaker"`
	// StalledMaxInFlight caps the requests in flight to one endpoint while
	// it is stalled (none of its requests finished in the last second), so a
	// hanging endpoint cannot hold every worker before its breaker opens;
	// the rest wait without spending an attempt. A busy but answering
	// endpoint is never capped. 0 turns the cap off.
	StalledMaxInFlight int `yaml:"stalled_max_in_flight" validate:"gte=0"`
}

// BreakerConfig configures the per-endpoint circuit breaker: after Failures
// consecutive retryable failures against one endpoint (scheme, host, port),
// no request is made to it for OpenFor; then one probe request decides
// whether it closes again. Each failed probe doubles the open time, up to
// MaxOpenFor, so a long outage costs a few probes and few rewrites of the
// waiting deliveries; a success resets it.
type BreakerConfig struct {
	Enabled  bool            `yaml:"enabled"`
	Failures int             `yaml:"failures" validate:"gte=1,lte=1000"`
	OpenFor  config.Duration `yaml:"open_for" validate:"gt=0"`
	// MaxOpenFor caps the doubled open time; 0 (or less than open_for)
	// keeps it at open_for.
	MaxOpenFor config.Duration `yaml:"max_open_for" validate:"gte=0"`
}

// Defaults.
const (
	DefaultTimeout             = 15 * time.Second
	DefaultMaxIdleConnsPerHost = 64
	DefaultMaxResponseBytes    = 512
	DefaultBreakerFailures     = 5
	DefaultBreakerOpenFor      = 30 * time.Second
	DefaultBreakerMaxOpenFor   = 5 * time.Minute
	DefaultStalledMaxInFlight  = 4
)

// DefaultConfig returns the defaults: 15s timeout, SSRF guard on, breaker on.
func DefaultConfig() Config {
	return Config{
		Timeout:             config.Duration(DefaultTimeout),
		MaxIdleConnsPerHost: DefaultMaxIdleConnsPerHost,
		MaxResponseBytes:    DefaultMaxResponseBytes,
		StalledMaxInFlight:  DefaultStalledMaxInFlight,
		Breaker: BreakerConfig{
			Enabled:    true,
			Failures:   DefaultBreakerFailures,
			OpenFor:    config.Duration(DefaultBreakerOpenFor),
			MaxOpenFor: config.Duration(DefaultBreakerMaxOpenFor),
		},
	}
}

// Validate checks what the validate tags cannot: that every allow_cidrs
// entry is a CIDR. Paths are relative to the webhook section.
func (c *Config) Validate() error {
	var errs config.Errors
	for i, s := range c.AllowCIDRs {
		if _, err := parseCIDR(s); err != nil {
			errs.Add(fmt.Sprintf("allow_cidrs[%d]", i), "%v", err)
		}
	}
	return errs.Err()
}

// parseCIDR parses a CIDR such as 10.1.0.0/16 or fd00::/8. A bare address
// is refused rather than read as a /32, so a typo cannot open more or less
// than meant.
func parseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as 10.1.0.0/16 or fd00::/8", s)
	}
	return p.Masked(), nil
}
