package config

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/url"
	"os"

	"github.com/exactonce/exactonce/internal/secure"
)

// missingClusterKey is the message given to a node of a
// multi-node cluster started without an explicit cluster key.
const missingClusterKey = "a node of a multi-node cluster (--join, or --bootstrap-expect above 1) needs the cluster key given explicitly, " +
	"the same on every node: --cluster-key-file PATH (a file of mode 0600), EXACTONCE_CLUSTER_KEY, or --cluster-key; " +
	"make one with `exactonce keygen` (a key generated into each data dir would differ from node to node)"

// missingRestoreKey is the message given to a node started with --restore
// without an explicit cluster key: a key generated into the fresh data dir
// could never be the key the backup was saved under.
const missingRestoreKey = "--restore needs the cluster key the backup was saved under, given explicitly: --cluster-key-file PATH " +
	"(a file of mode 0600), EXACTONCE_CLUSTER_KEY, or --cluster-key; `exactonce snapshot inspect FILE` shows the key check value it needs " +
	"and `exactonce keygen --check-value KEYFILE` that of a key"

// missingAdminToken is the message given to a node of a multi-node
// cluster started without an explicit admin token.
const missingAdminToken = "a node of a multi-node cluster (--join, or --bootstrap-expect above 1) needs the admin token given explicitly, " +
	"the same on every node: --admin-token-file PATH (a file of mode 0600), EXACTONCE_ADMIN_TOKEN, or --admin-token; " +
	"make one with `head -c32 /dev/urandom | base64` (a token generated into each data dir would differ from node to node, " +
	"and each node would accept only its own)"

// secrets reads the *-file secrets and checks the cluster key and the admin
// token. origin names where a flag's value came from.
func (c *Config) secrets(origin func(string) string) error {
	if c.ClusterKey != "" && c.ClusterKeyFile != "" {
		return usagef("%s and %s both give the cluster key: keep one", origin("cluster-key"), origin("cluster-key-file"))
	}
	if c.AdminToken != "" && c.AdminTokenFile != "" {
		return usagef("%s and %s both give the admin token: keep one", origin("admin-token"), origin("admin-token-file"))
	}
	switch {
	case c.ClusterKeyFile != "":
		v, err := secure.ReadSecretFile(c.ClusterKeyFile)
		if err != nil {
			return usagef("%s: %v", origin("cluster-key-file"), err)
		}
		c.ClusterKey = v
		c.ClusterKeySource = origin("cluster-key-file") + " " + c.ClusterKeyFile
	case c.ClusterKey != "":
		c.ClusterKeySource = origin("cluster-key")
	}
	if c.ClusterKey != "" {
		if _, err := decodeKey(c.ClusterKey, secure.KeySize); err != nil {
			return usagef("%s: %v", c.ClusterKeySource, err)
		}
	} else if c.MultiNode() {
		return usagef("%s", missingClusterKey)
	} else if c.Restore != "" {
		return usagef("%s", missingRestoreKey)
	}
	if c.AdminTokenFile != "" {
		v, err := secure.ReadSecretFile(c.AdminTokenFile)
		if err != nil {
			return usagef("%s: %v", origin("admin-token-file"), err)
		}
		c.AdminToken = v
	}
	if c.AdminToken == "" && c.MultiNode() {
		return usagef("%s", missingAdminToken)
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		if c.AdminTokenFile != "" {
			return usagef("%s %s: the token needs at least 16 characters", origin("admin-token-file"), c.AdminTokenFile)
		}
		return usagef("%s: at least 16 characters", origin("admin-token"))
	}
	return nil
}

// contradictions refuses settings that each parse but cannot work
// together. It runs once the defaults are filled in (HTTPAdvertise).
func (c *Config) contradictions() error {
	u, err := url.Parse(c.HTTPAdvertise)
	if err != nil || u.Host == "" {
		return usagef("--http-advertise %q: want scheme://host:port", c.HTTPAdvertise)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		// Reveal URLs append a path to this base URL.
		return usagef("--http-advertise %q: want scheme://host:port, without a path, query or user", c.HTTPAdvertise)
	}
	switch {
	case u.Scheme == "https" && !c.TLS():
		return usagef("--http-advertise %q is https:// but the API is served without TLS: give --tls-cert and --tls-key, or advertise http://", c.HTTPAdvertise)
	case u.Scheme == "http" && c.TLS():
		return usagef("--http-advertise %q is http:// but the API is served over HTTPS (--tls-cert): advertise https://", c.HTTPAdvertise)
	}
	// Two listeners on one address: the second bind would fail later, with
	// a less useful message.
	addrs := []struct{ name, v string }{{"http-addr", c.HTTPAddr}, {"raft-addr", c.RaftAddr}, {"gossip-addr", c.GossipAddr}}
	for i := range addrs {
		for j := i + 1; j < len(addrs); j++ {
			if sameListenAddr(addrs[i].v, addrs[j].v) {
				return usagef("--%s and --%s are the same address %q: each needs its own port", addrs[i].name, addrs[j].name, addrs[i].v)
			}
		}
	}
	if c.MultiNode() {
		// Other nodes dial these; an unspecified host (0.0.0.0, ::) only
		// works for a node alone.
		if isUnspecified(u.Hostname()) {
			return usagef("--http-advertise %q: a node of a multi-node cluster must advertise a host other nodes can reach", c.HTTPAdvertise)
		}
		if c.RaftAdvertise == "" {
			if host, _, _ := net.SplitHostPort(c.RaftAddr); host == "" || isUnspecified(host) {
				return usagef("--raft-addr %q binds every interface: give --raft-advertise with the address other nodes dial", c.RaftAddr)
			}
		}
	}
	if c.InternalTLSCA != "" && c.TLSClientCA != "" {
		if same, subject := sameCA(c.InternalTLSCA, c.TLSClientCA); same {
			return usagef("--internal-tls-ca %s and --tls-client-ca %s hold the same CA (%s): the internal channel needs a CA of its own, "+
				"else any API client certificate could pose as a node", c.InternalTLSCA, c.TLSClientCA, subject)
		}
	}
	return nil
}

// sameListenAddr reports whether two host:port listen addresses are the
// same one (a port of 0 picks a free port, so never collides).
func sameListenAddr(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	return ha == hb || isUnspecified(ha) || isUnspecified(hb) || ha == "" || hb == ""
}

// sameCA reports whether two PEM bundles share a CA: a certificate with the
// same public key (the same signer, even when re-issued), or byte-identical
// certificates. A file that cannot be read or parsed is left to the TLS
// setup, which names it.
func sameCA(fileA, fileB string) (bool, string) {
	a, b := pemCerts(fileA), pemCerts(fileB)
	for _, ca := range a {
		for _, cb := range b {
			if bytes.Equal(ca.Raw, cb.Raw) || (ca.RawSubjectPublicKeyInfo != nil && bytes.Equal(ca.RawSubjectPublicKeyInfo, cb.RawSubjectPublicKeyInfo)) {
				return true, ca.Subject.String()
			}
		}
	}
	return false, ""
}

// pemCerts returns the certificates of a PEM bundle; a block that does not
// parse is kept with only its bytes, so identical garbage still compares.
func pemCerts(file string) []*x509.Certificate {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			out = append(out, c)
		} else {
			out = append(out, &x509.Certificate{Raw: blk.Bytes})
		}
	}
}
