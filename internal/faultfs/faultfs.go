// Package faultfs is a FUSE filesystem for fault injection: a pass-through
// (loopback) mount of a directory that, on command, loses power (drops
// every write, creation, rename, truncation and removal not made durable
// by an fsync, the way LazyFS does), fills up (ENOSPC), fails (EIO on
// fsync or on writes) and slows down (delayed fsyncs).
//
// The filesystem keeps its files in <Dir>/live and, beside them, the
// durable state: for every file the content its last fsync made durable
// (<Dir>/shadow, written at fsync time from the ranges written since), for
// every directory the names its last fsync made durable. PowerLoss
// rebuilds the live tree from the durable state alone, under the same
// mount. See docs/chaos.md.
package faultfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Options configures a filesystem.
type Options struct {
	// Dir holds the filesystem's own data (the live tree and the durable
	// state); the filesystem owns it. Its live tree is kept across
	// mounts: what it holds when mounted counts as durable.
	Dir string
	// Mountpoint is where the filesystem is mounted (created if missing).
	Mountpoint string
	// Logger receives the power losses and faults; nil discards.
	Logger *slog.Logger
	// Debug logs every FUSE request to stderr.
	Debug bool
}

// FailMode says how often an injected error is answered.
type FailMode int

// The failure modes.
const (
	// Never answers no error.
	Never FailMode = iota
	// Once answers the error to the next call only.
	Once
	// Always answers the error to every call until healed.
	Always
)

// Stats counts what the filesystem did.
type Stats struct {
	Fsyncs        int64 `json:"fsyncs"`
	DirFsyncs     int64 `json:"dirFsyncs"`
	FailedFsyncs  int64 `json:"failedFsyncs"`
	FailedWrites  int64 `json:"failedWrites"`
	NoSpaceWrites int64 `json:"noSpaceWrites"`
	DelayedFsyncs int64 `json:"delayedFsyncs"`
	PowerLosses   int64 `json:"powerLosses"`
}

// FS is a mounted fault filesystem. Its methods are safe for concurrent
// use.
type FS struct {
	opts Options
	log  *slog.Logger

	// life serializes mount, unmount and power loss.
	life   sync.Mutex
	server *fuse.Server

	// mu guards the model, the faults and the stats; every operation
	// that changes the live tree holds it.
	mu         sync.Mutex
	m          *model
	space      int64 // bytes writes may still add; < 0: unlimited
	failFsync  FailMode
	failWrite  FailMode
	fsyncDelay time.Duration
	stats      Stats
	open       int // open file handles
}

// Mount prepares opts.Dir and mounts the filesystem at opts.Mountpoint.
// Whatever the live tree holds already is taken as durable.
func Mount(opts Options) (*FS, error) {
	if opts.Dir == "" || opts.Mountpoint == "" {
		return nil, errors.New("faultfs: Dir and Mountpoint are required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &FS{opts: opts, log: log, m: newModel(opts.Dir), space: -1}
	if err := os.MkdirAll(opts.Mountpoint, 0o755); err != nil {
		return nil, fmt.Errorf("faultfs: mountpoint: %w", err)
	}
	f.mu.Lock()
	err := f.m.reset()
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	f.life.Lock()
	defer f.life.Unlock()
	if err := f.mount(); err != nil {
		return nil, err
	}
	return f, nil
}

// Available reports whether FUSE mounts can work here: /dev/fuse and
// fusermount3 (or fusermount) exist.
func Available() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("faultfs: no /dev/fuse: %w", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		if _, err2 := exec.LookPath("fusermount"); err2 != nil {
			return fmt.Errorf("faultfs: no fusermount3 or fusermount on PATH: %w", err)
		}
	}
	return nil
}

// Cleanup lazily unmounts whatever is mounted at mountpoint (a leftover of
// a crashed run); it is quiet when nothing is.
func Cleanup(mountpoint string) {
	for _, bin := range []string{"fusermount3", "fusermount"} {
		if _, err := exec.LookPath(bin); err == nil {
			_ = exec.Command(bin, "-u", "-z", "-q", mountpoint).Run()
			return
		}
	}
}

func (f *FS) mount() error {
	var st syscall.Stat_t
	if err := syscall.Stat(f.m.live, &st); err != nil {
		return fmt.Errorf("faultfs: %w", err)
	}
	root := &node{LoopbackNode: &gofs.LoopbackNode{RootData: &gofs.LoopbackRoot{Path: f.m.live, Dev: st.Dev}}, ffs: f}
	// The kernel caches no names and no attributes: a power loss
	// replaces the tree under the mount, and nothing the kernel kept
	// from before may show through.
	var zero time.Duration
	server, err := gofs.Mount(f.opts.Mountpoint, root, &gofs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			FsName: "faultfs",
			Name:   "faultfs",
			Debug:  f.opts.Debug,
			// No writeback cache (go-fuse's default): every write
			// reaches the filesystem as it is made.
			DisableXAttrs: true,
		},
	})
	if err != nil {
		return fmt.Errorf("faultfs: mount %s: %w", f.opts.Mountpoint, err)
	}
	f.server = server
	return nil
}

// unmount unmounts, retrying while files are still open (a killed process
// releases its files a moment after it is gone).
func (f *FS) unmount(ctx context.Context) error {
	if f.server == nil {
		return nil
	}
	// Server.Unmount returns once the serving loops have ended, which a
	// copy of the mount in another mount namespace can prevent: bounded
	// by ctx.
	done := make(chan error, 1)
	server := f.server
	go func() {
		var err error
		for range 100 {
			if err = server.Unmount(); err == nil {
				server.Wait()
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("faultfs: unmount %s: %w", f.opts.Mountpoint, err)
		}
	case <-ctx.Done():
		return fmt.Errorf("faultfs: unmount %s: still in use (a process holds it open, or a copy of the mount in another mount namespace does): %w", f.opts.Mountpoint, ctx.Err())
	}
	f.server = nil
	return nil
}

// Unmount unmounts the filesystem; its files stay in Dir/live.
func (f *FS) Unmount(ctx context.Context) error {
	f.life.Lock()
	defer f.life.Unlock()
	return f.unmount(ctx)
}

// PowerLoss simulates a power cut and a reboot: it drops everything not
// made durable by an fsync (writes, truncations, and names: creations,
// removals, renames a directory fsync did not cover), leaving the durable
// state at the same mountpoint. Every process using the filesystem must
// have exited: PowerLoss waits (bounded by ctx) until no file is open.
// The mount stays (an unmount would wait for every copy of the mount in
// other mount namespaces, which `ip netns exec` makes); the kernel caches
// no names or attributes, and file pages are dropped at each open.
// Injected faults stay as they are.
func (f *FS) PowerLoss(ctx context.Context) (Report, error) {
	f.life.Lock()
	defer f.life.Unlock()
	for {
		f.mu.Lock()
		if f.open == 0 {
			break // f.mu stays held
		}
		open := f.open
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return Report{}, fmt.Errorf("faultfs: power loss of %s: %d files still open: %w", f.opts.Mountpoint, open, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	defer f.mu.Unlock()
	rep := f.m.report()
	err := f.m.rebuild(f.opts.Dir)
	if err == nil {
		err = f.m.reset()
	}
	f.stats.PowerLosses++
	if err != nil {
		return rep, err
	}
	f.log.Info("faultfs: power loss", "mountpoint", f.opts.Mountpoint, "files", rep.Files, "bytes", rep.Bytes, "dirs", rep.Dirs)
	return rep, nil
}

// SyncAll makes the whole live tree durable, like sync(2).
func (f *FS) SyncAll() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m.reset()
}

// SetSpace lets writes add at most n more bytes to the files (growth past
// their end, extending truncations and allocations), then answers ENOSPC;
// n < 0 means unlimited.
func (f *FS) SetSpace(n int64) {
	f.mu.Lock()
	f.space = n
	f.mu.Unlock()
}

// Fill answers ENOSPC to every write that needs space from now on.
func (f *FS) Fill() { f.SetSpace(0) }

// FreeSpace gives space back: writes succeed again.
func (f *FS) FreeSpace() { f.SetSpace(-1) }

// FailFsync makes fsyncs (of files and of directories) answer EIO, once
// or until healed. A failed file fsync drops the file's unsynced writes
// from the durable state (they stay readable until a power loss), as
// Linux does with pages whose writeback failed: a later fsync succeeds
// without them.
func (f *FS) FailFsync(mode FailMode) {
	f.mu.Lock()
	f.failFsync = mode
	f.mu.Unlock()
}

// FailWrites makes writes answer EIO (nothing written), once or until
// healed.
func (f *FS) FailWrites(mode FailMode) {
	f.mu.Lock()
	f.failWrite = mode
	f.mu.Unlock()
}

// SetFsyncDelay delays every fsync (files and directories) by d; 0 for
// none.
func (f *FS) SetFsyncDelay(d time.Duration) {
	f.mu.Lock()
	f.fsyncDelay = d
	f.mu.Unlock()
}

// Heal removes every injected fault: space, errors and delay.
func (f *FS) Heal() {
	f.mu.Lock()
	f.space, f.failFsync, f.failWrite, f.fsyncDelay = -1, Never, Never, 0
	f.mu.Unlock()
}

// Stats returns the counters so far.
func (f *FS) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Mountpoint is where the filesystem is mounted.
func (f *FS) Mountpoint() string { return f.opts.Mountpoint }

// LiveDir is the backing directory that holds the files (to read them
// while the filesystem is unmounted).
func (f *FS) LiveDir() string { return filepath.Clean(f.m.live) }

// failing consumes one injected failure of mode; f.mu must be held.
func failing(mode *FailMode) bool {
	switch *mode {
	case Once:
		*mode = Never
		return true
	case Always:
		return true
	}
	return false
}

// delay waits out the injected fsync delay (not holding f.mu).
func (f *FS) delay(ctx context.Context) {
	f.mu.Lock()
	d := f.fsyncDelay
	if d > 0 {
		f.stats.DelayedFsyncs++
	}
	f.mu.Unlock()
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
