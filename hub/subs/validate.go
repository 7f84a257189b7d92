package subs

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/subscribers/webhook"
)

// idRe is what a client-chosen id may be: usable in a NATS subject and a
// KV key.
var idRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidationError names every invalid field of a subscription.
type ValidationError struct {
	Errors []hub.FieldError
}

func (e *ValidationError) Error() string {
	return "invalid subscription: " + hub.JoinFieldErrors(e.Errors)
}

type fieldErrors []hub.FieldError

func (f *fieldErrors) add(field, format string, args ...any) {
	*f = append(*f, hub.FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// err is a *ValidationError sorted by field, or nil.
func (f fieldErrors) err() error {
	if len(f) == 0 {
		return nil
	}
	es := slices.Clone(f)
	slices.SortStableFunc(es, func(a, b hub.FieldError) int { return strings.Compare(a.Field, b.Field) })
	return &ValidationError{Errors: es}
}

// checkWebhook checks the fields a runtime webhook subscription can set.
func checkWebhook(r *record) fieldErrors {
	var errs fieldErrors
	if len(r.Events) == 0 {
		errs.add("events", "required: at least one event pattern, such as order.created or order.>")
	}
	for i, p := range r.Events {
		if err := hub.ValidPattern(p); err != nil {
			errs.add(fmt.Sprintf("events[%d]", i), "%v", err)
		}
	}
	// url, secret and headers, as the config loader checks them.
	err := webhook.CheckSubscription(&hub.Subscription{URL: r.URL, Secret: config.Secret(r.Secret), Headers: r.Headers})
	var ces config.Errors
	if errors.As(err, &ces) {
		for _, ce := range ces {
			errs = append(errs, hub.FieldError{Field: ce.Path, Reason: ce.Reason})
		}
	} else if err != nil {
		errs.add("", "%v", err)
	}
	if !(r.RateLimit >= 0) || math.IsInf(r.RateLimit, 0) {
		errs.add("rate_limit", "must be 0 (no limit) or a positive number of requests per second")
	}
	return errs
}
