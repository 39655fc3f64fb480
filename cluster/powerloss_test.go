package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/exactonce/exactonce/internal/faultfs"
)

// onFaultFS puts tn's data dir on a fault filesystem and its state file
// beside it: the test process maps the state file (bbolt), and a page
// fault served by its own FUSE server could stall it for good. The tests
// delete the state file after the power loss, so that the node's state
// comes back from its Raft log and snapshots alone.
func onFaultFS(t *testing.T, tn *testNode) *faultfs.FS {
	t.Helper()
	if err := faultfs.Available(); err != nil {
		t.Skipf("no FUSE on this machine (%v): the power loss cannot be simulated", err)
	}
	dir := t.TempDir()
	disk, err := faultfs.Mount(faultfs.Options{Dir: filepath.Join(dir, "state"), Mountpoint: filepath.Join(dir, "data")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := disk.Unmount(ctx); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	tn.cfg.DataDir = disk.Mountpoint()
	tn.statePath = filepath.Join(dir, "state.db")
	tn.cfg.NoSync = false
	return disk
}

// powerLossT kills tn, cuts its disk's power and deletes its state file.
func powerLossT(t *testing.T, tn *testNode, disk *faultfs.FS) {
	t.Helper()
	tn.kill()
	if _, err := disk.PowerLoss(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(tn.statePath); err != nil {
		t.Fatal(err)
	}
}

// TestRaftLogSurvivesPowerLoss: entries a node committed (its log fsyncs
// each batch) are there after a power loss that drops everything no fsync
// made durable, the directories the node created at its first start
// included.
func TestRaftLogSurvivesPowerLoss(t *testing.T) {
	tn := newTestNode(t, "n1")
	disk := onFaultFS(t, tn)
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader: %v", err)
	}
	mustApply(t, tn.node, clientCmd("cl_a"))
	mustApply(t, tn.node, createCmd("cl_a", "act_1"))
	powerLossT(t, tn, disk)
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader after the power loss: %v", err)
	}
	waitFor(t, "the committed action after the power loss", 10*time.Second, func() bool {
		return tn.node.ReadBarrier(ctxTimeout(t, 2*time.Second)) == nil && action(t, tn.fsm, "cl_a", "act_1") != nil
	})
}

// TestSnapshotSurvivesPowerLoss: a snapshot Raft compacted its log behind
// is whole after a power loss (its directory's names were not durable: the
// node found an empty snapshot, no log behind it, and panicked at every
// start).
func TestSnapshotSurvivesPowerLoss(t *testing.T) {
	tn := newTestNode(t, "n1")
	disk := onFaultFS(t, tn)
	tn.cfg.TrailingLogs = 1
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader: %v", err)
	}
	mustApply(t, tn.node, clientCmd("cl_a"))
	for i := range 8 {
		mustApply(t, tn.node, createCmd("cl_a", fmt.Sprintf("act_%d", i)))
	}
	if err := tn.node.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if first, err := tn.node.store.FirstIndex(); err != nil || first <= 2 {
		t.Fatalf("the log was not compacted behind the snapshot: first index %d (%v)", first, err)
	}
	powerLossT(t, tn, disk)
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader after the power loss: %v", err)
	}
	waitFor(t, "the snapshotted actions after the power loss", 10*time.Second, func() bool {
		return tn.node.ReadBarrier(ctxTimeout(t, 2*time.Second)) == nil && action(t, tn.fsm, "cl_a", "act_0") != nil
	})
}
