package cluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
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
//	wal.migrating/    a migration from raft.db in progress (discarded and
//	                  redone when found at open)
//	raft.db           the pre-WAL layout (raft-boltdb log + stable store);
//	                  migrated into wal/ and removed at the first open
//	snapshots/        raft.FileSnapshotStore
const (
	walDirName       = "wal"
	walMigratingName = "wal.migrating"
	legacyBoltName   = "raft.db"
)

// Raft's StableStore keys (hashicorp/raft keyCurrentTerm, keyLastVoteTerm,
// keyLastVoteCand): StableStore cannot be listed, so a migration copies
// these by name. raft v1.7.3 writes no other key.
var (
	stableUint64Keys = [][]byte{[]byte("CurrentTerm"), []byte("LastVoteTerm")}
	stableBytesKeys  = [][]byte{[]byte("LastVoteCand")}
)

const (
	// walSegmentSize is the size segment files are preallocated to (the
	// raft-wal default, 64 MiB).
	walSegmentSize = 64 << 20
	// testWALSegmentSize is used with Config.NoSync (tests): many nodes
	// share the test machine's disk and log only a few entries each.
	testWALSegmentSize = 1 << 20
	// migrateBatchBytes bounds one StoreLogs batch while migrating.
	migrateBatchBytes = 1 << 20
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

// openRaftStore opens the node's Raft log and stable store in raftDir,
// first migrating a pre-WAL raft.db into the WAL (see migrateLegacy).
func openRaftStore(raftDir string, noSync bool, log *slog.Logger, hlog hclog.Logger, obs walObservers) (raftStore, error) {
	walDir := filepath.Join(raftDir, walDirName)
	legacy := filepath.Join(raftDir, legacyBoltName)
	walExists, err := pathExists(walDir)
	if err != nil {
		return nil, err
	}
	legacyExists, err := pathExists(legacy)
	if err != nil {
		return nil, err
	}
	switch {
	case legacyExists && walExists:
		// wal/ appears only by the migration's final rename, so the
		// migration completed and the process stopped before removing
		// raft.db: it is stale (older than the WAL) and must not be read.
		log.Warn("removing raft.db left over by a completed migration to the raft WAL", "path", legacy)
		if err := removeAndSync(legacy, raftDir); err != nil {
			return nil, err
		}
	case legacyExists:
		if err := migrateLegacy(raftDir, noSync, log, hlog); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, fmt.Errorf("create raft wal dir: %w", err)
	}
	return openWAL(walDir, noSync, hlog.Named("wal"), obs)
}

// migrateLegacy copies a raft-boltdb raft.db (log and stable store) into a
// new WAL, crash-safely:
//
//  1. build the WAL in wal.migrating/ (removing any earlier attempt) and
//     copy every entry FirstIndex..LastIndex, then term and vote; each WAL
//     append and meta commit is fsynced;
//  2. check the copy's bounds and close it; fsync wal.migrating/;
//  3. rename wal.migrating/ to wal/ and fsync raft/: the commit point;
//  4. remove raft.db and fsync raft/.
//
// A crash before 3 leaves raft.db authoritative and no wal/, so the next
// open migrates again; after 3, openRaftStore finds wal/ and removes the
// stale raft.db.
func migrateLegacy(raftDir string, noSync bool, log *slog.Logger, hlog hclog.Logger) (err error) {
	legacy := filepath.Join(raftDir, legacyBoltName)
	tmp := filepath.Join(raftDir, walMigratingName)
	start := time.Now()
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("migrate raft.db: remove earlier attempt %s: %w", tmp, err)
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return fmt.Errorf("migrate raft.db: create %s: %w", tmp, err)
	}
	src, err := raftboltdb.New(raftboltdb.Options{Path: legacy, BoltOptions: &bbolt.Options{ReadOnly: true, Timeout: metaLockTimeout}})
	if err != nil {
		return fmt.Errorf("migrate raft.db: open %s: %w", legacy, err)
	}
	defer func() {
		if cerr := src.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("migrate raft.db: close %s: %w", legacy, cerr)
		}
	}()
	dst, err := openWAL(tmp, noSync, hlog.Named("wal-migrate"), walObservers{})
	if err != nil {
		return fmt.Errorf("migrate raft.db: %w", err)
	}
	first, last, err := copyRaftStore(dst, src)
	if cerr := dst.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("migrate raft.db into %s: %w", tmp, err)
	}
	if err := syncDir(tmp); err != nil {
		return fmt.Errorf("migrate raft.db: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(raftDir, walDirName)); err != nil {
		return fmt.Errorf("migrate raft.db: commit %s: %w", tmp, err)
	}
	if err := syncDir(raftDir); err != nil {
		return fmt.Errorf("migrate raft.db: %w", err)
	}
	if err := removeAndSync(legacy, raftDir); err != nil {
		return fmt.Errorf("migrate raft.db: %w", err)
	}
	log.Info("migrated the raft log from raft.db to the raft WAL",
		"first", first, "last", last, "took", time.Since(start))
	return nil
}

// copyRaftStore copies every log entry and Raft's stable keys from src
// into the empty dst and checks the copy's bounds.
func copyRaftStore(dst raftStore, src *raftboltdb.BoltStore) (first, last uint64, err error) {
	first, err = src.FirstIndex()
	if err != nil {
		return 0, 0, fmt.Errorf("read first index: %w", err)
	}
	last, err = src.LastIndex()
	if err != nil {
		return 0, 0, fmt.Errorf("read last index: %w", err)
	}
	if last > 0 {
		batch := make([]*raft.Log, 0, 256)
		size := 0
		for idx := first; idx <= last; idx++ {
			e := new(raft.Log)
			if err := src.GetLog(idx, e); err != nil {
				return 0, 0, fmt.Errorf("read entry %d: %w", idx, err)
			}
			batch = append(batch, e)
			size += len(e.Data) + len(e.Extensions) + 32
			if size >= migrateBatchBytes || idx == last {
				if err := dst.StoreLogs(batch); err != nil {
					return 0, 0, fmt.Errorf("write entries %d..%d: %w", batch[0].Index, idx, err)
				}
				batch, size = batch[:0], 0
			}
		}
	}
	for _, k := range stableUint64Keys {
		v, err := src.GetUint64(k)
		if isBoltNotFound(err) {
			continue
		}
		if err != nil {
			return 0, 0, fmt.Errorf("read stable key %s: %w", k, err)
		}
		if err := dst.SetUint64(k, v); err != nil {
			return 0, 0, fmt.Errorf("write stable key %s: %w", k, err)
		}
	}
	for _, k := range stableBytesKeys {
		v, err := src.Get(k)
		if isBoltNotFound(err) {
			continue
		}
		if err != nil {
			return 0, 0, fmt.Errorf("read stable key %s: %w", k, err)
		}
		if err := dst.Set(k, v); err != nil {
			return 0, 0, fmt.Errorf("write stable key %s: %w", k, err)
		}
	}
	gotFirst, err := dst.FirstIndex()
	if err != nil {
		return 0, 0, fmt.Errorf("read copied first index: %w", err)
	}
	gotLast, err := dst.LastIndex()
	if err != nil {
		return 0, 0, fmt.Errorf("read copied last index: %w", err)
	}
	if gotFirst != first || gotLast != last {
		return 0, 0, fmt.Errorf("copy holds entries %d..%d, raft.db %d..%d", gotFirst, gotLast, first, last)
	}
	return first, last, nil
}

// isBoltNotFound reports raft-boltdb's missing-key error (a plain
// errors.New("not found"), as hashicorp/raft itself compares it).
func isBoltNotFound(err error) bool {
	return err != nil && (errors.Is(err, raftboltdb.ErrKeyNotFound) || err.Error() == "not found")
}

// OpenLogStoreReadOnly opens the Raft log of a stopped node's data dir,
// whichever layout it has (the raft-wal store in raft/wal, or a pre-WAL
// raft/raft.db), for offline tools such as a checker replaying the log
// into a fresh state machine. The returned store rejects writes; close it
// with the returned Closer. A raft.db is opened read-only (a migration
// left half done is ignored: raft.db is still authoritative then). A WAL
// is opened the way a node opens it, so its crash recovery (dropping a
// torn final batch, deleting orphan segment files) may run. It fails,
// rather than waits, when a running node holds the store's lock.
func OpenLogStoreReadOnly(dataDir string) (raft.LogStore, io.Closer, error) {
	raftDir := filepath.Join(dataDir, "raft")
	walDir := filepath.Join(raftDir, walDirName)
	ok, err := pathExists(filepath.Join(walDir, metadb.FileName))
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: open raft log: %w", err)
	}
	if ok {
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
	legacy := filepath.Join(raftDir, legacyBoltName)
	ok, err = pathExists(legacy)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: open raft log: %w", err)
	}
	if !ok {
		return nil, nil, fmt.Errorf("cluster: open raft log: no raft log in %s (neither %s/%s nor %s)", raftDir, walDirName, metadb.FileName, legacyBoltName)
	}
	s, err := raftboltdb.New(raftboltdb.Options{Path: legacy, BoltOptions: &bbolt.Options{ReadOnly: true, Timeout: metaLockTimeout}})
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: open raft log %s (is the node still running?): %w", legacy, err)
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

// removeAndSync removes path and fsyncs its directory dir.
func removeAndSync(path, dir string) error {
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory so renames and removals in it are durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s for fsync: %w", dir, err)
	}
	serr := f.Sync()
	cerr := f.Close()
	if serr != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, serr)
	}
	if cerr != nil {
		return fmt.Errorf("close dir %s: %w", dir, cerr)
	}
	return nil
}
