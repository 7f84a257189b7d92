// Package subs holds the webhook subscriptions created at runtime through
// the HTTP API. They live in a JetStream KV bucket shared by every hub node
// and are merged with the subscriptions of the config file, which stay
// read-only except for being disabled and re-enabled (a 410 Gone from a
// webhook endpoint disables either kind). A KV watcher keeps every node's
// view current and hands the merged list to the node (WithOnChange), which
// turns it into dispatcher routes.
package subs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
)

// Bucket is the JetStream KV bucket holding runtime subscriptions (keys
// sub.<id>) and the runtime disabled state of config subscriptions (keys
// override.<id>).
const Bucket = "HUB_SUBSCRIPTIONS"

// DefaultMaxSubscriptions caps the runtime subscriptions unless
// WithMaxSubscriptions says otherwise.
const DefaultMaxSubscriptions = 10000

// Origins of a subscription.
const (
	OriginConfig = "config"
	OriginAPI    = "api"
)

const (
	subPrefix      = "sub."
	overridePrefix = "override."
	// maxValueSize bounds one stored subscription; a request body is at
	// most MaxBodySize, so a record fits with room to spare.
	maxValueSize = 128 << 10
	// maxBucketBytes caps the whole bucket.
	maxBucketBytes = 1 << 30
	// maxAttempts bounds the read-modify-write retries when another node
	// changes the same subscription at the same time.
	maxAttempts = 5
	// maxReasonLen bounds a stored disabled reason.
	maxReasonLen = 500
)

// Errors returned by the Store; the HTTP handlers map them to statuses.
var (
	// ErrNotFound: no subscription has this id (404).
	ErrNotFound = errors.New("subscription not found")
	// ErrExists: the id is taken, by a runtime or a config subscription (409).
	ErrExists = errors.New("subscription already exists")
	// ErrReadOnly: the subscription comes from the config file (409).
	ErrReadOnly = errors.New("subscription comes from the config file")
	// ErrDisabledInConfig: a config subscription with disabled: true in
	// the file cannot be enabled at runtime (409).
	ErrDisabledInConfig = errors.New("subscription is disabled in the config file")
	// ErrLimit: the store holds the maximum number of runtime
	// subscriptions (409).
	ErrLimit = errors.New("too many subscriptions")
	// ErrConflict: the subscription kept changing under a write (409).
	ErrConflict = errors.New("subscription changed concurrently")
	// ErrNotRunning: the store is not started, or its watcher stopped (503).
	ErrNotRunning = errors.New("subscription store is not running")
)

// Subscription is a subscription as the API shows it: the subscription
// without its secret (hub.Subscription's Secret never encodes), sensitive
// header values redacted, and the runtime state.
type Subscription struct {
	hub.Subscription
	DisabledReason string     `json:"disabled_reason,omitempty"`
	DisabledAt     *time.Time `json:"disabled_at,omitempty"`
	CreatedAt      *time.Time `json:"created_at,omitempty"`
	UpdatedAt      *time.Time `json:"updated_at,omitempty"`
}

// record is a runtime subscription as stored under sub.<id>.
type record struct {
	ID             string            `json:"id"`
	Channel        string            `json:"channel"`
	Events         []string          `json:"events"`
	URL            string            `json:"url"`
	Secret         string            `json:"secret"`
	Headers        map[string]string `json:"headers,omitempty"`
	RateLimit      float64           `json:"rate_limit,omitempty"`
	Disabled       bool              `json:"disabled,omitempty"`
	DisabledReason string            `json:"disabled_reason,omitempty"`
	DisabledAt     *time.Time        `json:"disabled_at,omitempty"`
	CreatedAt      time.Time         `json:"created_at"`
	UpdatedAt      time.Time         `json:"updated_at"`
}

// override is the runtime disabled state of a config subscription, stored
// under override.<id>; only a disabled state is stored, so enabling deletes
// the key and the config file rules again.
type override struct {
	DisabledReason string    `json:"disabled_reason,omitempty"`
	DisabledAt     time.Time `json:"disabled_at"`
}

func subKey(id string) string      { return subPrefix + id }
func overrideKey(id string) string { return overridePrefix + id }

// Option configures a Store.
type Option func(*Store)

// WithLogger sets the logger.
func WithLogger(l zerolog.Logger) Option { return func(s *Store) { s.log = l } }

// WithReplicas sets the bucket's replicas (1 standalone, 3 in a cluster).
func WithReplicas(n int) Option { return func(s *Store) { s.replicas = n } }

// WithMaxSubscriptions caps the runtime subscriptions (config ones do not
// count); 0 forbids creating any. Nodes check the cap against their own
// view, so two nodes creating at once may pass it by one each.
func WithMaxSubscriptions(n int) Option { return func(s *Store) { s.max = n } }

// WithOnChange sets f to receive the full merged list (config first) once
// when Start has loaded the bucket and again after every change, whichever
// node made it. f runs on the Store's own goroutine, one call at a time,
// in order. It may read the Store (List, Get) but must not write to it.
// The slice is f's own; the subscriptions' Events and Headers are shared
// and must not be modified.
func WithOnChange(f func([]hub.Subscription)) Option { return func(s *Store) { s.onChange = f } }

// Store holds the config subscriptions and the runtime ones.
type Store struct {
	kv       jetstream.KeyValue
	log      zerolog.Logger
	replicas int
	max      int
	onChange func([]hub.Subscription)
	now      func() time.Time

	config    []hub.Subscription // origin config, in file order
	configIdx map[string]int

	mu      sync.Mutex
	started bool
	snap    *snapshot     // the latest state: List, Get
	settled *snapshot     // the latest state whose OnChange has returned
	wake    chan struct{} // closed and replaced when settled changes
	stop    chan struct{} // nil until Start
	done    chan struct{} // closed when the watcher goroutine ends
	stopped sync.Once
}

// New opens (creating or updating) the bucket. configSubs are the config
// file's subscriptions, already validated. Start loads the runtime ones.
func New(ctx context.Context, js jetstream.JetStream, configSubs []hub.Subscription, opts ...Option) (*Store, error) {
	s := &Store{log: zerolog.Nop(), replicas: 1, max: DefaultMaxSubscriptions, now: time.Now, wake: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	if s.replicas < 1 || s.replicas > 5 {
		return nil, fmt.Errorf("subscriptions: replicas must be from 1 to 5, not %d", s.replicas)
	}
	if s.max < 0 {
		return nil, fmt.Errorf("subscriptions: max subscriptions must not be negative")
	}
	s.configIdx = make(map[string]int, len(configSubs))
	for _, c := range configSubs {
		c.Origin = OriginConfig
		s.configIdx[c.ID] = len(s.config)
		s.config = append(s.config, c)
	}
	var kv jetstream.KeyValue
	err := hub.RetryTransient(ctx, func(ctx context.Context) error {
		var err error
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:       Bucket,
			Description:  "hub runtime webhook subscriptions and config subscription overrides",
			History:      1,
			Storage:      jetstream.FileStorage,
			Replicas:     s.replicas,
			MaxValueSize: maxValueSize,
			MaxBytes:     maxBucketBytes,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("subscriptions bucket %s: %w", Bucket, err)
	}
	s.kv = kv
	s.snap = s.build(newState())
	s.settled = s.snap
	return s, nil
}

// Start loads the bucket and watches it for changes. When it returns, the
// first OnChange call (the initial merged list) has returned.
func (s *Store) Start(ctx context.Context) error {
	s.mu.Lock()
	started := s.started
	s.started = true
	s.mu.Unlock()
	if started {
		return errors.New("subscriptions: Start called twice")
	}
	// The watcher lives until Stop: nats.go ends it when its context is
	// done, so it gets one of its own; ctx only bounds its creation.
	wctx, cancel := context.WithCancel(context.Background())
	detach := context.AfterFunc(ctx, cancel)
	w, err := s.kv.WatchAll(wctx)
	if !detach() {
		err = errors.Join(err, ctx.Err())
		if w != nil {
			_ = w.Stop()
			for range w.Updates() { // until the subscription has closed it
			}
		}
	}
	if err != nil {
		cancel()
		return fmt.Errorf("watch bucket %s: %w", Bucket, err)
	}
	s.mu.Lock()
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	done := s.done
	s.mu.Unlock()

	ready := make(chan struct{})
	go s.run(w, cancel, ready)
	select {
	case <-ready:
		return nil
	case <-done:
		return fmt.Errorf("load subscriptions: %w: the watcher closed", ErrNotRunning)
	case <-ctx.Done():
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = s.Stop(sctx)
		return fmt.Errorf("load subscriptions: %w", ctx.Err())
	}
}

// Stop stops the watcher and waits for its goroutine to end. Writes after
// Stop fail with ErrNotRunning; List and Get keep the last state.
func (s *Store) Stop(ctx context.Context) error {
	s.mu.Lock()
	stop, done := s.stop, s.done
	s.mu.Unlock()
	if stop == nil {
		return nil
	}
	s.stopped.Do(func() { close(stop) })
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop subscriptions watcher: %w", ctx.Err())
	}
}

// List returns the merged subscriptions, config first, with their secrets
// (for routing; hub.Subscription never encodes its secret). The slice is
// the caller's; Events and Headers are shared and must not be modified.
func (s *Store) List() []hub.Subscription {
	return slices.Clone(s.current().subs)
}

// Views returns the merged subscriptions as the API shows them.
func (s *Store) Views() []Subscription {
	return slices.Clone(s.current().views)
}

// Get returns one subscription as the API shows it, or ErrNotFound.
func (s *Store) Get(id string) (Subscription, error) {
	snap := s.current()
	i, ok := snap.index[id]
	if !ok {
		return Subscription{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return snap.views[i], nil
}

func (s *Store) current() *snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap
}

// running returns ErrNotRunning unless the watcher is running: writes wait
// for it to see their change.
func (s *Store) running() error {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return ErrNotRunning
	}
	select {
	case <-done:
		return ErrNotRunning
	default:
		return nil
	}
}

// state is the watcher goroutine's own copy of the bucket.
type state struct {
	applied uint64 // the highest revision seen
	api     map[string]apiEntry
	ovr     map[string]ovrEntry
}

type apiEntry struct {
	rec record
	rev uint64
}

type ovrEntry struct {
	ov  override
	rev uint64
}

func newState() *state {
	return &state{api: map[string]apiEntry{}, ovr: map[string]ovrEntry{}}
}

// snapshot is an immutable merged state.
type snapshot struct {
	applied  uint64
	subs     []hub.Subscription // merged, config first; for routing
	views    []Subscription     // the same, as the API shows them
	index    map[string]int     // id → position in subs and views
	revs     map[string]uint64  // KV key → revision reflected
	apiCount int
}

// run is the watcher goroutine: it applies the initial values, publishes
// them and closes ready, then publishes after each batch of changes. It
// ends when Stop asks or the watcher closes (the connection closed), and
// cancels the watcher's context on the way out.
func (s *Store) run(w jetstream.KeyWatcher, cancel context.CancelFunc, ready chan struct{}) {
	defer close(s.done)
	defer cancel()
	st := newState()
	loading := true
	for {
		select {
		case <-s.stop:
			// Cancelling the watch context stops the watcher (nats.go does
			// it on its own goroutine). Calling Stop here could block on a
			// JetStream API call for seconds when a cluster has lost its
			// quorum during shutdown.
			cancel()
			// Wait for the subscription to close its channel, but not
			// forever.
			drain := time.NewTimer(2 * time.Second)
			defer drain.Stop()
			for {
				select {
				case _, ok := <-w.Updates():
					if ok {
						continue
					}
				case <-drain.C:
				}
				return
			}
		case e, ok := <-w.Updates():
			if !ok {
				s.log.Warn().Msg("subscriptions watcher closed; runtime subscription changes are no longer seen")
				return
			}
			if e != nil {
				s.apply(st, e)
			}
			if loading {
				if e == nil { // the initial values are all in
					loading = false
					s.publish(st)
					close(ready)
				}
				continue
			}
			open := s.applyQueued(st, w)
			s.publish(st)
			if !open {
				s.log.Warn().Msg("subscriptions watcher closed; runtime subscription changes are no longer seen")
				return
			}
		}
	}
}

// applyQueued applies the changes already waiting, so a burst is published
// once. It reports false when the watcher has closed.
func (s *Store) applyQueued(st *state, w jetstream.KeyWatcher) bool {
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return false
			}
			if e != nil {
				s.apply(st, e)
			}
		default:
			return true
		}
	}
}

// apply folds one KV entry into st.
func (s *Store) apply(st *state, e jetstream.KeyValueEntry) {
	st.applied = max(st.applied, e.Revision())
	key := e.Key()
	deleted := e.Operation() != jetstream.KeyValuePut
	switch {
	case strings.HasPrefix(key, subPrefix):
		id := strings.TrimPrefix(key, subPrefix)
		if deleted {
			delete(st.api, id)
			return
		}
		var r record
		if err := json.Unmarshal(e.Value(), &r); err != nil || r.ID != id {
			s.log.Warn().Str("key", key).Uint64("revision", e.Revision()).Msg("ignoring an unreadable subscription in the bucket")
			delete(st.api, id)
			return
		}
		if _, ok := s.configIdx[id]; ok {
			s.log.Warn().Str("subscription", id).Msg("a runtime subscription has the id of a config subscription; the config one is used")
		}
		st.api[id] = apiEntry{rec: r, rev: e.Revision()}
	case strings.HasPrefix(key, overridePrefix):
		id := strings.TrimPrefix(key, overridePrefix)
		if deleted {
			delete(st.ovr, id)
			return
		}
		var o override
		if err := json.Unmarshal(e.Value(), &o); err != nil {
			s.log.Warn().Str("key", key).Uint64("revision", e.Revision()).Msg("ignoring an unreadable override in the bucket")
			delete(st.ovr, id)
			return
		}
		st.ovr[id] = ovrEntry{ov: o, rev: e.Revision()}
	default:
		s.log.Debug().Str("key", key).Msg("ignoring an unknown key in the subscriptions bucket")
	}
}

// publish makes st the current state, calls OnChange, then wakes the
// writers waiting for their change.
func (s *Store) publish(st *state) {
	snap := s.build(st)
	s.mu.Lock()
	s.snap = snap
	s.mu.Unlock()
	if s.onChange != nil {
		s.onChange(slices.Clone(snap.subs))
	}
	s.mu.Lock()
	s.settled = snap
	close(s.wake)
	s.wake = make(chan struct{})
	s.mu.Unlock()
}

// build merges the config subscriptions (with their overrides) and the
// runtime ones (oldest first) into a snapshot.
func (s *Store) build(st *state) *snapshot {
	snap := &snapshot{
		applied: st.applied,
		index:   make(map[string]int, len(s.config)+len(st.api)),
		revs:    make(map[string]uint64, len(st.api)+len(st.ovr)),
	}
	add := func(sub hub.Subscription, v Subscription) {
		snap.index[sub.ID] = len(snap.subs)
		snap.subs = append(snap.subs, sub)
		v.Subscription = viewOf(sub)
		snap.views = append(snap.views, v)
	}
	for _, c := range s.config {
		var v Subscription
		if o, ok := st.ovr[c.ID]; ok {
			c.Disabled = true
			at := o.ov.DisabledAt
			v.DisabledReason, v.DisabledAt, v.UpdatedAt = o.ov.DisabledReason, &at, &at
		}
		add(c, v)
	}
	for id, o := range st.ovr {
		snap.revs[overrideKey(id)] = o.rev
	}
	api := make([]apiEntry, 0, len(st.api))
	for id, e := range st.api {
		snap.revs[subKey(id)] = e.rev
		if _, ok := s.configIdx[id]; !ok {
			api = append(api, e)
		}
	}
	slices.SortFunc(api, func(a, b apiEntry) int {
		if c := a.rec.CreatedAt.Compare(b.rec.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.rec.ID, b.rec.ID)
	})
	for _, e := range api {
		add(e.rec.subscription(), e.rec.meta())
	}
	snap.apiCount = len(st.api)
	return snap
}

// subscription is the record as the dispatcher sees it.
func (r *record) subscription() hub.Subscription {
	return hub.Subscription{
		ID: r.ID, Channel: r.Channel, Events: r.Events, Disabled: r.Disabled,
		URL: r.URL, Secret: config.Secret(r.Secret), Headers: r.Headers, RateLimit: r.RateLimit,
		Origin: OriginAPI,
	}
}

// meta is the runtime state the API shows next to the subscription.
func (r *record) meta() Subscription {
	created, updated := r.CreatedAt, r.UpdatedAt
	return Subscription{DisabledReason: r.DisabledReason, DisabledAt: r.DisabledAt, CreatedAt: &created, UpdatedAt: &updated}
}

// view returns the record as the API shows it.
func (r *record) view() Subscription {
	v := r.meta()
	v.Subscription = viewOf(r.subscription())
	return v
}

// viewOf drops the secret and redacts sensitive header values.
func viewOf(sub hub.Subscription) hub.Subscription {
	sub.Secret = ""
	if len(sub.Headers) > 0 {
		h := make(map[string]string, len(sub.Headers))
		for k, v := range sub.Headers {
			if sensitiveHeader(k) {
				v = Redacted
			}
			h[k] = v
		}
		sub.Headers = h
	}
	return sub
}

// Redacted replaces a sensitive header value in API answers.
const Redacted = "[redacted]"

// sensitiveHeader reports whether a header name suggests a credential
// (Authorization, Cookie, X-Api-Key, X-Auth-Token, ...), whose value the
// API never shows.
func sensitiveHeader(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"authorization", "cookie", "token", "secret", "key", "password", "passwd", "auth", "signature", "credential", "session"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// settle waits until this node's watcher has published a state for which
// cond holds and OnChange has returned. The write it follows is already
// durable, so a failure to wait is only logged.
func (s *Store) settle(ctx context.Context, id string, cond func(*snapshot) bool) {
	for {
		s.mu.Lock()
		snap, wake, done := s.settled, s.wake, s.done
		s.mu.Unlock()
		if cond(snap) {
			return
		}
		select {
		case <-wake:
		case <-done:
			s.log.Warn().Str("subscription", id).Msg("change stored, but the watcher stopped before applying it")
			return
		case <-ctx.Done():
			s.log.Warn().Str("subscription", id).Err(ctx.Err()).Msg("change stored, but not applied on this node yet")
			return
		}
	}
}

// seen is the settle condition for a put that returned rev.
func seen(rev uint64) func(*snapshot) bool {
	return func(sn *snapshot) bool { return sn.applied >= rev }
}

// gone is the settle condition for a delete of key at rev: the state has
// caught up with rev and no longer holds that revision.
func gone(key string, rev uint64) func(*snapshot) bool {
	return func(sn *snapshot) bool { return sn.applied >= rev && sn.revs[key] != rev }
}

// timestamp is now in UTC for the stored times, at full precision so
// runtime subscriptions list in the order they were created.
func (s *Store) timestamp() time.Time { return s.now().UTC() }
