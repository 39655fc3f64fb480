package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// Errors of destination checks; the returned errors wrap them.
var (
	// ErrInvalidURL: a webhook URL is not an absolute http or https URL
	// with a host.
	ErrInvalidURL = errors.New("webhook: invalid url")
	// ErrDestinationNotAllowed: the URL's host, or the address it resolved
	// to, is outside what the operator allows (--webhook-allowed-hosts), or
	// is a loopback, private, link-local or otherwise non-public address
	// that no network entry of the allow-list names.
	ErrDestinationNotAllowed = errors.New("webhook: destination not allowed")
)

// Policy decides which destinations deliveries may reach: the allow-list
// of --webhook-allowed-hosts and the refusal of non-public addresses, which
// keeps a webhook URL from making the server reach into its own network
// (server-side request forgery).
//
// An allow-list entry is a host name ("hooks.example.com"), a wildcard
// ("*.example.com": any name below example.com, not example.com itself), an
// IP address or a CIDR network ("10.1.0.0/16").
//
//   - With no entries, any host name or address is allowed, but the address
//     a connection is made to must be public.
//   - With entries, a destination is allowed when its host name matches a
//     name entry or the address it connects to lies in a network entry.
//   - Either way, a non-public address (loopback, private, link-local, CGNAT,
//     unique-local, multicast, unspecified, reserved, NAT64) is reached only
//     when a network entry covers it: a name entry never opens one, so that
//     a name whose DNS changes cannot point deliveries inside.
//
// The addresses are checked at every connection, on the address actually
// dialed (Control of the dialer), so a name that resolves to a public
// address at registration and to a private one later is still refused.
type Policy struct {
	names     []string // exact names, lower case, no trailing dot
	wildcards []string // ".example.com" for "*.example.com"
	networks  []netip.Prefix
}

// NewPolicy parses allow-list entries (see Policy). An empty list allows
// every public destination.
func NewPolicy(entries []string) (*Policy, error) {
	p := &Policy{}
	for _, raw := range entries {
		e := strings.ToLower(strings.TrimSpace(raw))
		switch {
		case e == "":
			continue
		case strings.Contains(e, "/"):
			pfx, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("webhook allowed host %q: not a CIDR network: %w", raw, err)
			}
			p.networks = append(p.networks, netip.PrefixFrom(pfx.Addr().Unmap(), unmappedBits(pfx)).Masked())
		default:
			if addr, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
				addr = addr.Unmap().WithZone("")
				p.networks = append(p.networks, netip.PrefixFrom(addr, addr.BitLen()))
				continue
			}
			name, wildcard := strings.CutPrefix(strings.TrimSuffix(e, "."), "*.")
			if !validHostName(name) {
				return nil, fmt.Errorf("webhook allowed host %q: not a host name, *.domain, IP address or CIDR network", raw)
			}
			if wildcard {
				p.wildcards = append(p.wildcards, "."+name)
			} else {
				p.names = append(p.names, name)
			}
		}
	}
	return p, nil
}

// ParseAllowedHosts builds the Policy of a --webhook-allowed-hosts value:
// entries separated by commas (spaces around them ignored); "" allows every
// public destination.
func ParseAllowedHosts(list string) (*Policy, error) {
	return NewPolicy(strings.Split(list, ","))
}

// unmappedBits keeps an IPv4-mapped IPv6 prefix's meaning once unmapped.
func unmappedBits(pfx netip.Prefix) int {
	if pfx.Addr().Is4In6() {
		return max(pfx.Bits()-96, 0)
	}
	return pfx.Bits()
}

// validHostName reports whether s is a DNS name made of letters, digits,
// hyphens and dots (labels 1 to 63 characters, the whole at most 253).
func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// restricted reports whether the policy has any entry.
func (p *Policy) restricted() bool {
	return len(p.names)+len(p.wildcards)+len(p.networks) > 0
}

// nameAllowed reports whether host (lower case, no port) matches a name
// entry.
func (p *Policy) nameAllowed(host string) bool {
	host = strings.TrimSuffix(host, ".")
	for _, n := range p.names {
		if host == n {
			return true
		}
	}
	for _, w := range p.wildcards {
		if strings.HasSuffix(host, w) {
			return true
		}
	}
	return false
}

// inNetworks reports whether addr lies in a network entry.
func (p *Policy) inNetworks(addr netip.Addr) bool {
	for _, n := range p.networks {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}

// nonPublic are the ranges refused unless a network entry names them,
// beyond what netip's Is* methods cover.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: maps onto any IPv4 address
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4: embeds an IPv4 address
	netip.MustParsePrefix("100::/64"),        // discard-only
}

// IsPublic reports whether addr is a globally routable unicast address: not
// loopback, private, link-local (cloud metadata services live there),
// unique-local, multicast, unspecified, CGNAT, documentation, reserved or a
// translation range that could lead back to one of those.
func IsPublic(addr netip.Addr) bool {
	addr = addr.Unmap()
	if !addr.IsValid() || !addr.IsGlobalUnicast() || addr.IsPrivate() || addr.IsLoopback() ||
		addr.IsLinkLocalUnicast() || addr.IsMulticast() || addr.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(addr) {
			return false
		}
	}
	return true
}

// CheckURL validates a webhook URL against the policy before it is stored
// (registration) and before every attempt: an absolute http or https URL
// with a host, no fragment, and a host the allow-list can admit. A host
// given as an IP address is checked fully here; a host name is checked
// again on every address it resolves to when a connection is made.
func (p *Policy) CheckURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%w: scheme %q, want http or https", ErrInvalidURL, u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: no host", ErrInvalidURL)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%w: has a fragment", ErrInvalidURL)
	}
	if port := u.Port(); port != "" {
		if n, err := net.LookupPort("tcp", port); err != nil || n == 0 {
			return nil, fmt.Errorf("%w: port %q", ErrInvalidURL, port)
		}
	}
	host := strings.ToLower(u.Hostname())
	if addr, err := netip.ParseAddr(host); err == nil {
		if err := p.checkAddr(host, addr, false); err != nil {
			return nil, err
		}
		return u, nil
	}
	if !validHostName(strings.TrimSuffix(host, ".")) {
		return nil, fmt.Errorf("%w: host %q", ErrInvalidURL, host)
	}
	if h := strings.TrimSuffix(host, "."); h == "localhost" || strings.HasSuffix(h, ".localhost") {
		// RFC 6761: always loopback; refused here for a clear error at
		// registration, and again at dial time like any loopback address.
		if len(p.networks) == 0 && !p.nameAllowed(host) {
			return nil, fmt.Errorf("%w: %q is a loopback name", ErrDestinationNotAllowed, host)
		}
	}
	if p.restricted() && !p.nameAllowed(host) && len(p.networks) == 0 {
		return nil, fmt.Errorf("%w: host %q is not in the allowed hosts", ErrDestinationNotAllowed, host)
	}
	return u, nil
}

// checkAddr decides on one address: host is the URL's host (for the error),
// nameMatched whether it matched a name entry.
func (p *Policy) checkAddr(host string, addr netip.Addr, nameMatched bool) error {
	addr = addr.Unmap().WithZone("")
	if p.inNetworks(addr) {
		return nil
	}
	if !IsPublic(addr) {
		return fmt.Errorf("%w: %s resolves to non-public address %s", ErrDestinationNotAllowed, host, addr)
	}
	if p.restricted() && !nameMatched {
		return fmt.Errorf("%w: %s (%s) is not in the allowed hosts", ErrDestinationNotAllowed, host, addr)
	}
	return nil
}

// dialTargetKey carries the URL's host into the dialer's Control.
type dialTargetKey struct{}

// dialTarget is what Control needs to know about the connection's URL.
type dialTarget struct {
	host        string
	nameMatched bool
}

// withDialTarget marks ctx with the host of the URL a request goes to.
func (p *Policy) withDialTarget(ctx context.Context, u *url.URL) context.Context {
	host := strings.ToLower(u.Hostname())
	return context.WithValue(ctx, dialTargetKey{}, dialTarget{host: host, nameMatched: p.nameAllowed(host)})
}

// control is the net.Dialer's ControlContext: it runs after name
// resolution, on the very address about to be connected to, and refuses
// it when the policy does. A dial without a target in its context (not
// made by the engine) is refused.
func (p *Policy) control(ctx context.Context, network, address string, _ syscall.RawConn) error {
	t, ok := ctx.Value(dialTargetKey{}).(dialTarget)
	if !ok {
		return fmt.Errorf("%w: dial to %s without a checked URL", ErrDestinationNotAllowed, address)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: dial address %q: %v", ErrDestinationNotAllowed, address, err)
	}
	return p.checkAddr(t.host, ap.Addr(), t.nameMatched)
}
