package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/exactonce/exactonce/fsm"
)

// inmemCluster is three nodes over raft's in-memory transport, so tests
// can partition them. Internal HTTP still works (it is loopback), which is
// the harder case: a partitioned follower can still reach the old leader's
// read-index endpoint.
type inmemCluster struct {
	nodes  []*testNode
	trans  map[string]*raft.InmemTransport
	config []raft.Server
}

func newInmemCluster(t *testing.T) *inmemCluster {
	t.Helper()
	c := &inmemCluster{trans: map[string]*raft.InmemTransport{}}
	for i := range 3 {
		id := fmt.Sprintf("n%d", i+1)
		tn := newTestNode(t, id)
		tn.cfg.BootstrapExpect = 3 // no gossip: the test bootstraps
		_, tr := raft.NewInmemTransport(raft.ServerAddress(id))
		c.trans[id] = tr
		c.nodes = append(c.nodes, tn)
		c.config = append(c.config, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(id)})
	}
	c.connectAll()
	for _, tn := range c.nodes {
		c.open(t, tn)
	}
	return c
}

// open opens tn over its in-memory transport, bootstraps (first open
// only: a no-op with state) and teaches it the others' HTTP addresses.
func (c *inmemCluster) open(t *testing.T, tn *testNode) {
	t.Helper()
	f, err := fsm.Open(fsm.Options{Path: tn.cfg.DataDir + "/state.db", NoSync: true, InitialMmapSize: 16 << 20})
	if err != nil {
		t.Fatalf("open fsm: %v", err)
	}
	cfg := tn.cfg
	cfg.FSM = f
	n, err := openWith(context.Background(), cfg, f, c.trans[cfg.NodeID])
	if err != nil {
		t.Fatalf("open %s: %v", cfg.NodeID, err)
	}
	tn.fsm, tn.node = f, n
	tn.cur.Store(n)
	t.Cleanup(tn.close)
	if !n.hasState.Load() {
		if err := n.bootstrap(c.config); err != nil {
			t.Fatalf("bootstrap %s: %v", cfg.NodeID, err)
		}
	}
	for _, o := range c.nodes {
		n.members.put(member{memberMeta: memberMeta{ID: o.cfg.NodeID, Raft: o.cfg.NodeID, RPC: o.cfg.RaftAddr, HTTP: o.cfg.HTTPAdvertise}, Gossip: "alive"})
	}
}

func (c *inmemCluster) connectAll() {
	for a, ta := range c.trans {
		for b, tb := range c.trans {
			if a != b {
				ta.Connect(raft.ServerAddress(b), tb)
			}
		}
	}
}

// isolate cuts id off from every other node, both directions.
func (c *inmemCluster) isolate(id string) {
	for o, tr := range c.trans {
		if o == id {
			continue
		}
		tr.Disconnect(raft.ServerAddress(id))
		c.trans[id].Disconnect(raft.ServerAddress(o))
	}
}

// TestPartitionedMinorityNeverServes: an isolated node (a follower, then
// the leader) cannot write or pass a read barrier, while the majority goes
// on; after healing, every node converges.
func TestPartitionedMinorityNeverServes(t *testing.T) {
	c := newInmemCluster(t)
	leader := waitOneLeader(t, c.nodes, 10*time.Second)
	mustApply(t, leader.node, clientCmd("cl_a"))

	// 1. Isolated follower.
	f := followers(c.nodes, leader)[0]
	c.isolate(f.cfg.NodeID)
	mustApply(t, leader.node, createCmd("cl_a", "act_majority1"))
	err := f.node.ReadBarrier(ctxTimeout(t, time.Second))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("isolated follower read barrier: err = %v, want ErrUnavailable", err)
	}
	if action(t, f.fsm, "cl_a", "act_majority1") != nil {
		t.Fatal("isolated follower somehow has the majority's write")
	}
	// This partition cuts Raft only; the internal port still reaches the
	// leader, so the follower's write is forwarded and decided there, and
	// the follower never decides anything itself.
	if res, err := f.node.Apply(ctxTimeout(t, time.Second), createCmd("cl_a", "act_minority")); err != nil && !errors.Is(err, ErrUnavailable) {
		t.Fatalf("isolated follower apply: err = %v, want a forwarded result or ErrUnavailable", err)
	} else if err == nil && action(t, leader.fsm, "cl_a", "act_minority") == nil {
		t.Fatalf("isolated follower apply answered %+v but the leader has no such action", res)
	}
	c.connectAll()
	if err := f.node.ReadBarrier(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("healed follower read barrier: %v", err)
	}
	if action(t, f.fsm, "cl_a", "act_majority1") == nil {
		t.Fatal("healed follower: read barrier passed without the majority's write")
	}

	// 2. Isolated leader.
	leader = waitOneLeader(t, c.nodes, 10*time.Second)
	old := leader
	c.isolate(old.cfg.NodeID)
	res, err := old.node.Apply(ctxTimeout(t, 2*time.Second), createCmd("cl_a", "act_old_leader"))
	if err == nil {
		t.Fatalf("isolated leader acknowledged a write: %+v", res)
	}
	if !isOneOf(err, ErrNotLeader, ErrUnavailable, ErrOutcomeUnknown) {
		t.Fatalf("isolated leader apply: err = %v", err)
	}
	var majority []*testNode
	for _, tn := range c.nodes {
		if tn != old {
			majority = append(majority, tn)
		}
	}
	var newLeader *testNode
	waitFor(t, "a new leader in the majority", 10*time.Second, func() bool {
		for _, tn := range majority {
			if tn.node.IsLeader() {
				newLeader = tn
				return true
			}
		}
		return false
	})
	mustApply(t, newLeader.node, createCmd("cl_a", "act_majority2"))
	err = old.node.ReadBarrier(ctxTimeout(t, time.Second))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("isolated old leader read barrier: err = %v, want ErrUnavailable", err)
	}
	if old.node.IsLeader() {
		t.Fatal("isolated old leader still claims leadership")
	}

	c.connectAll()
	waitOneLeader(t, c.nodes, 10*time.Second)
	assertSameState(t, c.nodes)
	for _, tn := range c.nodes {
		if action(t, tn.fsm, "cl_a", "act_majority2") == nil {
			t.Fatalf("%s misses the majority's write after healing", tn.cfg.NodeID)
		}
	}
}
