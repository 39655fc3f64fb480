package cluster

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	walmetrics "github.com/hashicorp/raft-wal/metrics"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"
)

// Raft storage layout under <DataDir>/raft (see DESIGN.md, "Storage"):
//
//	wal/              raft-wal: the Raft log (segment files) and, in its
//	                  wal-meta.db, the stable store (term, vote)
//	snapshots/        raft.FileSnapshotStore
//
// A raft.db there is the raft-boltdb layout of development builds before
// format version 1 (docs/upgrade.md): it is refused, never read or migrated.
const (
	walDirName     = "wal"
	boltLayoutName = "raft.db"
)

const (
	// walSegmentSize is the size segment files are preallocated to (the
	// raft-wal default, 64 MiB).
	walSegmentSize = 64 << 20
	// testWALSegmentSize is used with Config.NoSync (tests): many nodes
	// share the test machine's disk and log only a few entries each.
	testWALSegmentSize = 1 << 20
	// metaLockTimeout bounds how long OpenLogStoreReadOnly waits for the
	// lock of a store a running node holds.
	metaLockTimeout = time.Second
)

// raftStore is a node's Raft log and stable store.
type raftStore interface {
	raft.LogStore
	raft.StableStore
	io.Closer
}

// walStore is raft-wal plus its meta DB. wal.WAL.Close does not close the
// meta DB it opened (nor release its file lock), so the store opens the
// meta DB itself and closes it after the WAL; otherwise reopening the same
// data dir in one process (tests, restarts) would block on bbolt's lock.
type walStore struct {
	*wal.WAL
	meta *metadb.BoltMetaDB
}

// GetLog returns raft.ErrLogNotFound below FirstIndex. raft-wal v0.4.0
// truncates the head by moving the first segment's MinIndex, but its
// reads look in the tail (unsealed) segment first without checking it, so
// an entry compacted away but still in that segment file is returned.
// Raft sends a follower a snapshot only when GetLog reports the entry it
// needs missing, so without this check a leader would stream the whole
// log (back to index 1 while the segment lasts) to a wiped or lagging
// follower instead of installing its snapshot.
func (s *walStore) GetLog(index uint64, l *raft.Log) error {
	first, err := s.WAL.FirstIndex()
	if err != nil {
		return err
	}
	if index < first {
		return raft.ErrLogNotFound
	}
	return s.WAL.GetLog(index, l)
}

// Close closes the WAL, then its meta DB.
func (s *walStore) Close() error {
	var errs []error
	if err := s.WAL.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft wal: %w", err))
	}
	if err := s.meta.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft wal meta db: %w", err))
	}
	return errors.Join(errs...)
}

// walObservers are where a node's WAL reports: the fsync histogram and
// raft-wal's own counters. The zero value reports nowhere (migrations,
// offline tools).
type walObservers struct {
	fsync     prometheus.Histogram
	collector walmetrics.Collector
}

// openWAL opens (creating when empty) the raft-wal store in dir. noSync
// turns the segment files' fsync into a no-op (tests); the meta DB
// (segment list, term and vote) still syncs, which only costs on
// elections, segment rotation and truncation.
func openWAL(dir string, noSync bool, hlog hclog.Logger, obs walObservers) (*walStore, error) {
	var vfs types.VFS = walfs.New()
	size := walSegmentSize
	if noSync {
		vfs = noSyncVFS{vfs}
		size = testWALSegmentSize
	}
	if obs.fsync != nil {
		vfs = timedSyncVFS{VFS: vfs, observe: obs.fsync}
	}
	collector := obs.collector
	if collector == nil {
		collector = &walmetrics.NoOpCollector{}
	}
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(dir,
		wal.WithMetaStore(meta),
		wal.WithSegmentFiler(segment.NewFiler(dir, vfs)),
		wal.WithSegmentSize(size),
		wal.WithLogger(hlog),
		wal.WithMetricsCollector(collector),
	)
	if err != nil {
		if cerr := meta.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close meta db: %w", cerr))
		}
		return nil, fmt.Errorf("open raft wal in %s: %w", dir, err)
	}
	return &walStore{WAL: w, meta: meta}, nil
}

// openRaftStore opens the node's Raft log and stable store in raftDir.
func openRaftStore(raftDir string, noSync bool, hlog hclog.Logger, obs walObservers) (raftStore, error) {
	if err := refuseBoltLayout(raftDir); err != nil {
		return nil, err
	}
	walDir := filepath.Join(raftDir, walDirName)
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, fmt.Errorf("create raft wal dir: %w", err)
	}
	return openWAL(walDir, noSync, hlog.Named("wal"), obs)
}

// refuseBoltLayout fails when raftDir holds a raft-boltdb raft.db: a data
// dir of a development build that no release wrote. Starting beside it on
// an empty WAL would throw its log away, so the node refuses instead.
func refuseBoltLayout(raftDir string) error {
	path := filepath.Join(raftDir, boltLayoutName)
	ok, err := pathExists(path)
	if err != nil {
		return err
	}
	if ok {
		return fmt.Errorf("%s is the Raft log of a development build before format version 1 (raft-boltdb), which this build does not read: remove the data dir and let the node join the cluster afresh (docs/upgrade.md)", path)
	}
	return nil
}

// OpenLogStoreReadOnly opens the Raft log (raft/wal) of a stopped node's
// data dir for offline tools such as a checker replaying the log into a
// fresh state machine. The returned store rejects writes; close it with
// the returned Closer. The WAL is opened the way a node opens it, so its
// crash recovery (dropping a torn final batch, deleting orphan segment
// files) may run. It fails, rather than waits, when a running node holds
// the store's lock.
func OpenLogStoreReadOnly(dataDir string) (raft.LogStore, io.Closer, error) {
	raftDir := filepath.Join(dataDir, "raft")
	if err := refuseBoltLayout(raftDir); err != nil {
		return nil, nil, fmt.Errorf("cluster: open raft log: %w", err)
	}
	walDir := filepath.Join(raftDir, walDirName)
	ok, err := pathExists(filepath.Join(walDir, metadb.FileName))
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: open raft log: %w", err)
	}
	if !ok {
		return nil, nil, fmt.Errorf("cluster: open raft log: no raft log in %s (no %s/%s)", raftDir, walDirName, metadb.FileName)
	}
	// Probe the meta DB's lock first: metadb opens bbolt without a
	// timeout and would block for as long as a running node holds it.
	probe, err := bbolt.Open(filepath.Join(walDir, metadb.FileName), 0o600, &bbolt.Options{ReadOnly: true, Timeout: metaLockTimeout})
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: open raft log %s (is the node still running?): %w", walDir, err)
	}
	if err := probe.Close(); err != nil {
		return nil, nil, fmt.Errorf("cluster: open raft log %s: close lock probe: %w", walDir, err)
	}
	s, err := openWAL(walDir, false, hclog.NewNullLogger(), walObservers{})
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: open raft log: %w", err)
	}
	return readOnlyLogStore{s}, s, nil
}

// errReadOnlyLogStore is returned by writes to OpenLogStoreReadOnly's store.
var errReadOnlyLogStore = errors.New("cluster: raft log store opened read-only")

// readOnlyLogStore passes reads through and rejects writes.
type readOnlyLogStore struct{ s raft.LogStore }

func (r readOnlyLogStore) FirstIndex() (uint64, error)            { return r.s.FirstIndex() }
func (r readOnlyLogStore) LastIndex() (uint64, error)             { return r.s.LastIndex() }
func (r readOnlyLogStore) GetLog(index uint64, l *raft.Log) error { return r.s.GetLog(index, l) }
func (r readOnlyLogStore) StoreLog(*raft.Log) error               { return errReadOnlyLogStore }
func (r readOnlyLogStore) StoreLogs([]*raft.Log) error            { return errReadOnlyLogStore }
func (r readOnlyLogStore) DeleteRange(uint64, uint64) error       { return errReadOnlyLogStore }

// noSyncVFS is raft-wal's file system with fsync turned into a no-op
// (Config.NoSync, tests only): raft-wal has no option for it.
type noSyncVFS struct{ types.VFS }

func (v noSyncVFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	f, err := v.VFS.Create(dir, name, size)
	if err != nil {
		return nil, err
	}
	return noSyncFile{f}, nil
}

func (v noSyncVFS) OpenWriter(dir, name string) (types.WritableFile, error) {
	f, err := v.VFS.OpenWriter(dir, name)
	if err != nil {
		return nil, err
	}
	return noSyncFile{f}, nil
}

// noSyncFile is a segment file whose Sync does nothing.
type noSyncFile struct{ types.WritableFile }

func (noSyncFile) Sync() error { return nil }

// pathExists reports whether path exists.
func pathExists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
}
