package webhook

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
)

// Guard is the SSRF guard: it decides which IP addresses the webhook
// channel may connect to. The Sender runs it in its dialer's Control hook,
// that is on the address actually being connected to after DNS resolution,
// so neither a hostname resolving to an internal address nor DNS rebinding
// gets past it, and redirects are never followed.
//
// Refused unless allowed: loopback, RFC 1918 and IPv6 unique-local private
// ranges, link-local (including the 169.254.169.254 cloud metadata
// address), CGNAT, "this network", multicast, broadcast, reserved,
// benchmarking and documentation ranges, the unspecified address, and the
// IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6 forms of refused IPv4
// addresses.
type Guard struct {
	allowAll bool
	allow    []netip.Prefix
}

// NewGuard returns a guard. allowPrivate turns it off; allowCIDRs opens
// ranges while the rest stays refused.
func NewGuard(allowPrivate bool, allowCIDRs []string) (*Guard, error) {
	g := &Guard{allowAll: allowPrivate}
	for _, s := range allowCIDRs {
		p, err := parseCIDR(s)
		if err != nil {
			return nil, err
		}
		g.allow = append(g.allow, p)
	}
	return g, nil
}

// RefusedError says the guard refused to connect to Addr because it lies
// in Range.
type RefusedError struct {
	Addr   netip.Addr
	Range  netip.Prefix
	Reason string // what the range is: "loopback", "private (RFC 1918)", ...
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("refused by the SSRF guard: %s is in %s (%s); to reach it, add the range to channels.webhook.allow_cidrs or set allow_private_networks",
		e.Addr, e.Range, e.Reason)
}

type refusedRange struct {
	prefix netip.Prefix
	reason string
}

// refusedV4 lists the IPv4 ranges no public endpoint lives in. The first
// match names the reason, so narrower ranges come before the ranges that
// contain them.
var refusedV4 = []refusedRange{
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network"; 0.0.0.0 reaches the local host`},
	{netip.MustParsePrefix("10.0.0.0/8"), "private (RFC 1918)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared address space (CGNAT, RFC 6598)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local, incl. the 169.254.169.254 cloud metadata service"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private (RFC 1918)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments (reserved)"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation (TEST-NET-1)"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay anycast (deprecated)"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private (RFC 1918)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking (reserved)"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation (TEST-NET-2)"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation (TEST-NET-3)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
}

// refusedV6 lists the native IPv6 ranges refused. Forms that embed an IPv4
// address are handled by embeddedV4 first.
var refusedV6 = []refusedRange{
	{netip.MustParsePrefix("::/128"), "unspecified; reaches the local host"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("::/96"), "IPv4-compatible (deprecated)"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64 (RFC 8215)"},
	{netip.MustParsePrefix("100::/64"), "discard-only (RFC 6666)"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	{netip.MustParsePrefix("fc00::/7"), "unique local (private)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fec0::/10"), "site-local (deprecated)"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

var (
	mapped4   = netip.MustParsePrefix("::ffff:0:0/96")
	transl4   = netip.MustParsePrefix("::ffff:0:0:0/96")
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// embeddedV4 returns the IPv4 address an IPv6 address carries in a form
// that reaches it: IPv4-mapped (::ffff:a.b.c.d), well-known NAT64
// (64:ff9b::a.b.c.d), IPv4-translated (::ffff:0:a.b.c.d) and 6to4
// (2002:aabb:ccdd::).
func embeddedV4(ip netip.Addr) (v4 netip.Addr, form string, ok bool) {
	b := ip.As16()
	switch {
	case mapped4.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), "IPv4-mapped", true
	case nat64.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), "NAT64", true
	case transl4.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), "IPv4-translated", true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), "6to4", true
	}
	return netip.Addr{}, "", false
}

// Check returns a *RefusedError when the guard refuses ip, nil otherwise.
func (g *Guard) Check(ip netip.Addr) error {
	if g.allowAll {
		return nil
	}
	if !ip.IsValid() {
		return &RefusedError{Addr: ip, Reason: "not an IP address"}
	}
	// Zoned addresses never match a prefix; the zone does not change where
	// the address points.
	ip = ip.WithZone("")
	if g.allowed(ip) {
		return nil
	}
	if ip.Is4() {
		if err := check4(ip, ip); err != nil {
			return err
		}
		return nil
	}
	if v4, form, ok := embeddedV4(ip); ok {
		if g.allowed(v4) {
			return nil
		}
		if err := check4(ip, v4); err != nil {
			err.Reason = form + " form of " + v4.String() + ", " + err.Reason
			return err
		}
		return nil
	}
	for _, r := range refusedV6 {
		if r.prefix.Contains(ip) {
			return &RefusedError{Addr: ip, Range: r.prefix, Reason: r.reason}
		}
	}
	return nil
}

func (g *Guard) allowed(ip netip.Addr) bool {
	for _, p := range g.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// check4 checks the IPv4 address v4, reporting orig (the address dialled).
// Callers must not return its nil result as an error interface.
func check4(orig, v4 netip.Addr) *RefusedError {
	for _, r := range refusedV4 {
		if r.prefix.Contains(v4) {
			return &RefusedError{Addr: orig, Range: r.prefix, Reason: r.reason}
		}
	}
	return nil
}

// control is a net.Dialer Control hook: it runs after DNS resolution and
// socket creation, before connect, for every address tried.
func (g *Guard) control(network, address string, _ syscall.RawConn) error {
	if g.allowAll {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		// Fail closed: an address the guard cannot read is not dialled.
		return &RefusedError{Reason: fmt.Sprintf("cannot parse dial address %q", address)}
	}
	return g.Check(ap.Addr())
}

// CheckURL checks that raw is a webhook endpoint URL: absolute http or
// https, with a host, without user information (credentials belong in
// headers or the secret, not in a URL that ends up in logs) and with a
// valid port. It does not resolve the host: the guard checks the addresses
// actually connected to, when sending.
func CheckURL(raw string) error {
	_, err := parseEndpoint(raw)
	return err
}

// ErrBadURL is wrapped by every CheckURL error.
var ErrBadURL = errors.New("invalid webhook URL")

func parseEndpoint(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the URL, which may carry a token; keep the cause only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%w: scheme must be http or https, not %q", ErrBadURL, u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: must be absolute, like https://example.com/hooks", ErrBadURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: must not contain user information (user:password@)", ErrBadURL)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: port %q out of range", ErrBadURL, p)
		}
	}
	return u, nil
}

// endpointKey names an endpoint for the circuit breaker: scheme, host and
// port, so http and https on one host, or two ports, are separate.
func endpointKey(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return u.Scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}
