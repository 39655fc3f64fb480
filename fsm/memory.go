package fsm

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ReleaseMappedMemory drops this process's mapping of the state file's
// pages (they stay in the kernel's page cache), so the resident set holds
// only the pages touched since the last call instead of, eventually, the
// whole file. bbolt reads the file through a read-only shared mmap and
// every write transaction walks random leaves of the actions bucket, so
// without this a node's RSS grows with the number of stored actions (926 MiB
// at one million); the pages it drops are clean and come back from the page
// cache on the next access (a minor fault).
//
// It must not run while bbolt may re-map the file, which only a write
// transaction does: it holds writeMu, which ApplyBatch holds around its
// transaction. It is safe beside readers: a dropped page is mapped again,
// with the same contents, when a reader touches it.
func (f *FSM) ReleaseMappedMemory() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return ErrClosed
	}
	f.writeMu.Lock()
	defer f.writeMu.Unlock()
	f.nodesSinceRelease = 0
	return f.dropMappedPages()
}

// DefaultMappedBudget is the file-backed resident memory a node keeps
// before it hands the state file's mapped pages back (Options.MappedBudget).
// A node with a million actions then stays near 190 MiB of heap plus at
// most this much mapped file, under 512 MiB, while a state file that fits
// in the budget (about 300,000 actions) stays mapped: every release costs
// a minor fault on the next touch of each page, which on a virtual machine
// made a consume of a random action 15-25 % dearer in CPU
// (docs/performance.md, session 5).
const DefaultMappedBudget = 256 << 20

// TrimMappedMemory is ReleaseMappedMemory when the process's file-backed
// resident memory (the state file's mapped pages, the binary and any other
// mapped file) exceeds Options.MappedBudget, and nothing otherwise. It
// reports whether it released the mapping.
func (f *FSM) TrimMappedMemory() (bool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return false, ErrClosed
	}
	f.writeMu.Lock()
	defer f.writeMu.Unlock()
	return f.trimMappedPages()
}

// trimMappedPages is TrimMappedMemory's work; the caller holds f.mu
// (shared) and f.writeMu.
func (f *FSM) trimMappedPages() (bool, error) {
	f.nodesSinceRelease = 0
	if f.opts.MappedBudget > 0 {
		resident, err := fileResident()
		if err != nil {
			return false, fmt.Errorf("fsm: release mapped memory: %w", err)
		}
		if resident <= f.opts.MappedBudget {
			return false, nil
		}
	}
	if err := f.dropMappedPages(); err != nil {
		return false, err
	}
	return true, nil
}

// releaseAfterNodes is how many B+tree nodes write transactions may load
// before ApplyBatch trims the mapping itself (TrimMappedMemory), so that a
// bulk load does not wait for the periodic trim. A write maps more than
// the nodes it loads: the kernel maps up to 16 cached pages around each fault
// ("fault-around"), so one 10,000-row create into a million actions maps
// most of the file. Releasing after every such batch cannot bound the
// resident set during the load, but leaves it small as soon as it ends.
const releaseAfterNodes = 2048

// dropMappedPages is ReleaseMappedMemory's work; the caller holds f.mu
// (shared) and f.writeMu.
func (f *FSM) dropMappedPages() error {
	var size int64
	if err := f.db.View(func(tx *bolt.Tx) error {
		size = tx.Size() // the mapping always covers the file's pages
		return nil
	}); err != nil {
		return fmt.Errorf("fsm: release mapped memory: %w", err)
	}
	if err := dropMapping(f.db.Info().Data, uintptr(size)); err != nil {
		return fmt.Errorf("fsm: release mapped memory: %w", err)
	}
	return nil
}
