package hub

import (
	"crypto/sha256"
	"encoding/base32"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/config"
)

// Stream names and subjects of the delivery pipeline.
const (
	// DeliveriesStream holds one message per (event, subscription,
	// recipient) that needs a retry, a dead letter or a replay; first
	// attempts are made straight from EVENTS.
	DeliveriesStream = "DELIVERIES"
	// DLQStream holds dead letters under dlq.<channel>.<subscription>.
	DLQStream = "DLQ"
	// AdvisoriesStream captures JetStream's terminated and max-deliveries
	// advisories for DELIVERIES, so a dead letter is not lost when the hub
	// is down at the moment the advisory fires.
	AdvisoriesStream = "HUB_ADVISORIES"

	DeliveriesPrefix = "deliveries."
	DLQPrefix        = "dlq."
)

// Headers on DELIVERIES messages.
const (
	// HeaderAttempts is the number of attempts made before this message.
	HeaderAttempts = "Hub-Attempts"
	// HeaderNotBefore (unix nanoseconds): the first delivery of the message
	// waits until then and does not count as an attempt.
	HeaderNotBefore = "Hub-Not-Before"
	// HeaderFirstAttempt (unix nanoseconds) of the first attempt.
	HeaderFirstAttempt = "Hub-First-Attempt"
	// HeaderLastError is the error of the previous attempt.
	HeaderLastError = "Hub-Last-Error"
	// HeaderTerminal, when set, dead-letters the message at once with this reason.
	HeaderTerminal = "Hub-Terminal"
)

// HeaderIntake on an EVENTS message names the door it came through
// ("http"); events without it came over NATS.
const HeaderIntake = "Hub-Intake"

// W3C Trace Context headers, also the CloudEvents extension names.
const (
	TraceparentHeader = "traceparent"
	TracestateHeader  = "tracestate"
)

// ValidTraceparent checks the W3C trace-context shape
// (version-traceid-parentid-flags, lowercase hex).
func ValidTraceparent(s string) bool {
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' || (len(s) > 55 && s[55] != '-') {
		return false
	}
	for i := 0; i < 55; i++ {
		if i == 2 || i == 35 || i == 52 {
			continue
		}
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return s[:2] != "ff"
}

// DeliverySubject is deliveries.<channel>.<subscription>.
func DeliverySubject(channel, sub string) string {
	return DeliveriesPrefix + channel + "." + sub
}

// DLQSubject is dlq.<channel>.<subscription>.
func DLQSubject(channel, sub string) string { return DLQPrefix + channel + "." + sub }

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// DeliveryID is the stable id of (event, subscription, recipient): the same
// across retries and replays, so receivers can dedup on it. It is safe in
// headers and Message-IDs.
func DeliveryID(eventID, sub, recipient string) string {
	h := sha256.New()
	h.Write([]byte(eventID))
	h.Write([]byte{0})
	h.Write([]byte(sub))
	h.Write([]byte{0})
	h.Write([]byte(recipient))
	sum := h.Sum(nil)
	return "dlv_" + strings.ToLower(idEncoding.EncodeToString(sum[:16]))
}

// DeliveryConfig configures delivery, retries and dead letters.
type DeliveryConfig struct {
	// AckWait: an attempt not finished in this time is presumed lost and
	// redelivered; long sends extend it with InProgress.
	AckWait config.Duration `yaml:"ack_wait" validate:"gte=1000000000"`
	// MaxAttempts per (event, subscription, recipient), then the DLQ.
	MaxAttempts int `yaml:"max_attempts" validate:"gte=1,lte=100"`
	// Backoff is the wait after attempt n (the last step repeats).
	Backoff []config.Duration `yaml:"backoff" validate:"min=1,dive,gt=0"`
	// Jitter spreads each wait by ±this fraction.
	Jitter float64 `yaml:"jitter" validate:"gte=0,lte=1"`
	// Concurrency is the most sends in flight per channel.
	Concurrency map[string]int `yaml:"concurrency" validate:"dive,gte=1,lte=10000"`
	// ShutdownTimeout bounds the wait for in-flight sends at shutdown.
	ShutdownTimeout config.Duration `yaml:"shutdown_timeout" validate:"gt=0"`
	// DLQMaxAge: dead letters older than this are removed.
	DLQMaxAge config.Duration `yaml:"dlq_max_age" validate:"gt=0"`
}

// DefaultDeliveryConfig returns Svix's retry schedule and the defaults in
// configs/hub.yaml.
func DefaultDeliveryConfig() DeliveryConfig {
	return DeliveryConfig{
		AckWait:     config.Duration(30 * time.Second),
		MaxAttempts: 8,
		Backoff: []config.Duration{
			config.Duration(5 * time.Second), config.Duration(5 * time.Minute), config.Duration(30 * time.Minute),
			config.Duration(2 * time.Hour), config.Duration(5 * time.Hour), config.Duration(10 * time.Hour), config.Duration(10 * time.Hour),
		},
		Jitter:          0.1,
		Concurrency:     map[string]int{"email": 16, "sms": 8, "webhook": 64, "log": 4},
		ShutdownTimeout: config.Duration(30 * time.Second),
		DLQMaxAge:       config.Duration(30 * 24 * time.Hour),
	}
}

// ConcurrencyFor returns the channel's concurrency (default 16).
func (c DeliveryConfig) ConcurrencyFor(channel string) int {
	if n, ok := c.Concurrency[channel]; ok && n > 0 {
		return n
	}
	return 16
}

// MaxBackoff is the longest step of the schedule: the cap for Retry-After.
func (c DeliveryConfig) MaxBackoff() time.Duration {
	var m time.Duration
	for _, d := range c.Backoff {
		m = max(m, d.D())
	}
	return m
}

// BackoffAfter is the jittered wait after attempt n (1-based) failed.
func (c DeliveryConfig) BackoffAfter(n int) time.Duration {
	if len(c.Backoff) == 0 {
		return time.Second
	}
	i := min(max(n-1, 0), len(c.Backoff)-1)
	return jitter(c.Backoff[i].D(), c.Jitter)
}

func jitter(d time.Duration, f float64) time.Duration {
	if f <= 0 || d <= 0 {
		return d
	}
	return time.Duration(float64(d) * (1 + f*(2*rand.Float64()-1)))
}

// DeliveriesStreamConfig is the DELIVERIES stream.
func DeliveriesStreamConfig(ec EventsConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        DeliveriesStream,
		Description: "hub: deliveries waiting for a retry, and replays",
		Subjects:    []string{DeliveriesPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      ec.MaxAge.D(),
		MaxMsgSize:  int32(ec.MaxEventSize) + 2*headerAllowance,
		Duplicates:  ec.DuplicateWindow.D(),
		Replicas:    max(ec.Replicas, 1),
	}
}

// DLQStreamConfig is the DLQ stream.
func DLQStreamConfig(ec EventsConfig, dc DeliveryConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        DLQStream,
		Description: "hub: dead letters, with their reason",
		Subjects:    []string{DLQPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      dc.DLQMaxAge.D(),
		Duplicates:  ec.DuplicateWindow.D(),
		Replicas:    max(ec.Replicas, 1),
	}
}

// AdvisoriesStreamConfig captures the advisories that create dead letters.
func AdvisoriesStreamConfig(ec EventsConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        AdvisoriesStream,
		Description: "hub: terminated and max-deliveries advisories of DELIVERIES",
		Subjects: []string{
			"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED." + DeliveriesStream + ".>",
			"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + DeliveriesStream + ".>",
		},
		Storage:   jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy,
		MaxAge:    7 * 24 * time.Hour,
		Replicas:  max(ec.Replicas, 1),
	}
}
