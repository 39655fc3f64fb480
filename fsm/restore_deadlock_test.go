package fsm

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"
	"time"
)

// A restore must not wait for snapshots of the old state: Raft may hold one
// (its snapshot goroutine waits for the main loop) while the main loop waits
// for the restore of an installed snapshot. Waiting deadlocked a follower.
func TestRestoreWhileASnapshotIsHeld(t *testing.T) {
	h := newHarness(t)
	h.mustOK(createCmd(clA, t0+1, CreateRow{ActionID: "act_held"}))
	held, err := h.f.Snapshot() // not released until the restore is done
	if err != nil {
		t.Fatal(err)
	}

	src := newHarness(t)
	src.mustOK(createCmd(clB, t0+5, CreateRow{ActionID: "act_new"}))
	data := snapshotBytes(t, src.f)

	done := make(chan error, 1)
	go func() { done <- h.f.Restore(io.NopCloser(bytes.NewReader(data))) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("restore blocked on a snapshot of the old state")
	}
	if got := hashOf(t, h.f); got != hashOf(t, src.f) {
		t.Fatal("restored state differs from the snapshot")
	}
	// The held snapshot still reads the old state, then releases.
	var sink memSink
	if err := held.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	held.Release()
	old := openFSM(t, filepath.Join(t.TempDir(), "old.db"))
	if err := old.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if old.AppliedIndex() == h.f.AppliedIndex() && hashOf(t, old) == hashOf(t, h.f) {
		t.Fatal("the held snapshot saw the restored state, not the old one")
	}
}
