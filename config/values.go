// Package config holds the value types shared by every package's Config
// (Duration, ByteSize, Secret) and the strict YAML loader that composes them:
// unknown keys, bad values and failed validation are all reported one line
// per YAML path, e.g. "nats.store_dir: required".
package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as "250ms", "30s", "2h".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML accepts Go duration strings only; a bare number is refused
// because its unit would be a guess.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("must be a duration such as 500ms, 30s or 2h")
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use a unit: 500ms, 30s, 2h)", n.Value)
	}
	if v < 0 {
		return fmt.Errorf("duration %q must not be negative", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration in its string form.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// ByteSize is a size in bytes written as 1024, "256KiB", "1MB", "10GiB".
type ByteSize int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"TIB", 1 << 40},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// ParseByteSize parses "256KiB", "1MB", "1024" into bytes.
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty size")
	}
	up := strings.ToUpper(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(up, u.suffix) {
			mult = u.mult
			up = strings.TrimSpace(strings.TrimSuffix(up, u.suffix))
			break
		}
	}
	n, err := strconv.ParseInt(up, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q (use bytes or a unit: 512KiB, 1MB, 10GiB)", s)
	}
	if n > 0 && mult > (1<<62)/n {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalYAML accepts an integer number of bytes or a string with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("must be a size such as 256KiB or 1MB")
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

func (b ByteSize) String() string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", b>>30)
	case b >= 1<<20 && b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b>>20)
	case b >= 1<<10 && b%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", b>>10)
	}
	return fmt.Sprintf("%dB", int64(b))
}

// Secret holds a password, token or key. It never prints its value, so a
// config dumped to a log or an error message cannot leak it. In YAML a Secret
// field "x" may also be given as "x_env: VAR" (read from the environment) or
// "x_file: PATH" (read from a file, trailing newline trimmed).
type Secret string

// Value returns the secret itself; call it only where the secret is used.
func (s Secret) Value() string { return string(s) }

// IsSet reports whether the secret is non-empty.
func (s Secret) IsSet() bool { return s != "" }

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return s.String() }

// MarshalYAML and MarshalJSON redact too.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.String())), nil }

// RedactURLs returns a comma-separated list of URLs with any user
// information (user:password@, or a token@) replaced by "redacted", for
// logs and error messages. A part that does not parse is replaced whole
// when it holds an '@'.
func RedactURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		switch {
		case err == nil && u.User != nil:
			u.User = url.User("redacted")
			parts[i] = u.String()
		case err != nil && strings.Contains(p, "@"):
			parts[i] = "redacted"
		default:
			parts[i] = p
		}
	}
	return strings.Join(parts, ",")
}
