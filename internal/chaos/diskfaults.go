package chaos

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/exactonce/exactonce/internal/faultfs"
)

// KindAheadOfPeers is a node that, restarted after a power loss, has
// applied entries the rest of the cluster never committed.
const KindAheadOfPeers = "ahead-of-peers"

// powerLoss runs a power-loss fault: the nodes are killed, their disks
// drop everything no fsync made durable, and they start again after the
// hold. Each must then hold nothing its peers have not committed.
func (n *Nemesis) powerLoss(ctx, repair context.Context, f Fault, x int, ev *FaultEvent) []error {
	nodes := []int{x}
	switch f.Kind {
	case PowerLossTwo:
		others := n.others(x)
		nodes = append(nodes, others[int((f.Pick>>8)%uint64(len(others)))])
	case PowerLossAll:
		nodes = nil
		for i := 1; i <= n.Cluster.Nodes(); i++ {
			nodes = append(nodes, i)
		}
	}
	ev.Nodes = nodes
	var errs []error
	for _, i := range nodes {
		errs = append(errs, n.Cluster.Kill(repair, i))
	}
	var lost []string
	for _, i := range nodes {
		rep, err := n.Cluster.PowerLoss(repair, i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lost = append(lost, fmt.Sprintf("node%d dropped %d unsynced bytes in %d files and names in %d dirs", i, rep.Bytes, rep.Files, rep.Dirs))
	}
	ev.Note += "; " + strings.Join(lost, ", ")
	n.sleep(ctx, f.Hold)
	for _, i := range nodes {
		errs = append(errs, n.Cluster.Start(i))
	}
	ev.Anomalies = append(ev.Anomalies, n.checkNotAhead(repair, nodes)...)
	return errs
}

// diskFault runs a full disk, failing fsyncs or slow fsyncs on node x for
// the hold, then heals the disk. A node that exited under the fault is
// restarted (the note says so, with its last log line). Half the
// fsync-eio faults end in a power loss of the node: only that shows what
// a failed fsync lost.
func (n *Nemesis) diskFault(ctx, repair context.Context, f Fault, x int, ev *FaultEvent) []error {
	d := n.Cluster.Disk(x)
	before := d.Stats()
	var errs []error
	switch f.Kind {
	case DiskFullLeader, DiskFullFollower:
		d.Fill()
		ev.Note += "; disk full"
	case FsyncEIOLeader, FsyncEIOFollower:
		if (f.Pick>>8)&1 == 1 {
			d.FailFsync(faultfs.Always)
			ev.Note += "; every fsync fails"
		} else {
			d.FailFsync(faultfs.Once)
			ev.Note += "; the next fsync fails"
		}
	case SlowFsync:
		d.SetFsyncDelay(f.Delay)
		ev.Note += fmt.Sprintf("; fsyncs %v slower", f.Delay)
	}
	exited := n.holdWatching(ctx, x, f.Hold)
	d.Heal()
	after := d.Stats()
	ev.Note += fmt.Sprintf(" (%d ENOSPC answers, %d failed and %d delayed fsyncs)",
		after.NoSpaceWrites-before.NoSpaceWrites, after.FailedFsyncs-before.FailedFsyncs, after.DelayedFsyncs-before.DelayedFsyncs)
	if exited {
		ev.Note += fmt.Sprintf("; node%d exited under the fault: %s", x, lastLogLine(n.Cluster.LogPath(x)))
	}
	if (f.Kind == FsyncEIOLeader || f.Kind == FsyncEIOFollower) && (f.Pick>>9)&1 == 1 {
		errs = append(errs, n.Cluster.Kill(repair, x))
		rep, err := n.Cluster.PowerLoss(repair, x)
		errs = append(errs, err)
		ev.Note += fmt.Sprintf("; then a power loss: dropped %d unsynced bytes in %d files and names in %d dirs", rep.Bytes, rep.Files, rep.Dirs)
		errs = append(errs, n.Cluster.Start(x))
		ev.Anomalies = append(ev.Anomalies, n.checkNotAhead(repair, []int{x})...)
	} else if !n.Cluster.Running(x) {
		errs = append(errs, n.Cluster.Start(x))
		ev.Note += "; restarted"
	}
	return errs
}

// holdWatching waits out the hold and reports whether node x exited
// meanwhile.
func (n *Nemesis) holdWatching(ctx context.Context, x int, hold time.Duration) bool {
	end := time.Now().Add(hold)
	for time.Now().Before(end) && ctx.Err() == nil {
		if !n.Cluster.Running(x) {
			n.sleep(ctx, time.Until(end))
			return true
		}
		n.sleep(ctx, min(200*time.Millisecond, time.Until(end)))
	}
	return !n.Cluster.Running(x)
}

// checkNotAhead waits (bounded) for the restarted nodes to be ready and
// reports any whose applied index the other nodes' commit index does not
// reach within 20 s: state that the cluster never committed.
func (n *Nemesis) checkNotAhead(ctx context.Context, nodes []int) []Anomaly {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := n.Cluster.WaitReady(rctx, nodes...); err != nil {
		return nil // reported by the readiness checks after the fault
	}
	var out []Anomaly
	for _, i := range nodes {
		st, err := n.Cluster.Status(rctx, i)
		if err != nil {
			continue
		}
		var best uint64
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) && rctx.Err() == nil {
			for _, j := range n.others(i) {
				if sj, err := n.Cluster.Status(rctx, j); err == nil {
					best = max(best, sj.CommitIndex)
				}
			}
			if best >= st.AppliedIndex {
				break
			}
			n.sleep(rctx, 250*time.Millisecond)
		}
		if best < st.AppliedIndex {
			out = append(out, Anomaly{Kind: KindAheadOfPeers, Detail: fmt.Sprintf(
				"node%d restarted after a power loss with applied index %d; the other nodes' commit index reached only %d within 20s", i, st.AppliedIndex, best)})
		}
	}
	return out
}

// lastLogLine is the node's last error-level log line (its last line when
// it has none, e.g. a bare panic), shortened.
func lastLogLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	l := string(lines[len(lines)-1])
	for i := len(lines) - 1; i >= 0; i-- {
		if bytes.Contains(lines[i], []byte(`"level":"ERROR"`)) {
			l = string(lines[i])
			break
		}
	}
	if len(l) > 300 {
		l = l[:300] + "…"
	}
	return l
}
