package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testCA issues node certificates for 127.0.0.1.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// nodeTLS returns a mutual-TLS config for a node signed by ca.
func (ca *testCA) nodeTLS(t *testing.T, name string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs:      ca.pool,
		ClientCAs:    ca.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

func TestRaftOverMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	nodes := newGossipCluster(t, 3, nil)
	for _, tn := range nodes {
		tn.cfg.RaftTLS = ca.nodeTLS(t, tn.cfg.NodeID)
		tn.mustOpen()
	}
	leader := waitOneLeader(t, nodes, 20*time.Second)
	mustApply(t, leader.node, clientCmd("cl_a"))
	mustApply(t, leader.node, createCmd("cl_a", "act_tls"))
	assertSameState(t, nodes)
}

func TestTLSStreamLayerRejectsForeignCertificate(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	addr := freePort(t)
	adv, _ := net.ResolveTCPAddr("tcp", addr)
	server, err := newTLSStreamLayer(addr, adv, ca.nodeTLS(t, "server"))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer server.Close()
	go func() {
		for {
			c, err := server.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 1)
				_, _ = c.Read(buf) // drives the handshake
				_ = c.Close()
			}()
		}
	}()

	good := &tlsStreamLayer{cfg: ca.nodeTLS(t, "client")}
	c, err := good.Dial(raft.ServerAddress(addr), time.Second)
	if err != nil {
		t.Fatalf("dial with a certificate of the cluster CA: %v", err)
	}
	_ = c.Close()

	// The intruder trusts the cluster CA but presents a certificate from
	// another CA: the server must refuse it.
	intruder := other.nodeTLS(t, "intruder")
	intruder.RootCAs = ca.pool
	foreign := &tlsStreamLayer{cfg: intruder}
	c, err = foreign.Dial(raft.ServerAddress(addr), time.Second)
	if err == nil {
		// TLS 1.3: the server's rejection of the client certificate
		// arrives on the first read.
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		_ = c.Close()
	}
	if err == nil {
		t.Fatal("a peer with a foreign certificate got a working connection")
	}
}
