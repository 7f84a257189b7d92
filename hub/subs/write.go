package subs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/subscribers/webhook"
)

// Patch changes some fields of a subscription; nil fields stay as they
// are. Headers replaces the whole set (an empty map removes them all) and
// Secret replaces the secret (send "whsec_old whsec_new" to rotate without
// a gap, then "whsec_new").
type Patch struct {
	Disabled  *bool              `json:"disabled"`
	Events    []string           `json:"events"`
	URL       *string            `json:"url"`
	Headers   *map[string]string `json:"headers"`
	RateLimit *float64           `json:"rate_limit"`
	Secret    *string            `json:"secret"`
}

func (p *Patch) empty() bool {
	return p.Disabled == nil && p.Events == nil && p.URL == nil && p.Headers == nil && p.RateLimit == nil && p.Secret == nil
}

func (p *Patch) onlyDisabled() bool {
	q := *p
	q.Disabled = nil
	return p.Disabled != nil && q.empty()
}

// apiDisabledReason is recorded when someone disables a subscription
// through the API.
const apiDisabledReason = "disabled through the API"

// Create stores a new runtime webhook subscription. An empty ID gets a
// generated one (sub_<ulid>); an empty Channel means webhook; an empty
// Secret gets a generated one, returned as secret (the only time it is
// ever shown; secret is "" when the caller chose its own). Invalid fields
// are a *ValidationError.
func (s *Store) Create(ctx context.Context, sub hub.Subscription) (created Subscription, secret string, err error) {
	if err := s.running(); err != nil {
		return Subscription{}, "", err
	}
	now := s.timestamp()
	r := record{
		ID: sub.ID, Channel: sub.Channel, Events: slices.Clone(sub.Events), URL: sub.URL,
		Secret: sub.Secret.Value(), Headers: maps.Clone(sub.Headers), RateLimit: sub.RateLimit,
		CreatedAt: now, UpdatedAt: now,
	}
	if r.Channel == "" {
		r.Channel = "webhook"
	}
	if r.Secret == "" {
		secret = webhook.GenerateSecret()
		r.Secret = secret
	}
	var errs fieldErrors
	if r.ID != "" && !idRe.MatchString(r.ID) {
		errs.add("id", "must be 1 to 64 letters, digits, '_' or '-'")
	}
	if r.Channel != "webhook" {
		errs.add("channel", "only webhook subscriptions can be created at runtime; %q subscriptions belong in the config file", r.Channel)
	}
	for _, f := range []struct{ name, val string }{
		{"to", sub.To}, {"subject", sub.Subject}, {"text", sub.Text}, {"html", sub.HTML},
		{"body", sub.Body}, {"from", sub.From}, {"reply_to", sub.ReplyTo},
	} {
		if f.val != "" {
			errs.add(f.name, "not used by webhook subscriptions")
		}
	}
	errs = append(errs, checkWebhook(&r)...)
	if err := errs.err(); err != nil {
		return Subscription{}, "", err
	}
	if sub.Disabled {
		setDisabled(&r, true, apiDisabledReason, now)
	}
	if r.ID == "" {
		r.ID = "sub_" + strings.ToLower(hub.NewID())
	}
	if _, ok := s.configIdx[r.ID]; ok {
		return Subscription{}, "", fmt.Errorf("%w: %q is the id of a subscription in the config file", ErrExists, r.ID)
	}
	if n := s.current().apiCount; n >= s.max {
		return Subscription{}, "", fmt.Errorf("%w: the hub holds %d runtime subscriptions, the most it allows (%d); delete one first", ErrLimit, n, s.max)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return Subscription{}, "", fmt.Errorf("encode subscription: %w", err)
	}
	rev, err := s.kv.Create(ctx, subKey(r.ID), data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return Subscription{}, "", fmt.Errorf("%w: %q", ErrExists, r.ID)
	}
	if err != nil {
		return Subscription{}, "", fmt.Errorf("store subscription %s: %w", r.ID, err)
	}
	s.settle(ctx, r.ID, seen(rev))
	s.log.Info().Str("subscription", r.ID).Strs("events", r.Events).Msg("subscription created")
	return r.view(), secret, nil
}

// Update applies a patch. A config subscription only takes
// {"disabled": ...} (anything else is ErrReadOnly); invalid fields are a
// *ValidationError.
func (s *Store) Update(ctx context.Context, id string, p Patch) (Subscription, error) {
	if err := s.running(); err != nil {
		return Subscription{}, err
	}
	if p.empty() {
		return Subscription{}, &ValidationError{Errors: []hub.FieldError{{Reason: "nothing to change: send at least one of disabled, events, url, headers, rate_limit, secret"}}}
	}
	if _, ok := s.configIdx[id]; ok {
		if !p.onlyDisabled() {
			return Subscription{}, fmt.Errorf("%w: %q is defined in the config file; only \"disabled\" can be changed at runtime, edit the file for the rest", ErrReadOnly, id)
		}
		if err := s.SetDisabled(ctx, id, *p.Disabled, apiDisabledReason); err != nil {
			return Subscription{}, err
		}
		return s.Get(id)
	}
	r, err := s.modify(ctx, id, func(r *record, now time.Time) (bool, error) {
		if p.Disabled != nil {
			setDisabled(r, *p.Disabled, apiDisabledReason, now)
		}
		if p.Events != nil {
			r.Events = slices.Clone(p.Events)
		}
		if p.URL != nil {
			r.URL = *p.URL
		}
		if p.Headers != nil {
			r.Headers = maps.Clone(*p.Headers)
		}
		if p.RateLimit != nil {
			r.RateLimit = *p.RateLimit
		}
		if p.Secret != nil {
			r.Secret = *p.Secret
		}
		if p.onlyDisabled() {
			return true, nil // disabling must work even if the rules changed since
		}
		return true, checkWebhook(r).err()
	})
	if err != nil {
		return Subscription{}, err
	}
	s.log.Info().Str("subscription", id).Bool("disabled", r.Disabled).Bool("secret_changed", p.Secret != nil).Msg("subscription updated")
	return r.view(), nil
}

// Delete removes a runtime subscription; config ones are ErrReadOnly.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := s.running(); err != nil {
		return err
	}
	if _, ok := s.configIdx[id]; ok {
		return fmt.Errorf("%w: %q is defined in the config file; remove it there, or disable it with {\"disabled\": true}", ErrReadOnly, id)
	}
	if err := s.deleteKey(ctx, id, subKey(id)); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		return err
	}
	s.log.Info().Str("subscription", id).Msg("subscription deleted")
	return nil
}

// SetDisabled disables or re-enables a subscription of either origin and
// records why and when; the state is stored in the bucket, so it survives
// restarts and every node applies it. The dispatcher calls it when an
// endpoint answers 410 Gone. Setting the state it already has changes
// nothing (the first reason is kept). A config subscription with
// disabled: true in the file cannot be enabled (ErrDisabledInConfig).
func (s *Store) SetDisabled(ctx context.Context, id string, disabled bool, reason string) error {
	if err := s.running(); err != nil {
		return err
	}
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen] + "..."
	}
	if i, ok := s.configIdx[id]; ok {
		return s.setConfigDisabled(ctx, id, disabled, reason, s.config[i].Disabled)
	}
	changed := false
	_, err := s.modify(ctx, id, func(r *record, now time.Time) (bool, error) {
		changed = r.Disabled != disabled
		setDisabled(r, disabled, reason, now)
		return changed, nil
	})
	if err != nil {
		return err
	}
	if changed {
		s.logDisabled(id, disabled, reason)
	}
	return nil
}

func (s *Store) setConfigDisabled(ctx context.Context, id string, disabled bool, reason string, inFile bool) error {
	key := overrideKey(id)
	if !disabled {
		if inFile {
			return fmt.Errorf("%w: %q has disabled: true in the config file; enable it there", ErrDisabledInConfig, id)
		}
		err := s.deleteKey(ctx, id, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil // not disabled at runtime
		}
		if err != nil {
			return err
		}
		s.logDisabled(id, false, "")
		return nil
	}
	data, err := json.Marshal(override{DisabledReason: reason, DisabledAt: s.timestamp()})
	if err != nil {
		return fmt.Errorf("encode override: %w", err)
	}
	rev, err := s.kv.Create(ctx, key, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil // already disabled
	}
	if err != nil {
		return fmt.Errorf("store disabled state of %s: %w", id, err)
	}
	s.settle(ctx, id, seen(rev))
	s.logDisabled(id, true, reason)
	return nil
}

func (s *Store) logDisabled(id string, disabled bool, reason string) {
	if disabled {
		s.log.Warn().Str("subscription", id).Str("reason", reason).Msg("subscription disabled")
		return
	}
	s.log.Info().Str("subscription", id).Msg("subscription enabled")
}

// modify is a read-modify-write of the runtime subscription id that checks
// the revision, so a concurrent change by another node is never lost: on a
// mismatch it reads again and reapplies f. f reports whether it changed
// anything; nothing is written otherwise.
func (s *Store) modify(ctx context.Context, id string, f func(r *record, now time.Time) (bool, error)) (record, error) {
	key := subKey(id)
	for range maxAttempts {
		e, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return record{}, fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		if err != nil {
			return record{}, fmt.Errorf("read subscription %s: %w", id, err)
		}
		var r record
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			return record{}, fmt.Errorf("decode subscription %s: %w", id, err)
		}
		now := s.timestamp()
		changed, err := f(&r, now)
		if err != nil || !changed {
			return r, err
		}
		r.UpdatedAt = now
		data, err := json.Marshal(r)
		if err != nil {
			return record{}, fmt.Errorf("encode subscription: %w", err)
		}
		rev, err := s.kv.Update(ctx, key, data, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return record{}, fmt.Errorf("store subscription %s: %w", id, err)
		}
		s.settle(ctx, id, seen(rev))
		return r, nil
	}
	return record{}, fmt.Errorf("%w: %q changed %d times while being written; try again", ErrConflict, id, maxAttempts)
}

// deleteKey deletes key at its current revision, retrying if it changes
// meanwhile; jetstream.ErrKeyNotFound when there is nothing to delete.
func (s *Store) deleteKey(ctx context.Context, id, key string) error {
	for range maxAttempts {
		e, err := s.kv.Get(ctx, key)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return err
			}
			return fmt.Errorf("read %s: %w", key, err)
		}
		err = s.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision()))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("delete %s: %w", key, err)
		}
		s.settle(ctx, id, gone(key, e.Revision()))
		return nil
	}
	return fmt.Errorf("%w: %q changed %d times while being deleted; try again", ErrConflict, id, maxAttempts)
}

// setDisabled sets the disabled state and its reason and time.
func setDisabled(r *record, disabled bool, reason string, now time.Time) {
	if r.Disabled == disabled {
		return
	}
	r.Disabled = disabled
	if disabled {
		r.DisabledReason, r.DisabledAt = reason, &now
		return
	}
	r.DisabledReason, r.DisabledAt = "", nil
}
