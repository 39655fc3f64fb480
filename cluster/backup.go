package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"

	"github.com/exactonce/exactonce/fsm"
)

// Backups (docs/operations.md, "Backups"; DESIGN.md, "Backup and
// restore"): BeginBackup takes a consistent copy of the state on whichever
// node is asked, after a linearizable read barrier; Config.Seed starts a
// fresh node from such a copy by writing it into its snapshot store as
// the newest Raft snapshot, from which the state machine is restored and
// later nodes are caught up by Raft's snapshot install.

// Backup is a consistent copy of the whole state being taken.
type Backup struct {
	*fsm.StateCopy
	// Term is the Raft term of the entry at StateCopy.AppliedIndex.
	Term uint64
}

// BeginBackup waits for a linearizable read barrier, then begins a copy of
// the local state: it holds every write acknowledged before the call (the
// barrier's read index is at or after their commit) and is the state after
// one exact log index, the same on every replica. A follower serves it as
// well as the leader, which keeps the reading of the whole file off the
// node every write goes through. Close the copy when done.
func (n *Node) BeginBackup(ctx context.Context) (*Backup, error) {
	if n.fsm == nil {
		return nil, errors.New("cluster: backup: no state machine file")
	}
	if err := n.ReadBarrier(ctx); err != nil {
		return nil, fmt.Errorf("cluster: backup: %w", err)
	}
	c, err := n.fsm.BeginCopy()
	if err != nil {
		return nil, fmt.Errorf("cluster: backup: %w", err)
	}
	return &Backup{StateCopy: c, Term: n.termAt(c.AppliedIndex)}, nil
}

// ID is this node's id.
func (n *Node) ID() string { return string(n.nodeID) }

// termAt is the term of the log entry at index: from the log, else from a
// snapshot ending there, else (a compacted entry) the current term.
func (n *Node) termAt(index uint64) uint64 {
	var l raft.Log
	if err := n.plog.GetLog(index, &l); err == nil {
		return l.Term
	}
	if list, err := n.snaps.List(); err == nil {
		for _, m := range list {
			if m.Index == index {
				return m.Term
			}
		}
	}
	return n.raft.CurrentTerm()
}

// Seed is the state a fresh node starts from (Config.Seed).
type Seed struct {
	// Index is the state's applied index (the last log index it holds).
	Index uint64
	// State streams the state machine's snapshot bytes (fsm Persist's
	// format: the bbolt file). An error from it (a checksum found wrong at
	// its end) cancels the seed.
	State io.Reader
}

// seedTerm picks the term of a seed's snapshot: random, in [2, 2^31].
// The node's stored current term is set to it too, so its first election
// is the term after it and no entry after the snapshot has a lower term
// (Raft's up-to-date check compares last terms). It is random so that two
// nodes seeded by mistake (--restore given to more than one node) hold
// the same index under different terms: when they meet, the snapshot or
// entries of one fail the other's log-matching check and are replaced by
// Raft (the lower term's writes are lost) instead of being taken as equal
// and diverging silently, which identical terms would allow. The saved
// cluster's terms mean nothing to the new one.
func seedTerm() uint64 {
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics on an unusable source)
	return uint64(binary.BigEndian.Uint32(b[:])>>1) + 2
}

// raftKeyCurrentTerm is the stable-store key hashicorp/raft keeps its
// current term under (as logstore.go's migration copies it).
var raftKeyCurrentTerm = []byte("CurrentTerm")

// seed writes cfg.Seed into the empty snapshot store as a snapshot at the
// seed's index whose configuration is this node alone, a voter. Raft then
// starts from it (lastApplied, configuration), restoreNewerSnapshot loads
// it into the state machine, and the log continues after its index; nodes
// that join later get it through Raft's snapshot install.
func (n *Node) seed(existing bool, trans raft.Transport) error {
	s := n.cfg.Seed
	if existing || n.sm.AppliedIndex() > 0 {
		return errors.New("cluster: seed: this node already holds state; a seed is only for a fresh node")
	}
	if s.Index == 0 {
		return errors.New("cluster: seed: index 0 (an empty state)")
	}
	term := seedTerm()
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: n.nodeID, Address: trans.LocalAddr()}}}
	sink, err := n.snaps.Create(raft.SnapshotVersionMax, s.Index, term, conf, s.Index, trans)
	if err != nil {
		return fmt.Errorf("cluster: seed: create snapshot: %w", err)
	}
	if _, err := io.Copy(sink, s.State); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("cluster: seed: write snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("cluster: seed: close snapshot: %w", err)
	}
	if err := n.store.SetUint64(raftKeyCurrentTerm, term); err != nil {
		return fmt.Errorf("cluster: seed: set the current term: %w", err)
	}
	n.log.Info("seeded the raft snapshot store from a backup", "index", s.Index, "term", term, "snapshot", sink.ID())
	return nil
}
