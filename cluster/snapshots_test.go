package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSnapshotsRetain: a node keeps as many snapshot files as
// Config.SnapshotsRetain says, whatever number it took.
func TestSnapshotsRetain(t *testing.T) {
	for _, retain := range []int{1, 3} {
		t.Run(fmt.Sprintf("retain=%d", retain), func(t *testing.T) {
			tn := newTestNode(t, "s1")
			tn.cfg.SnapshotsRetain = retain
			tn.mustOpen()
			waitFor(t, "leader", 10*time.Second, tn.node.IsLeader)
			mustApply(t, tn.node, clientCmd("cl_s"))
			for i := range retain + 2 {
				mustApply(t, tn.node, createCmd("cl_s", fmt.Sprintf("act_s_%d", i)))
				if err := tn.node.raft.Snapshot().Error(); err != nil {
					t.Fatalf("snapshot %d: %v", i, err)
				}
			}
			dirs, err := os.ReadDir(filepath.Join(tn.cfg.DataDir, "raft", "snapshots"))
			if err != nil {
				t.Fatal(err)
			}
			if len(dirs) != retain {
				t.Errorf("%d snapshots on disk after %d taken, want %d", len(dirs), retain+2, retain)
			}
		})
	}
}
