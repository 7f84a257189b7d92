package webhook

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubproject/hub/hub"
)

// canary is a loopback server that counts every connection accepted on its
// listener, so a test can prove nothing reached it.
type canary struct {
	srv     *httptest.Server
	port    string
	accepts atomic.Int64
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func newCanary(t *testing.T, network, addr string) *canary {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	c := &canary{}
	c.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	c.srv.Listener = countingListener{Listener: ln, n: &c.accepts}
	c.srv.Start()
	t.Cleanup(c.srv.Close)
	_, c.port, _ = net.SplitHostPort(ln.Addr().String())
	return c
}

func TestSSRFGuardRefusesInternalTargets(t *testing.T) {
	v4 := newCanary(t, "tcp4", "127.0.0.1:0")
	v6 := newCanary(t, "tcp6", "[::1]:0")

	// Hosts aimed at a canary's port: loopback in every spelling. Other
	// internal addresses have no canary here; for them the proof that
	// nothing was dialled is that the refusal is the guard's own
	// RefusedError, raised in the dialer's Control hook before connect(2).
	targets := []struct {
		host string
		port string
	}{
		{"127.0.0.1", v4.port},
		{"127.1.2.3", v4.port},
		{"[::1]", v6.port},
		{"localhost", v4.port}, // a name that resolves to a refused address
		{"[::ffff:127.0.0.1]", v4.port},
		{"[64:ff9b::7f00:1]", v4.port},
		{"0.0.0.0", v4.port}, // connect(0.0.0.0) reaches the local host
		{"[::]", v6.port},
		{"10.0.0.1", "80"},
		{"172.16.0.1", "80"},
		{"192.168.1.1", "80"},
		{"169.254.169.254", "80"},
		{"100.64.0.1", "80"},
		{"224.0.0.1", "80"},
		{"[::ffff:10.0.0.1]", "80"},
		{"[::ffff:169.254.169.254]", "80"},
		{"[fc00::1]", "80"},
		{"[fe80::1]", "80"},
	}
	s := newSender(t, func(c *Config) { c.AllowCIDRs = nil })
	for _, tg := range targets {
		t.Run(tg.host, func(t *testing.T) {
			d := newDelivery(t, "http://"+tg.host+":"+tg.port+"/hooks")
			start := time.Now()
			err := s.Send(context.Background(), d)
			if !hub.IsPermanent(err) {
				t.Fatalf("Send = %v, want Permanent", err)
			}
			var re *RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("Send = %v, want the SSRF guard's RefusedError", err)
			}
			if !strings.Contains(err.Error(), "refused by the SSRF guard") {
				t.Errorf("message %q", err)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("refusal took %s: something was dialled", el)
			}
			if _, deferred := hub.DeferDelay(err); deferred {
				t.Error("a refusal was deferred")
			}
		})
	}
	if n := v4.accepts.Load() + v6.accepts.Load(); n != 0 {
		t.Fatalf("canaries accepted %d connections", n)
	}
	// Refusals do not count as endpoint failures: the breaker stays closed.
	d := newDelivery(t, "http://127.0.0.1:"+v4.port+"/")
	for i := 0; i < DefaultBreakerFailures+2; i++ {
		if _, deferred := hub.DeferDelay(s.Send(context.Background(), d)); deferred {
			t.Fatal("SSRF refusals opened the circuit breaker")
		}
	}
}

func TestSSRFGuardAllowPrivateNetworks(t *testing.T) {
	v4 := newCanary(t, "tcp4", "127.0.0.1:0")
	v6 := newCanary(t, "tcp6", "[::1]:0")
	s := newSender(t, func(c *Config) { c.AllowCIDRs = nil; c.AllowPrivateNetworks = true })
	for _, u := range []string{
		"http://127.0.0.1:" + v4.port, "http://localhost:" + v4.port,
		"http://[::ffff:127.0.0.1]:" + v4.port, "http://[::1]:" + v6.port,
	} {
		if err := s.Send(context.Background(), newDelivery(t, u)); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	if v4.accepts.Load() == 0 || v6.accepts.Load() == 0 {
		t.Fatalf("canaries not reached: v4 %d, v6 %d", v4.accepts.Load(), v6.accepts.Load())
	}
}

func TestSSRFGuardAllowCIDRsOpensLoopbackOnly(t *testing.T) {
	v4 := newCanary(t, "tcp4", "127.0.0.1:0")
	v6 := newCanary(t, "tcp6", "[::1]:0")
	s := newSender(t, func(c *Config) { c.AllowCIDRs = []string{"127.0.0.0/8"} })
	if err := s.Send(context.Background(), newDelivery(t, "http://127.0.0.1:"+v4.port)); err != nil {
		t.Fatalf("127.0.0.1 with allow_cidrs 127.0.0.0/8: %v", err)
	}
	if v4.accepts.Load() != 1 {
		t.Fatalf("IPv4 canary accepted %d connections, want 1", v4.accepts.Load())
	}
	for _, u := range []string{"http://[::1]:" + v6.port, "http://10.0.0.1:80", "http://169.254.169.254:80"} {
		var re *RefusedError
		if err := s.Send(context.Background(), newDelivery(t, u)); !errors.As(err, &re) || !hub.IsPermanent(err) {
			t.Errorf("%s: %v, want a permanent SSRF refusal", u, err)
		}
	}
	if n := v6.accepts.Load(); n != 0 {
		t.Fatalf("IPv6 canary accepted %d connections", n)
	}
	if err := s.CheckAddr(netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Errorf("CheckAddr(127.0.0.1): %v", err)
	}
	if err := s.CheckAddr(netip.MustParseAddr("::1")); err == nil {
		t.Error("CheckAddr(::1) allowed")
	}
}
