package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/exactonce/exactonce/fsm"
)

// testCA is an operator's CA for internal certificates.
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

// issue returns a certificate of ca whose common name is name.
func (ca *testCA) issue(t *testing.T, name string) *tls.Certificate {
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
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestInternalChannelWithOperatorCertificates(t *testing.T) {
	ca := newTestCA(t)
	nodes := newGossipCluster(t, 3, nil)
	for _, tn := range nodes {
		tn.cfg.Identity = PeerIdentity{ClusterKey: testClusterKey, Certificate: ca.issue(t, tn.cfg.NodeID), CA: ca.pool}
		tn.mustOpen()
	}
	leader := waitOneLeader(t, nodes, 20*time.Second)
	mustApply(t, leader.node, clientCmd("cl_a"))
	for i, f := range followers(nodes, leader) {
		mustApply(t, f.node, createCmd("cl_a", fmt.Sprintf("act_tls_%d", i)))
	}
	waitFor(t, "followers caught up", 10*time.Second, func() bool {
		for _, tn := range nodes {
			if tn.fsm.AppliedIndex() < leader.fsm.AppliedIndex() {
				return false
			}
		}
		return true
	})
	assertSameState(t, nodes)
}

func TestOperatorCertificateMustNameTheNode(t *testing.T) {
	ca := newTestCA(t)
	_, err := newPeerTLS("node1", PeerIdentity{ClusterKey: testClusterKey, Certificate: ca.issue(t, "node2"), CA: ca.pool})
	if err == nil {
		t.Fatal("a certificate for node2 was accepted as node1's")
	}
	if _, err := newPeerTLS("node1", PeerIdentity{ClusterKey: testClusterKey, Certificate: ca.issue(t, "node1")}); err == nil {
		t.Fatal("a certificate without its CA was accepted")
	}
}

// singleNode opens a bootstrapped one-node cluster with a client and an
// action, and returns it with its applied index.
func singleNode(t *testing.T) *testNode {
	t.Helper()
	tn := newTestNode(t, "node1")
	tn.mustOpen()
	waitFor(t, "leader", 10*time.Second, tn.node.IsLeader)
	mustApply(t, tn.node, clientCmd("cl_a"))
	mustApply(t, tn.node, createCmd("cl_a", "act_1"))
	return tn
}

// TestRawRaftRPCWithoutKeyIsRefused is the attack of a hand-made
// AppendEntries with a higher term, sent in plain TCP as hashicorp/raft's
// own transport does: it must be refused and change nothing.
func TestRawRaftRPCWithoutKeyIsRefused(t *testing.T) {
	tn := singleNode(t)
	term, applied := tn.node.raft.CurrentTerm(), tn.fsm.AppliedIndex()
	refusedBefore := tn.node.mux.refused.Load()

	evil := clientCmd("cl_evil")
	evil.Time = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	data, err := fsm.EncodeCommand(evil)
	if err != nil {
		t.Fatal(err)
	}
	attacker, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	last := tn.node.raft.LastIndex()
	req := &raft.AppendEntriesRequest{
		RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("evil"), Addr: []byte(attacker.LocalAddr())},
		Term:              term + 100,
		PrevLogEntry:      last,
		PrevLogTerm:       term,
		Entries:           []*raft.Log{{Index: last + 1, Term: term + 100, Type: raft.LogCommand, Data: data}},
		LeaderCommitIndex: last + 1,
	}
	var resp raft.AppendEntriesResponse
	err = attacker.AppendEntries("node1", raft.ServerAddress(tn.cfg.RaftAddr), req, &resp)
	if err == nil {
		t.Fatalf("a plain-TCP AppendEntries was answered: %+v", resp)
	}
	waitFor(t, "the connection counted as refused", 5*time.Second, func() bool {
		return tn.node.mux.refused.Load() > refusedBefore
	})
	if got := tn.node.raft.CurrentTerm(); got != term {
		t.Fatalf("term moved from %d to %d", term, got)
	}
	mustApply(t, tn.node, &fsm.Command{Type: fsm.CmdNoop})
	if got := tn.fsm.AppliedIndex(); got != applied+1 {
		t.Fatalf("applied index %d, want %d (only our no-op)", got, applied+1)
	}
	var c *fsm.Client
	if err := tn.fsm.View(func(v *fsm.View) error { c, err = v.Client("cl_evil"); return err }); err != nil {
		t.Fatal(err)
	}
	if c != nil {
		t.Fatal("the forged entry created a client")
	}
}

// TestInternalPortRefusesOutsiders: a peer with another cluster key, and
// a peer with a certificate of the operator's CA (an API client
// certificate, say) but not the key, get no connection on any protocol.
func TestInternalPortRefusesOutsiders(t *testing.T) {
	ca := newTestCA(t)
	tn := newTestNode(t, "node1")
	tn.cfg.Identity = PeerIdentity{ClusterKey: testClusterKey, Certificate: ca.issue(t, "node1"), CA: ca.pool}
	tn.mustOpen()
	waitFor(t, "leader", 10*time.Second, tn.node.IsLeader)

	otherKey := []byte("another-cluster-key-of-32-bytes!")
	derived, err := newPeerTLS("node2", PeerIdentity{ClusterKey: otherKey})
	if err != nil {
		t.Fatal(err)
	}
	apiClient, err := newPeerTLS("api-client", PeerIdentity{ClusterKey: otherKey, Certificate: ca.issue(t, "api-client"), CA: ca.pool})
	if err != nil {
		t.Fatal(err)
	}
	right, err := newPeerTLS("node2", PeerIdentity{ClusterKey: testClusterKey, Certificate: ca.issue(t, "node2"), CA: ca.pool})
	if err != nil {
		t.Fatal(err)
	}
	for _, proto := range []string{protoRaft, protoRPC} {
		for name, p := range map[string]*peerTLS{"another cluster key": derived, "an API client certificate without the key": apiClient} {
			c, err := p.dial(context.Background(), tn.cfg.RaftAddr, proto, "")
			if err == nil {
				c.Close()
				t.Fatalf("%s: %s got a connection", proto, name)
			}
		}
		c, err := right.dial(context.Background(), tn.cfg.RaftAddr, proto, "node1")
		if err != nil {
			t.Fatalf("%s: a node of the cluster was refused: %v", proto, err)
		}
		c.Close()
	}
}

func TestDialChecksTheNodeID(t *testing.T) {
	tn := singleNode(t)
	p, err := newPeerTLS("node2", PeerIdentity{ClusterKey: testClusterKey})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := p.dial(context.Background(), tn.cfg.RaftAddr, protoRPC, "node3"); err == nil {
		c.Close()
		t.Fatal("node1 was accepted as node3")
	}
	c, err := p.dial(context.Background(), tn.cfg.RaftAddr, protoRPC, "node1")
	if err != nil {
		t.Fatalf("dial node1 as node1: %v", err)
	}
	c.Close()
}

// TestConcurrentForwardsAreBatched: many writes through one follower at
// once all land on the leader, decided once each.
func TestConcurrentForwardsAreBatched(t *testing.T) {
	nodes := newGossipCluster(t, 3, nil)
	for _, tn := range nodes {
		tn.mustOpen()
	}
	leader := waitOneLeader(t, nodes, 20*time.Second)
	mustApply(t, leader.node, clientCmd("cl_a"))
	f := followers(nodes, leader)[0]
	const writes = 300
	var wg sync.WaitGroup
	errs := make(chan error, writes)
	for i := range writes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := f.node.Apply(ctxTimeout(t, 10*time.Second), createCmd("cl_a", fmt.Sprintf("act_b%d", i)))
			if err == nil && res.Code != fsm.CodeOK {
				err = fmt.Errorf("code %s", res.Code)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("forwarded write: %v", err)
	}
	for i := range writes {
		if action(t, leader.fsm, "cl_a", fmt.Sprintf("act_b%d", i)) == nil {
			t.Fatalf("act_b%d missing on the leader", i)
		}
	}
	if applied := leader.fsm.AppliedIndex(); applied < writes {
		t.Fatalf("leader applied %d entries, want at least %d", applied, writes)
	}
}
