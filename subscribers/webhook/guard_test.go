package webhook

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
)

func TestGuardRefusesInternalAddresses(t *testing.T) {
	g, err := NewGuard(false, nil)
	if err != nil {
		t.Fatal(err)
	}
	refused := []struct{ addr, rng string }{
		{"127.0.0.1", "127.0.0.0/8"},
		{"127.255.255.254", "127.0.0.0/8"},
		{"::1", "::1/128"},
		{"10.0.0.1", "10.0.0.0/8"},
		{"172.16.0.1", "172.16.0.0/12"},
		{"172.31.255.255", "172.16.0.0/12"},
		{"192.168.1.1", "192.168.0.0/16"},
		{"169.254.169.254", "169.254.0.0/16"},
		{"100.64.0.1", "100.64.0.0/10"},
		{"0.0.0.0", "0.0.0.0/8"},
		{"224.0.0.1", "224.0.0.0/4"},
		{"239.255.255.250", "224.0.0.0/4"},
		{"255.255.255.255", "255.255.255.255/32"},
		{"240.0.0.1", "240.0.0.0/4"},
		{"192.0.0.8", "192.0.0.0/24"},
		{"198.18.0.1", "198.18.0.0/15"},
		{"198.19.255.1", "198.18.0.0/15"},
		{"::", "::/128"},
		{"fc00::1", "fc00::/7"},
		{"fd12:3456::1", "fc00::/7"},
		{"fe80::1", "fe80::/10"},
		{"fe80::1%eth0", "fe80::/10"},
		{"ff02::1", "ff00::/8"},
		{"::ffff:127.0.0.1", "127.0.0.0/8"},
		{"::ffff:10.0.0.1", "10.0.0.0/8"},
		{"::ffff:169.254.169.254", "169.254.0.0/16"},
		{"::ffff:0.0.0.0", "0.0.0.0/8"},
		{"64:ff9b::7f00:1", "127.0.0.0/8"},
		{"64:ff9b::a9fe:a9fe", "169.254.0.0/16"},
		{"64:ff9b::c0a8:101", "192.168.0.0/16"},
		{"::ffff:0:7f00:1", "127.0.0.0/8"},
		{"2002:7f00:1::1", "127.0.0.0/8"},
		{"::7f00:1", "::/96"},
		{"64:ff9b:1::1", "64:ff9b:1::/48"},
	}
	for _, c := range refused {
		err := g.Check(netip.MustParseAddr(c.addr))
		var re *RefusedError
		if !errors.As(err, &re) {
			t.Errorf("%s: not refused (err %v)", c.addr, err)
			continue
		}
		if re.Range.String() != c.rng {
			t.Errorf("%s: refused for %s, want range %s", c.addr, re.Range, c.rng)
		}
		if msg := err.Error(); !strings.Contains(msg, "SSRF guard") || !strings.Contains(msg, c.rng) {
			t.Errorf("%s: message %q should name the SSRF guard and %s", c.addr, msg, c.rng)
		}
	}

	allowed := []string{
		"8.8.8.8", "1.1.1.1", "93.184.215.14", "172.32.0.1", "100.128.0.1", "192.169.0.1",
		"2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
		"::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
	}
	for _, a := range allowed {
		if err := g.Check(netip.MustParseAddr(a)); err != nil {
			t.Errorf("%s refused: %v", a, err)
		}
	}
	if err := g.Check(netip.Addr{}); err == nil {
		t.Error("the zero Addr was allowed")
	}
}

func TestGuardAllowCIDRsOpensOnlyThoseRanges(t *testing.T) {
	g, err := NewGuard(false, []string{"127.0.0.0/8", "fd00:1::/64"})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"127.0.0.1", "::ffff:127.0.0.1", "fd00:1::5"} {
		if err := g.Check(netip.MustParseAddr(a)); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
	for _, a := range []string{"::1", "10.0.0.1", "169.254.169.254", "fd00:2::5"} {
		if err := g.Check(netip.MustParseAddr(a)); err == nil {
			t.Errorf("%s allowed", a)
		}
	}

	all, err := NewGuard(true, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"127.0.0.1", "::1", "169.254.169.254", "10.0.0.1"} {
		if err := all.Check(netip.MustParseAddr(a)); err != nil {
			t.Errorf("allow_private_networks: %s refused: %v", a, err)
		}
	}
	if _, err := NewGuard(false, []string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad CIDR was accepted")
	}
}

func TestGuardControlFailsClosed(t *testing.T) {
	g, _ := NewGuard(false, nil)
	if err := g.control("tcp", "not-an-address", nil); err == nil {
		t.Fatal("an unparsable dial address was allowed")
	}
	if err := g.control("tcp4", "93.184.215.14:443", nil); err != nil {
		t.Fatalf("public address refused: %v", err)
	}
	if err := g.control("tcp6", "[::1]:443", nil); err == nil {
		t.Fatal("::1 allowed")
	}
}

func TestCheckURL(t *testing.T) {
	ok := []string{
		"https://crm.example.com/hooks",
		"http://example.com",
		"HTTPS://Example.COM:8443/a?b=c",
		"https://[2001:db8::1]:443/x",
		"http://127.0.0.1:8080/", // syntactically fine: the guard decides when sending
	}
	for _, u := range ok {
		if err := CheckURL(u); err != nil {
			t.Errorf("CheckURL(%q): %v", u, err)
		}
	}
	bad := map[string]string{
		"":                            "empty",
		"ftp://example.com/x":         "scheme must be http or https",
		"file:///etc/passwd":          "scheme",
		"gopher://example.com":        "scheme",
		"/relative/path":              "scheme",
		"example.com/hooks":           "scheme",
		"https:opaque":                "absolute",
		"https://":                    "absolute",
		"https://:443/x":              "absolute",
		"https://user:pw@example.com": "user information",
		"https://example.com:0/":      "port",
		"https://example.com:70000/":  "port",
		"http://exa mple.com/":        "invalid",
	}
	for u, want := range bad {
		err := CheckURL(u)
		if err == nil || !errors.Is(err, ErrBadURL) || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckURL(%q) = %v, want ErrBadURL mentioning %q", u, err, want)
		}
	}
	// The error must not repeat a URL's credentials.
	if err := CheckURL("https://user:hunter2@example.com"); err != nil && strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error leaks the password: %v", err)
	}
}

func TestEndpointKey(t *testing.T) {
	cases := map[string]string{
		"https://Example.com/a":      "https://example.com:443",
		"http://example.com/b?c":     "http://example.com:80",
		"https://example.com:8443/":  "https://example.com:8443",
		"http://[2001:db8::1]:81/":   "http://[2001:db8::1]:81",
		"https://example.com:443/zz": "https://example.com:443",
	}
	for raw, want := range cases {
		u, err := parseEndpoint(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := endpointKey(u); got != want {
			t.Errorf("endpointKey(%q) = %q, want %q", raw, got, want)
		}
	}
}

func TestConfigFromYAML(t *testing.T) {
	cfg := DefaultConfig()
	yaml := `
timeout: 5s
allow_private_networks: false
allow_cidrs: [10.1.0.0/16, "fd00::/8"]
max_idle_conns_per_host: 16
max_response_bytes: 1024
breaker: { enabled: true, failures: 3, open_for: 1m }
`
	if err := config.Decode([]byte(yaml), &cfg); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if cfg.Timeout.D() != 5*time.Second || cfg.MaxIdleConnsPerHost != 16 || cfg.MaxResponseBytes != 1024 ||
		cfg.Breaker.Failures != 3 || cfg.Breaker.OpenFor.D() != time.Minute || len(cfg.AllowCIDRs) != 2 {
		t.Fatalf("decoded %+v", cfg)
	}

	// Absent keys keep the defaults.
	def := DefaultConfig()
	if err := config.Decode([]byte("timeout: 2s\n"), &def); err != nil {
		t.Fatal(err)
	}
	if !def.Breaker.Enabled || def.Breaker.Failures != DefaultBreakerFailures || def.MaxResponseBytes != DefaultMaxResponseBytes {
		t.Fatalf("defaults lost: %+v", def)
	}

	bad := DefaultConfig()
	err := config.Decode([]byte("timeout: 0s\nallow_cidrs: [10.0.0.0/8, 10.0.0.0/33]\nbreaker: {failures: 0}\nmax_response_bytes: -1\n"), &bad)
	var errs config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want config.Errors, got %v", err)
	}
	for _, path := range []string{"timeout", "allow_cidrs[1]", "breaker.failures", "max_response_bytes"} {
		found := false
		for _, e := range errs {
			found = found || e.Path == path
		}
		if !found {
			t.Errorf("no error for %s in:\n%v", path, err)
		}
	}

	unknown := DefaultConfig()
	if err := config.Decode([]byte("allow_private_network: true\n"), &unknown); err == nil || !strings.Contains(err.Error(), "allow_private_networks") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestNewRefusesInvalidConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AllowCIDRs = []string{"not-a-cidr"}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "allow_cidrs[0]") {
		t.Fatalf("New with a bad CIDR: %v", err)
	}
	cfg = DefaultConfig()
	cfg.Timeout = 0
	if _, err := New(cfg); err == nil {
		t.Fatal("New with a zero timeout succeeded")
	}
}

func TestCheckSubscription(t *testing.T) {
	good := &hub.Subscription{ID: "crm", Channel: "webhook", Events: []string{"order.>"},
		URL: "https://crm.example.com/hooks", Secret: testSecret, Headers: map[string]string{"X-Tenant": "acme"}}
	if err := CheckSubscription(good); err != nil {
		t.Fatalf("good subscription: %v", err)
	}
	bad := &hub.Subscription{ID: "crm", URL: "ftp://x", Secret: "whsec_%%",
		Headers: map[string]string{"webhook-signature": "x", "Bad Name": "v", "X-Ok": "line\r\nInjected: 1"}}
	err := CheckSubscription(bad)
	var errs config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want config.Errors, got %v", err)
	}
	want := map[string]bool{"url": false, "secret": false, "headers.webhook-signature": false, "headers.Bad Name": false, "headers.X-Ok": false}
	for _, e := range errs {
		if _, ok := want[e.Path]; ok {
			want[e.Path] = true
		}
	}
	for p, seen := range want {
		if !seen {
			t.Errorf("no error for %s in:\n%v", p, err)
		}
	}
	missing := &hub.Subscription{ID: "crm", URL: "https://x.example"}
	if err := CheckSubscription(missing); err == nil || !strings.Contains(err.Error(), "secret") {
		t.Errorf("missing secret: %v", err)
	}
}
