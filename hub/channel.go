package hub

import (
	"context"
	"errors"
	"time"
)

// Channel sends one delivery to one recipient. It is the only thing a
// notification channel (email, SMS, webhook, audit, log) must implement.
//
// Send returns nil when the delivery was accepted by the far side. An error
// carries the retry decision: wrap it with Permanent, RetryAfter, Gone or
// Defer; any other error is retried on the delivery backoff schedule. Send
// must return promptly when ctx is cancelled and be safe for concurrent use.
type Channel interface {
	Send(ctx context.Context, d *Delivery) error
}

// Closer is implemented by channels that hold resources (connection pools,
// files). Close must be idempotent.
type Closer interface {
	Close(ctx context.Context) error
}

// Gate is implemented by channels that can tell, without sending, that
// every delivery to a subscription would be deferred now (an endpoint
// whose circuit breaker is open), and until when. When every subscription
// of a channel is blocked, its dispatcher leaves new events in EVENTS
// instead of copying each one into DELIVERIES to wait. Blocked must be
// cheap and safe for concurrent use.
type Gate interface {
	Blocked(sub *Subscription) (until time.Time, blocked bool)
}

// Delivery is one attempt to deliver one event to one recipient of one
// subscription. A channel fills in Outcome and treats the rest as
// read-only: EventJSON is the stored message's own buffer, which the
// audit trail may be reading at the same time, and the attempt record
// names the ID and Recipient the dispatcher set.
type Delivery struct {
	// ID is stable across retries and replays of the same (event,
	// subscription, recipient): receivers dedup on it (webhook-id,
	// email Message-ID).
	ID           string
	Event        *Event
	EventJSON    []byte // the event exactly as stored; the webhook body
	Subscription *Subscription
	Recipient    string  // address, phone number or URL; "" when the channel has none
	Content      Content // rendered templates
	Attempt      int     // 1 for the first attempt
	FirstAttempt time.Time
	// Outcome is filled by the channel with what the far side answered, for
	// the attempt record (status, first bytes of the response).
	Outcome Outcome
}

// Content is what the subscription's templates rendered for this delivery.
type Content struct {
	Subject string `json:"subject,omitempty"` // email subject
	Text    string `json:"text,omitempty"`    // email text part, SMS body
	HTML    string `json:"html,omitempty"`    // email HTML part
}

// Outcome is what a channel learned from the far side on one attempt.
type Outcome struct {
	Status   int    `json:"status,omitempty"`   // HTTP status or SMTP reply code
	Response string `json:"response,omitempty"` // first bytes of the reply
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: the delivery goes to the
// dead-letter stream with err as the reason.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err (or what it wraps) was marked Permanent or Gone.
func IsPermanent(err error) bool {
	var p *permanentError
	var g *goneError
	return errors.As(err, &p) || errors.As(err, &g)
}

type retryAfterError struct {
	err   error
	delay time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// RetryAfter marks err as retryable after d, as a server's Retry-After asked.
// The dispatcher caps d at the largest step of the backoff schedule.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryAfterError{err: err, delay: d}
}

// RetryDelay returns the delay requested with RetryAfter.
func RetryDelay(err error) (time.Duration, bool) {
	var r *retryAfterError
	if errors.As(err, &r) {
		return r.delay, true
	}
	return 0, false
}

type goneError struct{ err error }

func (e *goneError) Error() string { return e.err.Error() }
func (e *goneError) Unwrap() error { return e.err }

// Gone marks err as proof the endpoint no longer exists (HTTP 410): the
// delivery is dead-lettered and the subscription disabled until re-enabled.
func Gone(err error) error {
	if err == nil {
		return nil
	}
	return &goneError{err: err}
}

// IsGone reports whether err was marked Gone.
func IsGone(err error) bool {
	var g *goneError
	return errors.As(err, &g)
}

type deferError struct {
	err   error
	delay time.Duration
}

func (e *deferError) Error() string { return e.err.Error() }
func (e *deferError) Unwrap() error { return e.err }

// Defer asks for the delivery to wait d without spending an attempt, as
// when a circuit breaker is open and nothing was sent.
func Defer(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &deferError{err: err, delay: d}
}

// DeferDelay returns the delay requested with Defer.
func DeferDelay(err error) (time.Duration, bool) {
	var e *deferError
	if errors.As(err, &e) {
		return e.delay, true
	}
	return 0, false
}
