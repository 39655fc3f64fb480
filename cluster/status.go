package cluster

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/raft"
)

// Status is an operator's view of this node and the cluster.
type Status struct {
	NodeID string `json:"nodeId"`
	// Version is this node's build version (Config.Version).
	Version string `json:"version,omitempty"`
	// State is Raft's state: Follower, Candidate, Leader or Shutdown.
	State string `json:"state"`
	// Ready is Ready(); IsLeader is IsLeader().
	Ready    bool `json:"ready"`
	IsLeader bool `json:"isLeader"`
	// LeaderID and LeaderHTTP identify the leader ("" when unknown).
	LeaderID     string `json:"leaderId"`
	LeaderRaft   string `json:"leaderRaftAddress"`
	LeaderHTTP   string `json:"leaderHttp"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commitIndex"`
	LastIndex    uint64 `json:"lastIndex"`
	AppliedIndex uint64 `json:"appliedIndex"`
	// StateHash is the hex SHA-256 of this node's replicated state at
	// AppliedIndex (read together): nodes at equal applied indexes must
	// report equal hashes. Computing it reads the whole state, so it is
	// only filled when asked for (Status withHash).
	StateHash string `json:"stateHash,omitempty"`
	// LastContact is when a follower last heard from the leader (zero on
	// the leader or when never).
	LastContact time.Time `json:"lastContact,omitzero"`
	// LeadershipRounds counts the leadership confirmations (VerifyLeader
	// quorum rounds) this node ran as leader for linearizable reads, and
	// ReadIndexRounds the read indexes it asked the leader for as a
	// follower. Each round serves every read waiting when it began, so
	// reads divided by rounds tells how well they coalesce.
	LeadershipRounds uint64 `json:"leadershipRounds"`
	ReadIndexRounds  uint64 `json:"readIndexRounds"`
	// Members are the servers of the Raft configuration plus gossip
	// members not (yet) in it.
	Members []MemberStatus `json:"members"`
}

// MemberStatus is one server of the cluster.
type MemberStatus struct {
	ID string `json:"id"`
	// Suffrage is "voter", "nonvoter", "staging", or "none" for a gossip
	// member that is not in the Raft configuration.
	Suffrage    string `json:"suffrage"`
	RaftAddress string `json:"raftAddress"`
	HTTP        string `json:"http,omitempty"`
	// Gossip is the memberlist health: "alive", "gone" (failed or left),
	// or "unknown" when gossip has not seen it.
	Gossip string `json:"gossip"`
	Leader bool   `json:"leader"`
	// Version is the member's build version as its gossip metadata
	// gives it ("" when gossip has not seen it, or from a node of a
	// release before versions were advertised).
	Version string `json:"version,omitempty"`
}

// Status reports this node's Raft state and the cluster membership, and,
// with withHash, the state hash (which reads the whole state: seconds of
// CPU and every page of the state file with millions of actions).
func (n *Node) Status(ctx context.Context, withHash bool) (Status, error) {
	leaderAddr, leaderID := n.raft.LeaderWithID()
	st := Status{
		NodeID:      string(n.nodeID),
		Version:     n.cfg.Version,
		State:       n.raft.State().String(),
		Ready:       n.Ready(),
		IsLeader:    n.IsLeader(),
		LeaderID:    string(leaderID),
		LeaderRaft:  string(leaderAddr),
		LeaderHTTP:  n.LeaderHTTP(),
		Term:        n.raft.CurrentTerm(),
		CommitIndex: n.raft.CommitIndex(),
		LastIndex:   n.raft.LastIndex(),

		LeadershipRounds: n.verifier.rounds.Load(),
		ReadIndexRounds:  n.remote.rounds.Load(),
	}
	if withHash {
		hash, applied, err := n.sm.StateHashAt()
		if err != nil {
			return st, fmt.Errorf("cluster: status: %w", err)
		}
		st.StateHash, st.AppliedIndex = hex.EncodeToString(hash), applied
	} else {
		st.AppliedIndex = n.sm.AppliedIndex()
	}
	if st.State != raft.Leader.String() {
		st.LastContact = n.raft.LastContact()
	}
	cf := n.raft.GetConfiguration()
	if err := waitFuture(ctx, cf); err != nil {
		return st, fmt.Errorf("cluster: status: raft configuration: %w", err)
	}
	seen := map[string]bool{}
	for _, s := range cf.Configuration().Servers {
		ms := MemberStatus{
			ID:          string(s.ID),
			Suffrage:    suffrageName(s.Suffrage),
			RaftAddress: string(s.Address),
			Gossip:      "unknown",
			Leader:      s.ID == leaderID,
		}
		if m, ok := n.members.get(string(s.ID)); ok {
			ms.HTTP = m.HTTP
			ms.Gossip = m.Gossip
			ms.Version = m.Version
		}
		if s.ID == n.nodeID {
			ms.HTTP = n.cfg.HTTPAdvertise
			ms.Version = n.cfg.Version
			if n.ml == nil {
				ms.Gossip = gossipAlive
			}
		}
		seen[ms.ID] = true
		st.Members = append(st.Members, ms)
	}
	for _, m := range n.members.all() {
		// Gossip members outside the configuration are shown while alive
		// (about to be added); gone ones (removed servers) are not.
		if seen[m.ID] || m.Gossip != gossipAlive {
			continue
		}
		st.Members = append(st.Members, MemberStatus{ID: m.ID, Suffrage: "none", RaftAddress: m.Raft, HTTP: m.HTTP, Gossip: m.Gossip, Version: m.Version})
	}
	return st, nil
}

func suffrageName(s raft.ServerSuffrage) string {
	switch s {
	case raft.Voter:
		return "voter"
	case raft.Nonvoter:
		return "nonvoter"
	case raft.Staging:
		return "staging"
	}
	return "unknown"
}

// TransferLeadership hands leadership to the server toID ("" lets Raft
// pick the most up-to-date voter). On a follower the call is carried to
// the leader over the cluster service.
func (n *Node) TransferLeadership(ctx context.Context, toID string) error {
	return n.onLeader(ctx, rpcTransfer, toID, n.transferHere)
}

// RemoveServer removes a server from the Raft configuration (the only way
// a member leaves: failures never remove members automatically). Only the
// ready leader can do it; on a follower the call is carried to the leader.
// Removing the leader itself steps it down.
//
// Stop the node before removing it: a member that is still alive in gossip
// is added back (as a nonvoter) by the leader's reconciliation, as in
// Consul, where remove-peer is for servers that are gone.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	return n.onLeader(ctx, rpcRemove, id, n.removeHere)
}

// onLeader runs an operator call here when this node leads, else on the
// leader (one hop: the leader runs it with here and never forwards).
func (n *Node) onLeader(ctx context.Context, path, id string, here func(context.Context, string) error) error {
	err := here(ctx, id)
	if !errors.Is(err, ErrNotLeader) {
		return err
	}
	_, leader := n.raft.LeaderWithID()
	if leader == "" || leader == n.nodeID {
		return fmt.Errorf("cluster: no leader known: %w", ErrUnavailable)
	}
	if err := n.callPeer(ctx, string(leader), http.MethodPost, path, serverRequest{ID: id}, nil); err != nil {
		var pe *peerError
		if errors.As(err, &pe) {
			if pe.Code == rpcErrFailed {
				return fmt.Errorf("cluster: on leader %s: %s", leader, pe.Message)
			}
			return fmt.Errorf("cluster: on leader %s: %w", leader, err)
		}
		return fmt.Errorf("cluster: call leader %s: %w (%w)", leader, ErrUnavailable, err)
	}
	return nil
}

// transferHere is TransferLeadership on this node: ErrNotLeader unless it
// leads.
func (n *Node) transferHere(ctx context.Context, toID string) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	var f raft.Future
	if toID == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		addr, err := n.serverAddress(ctx, raft.ServerID(toID))
		if err != nil {
			return err
		}
		f = n.raft.LeadershipTransferToServer(raft.ServerID(toID), addr)
	}
	if err := waitFuture(ctx, f); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return ErrNotLeader
		}
		return fmt.Errorf("cluster: transfer leadership: %w", err)
	}
	return nil
}

// removeHere is RemoveServer on this node: ErrNotLeader unless it leads.
func (n *Node) removeHere(ctx context.Context, id string) error {
	if err := n.waitTermReady(ctx); err != nil {
		return err
	}
	if _, err := n.serverAddress(ctx, raft.ServerID(id)); err != nil {
		return err
	}
	if err := waitFuture(ctx, n.raft.RemoveServer(raft.ServerID(id), 0, 0)); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return ErrNotLeader
		}
		return fmt.Errorf("cluster: remove server %s: %w", id, err)
	}
	n.log.Info("removed server from raft configuration", "member", id)
	return nil
}

// ErrUnknownServer is returned for a server id that is not in the Raft
// configuration.
var ErrUnknownServer = errors.New("cluster: no such server in the raft configuration")

// serverAddress looks a server up in the current Raft configuration.
func (n *Node) serverAddress(ctx context.Context, id raft.ServerID) (raft.ServerAddress, error) {
	cf := n.raft.GetConfiguration()
	if err := waitFuture(ctx, cf); err != nil {
		return "", fmt.Errorf("cluster: raft configuration: %w", err)
	}
	for _, s := range cf.Configuration().Servers {
		if s.ID == id {
			return s.Address, nil
		}
	}
	return "", fmt.Errorf("%w: %q", ErrUnknownServer, id)
}
