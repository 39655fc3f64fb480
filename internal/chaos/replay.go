package chaos

import (
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
)

// Replay is the result of rebuilding a node's state from its Raft log.
type Replay struct {
	// SnapshotIndex is the index of the snapshot the replay started from
	// (0: from the start of the log, into an empty state).
	SnapshotIndex uint64
	// Entries is how many log entries were applied after the snapshot.
	Entries int
	// Applied is the replayed state's applied index.
	Applied uint64
	// Hash is the replayed state's fsm.StateHash.
	Hash []byte
}

// replayBatch is how many log entries one ApplyBatch gets.
const replayBatch = 128

// ReplayLog rebuilds a state machine from a stopped node's Raft directory
// (<data-dir>/raft: the Raft log and the file snapshot store): a
// snapshot at or below target is restored into a fresh fsm.FSM in scratch
// (the oldest after which the log is complete, or none when the log was
// never compacted), then every log entry after it up to target is
// applied, in order, and the state hash is taken. The node's files are never written:
// the directory is first copied into scratch and the copy's log is opened
// read-only. A missing entry in (snapshot, target] is an error.
func ReplayLog(raftDir string, target uint64, scratch string, log *slog.Logger) (*Replay, error) {
	cp := filepath.Join(scratch, "raft")
	if err := copyTree(raftDir, cp); err != nil {
		return nil, fmt.Errorf("copy %s: %w", raftDir, err)
	}
	// The copy stands for a data dir whose raft/ is cp: the cluster
	// package opens its log read-only.
	store, closer, err := cluster.OpenLogStoreReadOnly(scratch)
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	defer closer.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cp, 1, hclog.NewNullLogger())
	if err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	f, err := fsm.Open(fsm.Options{Path: filepath.Join(scratch, "replay.db"), NoSync: true, Logger: log, InitialMmapSize: 1 << 24})
	if err != nil {
		return nil, fmt.Errorf("open fresh state: %w", err)
	}
	defer f.Close()

	first, err := store.FirstIndex()
	if err != nil {
		return nil, fmt.Errorf("first log index: %w", err)
	}
	last, err := store.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("last log index: %w", err)
	}
	list, err := snaps.List()
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	// Start as far back as the log allows, so that as many entries as
	// possible are replayed: from an empty state when the log was never
	// compacted, else from the oldest snapshot (at or below target) after
	// which the log holds every entry, else from the newest one.
	var start *raft.SnapshotMeta
	fromEmpty := first <= 1 && last > 0
	if !fromEmpty {
		for _, meta := range list { // newest first
			if meta.Index > target {
				continue
			}
			if start == nil || meta.Index+1 >= first {
				start = meta
			}
		}
	}
	rep := &Replay{}
	if start != nil {
		_, rc, err := snaps.Open(start.ID)
		if err != nil {
			return nil, fmt.Errorf("open snapshot %s: %w", start.ID, err)
		}
		if err := f.Restore(rc); err != nil {
			return nil, fmt.Errorf("restore snapshot %s: %w", start.ID, err)
		}
		rep.SnapshotIndex = start.Index
	}
	// Raft applies the entries after the snapshot's index (those up to it
	// are in the snapshot, even where the FSM's own index lags behind it
	// because the last entries were no-ops it never sees).
	if rep.SnapshotIndex < target && (first > rep.SnapshotIndex+1 || last < target) {
		return nil, fmt.Errorf("log holds [%d, %d], cannot replay (%d, %d] after the snapshot", first, last, rep.SnapshotIndex, target)
	}
	batch := make([]*raft.Log, 0, replayBatch)
	flush := func() (err error) {
		if len(batch) == 0 {
			return nil
		}
		// The FSM stops at an entry it cannot read by panicking with
		// an *fsm.UnreadableEntryError (a node must exit there); here it
		// is the replay's error.
		defer func() {
			if p := recover(); p != nil {
				ue, ok := p.(*fsm.UnreadableEntryError)
				if !ok {
					panic(p)
				}
				err = ue
			}
		}()
		f.ApplyBatch(batch)
		batch = batch[:0]
		return nil
	}
	for i := rep.SnapshotIndex + 1; i <= target; i++ {
		l := new(raft.Log)
		if err := store.GetLog(i, l); err != nil {
			return nil, fmt.Errorf("log entry %d: %w", i, err)
		}
		if l.Index != i {
			return nil, fmt.Errorf("log entry %d holds index %d", i, l.Index)
		}
		batch = append(batch, l)
		rep.Entries++
		if len(batch) == replayBatch {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	rep.Applied = f.AppliedIndex()
	if rep.Hash, err = f.StateHash(); err != nil {
		return nil, fmt.Errorf("replayed state hash: %w", err)
	}
	return rep, nil
}

// copyTree copies the regular files under src to dst.
func copyTree(src, dst string) error {
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return copyFile(path, to, 0o600)
	})
	if err != nil {
		return fmt.Errorf("copy tree: %w", err)
	}
	return nil
}

// liveState is a stopped node's state file: applied index and state hash.
type liveState struct {
	applied uint64
	hash    []byte
}

// replayNodes replays every stopped node's Raft log up to the applied
// index of its live state file and compares the state hashes
// (log-replay-diverged on a mismatch or a log that cannot be replayed).
func replayNodes(cl *Cluster, live []liveState, log *slog.Logger) (string, []Anomaly) {
	var out []Anomaly
	same := 0
	var entries int
	for n := 1; n <= len(live); n++ {
		scratch, err := os.MkdirTemp("", fmt.Sprintf("eo-replay-node%d-", n))
		if err != nil {
			return "log replay not run: " + err.Error(), nil
		}
		// The replay logs nothing: its snapshot restores are not the nodes'.
		rep, err := ReplayLog(filepath.Join(cl.StoppedDataDir(n), "raft"), live[n-1].applied, scratch, slog.New(slog.DiscardHandler))
		if rerr := os.RemoveAll(scratch); rerr != nil {
			log.Warn("remove replay scratch dir", "dir", scratch, "err", rerr)
		}
		switch {
		case err != nil:
			out = append(out, Anomaly{Kind: KindReplayDiverged,
				Detail: fmt.Sprintf("node%d: its Raft log cannot be replayed to its applied index %d: %v", n, live[n-1].applied, err)})
		case rep.Applied != live[n-1].applied || string(rep.Hash) != string(live[n-1].hash):
			out = append(out, Anomaly{Kind: KindReplayDiverged,
				Detail: fmt.Sprintf("node%d: snapshot %d + %d log entries replayed into a fresh state give index %d hash %s; the live state file has index %d hash %s",
					n, rep.SnapshotIndex, rep.Entries, rep.Applied, hex.EncodeToString(rep.Hash)[:16], live[n-1].applied, hex.EncodeToString(live[n-1].hash)[:16])})
		default:
			same++
			entries += rep.Entries
		}
	}
	if len(out) > 0 {
		return fmt.Sprintf("log replay: DIVERGED on %d of %d nodes", len(out), len(live)), out
	}
	idx := live[0].applied
	for _, l := range live[1:] {
		if l.applied != idx {
			return fmt.Sprintf("log replay: identical on %d nodes (each at its own applied index), %d entries replayed after snapshots", same, entries), nil
		}
	}
	return fmt.Sprintf("log replay: identical on %d nodes at index %d (%d entries replayed after snapshots)", same, idx, entries), nil
}
