package cluster

import (
	"math"
	"time"

	"github.com/hashicorp/raft"
)

// neverContacted is LeaderContact's answer on a node that has not heard
// from any leader since it started.
const neverContacted = time.Duration(math.MaxInt64)

// LeaderContact returns how long ago this node last heard from the leader
// (an AppendEntries or heartbeat accepted, raft.Raft.LastContact): 0 on
// the leader itself, which steps down once it loses contact with a quorum
// for its lease timeout, and neverContacted on a node that has not heard
// from a leader since it started. The HTTP layer bounds stale reads with
// it.
func (n *Node) LeaderContact() time.Duration {
	if n.raft.State() == raft.Leader {
		return 0
	}
	last := n.raft.LastContact()
	if last.IsZero() {
		return neverContacted
	}
	// raft stamps LastContact with time.Now, not Config.Now.
	return max(time.Since(last), 0)
}
