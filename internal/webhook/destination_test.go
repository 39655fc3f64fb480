package webhook

import (
	"context"
	"errors"
	"net/netip"
	"net/url"
	"testing"
)

func TestNewPolicyRefusesBadEntries(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/33", "exa mple.com", "-x.com", "*.", "http://x.com"} {
		if _, err := NewPolicy([]string{bad}); err == nil {
			t.Errorf("NewPolicy(%q) accepted", bad)
		}
	}
}

func TestIsPublic(t *testing.T) {
	for _, c := range []struct {
		addr string
		want bool
	}{
		{"93.184.215.14", true},
		{"2606:4700::1111", true},
		{"127.0.0.1", false},
		{"::1", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"100.64.0.1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"fd00::1", false},
		{"fe80::1", false},
		{"224.0.0.1", false},
		{"255.255.255.255", false},
		{"::ffff:127.0.0.1", false}, // IPv4-mapped loopback
		{"::ffff:10.0.0.1", false},
		{"64:ff9b::a00:1", false}, // NAT64 of 10.0.0.1
		{"2002:a00:1::1", false},  // 6to4 of 10.0.0.1
	} {
		if got := IsPublic(netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("IsPublic(%s) = %v, want %v", c.addr, got, c.want)
		}
	}
}

func TestPolicyCheckURL(t *testing.T) {
	open, err := NewPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	listed, err := NewPolicy([]string{"hooks.example.com", "*.corp.example", "10.20.0.0/16", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		policy *Policy
		url    string
		want   error // nil: allowed (for now: names are checked again when dialed)
	}{
		{open, "https://hooks.example.com/x", nil},
		{open, "http://93.184.215.14:8443/x", nil},
		{open, "ftp://hooks.example.com/", ErrInvalidURL},
		{open, "/relative", ErrInvalidURL},
		{open, "https:///nohost", ErrInvalidURL},
		{open, "https://hooks.example.com/#frag", ErrInvalidURL},
		{open, "https://hooks.example.com:0/", ErrInvalidURL},
		{open, "https://bad_host!/", ErrInvalidURL},
		{open, "http://127.0.0.1:9000/", ErrDestinationNotAllowed},
		{open, "http://[::1]/", ErrDestinationNotAllowed},
		{open, "http://169.254.169.254/latest/meta-data/", ErrDestinationNotAllowed},
		{open, "http://[::ffff:10.0.0.1]/", ErrDestinationNotAllowed},
		{open, "http://localhost:9000/", ErrDestinationNotAllowed},
		{open, "http://api.localhost/", ErrDestinationNotAllowed},
		{listed, "https://hooks.example.com/x", nil},
		{listed, "https://a.b.corp.example/x", nil},
		{listed, "https://corp.example/x", nil}, // not a name entry, but may dial into 10.20/16: decided at dial time
		{listed, "http://10.20.3.4/x", nil},
		{listed, "http://127.0.0.1:9000/x", nil},
		{listed, "http://10.21.0.1/x", ErrDestinationNotAllowed},
		{listed, "http://93.184.215.14/x", ErrDestinationNotAllowed}, // public, but not listed
	} {
		_, err := c.policy.CheckURL(c.url)
		if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("CheckURL(%q) = %v, want %v", c.url, err, c.want)
		}
	}
	namesOnly, err := ParseAllowedHosts(" hooks.example.com ,")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := namesOnly.CheckURL("https://other.example.com/"); !errors.Is(err, ErrDestinationNotAllowed) {
		t.Errorf("a name outside a names-only list: %v, want ErrDestinationNotAllowed", err)
	}
}

// TestDialControlChecksTheDialedAddress walks the decision the dialer makes
// on the address a name resolved to: this is what stops a name that
// resolves to a private address (DNS rebinding), whatever the URL said.
func TestDialControlChecksTheDialedAddress(t *testing.T) {
	open, _ := NewPolicy(nil)
	listed, err := NewPolicy([]string{"hooks.example.com", "10.20.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	dial := func(p *Policy, rawURL, address string) error {
		u, err := url.Parse(rawURL)
		if err != nil {
			t.Fatal(err)
		}
		return p.control(p.withDialTarget(context.Background(), u), "tcp4", address, nil)
	}
	for _, c := range []struct {
		policy  *Policy
		url     string
		address string
		allowed bool
	}{
		{open, "https://hooks.example.com/", "93.184.215.14:443", true},
		{open, "https://hooks.example.com/", "10.0.0.5:443", false},
		{open, "https://hooks.example.com/", "127.0.0.1:443", false},
		{open, "https://hooks.example.com/", "[::ffff:169.254.169.254]:80", false},
		{listed, "https://hooks.example.com/", "93.184.215.14:443", true},
		{listed, "https://hooks.example.com/", "10.0.0.5:443", false}, // a name entry never opens a private address
		{listed, "https://hooks.example.com/", "10.20.0.5:443", true},
		{listed, "https://internal.example/", "10.20.9.9:443", true},
		{listed, "https://other.example.com/", "93.184.215.14:443", false},
	} {
		err := dial(c.policy, c.url, c.address)
		if (err == nil) != c.allowed || (err != nil && !errors.Is(err, ErrDestinationNotAllowed)) {
			t.Errorf("dial %s for %s: %v, want allowed %v", c.address, c.url, err, c.allowed)
		}
	}
	if err := open.control(context.Background(), "tcp4", "93.184.215.14:443", nil); !errors.Is(err, ErrDestinationNotAllowed) {
		t.Errorf("a dial without a checked URL: %v, want refused", err)
	}
}
