package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Deferred sync (Options.DeferSync) is etcd's arrangement: the Raft log is
// the durable record of every committed entry (it is fsynced before an
// entry commits), so the state file need not be fsynced on every batch. It
// is a cache of the log that is always consistent after a process crash,
// because every bbolt commit is written with pwrite before it returns and
// the kernel keeps those pages whatever happens to the process. Only an
// operating-system crash or power loss can lose or tear unsynced pages.
//
// That case is told apart by the boot id: while the file is open for
// writing, a marker file beside it (<path>.open) holds the boot id of the
// running kernel. A clean Close fsyncs the file and removes the marker. An
// Open that finds the marker of the same boot knows the process died but
// the page cache survived, and keeps the file; a marker of another (or an
// unknown) boot means the machine went down with unsynced writes, so the
// file is moved aside to <path>.unclean and the node starts empty, to be
// rebuilt by Raft from its newest snapshot and the log after it (which the
// cluster package does: it restores the newest snapshot into an FSM that is
// behind it, and Raft replays the entries after the snapshot).

// markerSuffix names the file that marks the state file as open with
// unsynced writes.
const markerSuffix = ".open"

// uncleanSuffix names where an untrusted state file is moved.
const uncleanSuffix = ".unclean"

// bootIDPath holds the Linux kernel's random id of the current boot.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// readBootID returns the current boot id, or "" where the platform has none.
func readBootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}

// prepareDeferredSync decides, before the state file is opened, whether it
// can be trusted, and marks it open for this boot. It reports whether the
// file was discarded.
func prepareDeferredSync(path string, bootID func() string) (discarded bool, err error) {
	marker := path + markerSuffix
	cur := bootID()
	prev, err := os.ReadFile(marker)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// Closed cleanly (or never opened in this mode): the file was synced.
	case err != nil:
		return false, fmt.Errorf("fsm: read %s: %w", marker, err)
	case cur == "" || string(bytes.TrimSpace(prev)) != cur:
		// The machine restarted while the file held unsynced writes.
		if err := os.Rename(path, path+uncleanSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("fsm: move aside state file after an unclean machine stop: %w", err)
		}
		discarded = true
	}
	if err := writeMarker(marker, cur); err != nil {
		return discarded, err
	}
	return discarded, nil
}

// writeMarker durably replaces the marker file with the boot id.
func writeMarker(marker, bootID string) error {
	tmp := marker + ".tmp"
	_ = os.Remove(tmp)
	if err := writeFileSynced(tmp, bytes.NewReader([]byte(bootID+"\n"))); err != nil {
		return fmt.Errorf("fsm: write marker: %w", err)
	}
	if err := os.Rename(tmp, marker); err != nil {
		return fmt.Errorf("fsm: write marker: %w", err)
	}
	syncDir(filepath.Dir(marker))
	return nil
}

// clearMarker records a clean close: the file has been fsynced.
func clearMarker(path string) error {
	if err := os.Remove(path + markerSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("fsm: remove marker: %w", err)
	}
	syncDir(filepath.Dir(path))
	return nil
}
