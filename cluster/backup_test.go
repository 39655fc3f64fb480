package cluster

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestBackupSeedsAFreshNode: a backup begun on a node is the state at its
// applied index, unchanged by the writes applied while it is written; a
// fresh node seeded with it starts from that state as a one-node cluster
// and takes writes after it. A seed is refused on a node that holds state
// and when the state's index is not the seed's.
func TestBackupSeedsAFreshNode(t *testing.T) {
	src := newTestNode(t, "src")
	src.mustOpen()
	if err := src.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	mustApply(t, src.node, clientCmd("cl_a"))
	mustApply(t, src.node, createCmd("cl_a", "act_1"))
	mustApply(t, src.node, createCmd("cl_a", "act_2"))
	mustApply(t, src.node, consumeCmd("cl_a", "act_1"))

	bk, err := src.node.BeginBackup(ctxTimeout(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if bk.AppliedIndex != src.fsm.AppliedIndex() || bk.Term != src.node.raft.CurrentTerm() || bk.Size <= 0 {
		t.Fatalf("backup at index %d term %d size %d; the node applied %d in term %d",
			bk.AppliedIndex, bk.Term, bk.Size, src.fsm.AppliedIndex(), src.node.raft.CurrentTerm())
	}
	// Writes go on while the copy is open; it keeps the state it began at.
	mustApply(t, src.node, createCmd("cl_a", "act_3"))
	mustApply(t, src.node, consumeCmd("cl_a", "act_2"))
	var state bytes.Buffer
	if n, err := bk.WriteTo(&state); err != nil || n != bk.Size {
		t.Fatalf("write the copy: %d of %d bytes: %v", n, bk.Size, err)
	}
	if err := bk.Close(); err != nil {
		t.Fatal(err)
	}

	dst := newTestNode(t, "dst")
	dst.cfg.Seed = &Seed{Index: bk.AppliedIndex, State: bytes.NewReader(state.Bytes())}
	dst.mustOpen()
	if err := dst.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if a := action(t, dst.fsm, "cl_a", "act_1"); a == nil || a.ConsumedAt == 0 {
		t.Fatalf("act_1 after the seed: %+v, want consumed", a)
	}
	if a := action(t, dst.fsm, "cl_a", "act_2"); a == nil || a.ConsumedAt != 0 {
		t.Fatalf("act_2 after the seed: %+v, want open (consumed after the backup began)", a)
	}
	if a := action(t, dst.fsm, "cl_a", "act_3"); a != nil {
		t.Fatalf("act_3, created after the backup began, is in the seeded state: %+v", a)
	}
	if got := dst.fsm.AppliedIndex(); got <= bk.AppliedIndex {
		t.Fatalf("seeded node applied %d, want past the seed's %d (its own barrier)", got, bk.AppliedIndex)
	}
	if term := dst.node.raft.CurrentTerm(); term < 3 {
		t.Fatalf("seeded node's term %d: want past the seed's random term (at least 2)", term)
	}
	mustApply(t, dst.node, createCmd("cl_a", "act_4"))
	if a := action(t, dst.fsm, "cl_a", "act_4"); a == nil {
		t.Fatal("the seeded node did not take a write")
	}

	// A node holding state refuses a seed, and the state is kept.
	dst.close()
	dst.cfg.Seed = &Seed{Index: bk.AppliedIndex, State: bytes.NewReader(state.Bytes())}
	if err := dst.open(); err == nil || !strings.Contains(err.Error(), "already holds state") {
		t.Fatalf("seed on a node with state: %v", err)
	}
	// A seed whose index is not the state's applied index.
	bad := newTestNode(t, "bad")
	bad.cfg.Seed = &Seed{Index: bk.AppliedIndex + 5, State: bytes.NewReader(state.Bytes())}
	if err := bad.open(); err == nil || !strings.Contains(err.Error(), "applied index") {
		t.Fatalf("seed with another index: %v", err)
	}
}
