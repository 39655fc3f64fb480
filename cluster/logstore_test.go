package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
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

// TestBoltLayoutRefused: a data dir holding raft/raft.db (the raft-boltdb
// layout of development builds before format version 1) is refused with a
// clear error, by the node and by the offline reader, and left as it was:
// starting beside it on an empty WAL would throw its log away.
func TestBoltLayoutRefused(t *testing.T) {
	tn := newTestNode(t, "n1")
	raftDir := mkdir(t, filepath.Join(tn.cfg.DataDir, "raft"))
	bolt := filepath.Join(raftDir, boltLayoutName)
	if err := os.WriteFile(bolt, []byte("raft-boltdb"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := tn.open()
	if err == nil || !strings.Contains(err.Error(), "raft.db") || !strings.Contains(err.Error(), "format version 1") {
		t.Fatalf("open with raft.db: %v, want a refusal naming raft.db", err)
	}
	if _, _, err := OpenLogStoreReadOnly(tn.cfg.DataDir); err == nil || !strings.Contains(err.Error(), "raft.db") {
		t.Fatalf("read-only open with raft.db: %v, want a refusal", err)
	}
	if ok, _ := pathExists(filepath.Join(raftDir, walDirName)); ok {
		t.Fatal("a WAL was created beside raft.db")
	}
	if b, err := os.ReadFile(bolt); err != nil || string(b) != "raft-boltdb" {
		t.Fatalf("raft.db changed: %q %v", b, err)
	}
}

// TestOpenLogStoreReadOnly: the offline reader refuses (rather than
// blocks) while the node runs; once it stopped, it reads every entry the
// node wrote and refuses writes.
func TestOpenLogStoreReadOnly(t *testing.T) {
	tn := newTestNode(t, "n1")
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader: %v", err)
	}
	mustApply(t, tn.node, clientCmd("cl_a"))
	for i := range 20 {
		mustApply(t, tn.node, createCmd("cl_a", fmt.Sprintf("act_%d", i)))
	}
	if _, _, err := OpenLogStoreReadOnly(tn.cfg.DataDir); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("read-only open of a running node's WAL: %v, want a lock error", err)
	}
	want := readRaftState(t, tn.node.store, tn.node.store)
	if want.last < 22 {
		t.Fatalf("last index %d, want >= 22", want.last)
	}
	tn.close()

	ro, closer, err := OpenLogStoreReadOnly(tn.cfg.DataDir)
	if err != nil {
		t.Fatalf("open wal read-only: %v", err)
	}
	defer func() {
		if err := closer.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	rs := readRaftState(t, ro, nil)
	sameEntries(t, "read-only wal", rs, want)
	if rs.last != want.last {
		t.Fatalf("read-only wal last index %d, want %d", rs.last, want.last)
	}
	if err := ro.StoreLogs([]*raft.Log{{Index: rs.last + 1, Term: 1}}); !errors.Is(err, errReadOnlyLogStore) {
		t.Fatalf("StoreLogs on a read-only store: %v", err)
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
