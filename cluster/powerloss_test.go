package cluster

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/exactonce/exactonce/internal/faultfs"
)

// TestRaftLogSurvivesPowerLoss: entries a node committed (its log fsyncs
// each batch) are there after a power loss that drops everything no fsync
// made durable, the directories the node created at its first start
// included.
func TestRaftLogSurvivesPowerLoss(t *testing.T) {
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
	tn := newTestNode(t, "n1")
	tn.cfg.DataDir = disk.Mountpoint()
	tn.cfg.NoSync = false
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader: %v", err)
	}
	mustApply(t, tn.node, clientCmd("cl_a"))
	mustApply(t, tn.node, createCmd("cl_a", "act_1"))
	tn.kill()
	if _, err := disk.PowerLoss(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader after the power loss: %v", err)
	}
	waitFor(t, "the committed action after the power loss", 10*time.Second, func() bool {
		return tn.node.ReadBarrier(ctxTimeout(t, 2*time.Second)) == nil && action(t, tn.fsm, "cl_a", "act_1") != nil
	})
}
