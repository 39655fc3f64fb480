package fsm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// purgedState builds, at path, a state that held 20,000 actions of which
// all but the last 100 were consumed and then deleted by retention, and
// returns its hash, applied index and FSM time.
func purgedState(t *testing.T, path string) (hash string, applied uint64, now int64) {
	t.Helper()
	h := &harness{t: t, f: openFSM(t, path)}
	h.mustOK(clientCmd(clA, t0))
	h.mustOK(retentionCmd(t0, 1000))
	const n, kept = 20000, 100
	now = t0
	for i := 0; i < n; i += 1000 {
		c := &CreateActions{CSV: true, MaxActions: -1}
		for j := i; j < i+1000; j++ {
			c.Rows = append(c.Rows, CreateRow{Row: j - i + 2, ActionID: fmt.Sprintf("act_%09d", j), SealedPayload: benchPayload})
		}
		now++
		h.mustOK(&Command{Type: CmdCreateActions, Time: now, ClientID: clA, Create: c})
	}
	var logs []*raft.Log
	for j := 0; j < n-kept; j++ {
		h.idx++
		now++
		logs = append(logs, entry(t, h.idx, consumeCmd(clA, now, fmt.Sprintf("act_%09d", j))))
		if len(logs) == 256 {
			h.f.ApplyBatch(logs)
			logs = nil
		}
	}
	h.f.ApplyBatch(logs)
	// Entries after the retention: each sweep deletes up to 64 actions.
	now += 2000
	for i := 0; i < (n-kept)/sweepBudget+2; i++ {
		now++
		h.mustOK(noopCmd(now))
	}
	s := statsOf(t, h.f, clA, now)
	if s.Purged != n-kept || s.Total != kept {
		t.Fatalf("stats after the purge: purged %d total %d, want %d and %d", s.Purged, s.Total, n-kept, kept)
	}
	hash = hashOf(t, h.f)
	applied = h.f.AppliedIndex()
	if err := h.f.Close(); err != nil {
		t.Fatal(err)
	}
	return hash, applied, now
}

// TestCompactGivesSpaceBack: a state whose actions were mostly deleted
// gets much smaller, holds the same state (hash, applied index, reads) and
// takes writes afterwards.
func TestCompactGivesSpaceBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	hash, applied, now := purgedState(t, path)
	res, err := Compact(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("state file %d -> %d bytes", res.SizeBefore, res.SizeAfter)
	if res.SizeAfter*4 > res.SizeBefore {
		t.Errorf("state file %d -> %d bytes, want it at least 4 times smaller", res.SizeBefore, res.SizeAfter)
	}
	if st, err := os.Stat(path); err != nil || st.Size() != res.SizeAfter {
		t.Errorf("state file on disk: %v %v, want %d bytes", st, err, res.SizeAfter)
	}
	if res.AppliedIndex != applied {
		t.Errorf("AppliedIndex = %d, want %d", res.AppliedIndex, applied)
	}
	if _, err := os.Stat(path + compactSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp file left behind: %v", err)
	}
	if !syncedFreelist(t, path) {
		t.Error("the compacted file holds no free list: the next open walks every page")
	}
	h := &harness{t: t, f: openFSM(t, path)}
	h.idx = h.f.AppliedIndex()
	if h.idx != applied {
		t.Errorf("reopened AppliedIndex = %d, want %d", h.idx, applied)
	}
	if got := hashOf(t, h.f); got != hash {
		t.Errorf("state hash after compact %s, want %s", got, hash)
	}
	if a := h.action(clA, "act_000019999"); a == nil || a.SealedPayload == nil {
		t.Errorf("kept open action after compact: %+v", a)
	}
	h.mustOK(consumeCmd(clA, now+1, "act_000019999"))
	h.mustOK(createCmd(clA, now+2, CreateRow{ActionID: "act_100000000"}))
	checkNoDanglingKeys(t, h.f)
}

// TestCompactRefusesAnOpenFile: while a node holds the state file, compact
// says so and leaves it alone.
func TestCompactRefusesAnOpenFile(t *testing.T) {
	h := newHarness(t)
	h.mustOK(createCmd(clA, t0+1, CreateRow{ActionID: "act_1"}))
	before := hashOf(t, h.f)
	_, err := Compact(h.f.opts.Path, 100*time.Millisecond)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("Compact of an open state file: %v, want ErrInUse", err)
	}
	if got := hashOf(t, h.f); got != before {
		t.Error("state changed")
	}
	if _, err := os.Stat(h.f.opts.Path + compactSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp file left behind: %v", err)
	}
}

// TestCompactRefusesAnUncleanStop: a state file whose node did not stop
// cleanly (its open marker is there) is left for the node to judge.
func TestCompactRefusesAnUncleanStop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(Options{Path: path, DeferSync: true, BootID: func() string { return "boot-1" }, InitialMmapSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// Stop without Close, as a killed process does: the marker stays.
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Compact(path, time.Second); !errors.Is(err, ErrUncleanStop) {
		t.Fatalf("Compact after an unclean stop: %v, want ErrUncleanStop", err)
	}
}
