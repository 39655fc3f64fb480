package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// compactSuffix names the file Compact writes before renaming it over the
// state file.
const compactSuffix = ".compact"

// compactTxBytes bounds the keys and values Compact copies per write
// transaction, so that a large state does not build one huge transaction.
const compactTxBytes = 64 << 20

// ErrInUse is returned by Compact when another process (a running node)
// holds the state file.
var ErrInUse = errors.New("the state file is open in another process: is the node running? stop it first")

// ErrUncleanStop is returned by Compact when the state file's open marker
// is present: the node did not stop cleanly, and the file may be discarded
// at its next start (DESIGN.md, "Durability").
var ErrUncleanStop = errors.New("the node did not stop cleanly (" + markerSuffix + " marker present): start it and stop it cleanly first")

// CompactResult tells what Compact did.
type CompactResult struct {
	// SizeBefore and SizeAfter are the state file's sizes in bytes.
	SizeBefore, SizeAfter int64
	// AppliedIndex is the applied index of the state, the same in both.
	AppliedIndex uint64
}

// Compact rewrites the state file at path densely and gives the free space
// back: bbolt reuses the pages that deletions free, but never shrinks its
// file. It copies every bucket into path+".compact" with bbolt.Compact
// (pages filled full), checks that the copy holds the same applied index
// and StateHash as the original, fsyncs it and renames it over path. The
// node must be stopped: Compact holds the file's lock throughout and
// returns ErrInUse when it cannot take it within lockWait. On any failure
// the original is left as it was.
func Compact(path string, lockWait time.Duration) (CompactResult, error) {
	var res CompactResult
	st, err := os.Stat(path)
	if err != nil {
		return res, fmt.Errorf("fsm: compact: %w", err)
	}
	res.SizeBefore = st.Size()
	// The node's own options: the same freelist handling means opening
	// writes nothing. Read-write takes the exclusive lock, so no node can
	// open the file while it is being replaced.
	src, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockWait, FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if errors.Is(err, berrors.ErrTimeout) {
		return res, fmt.Errorf("fsm: compact %s: %w", path, ErrInUse)
	}
	if err != nil {
		return res, fmt.Errorf("fsm: compact: open %s: %w", path, err)
	}
	defer func() { _ = src.Close() }()
	if _, err := os.Stat(path + markerSuffix); err == nil {
		return res, fmt.Errorf("fsm: compact %s: %w", path, ErrUncleanStop)
	}
	tmp := path + compactSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("fsm: compact: remove stale %s: %w", tmp, err)
	}
	applied, err := compactInto(src, tmp)
	if err != nil {
		_ = os.Remove(tmp)
		return res, err
	}
	res.AppliedIndex = applied
	if st, err = os.Stat(tmp); err != nil {
		_ = os.Remove(tmp)
		return res, fmt.Errorf("fsm: compact: %w", err)
	}
	res.SizeAfter = st.Size()
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return res, fmt.Errorf("fsm: compact: rename: %w", err)
	}
	syncDir(filepath.Dir(path))
	return res, nil
}

// compactInto copies src into a new file at tmp, checks the copy against
// src, fsyncs it and returns the applied index.
func compactInto(src *bolt.DB, tmp string) (uint64, error) {
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{NoSync: true, FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		return 0, fmt.Errorf("fsm: compact: create %s: %w", tmp, err)
	}
	defer func() { _ = dst.Close() }()
	if err := bolt.Compact(dst, src, compactTxBytes); err != nil {
		return 0, fmt.Errorf("fsm: compact: copy: %w", err)
	}
	want, applied, err := stateHashOf(src)
	if err != nil {
		return 0, fmt.Errorf("fsm: compact: original: %w", err)
	}
	got, gotApplied, err := stateHashOf(dst)
	if err != nil {
		return 0, fmt.Errorf("fsm: compact: copy: %w", err)
	}
	if gotApplied != applied || !bytes.Equal(got, want) {
		return 0, fmt.Errorf("fsm: compact: the copy differs from the original (applied index %d, want %d; state hash %x, want %x); the original is kept",
			gotApplied, applied, got, want)
	}
	// Write the free list as a clean Close does (DESIGN.md, "The free
	// list"), so the node's next Open reads it instead of walking the file.
	dst.NoFreelistSync = false
	if err := dst.Update(func(*bolt.Tx) error { return nil }); err != nil {
		return 0, fmt.Errorf("fsm: compact: write the free list: %w", err)
	}
	if err := dst.Sync(); err != nil {
		return 0, fmt.Errorf("fsm: compact: sync %s: %w", tmp, err)
	}
	if err := dst.Close(); err != nil {
		return 0, fmt.Errorf("fsm: compact: close %s: %w", tmp, err)
	}
	return applied, nil
}
