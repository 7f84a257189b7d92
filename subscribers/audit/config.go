package audit

import (
	"fmt"
	"strings"
	"time"

	"github.com/hubproject/hub/config"
)

// Config configures the audit trail (channels.audit in the hub's config
// file).
type Config struct {
	// Enabled turns the audit trail on. When off, New still returns an
	// Auditor whose methods do nothing, so callers need no branches.
	Enabled bool `yaml:"enabled"`
	// File is the append-only JSONL file holding the hash chain (created
	// 0600); empty means records go to the AUDIT stream only.
	File string `yaml:"file"`
	// FsyncInterval batches fsyncs of the file: a power loss can lose at
	// most this much of it (the AUDIT stream has its own durability).
	FsyncInterval config.Duration `yaml:"fsync_interval" validate:"gt=0"`
	// MaxAge removes AUDIT stream records older than this; the file is
	// never trimmed by the hub.
	MaxAge config.Duration `yaml:"max_age" validate:"gte=60000000000"`
	// MaxBytes caps the AUDIT stream's size (0: no cap); the oldest
	// records go first.
	MaxBytes config.ByteSize `yaml:"max_bytes" validate:"gte=0"`
	// Redact lists dotted paths into the event (data.customer.phone,
	// subject; an array applies the rest of the path to each element)
	// whose values become "[redacted]" before any record is written;
	// recipient, response and error also hide those fields of delivery
	// records.
	Redact []string `yaml:"redact"`
	// Replicas of the AUDIT stream; 0 means the same as the hub's other
	// streams (events.replicas: 1 standalone, 3 in a cluster).
	Replicas int `yaml:"replicas" validate:"gte=0,lte=5"`
	// QueueSize is how many delivery records may wait for the writer.
	QueueSize int `yaml:"queue_size" validate:"gte=16,lte=16777216"`
	// QueueWait is how long a dispatcher waits for room in a full queue
	// (backpressure) before the record is dropped, counted, and a
	// records_dropped record marks the gap.
	QueueWait config.Duration `yaml:"queue_wait" validate:"gte=0"`
	// WaitStored makes each event's and attempt's record stored in the
	// AUDIT stream before its message is acknowledged (records are
	// group-committed; the dispatcher hands its ack to the trail after its
	// sends, holding no handler or send slot), so a crash cannot lose the
	// record of a stored event or a finished attempt. Off, records still
	// queued when the process dies are lost (docs/audit.md).
	WaitStored bool `yaml:"wait_stored"`
}

// Defaults.
const (
	DefaultFsyncInterval = 200 * time.Millisecond
	DefaultMaxAge        = 720 * time.Hour
	DefaultQueueSize     = 65536
	DefaultQueueWait     = 5 * time.Second
)

// DefaultConfig returns the defaults written in configs/hub.yaml.
func DefaultConfig() Config {
	return Config{
		Enabled:       true,
		FsyncInterval: config.Duration(DefaultFsyncInterval),
		MaxAge:        config.Duration(DefaultMaxAge),
		QueueSize:     DefaultQueueSize,
		QueueWait:     config.Duration(DefaultQueueWait),
		WaitStored:    true,
	}
}

// protectedPaths cannot be redacted: a trace finds an event by its id and
// shows its type.
var protectedPaths = map[string]bool{"id": true, "type": true, "specversion": true}

// Validate checks the redact paths. Paths are relative to the audit section.
func (c *Config) Validate() error {
	var errs config.Errors
	seen := map[string]int{}
	for i, p := range c.Redact {
		field := fmt.Sprintf("redact[%d]", i)
		if err := checkPath(p); err != nil {
			errs.Add(field, "%v", err)
			continue
		}
		if j, dup := seen[p]; dup {
			errs.Add(field, "%q is already listed at redact[%d]", p, j)
		}
		seen[p] = i
	}
	return errs.Err()
}

func checkPath(p string) error {
	if p == "" {
		return fmt.Errorf("empty path")
	}
	if strings.ContainsAny(p, " \t\r\n") {
		return fmt.Errorf("%q: a path has no spaces (write data.customer.phone)", p)
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" {
			return fmt.Errorf("%q: empty segment (write data.customer.phone)", p)
		}
	}
	if protectedPaths[p] {
		return fmt.Errorf("%q cannot be redacted: traces need it", p)
	}
	return nil
}
