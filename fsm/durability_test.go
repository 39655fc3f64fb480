package fsm

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// crash closes the bbolt handle the way a killed process leaves it: no
// final sync, the open marker stays.
func crash(t *testing.T, f *FSM) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
	f.closed = true
}

// openDeferred opens path with DeferSync under the given boot id.
func openDeferred(t *testing.T, path, boot string) *FSM {
	t.Helper()
	f, err := Open(Options{Path: path, DeferSync: true, BootID: func() string { return boot }, InitialMmapSize: 64 << 20})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// TestDeferSyncKeepsStateAfterProcessCrash: the same boot means the page
// cache survived the process, so the file is kept as it was.
func TestDeferSyncKeepsStateAfterProcessCrash(t *testing.T) {
	seed := testSeed(t)
	logs := randomLog(t, seed, 400)
	path := filepath.Join(t.TempDir(), "state.db")
	f := openDeferred(t, path, "boot-1")
	f.ApplyBatch(logs)
	want := hashOf(t, f)
	crash(t, f)
	if _, err := os.Stat(path + markerSuffix); err != nil {
		t.Fatalf("marker after crash: %v", err)
	}

	g := openDeferred(t, path, "boot-1")
	if g.Discarded() {
		t.Fatal("state discarded after a process crash on the same boot")
	}
	if g.AppliedIndex() != 400 || hashOf(t, g) != want {
		t.Fatalf("after process crash: applied %d, want 400 and the same hash", g.AppliedIndex())
	}
}

// TestDeferSyncDiscardsStateAfterMachineCrash: a marker of another boot
// (or none known) means unsynced writes may be lost or torn, so the file is
// moved aside and the FSM starts empty, to be rebuilt from snapshot + log.
func TestDeferSyncDiscardsStateAfterMachineCrash(t *testing.T) {
	for _, tc := range []struct{ name, next string }{{"other boot", "boot-2"}, {"unknown boot", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			logs := randomLog(t, testSeed(t), 300)
			path := filepath.Join(t.TempDir(), "state.db")
			f := openDeferred(t, path, "boot-1")
			f.ApplyBatch(logs)
			crash(t, f)

			g := openDeferred(t, path, tc.next)
			if !g.Discarded() {
				t.Fatal("state kept after the machine restarted")
			}
			if g.AppliedIndex() != 0 {
				t.Fatalf("applied %d after discard, want 0", g.AppliedIndex())
			}
			if _, err := os.Stat(path + uncleanSuffix); err != nil {
				t.Fatalf("untrusted file not kept aside: %v", err)
			}
			// Rebuilt from the log, it equals a straight apply.
			g.ApplyBatch(logs)
			ref := openFSM(t, filepath.Join(t.TempDir(), "ref.db"))
			ref.ApplyBatch(logs)
			if hashOf(t, g) != hashOf(t, ref) {
				t.Fatal("rebuilt state differs from a straight apply")
			}
		})
	}
}

// TestDeferSyncCleanCloseIsTrustedOnAnyBoot: Close syncs and removes the
// marker, so the next open keeps the file even after a reboot.
func TestDeferSyncCleanCloseIsTrustedOnAnyBoot(t *testing.T) {
	logs := randomLog(t, testSeed(t), 200)
	path := filepath.Join(t.TempDir(), "state.db")
	f := openDeferred(t, path, "boot-1")
	f.ApplyBatch(logs)
	want := hashOf(t, f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + markerSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("marker after clean close: %v", err)
	}
	g := openDeferred(t, path, "boot-2")
	if g.Discarded() || g.AppliedIndex() != 200 || hashOf(t, g) != want {
		t.Fatalf("after clean close and reboot: discarded %v, applied %d", g.Discarded(), g.AppliedIndex())
	}
}
