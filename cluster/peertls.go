package cluster

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"
)

// The node-to-node channel's identities (DESIGN.md, "The internal channel").
//
// Every node holds the cluster key. From it each node derives the same
// Ed25519 key pair of an internal certificate authority and issues itself,
// at every start, a certificate for its node id under that CA. Peers accept
// only certificates that chain to that CA and read the node id from it, so
// a peer proves it holds the cluster key and which node it is. An operator
// may give node certificates of their own CA instead (PeerIdentity
// Certificate and CA); the node id is then read from the certificate the
// same way, and the cluster key is still proved on every connection
// (proveKey), so that a certificate of a CA shared with API clients never
// admits anyone who lacks the key.

// nodeURIPrefix is the URI SAN prefix naming a node id in a certificate.
const nodeURIPrefix = "spiffe://exactonce/node/"

// Labels of the keys derived from the cluster key; part of the wire format.
const (
	caKeyLabel    = "exactonce internal CA v1"
	proofKeyLabel = "exactonce internal proof v1"
	// proofExporterLabel names the TLS exporter secret a proof binds to
	// (RFC 8446 section 7.5), so a proof is worth nothing on another
	// connection.
	proofExporterLabel = "EXPORTER-exactonce-peer-proof-v1"
)

// PeerIdentity is how a node authenticates itself and its peers on the
// internal channel.
type PeerIdentity struct {
	// ClusterKey is the cluster's 32-byte secret. Required.
	ClusterKey []byte
	// Certificate and CA are an operator's node certificate (it must name
	// the node id, see NodeIDOf) and the CA that signs every node's. Both
	// nil: derived from ClusterKey.
	Certificate *tls.Certificate
	CA          *x509.CertPool
}

// peerTLS holds one node's TLS material for the internal channel.
type peerTLS struct {
	nodeID   string
	cert     tls.Certificate
	roots    *x509.CertPool
	proofKey []byte
}

// newPeerTLS builds the TLS material of nodeID from id.
func newPeerTLS(nodeID string, id PeerIdentity) (*peerTLS, error) {
	if len(id.ClusterKey) < 32 {
		return nil, errors.New("cluster: the internal channel needs the 32-byte cluster key")
	}
	proofKey, err := hkdf.Key(sha256.New, id.ClusterKey, nil, proofKeyLabel, 32)
	if err != nil {
		return nil, fmt.Errorf("cluster: derive the peer proof key: %w", err)
	}
	p := &peerTLS{nodeID: nodeID, proofKey: proofKey}
	switch {
	case id.Certificate == nil && id.CA == nil:
		caCert, caKey, err := derivedCA(id.ClusterKey)
		if err != nil {
			return nil, err
		}
		p.roots = x509.NewCertPool()
		p.roots.AddCert(caCert)
		if p.cert, err = issueNodeCert(nodeID, caCert, caKey); err != nil {
			return nil, err
		}
	case id.Certificate != nil && id.CA != nil:
		p.cert, p.roots = *id.Certificate, id.CA
		leaf := id.Certificate.Leaf
		if leaf == nil {
			if len(id.Certificate.Certificate) == 0 {
				return nil, errors.New("cluster: the internal certificate is empty")
			}
			if leaf, err = x509.ParseCertificate(id.Certificate.Certificate[0]); err != nil {
				return nil, fmt.Errorf("cluster: parse the internal certificate: %w", err)
			}
		}
		if got := NodeIDOf(leaf); got != nodeID {
			return nil, fmt.Errorf("cluster: the internal certificate names node %q, not this node %q (put %s%s in its URI SAN or common name)", got, nodeID, nodeURIPrefix, nodeID)
		}
		if _, err := verifyPeer([][]byte{leaf.Raw}, p.roots); err != nil {
			return nil, fmt.Errorf("cluster: the internal certificate does not chain to the internal CA: %w", err)
		}
	default:
		return nil, errors.New("cluster: an internal certificate and its CA go together")
	}
	return p, nil
}

// derivedCA returns the internal CA of a cluster key: the same key pair
// and, since Ed25519 signatures are deterministic and every field is
// fixed, the same certificate on every node.
func derivedCA(clusterKey []byte) (*x509.Certificate, ed25519.PrivateKey, error) {
	seed, err := hkdf.Key(sha256.New, clusterKey, nil, caKeyLabel, ed25519.SeedSize)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: derive the internal CA key: %w", err)
	}
	key := ed25519.NewKeyFromSeed(seed)
	pub := key.Public().(ed25519.PublicKey)
	ski := sha256.Sum256(pub)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ExactOnce internal CA"},
		NotBefore:             time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski[:20],
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: make the internal CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: parse the internal CA certificate: %w", err)
	}
	return cert, key, nil
}

// issueNodeCert issues a certificate for nodeID under the derived CA, with
// a fresh key pair (it never leaves the process).
func issueNodeCert(nodeID string, ca *x509.Certificate, caKey ed25519.PrivateKey) (tls.Certificate, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cluster: node key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cluster: certificate serial: %w", err)
	}
	u, err := url.Parse(nodeURIPrefix + url.PathEscape(nodeID))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cluster: node URI: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: nodeID},
		URIs:         []*url.URL{u},
		// Clocks of nodes may differ; the CA, not the dates, is what counts.
		NotBefore:   now.Add(-24 * time.Hour),
		NotAfter:    now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cluster: issue the node certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cluster: parse the node certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// NodeIDOf returns the node id a certificate names: its URI SAN
// spiffe://exactonce/node/<id>, else its common name; "" when neither.
func NodeIDOf(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if s := u.String(); strings.HasPrefix(s, nodeURIPrefix) {
			id, err := url.PathUnescape(strings.TrimPrefix(s, nodeURIPrefix))
			if err == nil {
				return id
			}
		}
	}
	return c.Subject.CommonName
}

// verifyPeer checks a peer's chain against roots and returns the node id
// its leaf names. Any extended key usage is accepted: operator CAs differ
// in what they put there, and only the CA and the name matter here.
func verifyPeer(rawCerts [][]byte, roots *x509.CertPool) (string, error) {
	if len(rawCerts) == 0 {
		return "", errors.New("no certificate")
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return "", fmt.Errorf("parse certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return "", err
	}
	id := NodeIDOf(certs[0])
	if id == "" {
		return "", errors.New("the certificate names no node id")
	}
	return id, nil
}

// serverConfig is the listener's TLS configuration: a client certificate
// is required and must chain to the internal CA. TLS 1.3 only (both ends
// are this program, and its suites are all AEAD).
func (p *peerTLS) serverConfig(protos []string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{p.cert},
		ClientAuth:   tls.RequireAnyClientCert,
		NextProtos:   protos,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if _, err := verifyPeer(raw, p.roots); err != nil {
				return fmt.Errorf("cluster: peer certificate refused: %w", err)
			}
			return nil
		},
	}
}

// clientConfig is the dialer's TLS configuration for proto. The server's
// chain is checked against the internal CA, and when wantID is not empty
// its certificate must name that node: a node dialled as the leader must
// be the leader.
func (p *peerTLS) clientConfig(proto, wantID string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{p.cert},
		NextProtos:   []string{proto},
		// The standard check matches a host name; peers are named by node
		// id instead, which VerifyPeerCertificate checks.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, err := verifyPeer(raw, p.roots)
			if err != nil {
				return fmt.Errorf("cluster: peer certificate refused: %w", err)
			}
			if wantID != "" && id != wantID {
				return fmt.Errorf("cluster: dialled node %q but the peer is %q", wantID, id)
			}
			return nil
		},
	}
}

// proof is this side's proof of the cluster key on conn: an HMAC, under a
// key derived from the cluster key, of the connection's exported secret
// and the side's role.
func (p *peerTLS) proof(cs tls.ConnectionState, role byte) ([]byte, error) {
	ekm, err := cs.ExportKeyingMaterial(proofExporterLabel, nil, 32)
	if err != nil {
		return nil, fmt.Errorf("export keying material: %w", err)
	}
	m := hmac.New(sha256.New, p.proofKey)
	m.Write([]byte{role})
	m.Write(ekm)
	return m.Sum(nil), nil
}

// Roles in a proof.
const (
	roleClient byte = 'c'
	roleServer byte = 's'
)
