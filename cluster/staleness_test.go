package cluster

import (
	"testing"
	"time"
)

// TestLeaderContact: 0 on the leader, within a few heartbeats on a
// connected follower, and growing without bound on a follower cut off
// from the leader.
func TestLeaderContact(t *testing.T) {
	c := newInmemCluster(t)
	leader := waitOneLeader(t, c.nodes, 10*time.Second)
	if d := leader.node.LeaderContact(); d != 0 {
		t.Fatalf("leader: LeaderContact = %v, want 0", d)
	}
	f := followers(c.nodes, leader)[0]
	waitFor(t, "a follower in contact with the leader", 5*time.Second, func() bool {
		return f.node.LeaderContact() < testHeartbeat
	})
	c.isolate(f.cfg.NodeID)
	waitFor(t, "the isolated follower's contact to age past 3 heartbeats", 10*time.Second, func() bool {
		return f.node.LeaderContact() > 3*testHeartbeat
	})
	c.connectAll()
	waitFor(t, "the healed follower back in contact", 10*time.Second, func() bool {
		d := f.node.LeaderContact()
		return d < testHeartbeat
	})
}
