package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// restoreSuffix names the temp file a snapshot is streamed into.
const restoreSuffix = ".restore"

// Snapshot returns a consistent point-in-time copy of the state (raft.FSM).
// It only begins a bbolt read transaction, so it is cheap on Raft's FSM
// goroutine; Persist streams that transaction's pages while applies go on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("fsm: snapshot: begin: %w", err)
	}
	return &snapshot{tx: tx, index: f.applied.Load()}, nil
}

// snapshot is an open read transaction waiting to be persisted.
type snapshot struct {
	tx    *bolt.Tx
	index uint64
	once  sync.Once
}

// Persist writes the whole bbolt file as of the snapshot to sink.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.tx.WriteTo(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("fsm: close snapshot sink: %w", err)
	}
	return nil
}

// Release ends the read transaction. Safe to call more than once.
func (s *snapshot) Release() {
	s.once.Do(func() { _ = s.tx.Rollback() })
}

// Restore replaces the whole state with a snapshot, atomically for readers.
// The snapshot is streamed into a file beside Options.Path, opened and
// checked, then swapped in under the exclusive lock and renamed over the
// old file. AppliedIndex and LastTime come from the restored file.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer closeQuietly(rc)
	tmp := f.opts.Path + restoreSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("fsm: restore: remove stale %s: %w", tmp, err)
	}
	if err := writeFileSynced(tmp, rc); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("fsm: restore: %w", err)
	}
	db, err := openDB(tmp, f.opts)
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("fsm: restore: open snapshot: %w", err)
	}
	var applied uint64
	var last int64
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		applied, last, err = readMeta(tx)
		return err
	})
	if err != nil {
		_ = db.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("fsm: restore: snapshot meta: %w", err)
	}

	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		_ = db.Close()
		_ = os.Remove(tmp)
		return ErrClosed
	}
	// The open handle follows the inode, so renaming under it is safe; the
	// old file's inode lives on until the old handle is closed below.
	if err := os.Rename(tmp, f.opts.Path); err != nil {
		f.mu.Unlock()
		_ = db.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("fsm: restore: rename: %w", err)
	}
	syncDir(filepath.Dir(f.opts.Path))
	old := f.db
	f.db = db
	f.journal = nil // the next batch reads the restored journal
	f.due = nil
	f.clientsVersion.Add(1)
	f.applied.Store(applied)
	f.lastTime.Store(last)
	f.mu.Unlock()
	f.wake()
	// Close the replaced file in the background: bbolt's Close waits for
	// every read transaction on it, and a snapshot of the old state may be
	// held by Raft's snapshot goroutine, which itself waits for Raft's main
	// loop, which waits for this restore (a follower installing a snapshot).
	// Waiting here deadlocked a node for good in the chaos harness. The old
	// handle follows its own (renamed-over) inode, so it harms nothing.
	go func() {
		if err := old.Close(); err != nil {
			f.log.Warn("fsm: close replaced state file", "err", err)
		}
	}()
	f.log.Info("fsm: restored snapshot", "applied_index", applied, "last_time", last)
	return nil
}

// writeFileSynced copies r into a new file at path and fsyncs it.
func writeFileSynced(path string, r io.Reader) error {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := io.Copy(fh, r); err != nil {
		_ = fh.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := fh.Sync(); err != nil {
		_ = fh.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// syncDir fsyncs a directory so a rename in it is durable (best effort).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// StateHash is a SHA-256 over the whole replicated state (not the applied
// index), equal on nodes that applied the same log. Every bucket's name and
// every key and value are hashed, length-prefixed, in bbolt's sorted order;
// the FSM time is included.
func (f *FSM) StateHash() ([]byte, error) {
	h, _, err := f.StateHashAt()
	return h, err
}

// StateHashAt is StateHash together with the applied index it describes,
// both read in one transaction, so that nodes can be compared at equal
// indexes while writes go on.
func (f *FSM) StateHashAt() (hash []byte, applied uint64, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, 0, ErrClosed
	}
	return stateHashOf(f.db)
}

// stateHashOf is StateHashAt over any state file opened with bbolt.
func stateHashOf(db *bolt.DB) (hash []byte, applied uint64, err error) {
	h := sha256.New()
	err = db.View(func(tx *bolt.Tx) error {
		var merr error
		if applied, _, merr = readMeta(tx); merr != nil {
			return merr
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			writeLP(h, name)
			return b.ForEach(func(k, v []byte) error {
				if bytes.Equal(name, bucketMeta) && bytes.Equal(k, keyApplied) {
					return nil
				}
				writeLP(h, k)
				writeLP(h, v)
				return nil
			})
		})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("fsm: state hash: %w", err)
	}
	return h.Sum(nil), applied, nil
}

// writeLP writes b to h prefixed by its length.
func writeLP(h hash.Hash, b []byte) {
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
	h.Write(b)
}
