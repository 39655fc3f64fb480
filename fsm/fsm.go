package fsm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// ErrClosed is returned by reads after Close.
var ErrClosed = errors.New("fsm: closed")

// Options configures an FSM.
type Options struct {
	// Path of the bbolt file holding the state.
	Path string
	// NoSync disables fsync of state commits altogether (tests only).
	NoSync bool
	// DeferSync commits batches without fsync and fsyncs the file on Close.
	// The Raft log must then be the durable record: after an operating
	// system crash (told by the boot id) the file is discarded at Open and
	// must be rebuilt from a snapshot and the log. See durability.go.
	DeferSync bool
	// BootID identifies the running OS boot for DeferSync (default: the
	// Linux kernel's boot id; "" means unknown, which trusts no marker).
	BootID func() string
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
	// InitialMmapSize overrides the bbolt initial mmap size (default 1 GiB);
	// see DESIGN.md for why it is large.
	InitialMmapSize int
	// MappedBudget is the file-backed resident memory (bytes) above which
	// the state file's mapped pages are handed back (TrimMappedMemory and
	// the release after bulk writes). 0 means DefaultMappedBudget; a
	// negative budget releases every time, whatever is resident.
	MappedBudget int64
}

// defaultMmapSize is large so that a long-running snapshot read transaction
// rarely forces a remap (a remap waits for every open read transaction).
const defaultMmapSize = 1 << 30

// purgePerBatch bounds the expired idempotency records deleted after each batch.
const purgePerBatch = 256

// FSM is the replicated state machine: raft.BatchingFSM over a bbolt file.
// It is safe for concurrent readers while Raft applies.
type FSM struct {
	opts Options
	log  *slog.Logger

	// mu guards db: readers (View, StateHash, ApplyBatch) hold it shared
	// for their whole transaction; Restore and Close hold it exclusively to
	// swap or close the file.
	mu     sync.RWMutex
	db     *bolt.DB
	closed bool
	// writeMu is held around every write transaction (the only place bbolt
	// re-maps the file), so ReleaseMappedMemory never races a re-map.
	writeMu sync.Mutex
	// nodesSinceRelease counts the B+tree pages write transactions have
	// loaded (and so mapped) since the mapping was last released; guarded
	// by writeMu.
	nodesSinceRelease int64
	// journal is the writer's account of the journal bucket (journal.go):
	// nil until the first batch after Open or Restore loads it. Batches
	// use it under writeMu (and mu shared); Restore resets it under mu.
	journal *journalState
	// due tells the writer when retention's sweeps can next find work
	// (retention.go); nil until the first batch after Open or Restore.
	due *dueHint

	applied  atomic.Uint64
	lastTime atomic.Int64
	// clientsVersion changes after every committed batch that wrote a
	// client and after every restore: readers that cache clients compare it.
	clientsVersion atomic.Uint64
	// settled holds the most recently settled action ids (settled.go).
	settled *recentSettled

	// advMu guards advCh, a channel closed (and replaced) every time the
	// applied index advances, which wakes WaitApplied callers.
	advMu sync.Mutex
	advCh chan struct{}

	// discarded is set when Open moved an untrusted state file aside.
	discarded bool
}

var _ raft.BatchingFSM = (*FSM)(nil)

// Open opens (or creates) the state file.
func Open(opts Options) (*FSM, error) {
	if opts.Path == "" {
		return nil, errors.New("fsm: open: empty path")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.InitialMmapSize == 0 {
		opts.InitialMmapSize = defaultMmapSize
	}
	if opts.MappedBudget == 0 {
		opts.MappedBudget = DefaultMappedBudget
	}
	// A restore interrupted by a crash leaves its temp file behind.
	if err := os.Remove(opts.Path + restoreSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("fsm: remove stale restore file: %w", err)
	}
	discarded := false
	if opts.DeferSync {
		if opts.BootID == nil {
			opts.BootID = readBootID
		}
		var err error
		if discarded, err = prepareDeferredSync(opts.Path, opts.BootID); err != nil {
			return nil, err
		}
		if discarded {
			opts.Logger.Warn("fsm: the machine stopped while the state file held unsynced writes; moved it aside, the node rebuilds its state from the newest snapshot and the Raft log",
				"path", opts.Path, "moved_to", opts.Path+uncleanSuffix)
		}
	}
	db, err := openDB(opts.Path, opts)
	if err != nil {
		return nil, err
	}
	f := &FSM{opts: opts, log: opts.Logger, db: db, advCh: make(chan struct{}), discarded: discarded,
		settled: newRecentSettled()}
	if err := f.loadMeta(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	return f, nil
}

// openDB opens a bbolt file and makes sure every bucket exists.
func openDB(path string, opts Options) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         5 * time.Second,
		NoSync:          opts.NoSync || opts.DeferSync,
		InitialMmapSize: opts.InitialMmapSize,
		FreelistType:    bolt.FreelistMapType,
		// As etcd does: the freelist is rebuilt on open instead of being
		// written by every commit, which keeps commits small as the file grows.
		NoFreelistSync: true,
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return checkStateFormat(tx)
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("fsm: init %s: %w", path, err)
	}
	return db, nil
}

// loadMeta reads the applied index and FSM time from db into memory.
func (f *FSM) loadMeta(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		applied, last, err := readMeta(tx)
		if err != nil {
			return fmt.Errorf("fsm: read meta: %w", err)
		}
		f.applied.Store(applied)
		f.lastTime.Store(last)
		return nil
	})
}

// Close closes the state file. It waits for open snapshots to be released.
func (f *FSM) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	// Write the free list on a clean close, so that the next Open reads it
	// instead of rebuilding it by walking every page of the file (the file
	// is opened with NoFreelistSync, which saves a page write per commit;
	// the walk took 57 s at ten million actions). The next commit drops it
	// again, so a file left by a crash is still walked.
	f.db.NoFreelistSync = false
	if err := f.db.Update(func(*bolt.Tx) error { return nil }); err != nil {
		_ = f.db.Close()
		return fmt.Errorf("fsm: close: write the free list: %w", err)
	}
	if f.opts.DeferSync && !f.opts.NoSync {
		// Sync before the marker goes: a marker-less file must be durable.
		if err := f.db.Sync(); err != nil {
			_ = f.db.Close()
			return fmt.Errorf("fsm: close: sync: %w", err)
		}
	}
	if err := f.db.Close(); err != nil {
		return fmt.Errorf("fsm: close: %w", err)
	}
	if f.opts.DeferSync {
		return clearMarker(f.opts.Path)
	}
	return nil
}

// Discarded reports whether Open moved an untrusted state file aside
// (DeferSync after an operating-system crash), so the state starts empty
// and is rebuilt from a snapshot and the Raft log.
func (f *FSM) Discarded() bool { return f.discarded }

// Apply applies one log entry (raft.FSM).
func (f *FSM) Apply(l *raft.Log) interface{} { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies committed entries in one storage transaction. Each
// response is a *Result. Entries at or below AppliedIndex (already in the
// state file) are skipped (their response is nil).
//
// A command entry that does not decode (an unknown format version or
// command type: a newer leader wrote it) panics with an
// *UnreadableEntryError, and nothing of the batch is applied: the node
// stops at that entry instead of skipping it. A failure to commit the
// transaction panics too: the state file can no longer follow the log.
// Either way the node restarts from its last durable applied index instead
// of silently diverging from the other replicas.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		for i := range out {
			out[i] = ErrClosed
		}
		return out
	}
	if n := len(logs); n == 0 || (logs[n-1] != nil && logs[n-1].Index <= f.applied.Load()) {
		return out // all already applied (Raft replaying after a restart): no commit
	}
	var applied uint64
	var last int64
	var settled []string
	clientsChanged := false
	f.writeMu.Lock()
	defer f.writeMu.Unlock()
	err := f.db.Update(func(tx *bolt.Tx) error {
		var err error
		applied, last, err = readMeta(tx)
		if err != nil {
			return err
		}
		if f.journal == nil {
			if f.journal, err = loadJournalState(tx); err != nil {
				return fatal(err)
			}
		}
		if f.due == nil {
			f.due = newDueHint()
		}
		st, err := newStore(tx, f.journal, f.due)
		if err != nil {
			return fatal(err)
		}
		changed := false
		for i, l := range logs {
			if l == nil || l.Index <= applied {
				continue
			}
			applied = l.Index
			changed = true
			if l.Type != raft.LogCommand {
				continue
			}
			cmd, err := DecodeCommand(l.Data)
			if err != nil {
				// Never skipped: the batch rolls back and the node stops
				// (UnreadableEntryError).
				return &UnreadableEntryError{Index: l.Index, Term: l.Term, Err: err}
			}
			if cmd.Time > last {
				last = cmd.Time
			}
			if cmd.Type == CmdCreateClient || cmd.Type == CmdRevokeClient {
				clientsChanged = true
			}
			res, err := st.apply(cmd, last)
			if errors.Is(err, errFatal) {
				return err
			}
			if err != nil {
				// A read or decode failure inside one command, before it
				// wrote anything: report it for that entry. Every replica
				// holds the same bytes, so every replica answers alike.
				f.log.Error("fsm: apply command", "index", l.Index, "err", err)
				res = &Result{Code: CodeInternal, Message: "internal error", Time: last}
			}
			out[i] = res
			if err := st.endEntry(l.Index, last); err != nil {
				return err
			}
			// Retention's sweeps run after every command entry, at its
			// time, a bounded number each (retention.go).
			if err := st.sweep(last); err != nil {
				return err
			}
		}
		if !changed {
			return nil
		}
		if err := st.purgeIdempotency(last, purgePerBatch); err != nil {
			return err
		}
		if err := st.flushCounts(); err != nil {
			return err
		}
		if err := writeMeta(tx, applied, last); err != nil {
			return err
		}
		settled = st.settled
		// Before the commit: a hinted id must never be a deleted action.
		f.settled.forget(st.purged)
		ts := tx.Stats()
		f.nodesSinceRelease += ts.GetNodeCount()
		return nil
	})
	if err != nil {
		f.journal = nil // the rolled-back transaction's account of it is wrong
		f.due = nil
		if ue, ok := errors.AsType[*UnreadableEntryError](err); ok {
			f.log.Error("fsm: stopping at a log entry this build cannot apply; upgrade this node (docs/upgrade.md)",
				"index", ue.Index, "term", ue.Term, "err", ue.Err)
			panic(ue)
		}
		f.log.Error("fsm: apply batch failed", "err", err)
		panic(fmt.Sprintf("fsm: apply batch: %v", err))
	}
	if f.nodesSinceRelease >= releaseAfterNodes {
		// Still under writeMu: no re-map can happen (see ReleaseMappedMemory).
		if _, err := f.trimMappedPages(); err != nil {
			f.log.Warn("fsm: release mapped memory", "err", err)
		}
	}
	if clientsChanged {
		f.clientsVersion.Add(1) // after the commit: see ClientsVersion
	}
	f.settled.add(settled) // after the commit: a hinted view shows the action settled
	if applied > f.applied.Load() {
		f.lastTime.Store(last)
		f.applied.Store(applied)
		f.wake()
	}
	return out
}

// wake releases every WaitApplied caller so it rechecks the applied index.
func (f *FSM) wake() {
	f.advMu.Lock()
	close(f.advCh)
	f.advCh = make(chan struct{})
	f.advMu.Unlock()
}

// AppliedIndex is the index of the last log entry in the state file.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// ClientsVersion changes whenever the stored clients may have changed (a
// committed client create or revoke, a restore). It changes only after the
// change is visible to new views, so a cache that reads the version, then
// the client, and tags the entry with that version never keeps a stale entry
// past the next version check.
func (f *FSM) ClientsVersion() uint64 { return f.clientsVersion.Load() }

// LastTime is the FSM clock: the largest leader stamp applied (Unix ms).
func (f *FSM) LastTime() int64 { return f.lastTime.Load() }

// WaitApplied blocks until AppliedIndex >= index or done is closed.
// It returns false when done closed first.
func (f *FSM) WaitApplied(index uint64, done <-chan struct{}) bool {
	for {
		f.advMu.Lock()
		ch := f.advCh
		f.advMu.Unlock()
		// Checked after taking the channel: an advance after this check
		// closes ch, so no wake-up is lost.
		if f.applied.Load() >= index {
			return true
		}
		select {
		case <-ch:
		case <-done:
			return f.applied.Load() >= index
		}
	}
}

// View runs fn against a consistent read-only view of the state. The *View
// is valid only inside fn; values it returns are copies and stay valid.
// fn must not call View, StateHash or Snapshot again (a pending Restore
// would deadlock the nested shared lock) and should be short: a Restore
// waits for running views.
func (f *FSM) View(fn func(v *View) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return ErrClosed
	}
	return f.db.View(func(tx *bolt.Tx) error {
		return fn(&View{tx: tx})
	})
}

// closeQuietly closes c, ignoring the error (for readers we only consume).
func closeQuietly(c io.Closer) { _ = c.Close() }
