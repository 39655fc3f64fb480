package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// raftState is what a store holds: every entry and Raft's stable keys.
type raftState struct {
	first, last uint64
	entries     []raft.Log
	term, vterm uint64
	voteCand    []byte
}

// readRaftState reads every entry of logs and, when stable is not nil,
// the term and vote.
func readRaftState(t *testing.T, logs raft.LogStore, stable raft.StableStore) raftState {
	t.Helper()
	var s raftState
	var err error
	if s.first, err = logs.FirstIndex(); err != nil {
		t.Fatalf("first index: %v", err)
	}
	if s.last, err = logs.LastIndex(); err != nil {
		t.Fatalf("last index: %v", err)
	}
	for i := s.first; s.last > 0 && i <= s.last; i++ {
		var e raft.Log
		if err := logs.GetLog(i, &e); err != nil {
			t.Fatalf("get log %d: %v", i, err)
		}
		s.entries = append(s.entries, e)
	}
	if stable == nil {
		return s
	}
	s.term, _ = stable.GetUint64([]byte("CurrentTerm"))
	s.vterm, _ = stable.GetUint64([]byte("LastVoteTerm"))
	if v, err := stable.Get([]byte("LastVoteCand")); err == nil && len(v) > 0 {
		s.voteCand = v
	}
	return s
}

// sameEntries fails unless got holds want's entries (same index, term,
// type, data, extensions), compared over want's range.
func sameEntries(t *testing.T, what string, got, want raftState) {
	t.Helper()
	if got.first != want.first || got.last < want.last {
		t.Fatalf("%s: entries %d..%d, want %d..%d", what, got.first, got.last, want.first, want.last)
	}
	for i, w := range want.entries {
		g := got.entries[i]
		if g.Index != w.Index || g.Term != w.Term || g.Type != w.Type || !bytes.Equal(g.Data, w.Data) || !bytes.Equal(g.Extensions, w.Extensions) {
			t.Fatalf("%s: entry %d = {%d %d %v %d bytes}, want {%d %d %v %d bytes}", what, w.Index,
				g.Index, g.Term, g.Type, len(g.Data), w.Index, w.Term, w.Type, len(w.Data))
		}
	}
}

// writeLegacyStore writes a pre-WAL raft.db under raftDir with entries
// firstIdx..lastIdx, a term and a vote, and returns what it holds.
func writeLegacyStore(t *testing.T, raftDir string, firstIdx, lastIdx uint64) raftState {
	t.Helper()
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(raftDir, legacyBoltName), NoSync: true})
	if err != nil {
		t.Fatalf("open legacy store: %v", err)
	}
	var batch []*raft.Log
	for i := firstIdx; i <= lastIdx; i++ {
		batch = append(batch, &raft.Log{Index: i, Term: 1 + i/10, Type: raft.LogCommand, Data: fmt.Appendf(nil, "entry-%d", i), AppendedAt: time.Unix(int64(i), 0)})
	}
	if err := s.StoreLogs(batch); err != nil {
		t.Fatalf("store legacy logs: %v", err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("LastVoteTerm"), 6); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	want := readRaftState(t, s, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return want
}

// openMigrated opens raftDir's store through openRaftStore and returns
// what it holds.
func openMigrated(t *testing.T, raftDir string) raftState {
	t.Helper()
	s, err := openRaftStore(raftDir, true, testLogger(t), hclog.NewNullLogger(), walObservers{})
	if err != nil {
		t.Fatalf("open raft store: %v", err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Fatalf("close raft store: %v", err)
		}
	}()
	if _, ok := s.(*walStore); !ok {
		t.Fatalf("store is %T, want the WAL", s)
	}
	return readRaftState(t, s, s)
}

// TestMigrateLegacyStore: a raft.db (log starting after a compaction,
// term, vote) is copied into the WAL exactly; an interrupted migration
// (a partial wal.migrating) is redone, and a raft.db left beside a
// finished WAL is removed without being read.
func TestMigrateLegacyStore(t *testing.T) {
	raftDir := filepath.Join(t.TempDir(), "raft")
	want := writeLegacyStore(t, raftDir, 41, 3000)
	legacyCopy := filepath.Join(t.TempDir(), "raft.db.copy")
	copyFile(t, filepath.Join(raftDir, legacyBoltName), legacyCopy)

	// A crash mid-migration: wal.migrating holds part of the log.
	partial, err := openWAL(mkdir(t, filepath.Join(raftDir, walMigratingName)), true, hclog.NewNullLogger(), walObservers{})
	if err != nil {
		t.Fatalf("open partial wal: %v", err)
	}
	if err := partial.StoreLogs([]*raft.Log{{Index: 41, Term: 5, Data: []byte("partial")}}); err != nil {
		t.Fatal(err)
	}
	if err := partial.Close(); err != nil {
		t.Fatal(err)
	}

	got := openMigrated(t, raftDir)
	sameEntries(t, "migrated", got, want)
	if got.last != want.last || got.term != 7 || got.vterm != 6 || string(got.voteCand) != "n2" {
		t.Fatalf("migrated: last %d term %d voteTerm %d voteCand %q; want %d 7 6 n2", got.last, got.term, got.vterm, got.voteCand, want.last)
	}
	for _, name := range []string{legacyBoltName, walMigratingName} {
		if ok, _ := pathExists(filepath.Join(raftDir, name)); ok {
			t.Fatalf("%s still exists after the migration", name)
		}
	}

	// A crash after the commit rename, before raft.db was removed: the
	// WAL wins and raft.db goes.
	copyFile(t, legacyCopy, filepath.Join(raftDir, legacyBoltName))
	again := openMigrated(t, raftDir)
	sameEntries(t, "reopened", again, want)
	if ok, _ := pathExists(filepath.Join(raftDir, legacyBoltName)); ok {
		t.Fatal("stale raft.db beside the WAL was not removed")
	}

	// An empty raft.db (a node that never received state) migrates to an
	// empty WAL.
	emptyDir := filepath.Join(t.TempDir(), "raft")
	s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(mkdir(t, emptyDir), legacyBoltName), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if e := openMigrated(t, emptyDir); e.last != 0 || e.term != 0 {
		t.Fatalf("empty raft.db migrated to last %d term %d, want empty", e.last, e.term)
	}
}

// TestLegacyLayoutNodeUpgrades: a node whose data dir has the pre-WAL
// layout reopens with every entry, its term and vote, and keeps working;
// OpenLogStoreReadOnly reads both layouts.
func TestLegacyLayoutNodeUpgrades(t *testing.T) {
	tn := newTestNode(t, "n1")
	tn.cfg.legacyBoltStore = true
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader: %v", err)
	}
	mustApply(t, tn.node, clientCmd("cl_a"))
	for i := range 20 {
		mustApply(t, tn.node, createCmd("cl_a", fmt.Sprintf("act_%d", i)))
	}
	tn.close()
	raftDir := filepath.Join(tn.cfg.DataDir, "raft")
	legacy, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(raftDir, legacyBoltName)})
	if err != nil {
		t.Fatalf("open legacy store: %v", err)
	}
	want := readRaftState(t, legacy, legacy)
	if err := legacy.Close(); err != nil {
		t.Fatal(err)
	}
	if want.last < 22 || want.term == 0 || want.vterm == 0 || len(want.voteCand) == 0 {
		t.Fatalf("legacy store: last %d term %d vote %q in %d; want >= 22 entries, a term and a vote", want.last, want.term, want.voteCand, want.vterm)
	}

	// An offline reader sees the legacy log and cannot write to it.
	ro, closer, err := OpenLogStoreReadOnly(tn.cfg.DataDir)
	if err != nil {
		t.Fatalf("open legacy log read-only: %v", err)
	}
	sameEntries(t, "read-only legacy", readRaftState(t, ro, nil), want)
	if err := ro.StoreLogs([]*raft.Log{{Index: want.last + 1, Term: want.term}}); !errors.Is(err, errReadOnlyLogStore) {
		t.Fatalf("StoreLogs on a read-only store: %v", err)
	}
	if err := closer.Close(); err != nil {
		t.Fatal(err)
	}

	// The new code migrates at open; the node comes back with everything.
	tn.cfg.legacyBoltStore = false
	tn.mustOpen()
	if _, ok := tn.node.store.(*walStore); !ok {
		t.Fatalf("store after upgrade is %T, want the WAL", tn.node.store)
	}
	if ok, _ := pathExists(filepath.Join(raftDir, legacyBoltName)); ok {
		t.Fatal("raft.db still exists after the upgrade")
	}
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader after upgrade: %v", err)
	}
	got := readRaftState(t, tn.node.store, tn.node.store)
	sameEntries(t, "upgraded", got, want)
	// Re-elected in a later term: the migrated term was the starting point.
	if got.term <= want.term {
		t.Fatalf("term after upgrade %d, want above the migrated %d", got.term, want.term)
	}
	for i := range 20 {
		if action(t, tn.fsm, "cl_a", fmt.Sprintf("act_%d", i)) == nil {
			t.Fatalf("act_%d lost across the upgrade", i)
		}
	}
	mustApply(t, tn.node, createCmd("cl_a", "act_after"))
	last, err := tn.node.store.LastIndex()
	if err != nil {
		t.Fatal(err)
	}

	// While the node runs, the offline reader refuses rather than blocks.
	if _, _, err := OpenLogStoreReadOnly(tn.cfg.DataDir); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("read-only open of a running node's WAL: %v, want a lock error", err)
	}
	tn.close()

	ro, closer, err = OpenLogStoreReadOnly(tn.cfg.DataDir)
	if err != nil {
		t.Fatalf("open wal read-only: %v", err)
	}
	defer func() {
		if err := closer.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	rs := readRaftState(t, ro, nil)
	sameEntries(t, "read-only wal", rs, got)
	if rs.last != last {
		t.Fatalf("read-only wal last index %d, want %d", rs.last, last)
	}
	if err := ro.DeleteRange(rs.first, rs.last); !errors.Is(err, errReadOnlyLogStore) {
		t.Fatalf("DeleteRange on a read-only store: %v", err)
	}
}

// TestFSMAheadOfEmptyWALRefused: with the WAL gone but the state file
// kept, HasExistingState sees no state and open refuses.
func TestFSMAheadOfEmptyWALRefused(t *testing.T) {
	tn := newTestNode(t, "n1")
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader: %v", err)
	}
	mustApply(t, tn.node, clientCmd("cl_a"))
	tn.close()
	if err := os.RemoveAll(filepath.Join(tn.cfg.DataDir, "raft", walDirName)); err != nil {
		t.Fatal(err)
	}
	err := tn.open()
	if err == nil || !strings.Contains(err.Error(), "raft log") || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("open with the FSM ahead of an empty log: %v, want a refusal", err)
	}
}

// TestOpenLogStoreReadOnlyEmptyDir: a data dir without a Raft log is an
// error, not a new store.
func TestOpenLogStoreReadOnlyEmptyDir(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := OpenLogStoreReadOnly(dir); err == nil || !strings.Contains(err.Error(), "no raft log") {
		t.Fatalf("open empty data dir: %v", err)
	}
	if ok, _ := pathExists(filepath.Join(dir, "raft")); ok {
		t.Fatal("read-only open created the raft dir")
	}
}

// TestWALGetLogBelowFirstIndex: after a head truncation within the tail
// segment, entries below FirstIndex read as missing (raft-wal v0.4.0
// would still return them; see walStore.GetLog).
// walWithEntries opens a WAL in dir (no fsync) holding entries 1..n of
// term 1, entry i carrying the byte i.
func walWithEntries(t *testing.T, dir string, n uint64) *walStore {
	t.Helper()
	s, err := openWAL(dir, true, hclog.NewNullLogger(), walObservers{})
	if err != nil {
		t.Fatal(err)
	}
	var batch []*raft.Log
	for i := uint64(1); i <= n; i++ {
		batch = append(batch, &raft.Log{Index: i, Term: 1, Data: []byte{byte(i)}})
	}
	if err := s.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestWALGetLogBelowFirstIndex(t *testing.T) {
	s := walWithEntries(t, t.TempDir(), 10)
	defer func() {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	if err := s.DeleteRange(1, 5); err != nil {
		t.Fatal(err)
	}
	if first, _ := s.FirstIndex(); first != 6 {
		t.Fatalf("first index after truncation %d, want 6", first)
	}
	var e raft.Log
	if err := s.GetLog(3, &e); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(3) below the first index: %v (entry %d), want ErrLogNotFound", err, e.Index)
	}
	if err := s.GetLog(6, &e); err != nil || e.Index != 6 || e.Data[0] != 6 {
		t.Fatalf("GetLog(6): %v, entry %d", err, e.Index)
	}
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestWALTailTruncationSurvivesReopen: Raft deletes a log suffix when a new
// leader overwrites a follower's uncommitted entries; the WAL must reopen
// after that with every remaining entry readable and the suffix gone.
// raft-wal v0.4.0 sealed the tail segment without its index block here and
// could not read it back after a restart (hashicorp/raft-wal#31, fixed in
// v0.4.1); this fails on v0.4.0.
func TestWALTailTruncationSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := walWithEntries(t, dir, 10)
	if err := s.DeleteRange(8, 10); err != nil {
		t.Fatal(err)
	}
	// The new leader's entries replace the deleted suffix.
	if err := s.StoreLogs([]*raft.Log{{Index: 8, Term: 2, Data: []byte{80}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := openWAL(dir, true, hclog.NewNullLogger(), walObservers{})
	if err != nil {
		t.Fatalf("reopen after a tail truncation: %v", err)
	}
	defer s.Close()
	if last, err := s.LastIndex(); err != nil || last != 8 {
		t.Fatalf("last index after reopen: %d, %v; want 8", last, err)
	}
	for i := uint64(1); i <= 8; i++ {
		var e raft.Log
		if err := s.GetLog(i, &e); err != nil {
			t.Fatalf("GetLog(%d) after reopen: %v", i, err)
		}
		want := byte(i)
		if i == 8 {
			want = 80
		}
		if e.Index != i || e.Data[0] != want {
			t.Fatalf("entry %d after reopen: index %d data %v", i, e.Index, e.Data)
		}
	}
}
