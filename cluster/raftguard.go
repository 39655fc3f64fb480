package cluster

// raftGuard wraps the Raft transport to mitigate two open hashicorp/raft
// issues that v1.7.3 has. See docs/raft-issues.md.
//
// #695 (logs diverge): NetworkTransport, which our TCP and TLS transports
// are, hands heartbeats to Raft's heartbeat handler on the connection's
// goroutine. A heartbeat from a newer leader there sets Follower and the
// new term concurrently with the main loop; a leaderLoop that already
// checked its state then dispatches entries stamped with the new term
// (dispatchLogs reads the term afresh), which can match the new leader's
// entries of that term by index and term and survive conflict resolution.
// The guard answers such a term-raising heartbeat with an error instead, so
// a term only ever changes on Raft's main loop (the new leader's next
// AppendEntries, RequestVote...). Same-term heartbeats keep the fast path.
//
// #697 (InstallSnapshot livelock): a follower that holds divergent,
// uncommitted entries up to index L and is sent a snapshot at S <= L
// installs it but keeps its cached last log entry (L, old term): Raft's
// installSnapshot does not reset it (Figure 13 rule 7 is not implemented).
// The leader's next AppendEntries (prev = S, snapshot term) is rejected,
// the leader no longer has the log before S and sends the same snapshot
// again, forever. Deleting the follower's stored entries would not help:
// appendEntries checks the previous entry against the cached last entry
// (getLastEntry) when PrevLogEntry equals it. What does get such a
// follower out is a snapshot above L: it then wins over the cached entry
// and the next AppendEntries matches. So, on the leader side:
//
//   - The guard remembers the snapshot index installed on each peer; an
//     AppendEntries to that peer with PrevLogEntry equal to it that is
//     rejected in the same term is the livelock's signature, and
//     resp.LastLog is the follower's L. From then on it withholds (fails,
//     so Raft backs off and retries) every snapshot at or below L for that
//     peer instead of streaming one it cannot use.
//   - Node.breakSnapshotLivelocks, on the leader, commits no-op commands
//     until the applied index passes L and takes a snapshot (raft.Snapshot),
//     which Raft's next attempt sends.
//
// That needs a quorum without the follower to commit the no-ops; without
// one the follower could not catch up anyway.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/exactonce/exactonce/fsm"
)

var (
	// errSnapshotWithheld is returned to Raft instead of sending a snapshot
	// the follower has shown it cannot use (#697).
	errSnapshotWithheld = errors.New("cluster: snapshot withheld until a newer one exists (hashicorp/raft #697)")
	// errTermOffMainLoop answers a heartbeat that would raise the term on
	// the transport goroutine (#695).
	errTermOffMainLoop = errors.New("cluster: heartbeat from a newer term refused on the fast path; the term changes on Raft's main loop (hashicorp/raft #695)")
)

// raftGuard is the raft.Transport Raft is given (see the file comment).
type raftGuard struct {
	raft.Transport
	log *slog.Logger
	// raft is this node's Raft once NewRaft returned (nil before).
	raft atomic.Pointer[raft.Raft]

	// peerLastIndex asks a peer for Raft's last index on it (false: cannot
	// tell); nil in tests that run without the HTTP layer.
	peerLastIndex func(id raft.ServerID) (uint64, bool)

	// commitCap, when set, is the leader's durable log index: no
	// AppendEntries carries a commit index above it (parallelLog).
	commitCap func() uint64

	mu sync.Mutex
	// installed: snapshot index last installed on a peer, until an
	// AppendEntries to it is answered.
	installed map[raft.ServerID]uint64
	// need: a peer can only use a snapshot above this index.
	need map[raft.ServerID]uint64
	// signal pokes Node.breakSnapshotLivelocks (1 slot, never blocks).
	signal chan struct{}
}

// raftGuardPreVote is raftGuard over a transport with pre-vote, so that
// Raft sees the capability exactly when the wrapped transport has it.
type raftGuardPreVote struct{ *raftGuard }

func (g raftGuardPreVote) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return g.Transport.(raft.WithPreVote).RequestPreVote(id, target, args, resp)
}

func newRaftGuard(inner raft.Transport, log *slog.Logger) *raftGuard {
	return &raftGuard{
		Transport: inner,
		log:       log,
		installed: map[raft.ServerID]uint64{},
		need:      map[raft.ServerID]uint64{},
		signal:    make(chan struct{}, 1),
	}
}

// raftTransport is what Raft is given.
func (g *raftGuard) raftTransport() raft.Transport {
	if _, ok := g.Transport.(raft.WithPreVote); ok {
		return raftGuardPreVote{g}
	}
	return g
}

// Close closes the wrapped transport (raft.WithClose).
func (g *raftGuard) Close() error {
	if c, ok := g.Transport.(raft.WithClose); ok {
		return c.Close()
	}
	return nil
}

// SetHeartbeatHandler registers Raft's fast-path handler behind a filter
// that refuses heartbeats raising the term (#695).
func (g *raftGuard) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		g.Transport.SetHeartbeatHandler(nil)
		return
	}
	g.Transport.SetHeartbeatHandler(func(rpc raft.RPC) {
		req, ok := rpc.Command.(*raft.AppendEntriesRequest)
		r := g.raft.Load()
		if !ok || r == nil || req.Term > r.CurrentTerm() {
			rpc.Respond(nil, errTermOffMainLoop)
			return
		}
		cb(rpc)
	})
}

func (g *raftGuard) poke() {
	select {
	case g.signal <- struct{}{}:
	default:
	}
}

// AppendEntriesPipeline caps the commit index of pipelined AppendEntries
// (parallelLog).
func (g *raftGuard) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := g.Transport.AppendEntriesPipeline(id, target)
	if err != nil || g.commitCap == nil {
		return p, err
	}
	return cappedPipeline{AppendPipeline: p, durable: g.commitCap}, nil
}

// AppendEntries caps the commit index (parallelLog) and watches answers
// for the #697 livelock's signature.
func (g *raftGuard) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if g.commitCap != nil {
		args.LeaderCommitIndex = min(args.LeaderCommitIndex, g.commitCap())
	}
	err := g.Transport.AppendEntries(id, target, args, resp)
	if err != nil || resp.Term > args.Term || (args.PrevLogEntry == 0 && len(args.Entries) == 0) {
		// Failed, stale term, or a heartbeat (which checks no log).
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	snap, ok := g.installed[id]
	delete(g.installed, id)
	if resp.Success {
		delete(g.need, id)
		return nil
	}
	if !ok || args.PrevLogEntry != snap {
		return nil
	}
	// The follower rejected the entry right after the snapshot it just
	// installed: it still holds a divergent entry at or after it.
	if resp.LastLog > g.need[id] {
		g.need[id] = resp.LastLog
		g.log.Warn("follower rejects the log right after installing a snapshot (hashicorp/raft #697); withholding snapshots at or below its last index and taking a newer one",
			"peer", id, "snapshotIndex", snap, "followerLastIndex", resp.LastLog)
	}
	g.poke()
	return nil
}

// InstallSnapshot withholds snapshots the peer cannot use and records the
// ones it installed (#697).
func (g *raftGuard) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	g.mu.Lock()
	need, blocked := g.need[id]
	g.mu.Unlock()
	if blocked && args.LastLogIndex <= need {
		g.poke()
		return fmt.Errorf("%w: snapshot index %d, peer %s holds entries up to %d", errSnapshotWithheld, args.LastLogIndex, id, need)
	}
	// The monotonic-store form of #697: with raft-wal, a follower that
	// installs a snapshot at S empties its log (removeOldLogs) but keeps
	// its in-memory last log index L; if L >= S, the next AppendEntries
	// whose previous entry is L passes Raft's check and moves the commit
	// index into entries the follower no longer has: it panics ("log not
	// found"; seen in the chaos harness, scenario members, seed 2026).
	// So a snapshot is only sent above the follower's own last index, as
	// the follower reports it; otherwise the leader takes a newer one.
	if g.peerLastIndex != nil {
		if last, ok := g.peerLastIndex(id); ok && args.LastLogIndex <= last {
			g.mu.Lock()
			if last > g.need[id] {
				g.need[id] = last
			}
			g.mu.Unlock()
			g.log.Warn("withholding a snapshot at or below the follower's last index (hashicorp/raft #697, monotonic log store); taking a newer one",
				"peer", id, "snapshotIndex", args.LastLogIndex, "followerLastIndex", last)
			g.poke()
			return fmt.Errorf("%w: snapshot index %d, peer %s reports last index %d", errSnapshotWithheld, args.LastLogIndex, id, last)
		}
	}
	err := g.Transport.InstallSnapshot(id, target, args, resp, data)
	if err == nil && resp.Success {
		g.mu.Lock()
		g.installed[id] = args.LastLogIndex
		if g.need[id] < args.LastLogIndex {
			delete(g.need, id)
		}
		g.mu.Unlock()
	}
	return err
}

// maxNeed is the highest index some peer needs a snapshot above (0: none).
func (g *raftGuard) maxNeed() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	var m uint64
	for _, v := range g.need {
		m = max(m, v)
	}
	return m
}

// breakSnapshotLivelocks runs for the node's lifetime: when the guard
// reports a follower that can only use a snapshot above index L, the
// leader raises its newest snapshot above L (retried every second while
// needed and this node leads).
func (n *Node) breakSnapshotLivelocks() {
	defer n.wg.Done()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	var done uint64 // a snapshot was already raised above done-1
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.guard.signal:
		case <-retry.C:
		}
		need := n.guard.maxNeed()
		if need == 0 || need < done || n.raft.State() != raft.Leader {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
		err := n.raiseSnapshot(ctx, need)
		cancel()
		if err != nil {
			n.log.Warn("raising the snapshot above a follower's divergent entries failed; retrying", "above", need, "err", err)
			retry.Reset(time.Second)
			continue
		}
		done = need + 1
		n.log.Info("took a snapshot above a follower's divergent entries", "above", need)
	}
}

// raiseSnapshot commits no-op commands until the applied index is above
// need, then takes a snapshot.
func (n *Node) raiseSnapshot(ctx context.Context, need uint64) error {
	var last raft.ApplyFuture
	for i := 0; last == nil || n.raft.LastIndex() <= need; i++ {
		if i >= 10000 {
			break // wait for these; the retry goes on
		}
		f, err := n.propose(&fsm.Command{Type: fsm.CmdNoop})
		if err != nil {
			return err
		}
		last = f
	}
	if err := waitFuture(ctx, last); err != nil {
		return fmt.Errorf("commit no-op: %w", err)
	}
	if got := n.sm.AppliedIndex(); got <= need {
		return fmt.Errorf("applied index %d still at or below %d", got, need)
	}
	if err := waitFuture(ctx, n.raft.Snapshot()); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}
