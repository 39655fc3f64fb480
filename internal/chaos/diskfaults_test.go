package chaos

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDiskFaultsAreSkippedWithoutFaultFS: a cluster whose data dirs are
// not on fault filesystems (containers, -faultfs off, no FUSE) skips the
// disk faults and says so, touching no node.
func TestDiskFaultsAreSkippedWithoutFaultFS(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := NewCluster(ClusterConfig{Net: &Loopback{BasePort: 1}, Nodes: 3, Dir: t.TempDir(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	n := &Nemesis{Cluster: c, Net: &Loopback{BasePort: 1}, Hist: NewHistory(), Log: log}
	for _, k := range []FaultKind{PowerLossLeader, PowerLossAll, DiskFullFollower, FsyncEIOLeader, SlowFsync} {
		ev := n.inject(context.Background(), Fault{Kind: k, Hold: time.Second})
		if !strings.HasPrefix(ev.Note, "skipped") || len(ev.Nodes) != 0 || ev.Err != "" {
			t.Errorf("%s without fault filesystems: note %q, nodes %v, err %q; want skipped", k, ev.Note, ev.Nodes, ev.Err)
		}
	}
}

// TestDiskScenariosDrawTheirFaults: the disk scenarios schedule only
// faults that need the fault filesystems (so that they are skipped whole
// without them), a slow-fsync with a delay of 20 ms to 2 s.
func TestDiskScenariosDrawTheirFaults(t *testing.T) {
	const seed = 7
	t.Logf("seed %d", seed)
	for _, name := range []string{"power-loss", "disk-full", "fsync-eio", "slow-fsync"} {
		kinds, ok := ScenarioFaults(name)
		if !ok {
			t.Fatalf("no scenario %s", name)
		}
		for _, f := range NewSchedule(ScenarioSeed(seed, name), kinds, 2*time.Minute) {
			if !needsDisk(f.Kind) {
				t.Errorf("%s scheduled %s", name, f.Kind)
			}
			if f.Kind == SlowFsync && (f.Delay < 20*time.Millisecond || f.Delay > 2*time.Second) {
				t.Errorf("slow-fsync delay %v, want 20ms..2s", f.Delay)
			}
		}
	}
}

// TestLastLogLinePrefersTheError: a node that stopped is quoted by its
// error line, not by the last line of a panic's stack.
func TestLastLogLinePrefersTheError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "node1.log")
	log := `{"level":"INFO","msg":"ready"}
{"level":"ERROR","msg":"raft log write failed; stopping"}
panic: boom
	/src/cluster/parallellog.go:81 +0x1c5
`
	if err := os.WriteFile(p, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := lastLogLine(p); !strings.Contains(got, "raft log write failed") {
		t.Fatalf("lastLogLine = %q, want the error line", got)
	}
}
