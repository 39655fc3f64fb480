package chaos

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/exactonce/exactonce/fsm"
)

// replayFixture is a node's Raft directory written the way a node writes
// it: log entries in raft-wal (raft/wal), a snapshot of the live state machine in
// the file snapshot store, and the live state file.
type replayFixture struct {
	raftDir string
	entries []*raft.Log
	live    *fsm.FSM
}

// replayCommands are commands that each change the state (every one of
// them must be replayed for the hashes to agree).
func replayCommands(n int) []*fsm.Command {
	const client = "cl_replay"
	ts := int64(1_767_225_600_000) // 2026-01-01
	cmds := []*fsm.Command{{Type: fsm.CmdCreateClient, Time: ts,
		CreateClient: &fsm.CreateClient{ID: client, Name: "replay", SecretHash: bytes.Repeat([]byte{1}, 32)}}}
	for i := 0; len(cmds) < n; i++ {
		ts += 7
		id := fmt.Sprintf("act_replay%04d", i)
		cmds = append(cmds, &fsm.Command{Type: fsm.CmdCreateActions, Time: ts, ClientID: client,
			Idempotency: &fsm.Idempotency{Key: "c" + id, Fingerprint: []byte("fp" + id)},
			Create: &fsm.CreateActions{Rows: []fsm.CreateRow{{ActionID: id, SealedPayload: []byte("sealed:" + id)}},
				DefaultTTLMS: fsm.DefaultTTLMS, MaxTTLMS: 366 * fsm.DefaultTTLMS}})
		if i%2 == 1 {
			ts += 3
			cmds = append(cmds, &fsm.Command{Type: fsm.CmdConsume, Time: ts, ClientID: client,
				Idempotency: &fsm.Idempotency{Key: "k" + id, Fingerprint: []byte("fk" + id)},
				Consume:     &fsm.Consume{ActionID: id}})
		}
	}
	return cmds[:n]
}

// newReplayFixture writes n entries (a no-op among them), snapshots the
// live state after snapAt entries and compacts the log up to compactTo.
func newReplayFixture(t *testing.T, n int, snapAt, compactTo uint64) *replayFixture {
	t.Helper()
	dir := t.TempDir()
	fx := &replayFixture{raftDir: filepath.Join(dir, "raft")}
	store, err := newStoreIn(fx.raftDir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	live, err := fsm.Open(fsm.Options{Path: filepath.Join(dir, "state.db"), NoSync: true, InitialMmapSize: 1 << 22,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = live.Close() })
	fx.live = live
	snaps, err := raft.NewFileSnapshotStoreWithLogger(fx.raftDir, 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	for i, cmd := range replayCommands(n) {
		idx := uint64(i + 1)
		l := &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand}
		if idx == 5 {
			l.Type = raft.LogNoop // the FSM never sees it; replay must not trip on it
		} else if l.Data, err = fsm.EncodeCommand(cmd); err != nil {
			t.Fatal(err)
		}
		if err := store.StoreLog(l); err != nil {
			t.Fatal(err)
		}
		fx.entries = append(fx.entries, l)
		if l.Type == raft.LogCommand {
			live.Apply(l)
		}
		if idx == snapAt {
			snap, err := live.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			sink, err := snaps.Create(raft.SnapshotVersionMax, idx, 1, raft.Configuration{}, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := snap.Persist(sink); err != nil {
				t.Fatal(err)
			}
			snap.Release()
		}
	}
	if compactTo > 0 {
		if err := store.DeleteRange(1, compactTo); err != nil {
			t.Fatal(err)
		}
	}
	return fx
}

// walStore is a raft-wal store with the meta DB it opened: wal.WAL.Close
// leaves the meta DB (and its file lock) open.
type walStore struct {
	*wal.WAL
	meta *metadb.BoltMetaDB
}

// Close closes the WAL, then its meta DB.
func (s *walStore) Close() error {
	err := s.WAL.Close()
	if merr := s.meta.Close(); err == nil {
		err = merr
	}
	return err
}

// newStoreIn opens (creating) the raft-wal log store in dir/wal, where a
// node keeps it.
func newStoreIn(dir string) (*walStore, error) {
	walDir := filepath.Join(dir, "wal")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, fmt.Errorf("raft dir: %w", err)
	}
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(walDir, wal.WithMetaStore(meta))
	if err != nil {
		return nil, fmt.Errorf("open raft store: %w", err)
	}
	return &walStore{WAL: w, meta: meta}, nil
}

func liveHash(t *testing.T, f *fsm.FSM) string {
	t.Helper()
	h, err := f.StateHash()
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h)
}

func TestReplayLogGivesTheLiveState(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		snapAt, compactTo, wantAt uint64
	}{
		{"from the start of the log", 0, 0, 0},
		{"from the start of a log never compacted, past a snapshot", 40, 0, 0},
		{"from a snapshot, log compacted below it", 40, 30, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newReplayFixture(t, 100, tc.snapAt, tc.compactTo)
			rep, err := ReplayLog(fx.raftDir, fx.live.AppliedIndex(), t.TempDir(), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if rep.SnapshotIndex != tc.wantAt || rep.Entries != 100-int(tc.wantAt) || rep.Applied != 100 {
				t.Errorf("replay from snapshot %d applied %d entries to index %d; want %d, %d, 100", rep.SnapshotIndex, rep.Entries, rep.Applied, tc.wantAt, 100-tc.wantAt)
			}
			if got, want := hex.EncodeToString(rep.Hash), liveHash(t, fx.live); got != want {
				t.Fatalf("replayed hash %s, live %s", got, want)
			}
		})
	}
}

// Every entry after the snapshot matters: a replay that skipped any one of
// them would give another hash, and a log missing one cannot be replayed.
func TestReplayLogDetectsASkippedEntry(t *testing.T) {
	fx := newReplayFixture(t, 60, 20, 10)
	want := liveHash(t, fx.live)
	for skip := 21; skip <= 60; skip++ {
		if fx.entries[skip-1].Type != raft.LogCommand {
			continue
		}
		f, err := fsm.Open(fsm.Options{Path: filepath.Join(t.TempDir(), "s.db"), NoSync: true, InitialMmapSize: 1 << 22,
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range fx.entries {
			if int(l.Index) != skip {
				f.Apply(l)
			}
		}
		if got := liveHash(t, f); got == want {
			t.Errorf("skipping entry %d leaves the state hash unchanged: the comparison could not catch it", skip)
		}
		_ = f.Close()
	}

	// Entries missing after the snapshot (the log compacted past it) are
	// reported, not papered over. (raft-wal deletes only at the head or the
	// tail: a hole in the middle cannot be made.)
	store, err := newStoreIn(fx.raftDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.DeleteRange(11, 33); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ReplayLog(fx.raftDir, 60, t.TempDir(), slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a log with entries 21..33 missing was replayed without error")
	}
}
