package embedded_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"

	"github.com/hubproject/hub/embedded"
	"github.com/hubproject/hub/embedded/embeddedtest"
	"github.com/hubproject/hub/publisher"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// client is a TCP connection that records the server's asynchronous
// errors (permission violations).
type client struct {
	*nats.Conn
	mu   sync.Mutex
	errs []string
	errc chan struct{} // signalled on every error
}

func connect(t *testing.T, s *embedded.Server, opts ...nats.Option) (*client, error) {
	t.Helper()
	c := &client{errc: make(chan struct{}, 64)}
	opts = append([]nats.Option{
		nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err.Error())
			c.mu.Unlock()
			select {
			case c.errc <- struct{}{}:
			default:
			}
		}),
	}, opts...)
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	c.Conn = nc
	return c, nil
}

func mustConnect(t *testing.T, s *embedded.Server, opts ...nats.Option) *client {
	t.Helper()
	c, err := connect(t, s, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitErr waits until the server has told c of an error containing all of
// parts.
func (c *client) waitErr(t *testing.T, parts ...string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		for _, e := range c.errs {
			if containsAll(e, parts) {
				c.mu.Unlock()
				return
			}
		}
		got := append([]string(nil), c.errs...)
		c.mu.Unlock()
		select {
		case <-c.errc:
		case <-deadline:
			t.Fatalf("no error with %q; got %q", parts, got)
		}
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(strings.ToLower(s), strings.ToLower(p)) {
			return false
		}
	}
	return true
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func withUsers(users ...embedded.User) func(*embedded.Options) {
	return func(o *embedded.Options) { o.Users = users }
}

// eventsStream creates a stream on events.> over the hub's in-process
// connection and returns it.
func eventsStream(t *testing.T, s *embedded.Server) jetstream.Stream {
	t.Helper()
	js, err := jetstream.New(embeddedtest.Connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.CreateStream(ctxT(t, 10*time.Second), jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func msgCount(t *testing.T, st jetstream.Stream) uint64 {
	t.Helper()
	info, err := st.Info(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestAnonymousAndWrongPasswordRefused(t *testing.T) {
	s := embeddedtest.Start(t, withUsers(embedded.User{Name: "shop", Password: "shop-password-1", Role: embedded.RolePublisher}))
	for name, opts := range map[string][]nats.Option{
		"anonymous":      nil,
		"wrong password": {nats.UserInfo("shop", "guess")},
		"unknown user":   {nats.UserInfo("nobody", "shop-password-1")},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := connect(t, s, opts...)
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("connect: %v, want an authorization violation", err)
			}
		})
	}
	// The hub's own in-process connection needs no configured user.
	nc := embeddedtest.Connect(t, s)
	if _, err := nc.Request("$JS.API.INFO", nil, 5*time.Second); err != nil {
		t.Fatalf("in-process connection is limited: %v", err)
	}
}

func TestPublisherPermissions(t *testing.T) {
	s := embeddedtest.Start(t, withUsers(
		embedded.User{Name: "shop", Password: "shop-password-1", Role: embedded.RolePublisher, PublishPrefix: "events.shop"},
		embedded.User{Name: "bob", Password: "bob-password-12", Role: embedded.RolePublisher},
	))
	st := eventsStream(t, s)
	shop := mustConnect(t, s, nats.UserInfo("shop", "shop-password-1"), nats.CustomInboxPrefix(embedded.InboxPrefix("shop")))
	ctx := ctxT(t, 20*time.Second)

	// Publishing inside its prefix is stored and acknowledged on its inbox.
	p, err := publisher.New(shop.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Publish(ctx, publisher.Event{Type: "shop.order.created", ID: "ok-1"}); err != nil {
		t.Fatalf("publish inside the prefix: %v", err)
	}
	if n := msgCount(t, st); n != 1 {
		t.Fatalf("stored %d, want 1", n)
	}
	// Asking a gather route is allowed (nobody answers here).
	if _, err := shop.Request("hub.gather.dashboard", []byte("{}"), 2*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("gather request: %v, want no responders", err)
	}

	t.Run("publish outside the prefix", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		if _, err := p.Publish(short, publisher.Event{Type: "billing.paid", ID: "no-1"}); err == nil {
			t.Fatal("publish outside the prefix acknowledged")
		}
		shop.waitErr(t, "permissions violation for publish", "events.billing.paid")
		if n := msgCount(t, st); n != 1 {
			t.Fatalf("stored %d, want 1", n)
		}
	})

	t.Run("JetStream API", func(t *testing.T) {
		js, err := jetstream.New(shop.Conn)
		if err != nil {
			t.Fatal(err)
		}
		short := func() context.Context { return ctxT(t, 500*time.Millisecond) }
		if err := js.DeleteStream(short(), "EVENTS"); err == nil {
			t.Error("stream deleted")
		}
		shop.waitErr(t, "permissions violation for publish", "$JS.API.STREAM.DELETE.EVENTS")
		for _, subj := range []string{"$JS.API.STREAM.PURGE.EVENTS", "$JS.API.STREAM.INFO.EVENTS", "$JS.API.STREAM.CREATE.MINE",
			"$JS.API.CONSUMER.CREATE.EVENTS", "$JS.API.STREAM.MSG.GET.EVENTS", "$JS.API.INFO"} {
			if _, err := shop.Request(subj, []byte("{}"), 300*time.Millisecond); err == nil {
				t.Errorf("%s answered", subj)
			}
			shop.waitErr(t, "permissions violation for publish", subj)
		}
		if n := msgCount(t, st); n != 1 {
			t.Fatalf("stream changed: %d messages, want 1", n)
		}
	})

	t.Run("subscriptions", func(t *testing.T) {
		for _, subj := range []string{"_INBOX_bob.>", "_INBOX.>", "events.>", ">"} {
			sub, err := shop.SubscribeSync(subj)
			if err != nil {
				t.Fatal(err)
			}
			shop.waitErr(t, "permissions violation for subscription", subj)
			_ = sub.Unsubscribe()
		}
		// And bob's acknowledgements never reach shop.
		spy, err := shop.SubscribeSync("_INBOX_bob.*")
		if err != nil {
			t.Fatal(err)
		}
		shop.waitErr(t, "permissions violation for subscription", "_INBOX_bob.*")
		bob := mustConnect(t, s, nats.UserInfo("bob", "bob-password-12"), nats.CustomInboxPrefix(embedded.InboxPrefix("bob")))
		bp, err := publisher.New(bob.Conn)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bp.Publish(ctx, publisher.Event{Type: "any.thing", ID: "bob-1"}); err != nil {
			t.Fatalf("bob publish: %v", err)
		}
		if err := shop.Flush(); err != nil {
			t.Fatal(err)
		}
		if n, _, _ := spy.Pending(); n != 0 {
			t.Fatalf("shop received %d of bob's messages", n)
		}
	})

	t.Run("default inbox is refused", func(t *testing.T) {
		plain := mustConnect(t, s, nats.UserInfo("bob", "bob-password-12"))
		pp, err := publisher.New(plain.Conn)
		if err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		if _, err := pp.Publish(short, publisher.Event{Type: "x", ID: "plain-1"}); err == nil {
			t.Fatal("ack delivered to _INBOX.>")
		}
		plain.waitErr(t, "permissions violation for subscription", "_INBOX.")
	})
}

func TestResponderRepliesOnce(t *testing.T) {
	s := embeddedtest.Start(t, withUsers(
		embedded.User{Name: "users-svc", Password: "users-password", Role: embedded.RoleResponder, Subjects: []string{"svc.user.>"}},
	))
	rsp := mustConnect(t, s, nats.UserInfo("users-svc", "users-password"))
	replied := make(chan struct{})
	if _, err := rsp.Subscribe("svc.user.get", func(m *nats.Msg) {
		_ = m.Respond([]byte("first"))
		_ = m.Respond([]byte("second"))
		close(replied)
	}); err != nil {
		t.Fatal(err)
	}
	if err := rsp.Flush(); err != nil {
		t.Fatal(err)
	}
	hubConn := embeddedtest.Connect(t, s)
	inbox := hubConn.NewInbox()
	replies, err := hubConn.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := hubConn.PublishRequest("svc.user.get", inbox, []byte(`{"user_id":1}`)); err != nil {
		t.Fatal(err)
	}
	m, err := replies.NextMsg(5 * time.Second)
	if err != nil || string(m.Data) != "first" {
		t.Fatalf("first reply: %v %v", m, err)
	}
	<-replied
	rsp.waitErr(t, "permissions violation for publish", inbox)
	if err := hubConn.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := replies.Pending(); n != 0 {
		t.Fatalf("%d more replies arrived", n)
	}

	for _, subj := range []string{"events.user.created", "_INBOX.made.up", "svc.user.get", "hub.gather.dashboard"} {
		if err := rsp.Publish(subj, nil); err != nil {
			t.Fatal(err)
		}
		rsp.waitErr(t, "permissions violation for publish", subj)
	}
	if _, err := rsp.SubscribeSync("svc.orders.list"); err != nil {
		t.Fatal(err)
	}
	rsp.waitErr(t, "permissions violation for subscription", "svc.orders.list")
}

func TestNkeyAndBcryptUsers(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("ops-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	s := embeddedtest.Start(t, withUsers(
		embedded.User{Name: "ops", Nkey: pub, Role: embedded.RoleAdmin},
		embedded.User{Name: "ops2", PasswordBcrypt: string(hash), Role: embedded.RoleAdmin},
	))
	admin := mustConnect(t, s, nats.Nkey(pub, kp.Sign))
	js, err := jetstream.New(admin.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctxT(t, 10*time.Second), jetstream.StreamConfig{Name: "ADMIN", Subjects: []string{"admin.>"}}); err != nil {
		t.Fatalf("admin cannot use JetStream: %v", err)
	}
	if _, err := connect(t, s, nats.UserInfo("ops2", "ops-password")); err != nil {
		t.Fatalf("bcrypt user: %v", err)
	}
	if _, err := connect(t, s, nats.UserInfo("ops2", string(hash))); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("the hash itself was accepted as the password: %v", err)
	}
	other, _ := nkeys.CreateUser()
	if _, err := connect(t, s, nats.Nkey(pub, other.Sign)); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("nonce signed by another key: %v", err)
	}
}

func TestTLS(t *testing.T) {
	certs := embeddedtest.NewCerts(t)
	t.Run("server certificate", func(t *testing.T) {
		s := embeddedtest.Start(t, func(o *embedded.Options) { o.TLS = certs.ServerTLS(false) })
		if !strings.HasPrefix(s.ClientURL(), "tls://") {
			t.Fatalf("client URL %s", s.ClientURL())
		}
		if _, err := connect(t, s, nats.Secure(&tls.Config{RootCAs: certs.Pool, MinVersion: tls.VersionTLS12})); err != nil {
			t.Fatalf("with the CA: %v", err)
		}
		if _, err := connect(t, s, nats.Secure(&tls.Config{RootCAs: certs.OtherPool, MinVersion: tls.VersionTLS12})); err == nil ||
			!strings.Contains(err.Error(), "certificate") {
			t.Fatalf("without the CA: %v, want a certificate error", err)
		}
		if _, err := connect(t, s, nats.Secure(&tls.Config{RootCAs: certs.Pool, MaxVersion: tls.VersionTLS11})); err == nil {
			t.Fatal("TLS 1.1 accepted")
		}
		// The hub's in-process connection is not TLS and still works.
		if _, err := embeddedtest.Connect(t, s).Request("$JS.API.INFO", nil, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("client certificates", func(t *testing.T) {
		s := embeddedtest.Start(t, func(o *embedded.Options) {
			o.TLS = certs.ServerTLS(true)
			o.Users = []embedded.User{{Name: "shop", Password: "shop-password-1", Role: embedded.RolePublisher}}
		})
		creds := nats.UserInfo("shop", "shop-password-1")
		if _, err := connect(t, s, creds, nats.RootCAs(certs.CAFile)); err == nil {
			t.Fatal("connected without a client certificate")
		}
		if _, err := connect(t, s, creds, nats.RootCAs(certs.CAFile), nats.ClientCert(certs.OtherClientCert, certs.OtherKey)); err == nil {
			t.Fatal("connected with a certificate from another CA")
		}
		if _, err := connect(t, s, creds, nats.RootCAs(certs.CAFile), nats.ClientCert(certs.ClientCert, certs.ClientKey)); err != nil {
			t.Fatalf("with a client certificate: %v", err)
		}
		if _, err := connect(t, s, nats.RootCAs(certs.CAFile), nats.ClientCert(certs.ClientCert, certs.ClientKey)); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("a certificate without a password: %v, want an authorization violation", err)
		}
		if _, err := embeddedtest.Connect(t, s).Request("$JS.API.INFO", nil, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

func TestMonitoringStaysOff(t *testing.T) {
	s := embeddedtest.Start(t)
	if a := s.NATSServer().MonitorAddr(); a != nil {
		t.Fatalf("monitoring listens on %s", a)
	}
	_, err := embedded.Start(ctxT(t, 10*time.Second), embedded.Options{Listen: "127.0.0.1:0", StoreDir: t.TempDir(),
		Configure: func(o *server.Options) error { o.HTTPPort = -1; return nil }})
	if err == nil || !strings.Contains(err.Error(), "monitoring") {
		t.Fatalf("monitoring port allowed: %v", err)
	}
}

func TestUserCheck(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	acct, _ := nkeys.CreateAccount()
	apub, _ := acct.PublicKey()
	cases := []struct {
		u    embedded.User
		want string // "" = valid
	}{
		{embedded.User{Name: "shop", Password: "p", Role: embedded.RolePublisher}, ""},
		{embedded.User{Name: "shop", Password: "p", Role: embedded.RolePublisher, PublishPrefix: "events.shop"}, ""},
		{embedded.User{Name: "svc", Nkey: pub, Role: embedded.RoleResponder, Subjects: []string{"svc.*.get", "svc.a.>"}}, ""},
		{embedded.User{Name: "_hub", Password: "p", Role: embedded.RoleAdmin}, "name"},
		{embedded.User{Name: "-a", Password: "p", Role: embedded.RoleAdmin}, "name"},
		{embedded.User{Name: "a.b", Password: "p", Role: embedded.RoleAdmin}, "name"},
		{embedded.User{Name: "a", Role: embedded.RoleAdmin}, "required"},
		{embedded.User{Name: "a", Password: "p", Nkey: pub, Role: embedded.RoleAdmin}, "not several"},
		{embedded.User{Name: "a", Password: strings.Repeat("x", 73), Role: embedded.RoleAdmin}, "72 bytes"},
		{embedded.User{Name: "a", PasswordBcrypt: "$2a$10$short", Role: embedded.RoleAdmin}, "bcrypt"},
		{embedded.User{Name: "a", Nkey: apub, Role: embedded.RoleAdmin}, "public user key"},
		{embedded.User{Name: "a", Password: "p", Role: "root"}, "role"},
		{embedded.User{Name: "a", Password: "p", Role: embedded.RolePublisher, PublishPrefix: "orders"}, "publish prefix"},
		{embedded.User{Name: "a", Password: "p", Role: embedded.RolePublisher, PublishPrefix: "events.*"}, "publish prefix"},
		{embedded.User{Name: "a", Password: "p", Role: embedded.RolePublisher, PublishPrefix: "events.shop.>"}, "publish prefix"},
		{embedded.User{Name: "a", Password: "p", Role: embedded.RoleResponder, Subjects: []string{"svc..x"}}, "subject"},
		{embedded.User{Name: "a", Password: "p", Role: embedded.RoleResponder, Subjects: []string{"svc.>.x"}}, "subject"},
	}
	for _, c := range cases {
		err := c.u.Check()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c.u.Name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s/%s: %v, want %q", c.u.Name, c.u.Role, err, c.want)
		}
	}
}
