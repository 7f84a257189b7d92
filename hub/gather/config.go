package gather

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"text/template"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/hubproject/hub/config"
)

// Defaults applied to zero values.
const (
	DefaultRouteTimeout   = 2 * time.Second
	DefaultCacheSize      = 1024
	DefaultStallGap       = 50 * time.Millisecond
	DefaultConcurrency    = 64
	DefaultBreakerFails   = 5
	DefaultBreakerOpenFor = 30 * time.Second
)

// Branch modes.
const (
	// ModeFirst sends one request and takes the first reply.
	ModeFirst = "first"
	// ModeAll collects every responder's reply into a JSON array.
	ModeAll = "all"
)

// Config is the gather section of the hub config (YAML "gather:").
type Config struct {
	// Concurrency caps the gathers the NATS door serves at once; further
	// requests wait in a queue. 0 means DefaultConcurrency.
	Concurrency int     `yaml:"concurrency" validate:"gte=0"`
	Routes      []Route `yaml:"routes" validate:"dive"`
}

// Route is one named gather: its branches run in parallel and their replies
// are merged into one JSON object.
type Route struct {
	Name string `yaml:"name" validate:"required"`
	// Timeout bounds the whole gather (0: DefaultRouteTimeout).
	Timeout  config.Duration `yaml:"timeout"`
	Branches []Branch        `yaml:"branches" validate:"required,min=1,dive"`
}

// Branch is one request of a route; its reply becomes the value of Name in
// the merged reply.
type Branch struct {
	Name    string `yaml:"name" validate:"required"`
	Subject string `yaml:"subject" validate:"required"`
	// Timeout bounds this branch (0: the route's timeout).
	Timeout config.Duration `yaml:"timeout"`
	// Required makes the whole gather fail (HTTP 502/504) when this branch
	// has no answer.
	Required bool `yaml:"required"`
	// Fallback is the value used when the branch fails (any YAML value;
	// absent or null means none).
	Fallback Fallback `yaml:"fallback"`
	// CacheTTL keeps successful replies for this long, keyed by the exact
	// request bytes (0: no cache).
	CacheTTL config.Duration `yaml:"cache_ttl"`
	// CacheSize bounds the cache in entries (0: DefaultCacheSize).
	CacheSize int `yaml:"cache_size" validate:"gte=0"`
	// Breaker, when set, stops calling a failing branch for a while.
	Breaker *BreakerConfig `yaml:"breaker"`
	// Mode is "first" (default) or "all".
	Mode string `yaml:"mode" validate:"omitempty,oneof=first all"`
	// MaxReplies ends a mode "all" collection early (0: no limit).
	MaxReplies int `yaml:"max_replies" validate:"gte=0"`
	// StallGap ends a mode "all" collection when no reply came for this
	// long since the previous one (0: DefaultStallGap).
	StallGap config.Duration `yaml:"stall_gap"`
	// Payload is a Go text/template over the request parameters producing
	// the branch request body; empty sends the parameters as a JSON object.
	Payload string `yaml:"payload"`
}

// BreakerConfig opens a branch's circuit after Failures consecutive
// failures (errors and timeouts); while open the branch fails at once
// (then its fallback applies). After OpenFor one trial request is let
// through: success closes the circuit, failure opens it again.
type BreakerConfig struct {
	Failures int             `yaml:"failures" validate:"gte=0"` // 0: DefaultBreakerFails
	OpenFor  config.Duration `yaml:"open_for"`                  // 0: DefaultBreakerOpenFor
}

// DefaultConfig is the gather section with no routes.
func DefaultConfig() Config { return Config{Concurrency: DefaultConcurrency} }

// WithDefaults returns a copy with every zero value replaced by its
// default, as New uses it.
func (c Config) WithDefaults() Config {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	routes := make([]Route, len(c.Routes))
	for i, r := range c.Routes {
		if r.Timeout == 0 {
			r.Timeout = config.Duration(DefaultRouteTimeout)
		}
		bs := make([]Branch, len(r.Branches))
		for j, b := range r.Branches {
			if b.Timeout == 0 {
				b.Timeout = r.Timeout
			}
			if b.Mode == "" {
				b.Mode = ModeFirst
			}
			if b.CacheTTL > 0 && b.CacheSize == 0 {
				b.CacheSize = DefaultCacheSize
			}
			if b.Mode == ModeAll && b.StallGap == 0 {
				b.StallGap = config.Duration(DefaultStallGap)
			}
			if b.Breaker != nil {
				br := *b.Breaker
				if br.Failures == 0 {
					br.Failures = DefaultBreakerFails
				}
				if br.OpenFor == 0 {
					br.OpenFor = config.Duration(DefaultBreakerOpenFor)
				}
				b.Breaker = &br
			}
			bs[j] = b
		}
		r.Branches = bs
		routes[i] = r
	}
	c.Routes = routes
	return c
}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate checks what the validate tags cannot: names, subjects, modes,
// templates and how timeouts relate. Empty required fields are left to the
// tags. Paths are relative to the gather section.
func (c *Config) Validate() error {
	var errs config.Errors
	routes := map[string]bool{}
	for i, r := range c.Routes {
		rp := fmt.Sprintf("routes[%d]", i)
		if r.Name != "" {
			switch {
			case !nameRe.MatchString(r.Name):
				errs.Add(rp+".name", "%q may contain only letters, digits, '_' and '-'", r.Name)
			case routes[r.Name]:
				errs.Add(rp+".name", "route %q is defined twice", r.Name)
			}
			routes[r.Name] = true
		}
		if r.Timeout < 0 { // only a config built in Go can hold one
			errs.Add(rp+".timeout", "must not be negative")
		}
		routeTimeout := r.Timeout.D()
		if routeTimeout <= 0 {
			routeTimeout = DefaultRouteTimeout
		}
		branches := map[string]bool{}
		for j, b := range r.Branches {
			validateBranch(&errs, fmt.Sprintf("%s.branches[%d]", rp, j), b, routeTimeout, branches)
		}
	}
	return errs.Err()
}

func validateBranch(errs *config.Errors, bp string, b Branch, routeTimeout time.Duration, seen map[string]bool) {
	if b.Name != "" {
		switch {
		case !nameRe.MatchString(b.Name):
			errs.Add(bp+".name", "%q may contain only letters, digits, '_' and '-'", b.Name)
		case strings.HasPrefix(b.Name, "_"):
			errs.Add(bp+".name", "%q: names starting with '_' are reserved (the reply has a _meta key)", b.Name)
		case seen[b.Name]:
			errs.Add(bp+".name", "branch %q is defined twice in this route", b.Name)
		}
		seen[b.Name] = true
	}
	if b.Subject != "" {
		if err := validSubject(b.Subject); err != nil {
			errs.Add(bp+".subject", "%v", err)
		}
	}
	for key, d := range map[string]config.Duration{"timeout": b.Timeout, "cache_ttl": b.CacheTTL, "stall_gap": b.StallGap} {
		if d < 0 { // the YAML loader refuses these; a config built in Go may not
			errs.Add(bp+"."+key, "must not be negative")
		}
	}
	if b.Breaker != nil && b.Breaker.OpenFor < 0 {
		errs.Add(bp+".breaker.open_for", "must not be negative")
	}
	if b.Timeout.D() > routeTimeout {
		errs.Add(bp+".timeout", "%v is longer than the route timeout %v, which would cut it short", b.Timeout, routeTimeout)
	}
	if b.Required && b.Fallback.IsSet() {
		errs.Add(bp+".fallback", "a required branch cannot have a fallback: its failure fails the whole gather")
	}
	if b.CacheSize > 0 && b.CacheTTL == 0 {
		errs.Add(bp+".cache_size", "has no effect without cache_ttl")
	}
	if b.Mode != ModeAll {
		if b.MaxReplies != 0 {
			errs.Add(bp+".max_replies", "only applies with mode: all")
		}
		if b.StallGap != 0 {
			errs.Add(bp+".stall_gap", "only applies with mode: all")
		}
	}
	if b.Payload != "" {
		if _, err := parsePayload(b.Name, b.Payload); err != nil {
			errs.Add(bp+".payload", "%v", err)
		}
	}
}

// validSubject accepts a literal NATS subject: dot-separated non-empty
// tokens without wildcards or whitespace.
func validSubject(s string) error {
	for tok := range strings.SplitSeq(s, ".") {
		switch {
		case tok == "":
			return fmt.Errorf("%q has an empty token", s)
		case tok == "*" || tok == ">":
			return fmt.Errorf("%q: a branch subject must be literal, without wildcards", s)
		case strings.ContainsAny(tok, " \t\r\n"):
			return fmt.Errorf("%q must not contain whitespace", s)
		}
	}
	return nil
}

// parsePayload compiles a payload template. Missing parameters are errors
// rather than "<no value>", so a request without them fails that branch
// clearly.
func parsePayload(name, text string) (*template.Template, error) {
	t, err := template.New(name).Option("missingkey=error").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
	}).Parse(text)
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "template: "))
	}
	return t, nil
}

// Fallback is a branch's fallback value, held as JSON. The zero value means
// "no fallback", which is distinct from a fallback of [] or null-free
// values such as 0, "" or {}.
type Fallback struct {
	raw json.RawMessage
}

// NewFallback returns a fallback holding v encoded as JSON.
func NewFallback(v any) (Fallback, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Fallback{}, fmt.Errorf("fallback: %w", err)
	}
	if string(b) == "null" {
		return Fallback{}, nil
	}
	return Fallback{raw: b}, nil
}

// IsSet reports whether a fallback was configured.
func (f Fallback) IsSet() bool { return f.raw != nil }

// JSON returns the fallback as JSON, nil when none is set.
func (f Fallback) JSON() json.RawMessage { return f.raw }

// UnmarshalYAML takes any YAML value; null means no fallback.
func (f *Fallback) UnmarshalYAML(n *yaml.Node) error {
	var v any
	if err := n.Decode(&v); err != nil {
		return err
	}
	fb, err := NewFallback(jsonable(v))
	if err != nil {
		return err
	}
	*f = fb
	return nil
}

// MarshalYAML writes the value back (nil when unset).
func (f Fallback) MarshalYAML() (any, error) {
	if !f.IsSet() {
		return nil, nil
	}
	var v any
	err := json.Unmarshal(f.raw, &v)
	return v, err
}

// UnmarshalJSON takes any JSON value; null means no fallback.
func (f *Fallback) UnmarshalJSON(b []byte) error {
	if !json.Valid(b) {
		return errors.New("fallback: invalid JSON")
	}
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*f = Fallback{}
		return nil
	}
	f.raw = append(json.RawMessage(nil), b...)
	return nil
}

// MarshalJSON writes the value (null when unset).
func (f Fallback) MarshalJSON() ([]byte, error) {
	if !f.IsSet() {
		return []byte("null"), nil
	}
	return f.raw, nil
}

// jsonable turns YAML's generic values into ones encoding/json accepts:
// mappings with non-string keys become string-keyed.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonable(e)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = jsonable(e)
		}
		return x
	}
	return v
}
