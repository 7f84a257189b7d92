package subs_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/subs"
	"github.com/hubproject/hub/subscribers/webhook"
)

// TestStartCallsOnChange: Start returns after the first OnChange, which
// holds the config subscriptions, marked as such, in file order.
func TestStartCallsOnChange(t *testing.T) {
	n := newNode(t, newServer(t))
	select {
	case l := <-n.changes:
		if len(l) != 3 || l[0].ID != "crm" || l[1].ID != "mail" || l[2].ID != "off" {
			t.Fatalf("initial list %+v", l)
		}
		for _, s := range l {
			if s.Origin != subs.OriginConfig {
				t.Fatalf("%s: origin %q", s.ID, s.Origin)
			}
		}
		if !l[0].Secret.IsSet() {
			t.Fatal("the routing list must carry the secrets")
		}
	default:
		t.Fatal("Start returned before the first OnChange")
	}
}

// TestOtherNodeSeesChanges: changes made through one Store reach another
// Store on the same bucket (another hub node) through its OnChange.
func TestOtherNodeSeesChanges(t *testing.T) {
	srv := newServer(t)
	a, b := newNode(t, srv), newNode(t, srv)
	ctx := ctxT(t)

	created, secret, err := a.store.Create(ctx, hub.Subscription{Events: []string{"order.created"}, URL: "https://a.example.com/h"})
	if err != nil {
		t.Fatal(err)
	}
	got := b.waitList(t, "create seen by b", func(l []hub.Subscription) bool { _, ok := find(l, created.ID); return ok })
	s, _ := find(got, created.ID)
	if s.Origin != subs.OriginAPI || s.Secret.Value() != secret || s.URL != "https://a.example.com/h" {
		t.Fatalf("b sees %+v", s)
	}

	url := "https://b.example.com/h"
	if _, err := b.store.Update(ctx, created.ID, subs.Patch{URL: &url}); err != nil {
		t.Fatal(err)
	}
	a.waitList(t, "update seen by a", func(l []hub.Subscription) bool { s, _ := find(l, created.ID); return s.URL == url })

	if err := b.store.SetDisabled(ctx, "crm", true, "HTTP 410 Gone"); err != nil {
		t.Fatal(err)
	}
	a.waitList(t, "config disable seen by a", func(l []hub.Subscription) bool { s, _ := find(l, "crm"); return s.Disabled })
	if v, _ := a.store.Get("crm"); v.DisabledReason != "HTTP 410 Gone" || v.DisabledAt == nil {
		t.Fatalf("a's view of crm: %+v", v)
	}

	if err := a.store.Delete(ctx, created.ID); err != nil {
		t.Fatal(err)
	}
	b.waitList(t, "delete seen by b", func(l []hub.Subscription) bool { _, ok := find(l, created.ID); return !ok })
}

// TestLocalWriteSettles: when a write returns, this node's OnChange has
// already seen it (a publish right after a create reaches the new
// subscription).
func TestLocalWriteSettles(t *testing.T) {
	n := newNode(t, newServer(t))
	<-n.changes // initial
	created, _, err := n.store.Create(ctxT(t), hub.Subscription{ID: "now", Events: []string{"a.b"}, URL: "https://x.example.com/"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case l := <-n.changes:
			if _, ok := find(l, created.ID); ok {
				return
			}
		default:
			t.Fatal("Create returned before OnChange saw the subscription")
		}
	}
}

// TestSetDisabledSurvivesRestart: the disabled state of both kinds is in
// the bucket, so a new Store (a restarted node) starts with it.
func TestSetDisabledSurvivesRestart(t *testing.T) {
	srv := newServer(t)
	ctx := ctxT(t)
	first := newNode(t, srv)
	created, _, err := first.store.Create(ctx, hub.Subscription{ID: "gone", Events: []string{"a.>"}, URL: "https://gone.example.com/"})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{created.ID, "crm"} {
		if err := first.store.SetDisabled(ctx, id, true, "webhook https://gone.example.com: HTTP 410 Gone"); err != nil {
			t.Fatal(err)
		}
		// Again: no change, and the first reason stays.
		if err := first.store.SetDisabled(ctx, id, true, "second"); err != nil {
			t.Fatal(err)
		}
	}
	if err := first.store.SetDisabled(ctx, "nope", true, "x"); !errors.Is(err, subs.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	if err := first.store.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.store.SetDisabled(ctx, "crm", false, ""); !errors.Is(err, subs.ErrNotRunning) {
		t.Fatalf("write after Stop: %v", err)
	}

	second := newNode(t, srv)
	l := <-second.changes
	for _, id := range []string{created.ID, "crm"} {
		s, ok := find(l, id)
		if !ok || !s.Disabled {
			t.Fatalf("after restart %s: %+v (found %v)", id, s, ok)
		}
		v, err := second.store.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if v.DisabledReason != "webhook https://gone.example.com: HTTP 410 Gone" || v.DisabledAt == nil || v.UpdatedAt == nil {
			t.Fatalf("after restart the view of %s: %+v", id, v)
		}
	}
	if s, _ := find(l, "mail"); s.Disabled {
		t.Fatal("mail was not disabled")
	}

	// Re-enable both; the config one goes back to its file state.
	for _, id := range []string{created.ID, "crm"} {
		if err := second.store.SetDisabled(ctx, id, false, ""); err != nil {
			t.Fatal(err)
		}
		v, _ := second.store.Get(id)
		if v.Disabled || v.DisabledReason != "" || v.DisabledAt != nil {
			t.Fatalf("re-enabled %s: %+v", id, v)
		}
	}
	if err := second.store.SetDisabled(ctx, "off", false, ""); !errors.Is(err, subs.ErrDisabledInConfig) {
		t.Fatalf("enabling a subscription disabled in the file: %v", err)
	}
}

// TestConcurrentUpdatesLoseNothing: two nodes patching different fields of
// one subscription at once both succeed, and the result has every change
// (the writes are revision-checked and retried).
func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	srv := newServer(t)
	a, b := newNode(t, srv), newNode(t, srv)
	ctx := ctxT(t)
	if _, _, err := a.store.Create(ctx, hub.Subscription{ID: "race", Events: []string{"a.b"}, URL: "https://x.example.com/"}); err != nil {
		t.Fatal(err)
	}
	b.waitList(t, "b sees race", func(l []hub.Subscription) bool { _, ok := find(l, "race"); return ok })

	url, rate, events, headers, on := "https://y.example.com/", 7.5, []string{"c.*"}, map[string]string{"X-Tenant": "acme"}, true
	patches := []struct {
		store *subs.Store
		p     subs.Patch
	}{
		{a.store, subs.Patch{URL: &url}},
		{b.store, subs.Patch{RateLimit: &rate}},
		{a.store, subs.Patch{Events: events}},
		{b.store, subs.Patch{Headers: &headers}},
		{a.store, subs.Patch{Disabled: &on}},
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(patches))
	start := make(chan struct{})
	for _, p := range patches {
		wg.Go(func() {
			<-start
			if _, err := p.store.Update(ctx, "race", p.p); err != nil {
				errs <- err
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent update: %v", err)
	}
	want := func(l []hub.Subscription) bool {
		s, _ := find(l, "race")
		return s.URL == url && s.RateLimit == rate && len(s.Events) == 1 && s.Events[0] == "c.*" &&
			s.Headers["X-Tenant"] == "acme" && s.Disabled
	}
	for _, n := range []*node{a, b} {
		n.waitList(t, "every concurrent change", want)
	}
}

// TestMaxSubscriptions: past the cap a create is refused until one is
// deleted; config subscriptions do not count.
func TestMaxSubscriptions(t *testing.T) {
	n := newNode(t, newServer(t), subs.WithMaxSubscriptions(2))
	ctx := ctxT(t)
	for _, id := range []string{"one", "two"} {
		if _, _, err := n.store.Create(ctx, hub.Subscription{ID: id, Events: []string{"a"}, URL: "https://x.example.com/"}); err != nil {
			t.Fatal(err)
		}
	}
	r := n.do(t, "POST", "/v1/subscriptions", `{"events":["a"],"url":"https://x.example.com/"}`).want(t, 409)
	if d := str(r.body, "detail"); !strings.Contains(d, "most it allows (2)") {
		t.Fatalf("detail %q", d)
	}
	if err := n.store.Delete(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.store.Create(ctx, hub.Subscription{ID: "three", Events: []string{"a"}, URL: "https://x.example.com/"}); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
}

// TestGoAPI: Create's own rules as a Go caller meets them.
func TestGoAPI(t *testing.T) {
	n := newNode(t, newServer(t))
	ctx := ctxT(t)
	own := webhook.GenerateSecret()
	v, secret, err := n.store.Create(ctx, hub.Subscription{ID: "mine", Events: []string{"a"}, URL: "https://x.example.com/", Secret: config.Secret(own), Disabled: true})
	if err != nil {
		t.Fatal(err)
	}
	if secret != "" {
		t.Fatal("a secret the caller chose must not be returned")
	}
	if !v.Disabled || v.DisabledReason == "" || v.Origin != subs.OriginAPI || v.CreatedAt == nil || v.Secret != "" {
		t.Fatalf("created %+v", v)
	}
	if got, _ := find(n.store.List(), "mine"); got.Secret.Value() != own {
		t.Fatal("List must carry the chosen secret")
	}
	_, _, err = n.store.Create(ctx, hub.Subscription{Channel: "email", Events: []string{"a"}, To: "x@example.com"})
	var ve *subs.ValidationError
	if !errors.As(err, &ve) || len(ve.Errors) < 3 {
		t.Fatalf("email subscription: %v", err)
	}
	if _, _, err := n.store.Create(ctx, hub.Subscription{ID: "mine", Events: []string{"a"}, URL: "https://x.example.com/"}); !errors.Is(err, subs.ErrExists) {
		t.Fatalf("duplicate id: %v", err)
	}
	if _, err := n.store.Update(ctx, "nope", subs.Patch{Events: []string{"a"}}); !errors.Is(err, subs.ErrNotFound) {
		t.Fatalf("update unknown: %v", err)
	}
	if err := n.store.Delete(ctx, "nope"); !errors.Is(err, subs.ErrNotFound) {
		t.Fatalf("delete unknown: %v", err)
	}
}

// TestNotStarted: writes need the watcher; Stop without Start is fine.
func TestNotStarted(t *testing.T) {
	ctx := ctxT(t)
	s, err := subs.New(ctx, jsFor(t, newServer(t)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Create(ctx, hub.Subscription{Events: []string{"a"}, URL: "https://x.example.com/"}); !errors.Is(err, subs.ErrNotRunning) {
		t.Fatalf("create before Start: %v", err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if len(s.List()) != 0 {
		t.Fatal("an unstarted store with no config lists nothing")
	}
}
