package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// FaultKind names one kind of fault.
type FaultKind string

// The faults the nemesis injects.
const (
	KillLeader    FaultKind = "kill-leader"    // SIGKILL the leader, restart on its data dir
	KillFollower  FaultKind = "kill-follower"  // SIGKILL a follower, restart
	KillRandom    FaultKind = "kill-random"    // SIGKILL any node, restart
	KillAll       FaultKind = "kill-all"       // SIGKILL every node at once, restart all
	RebootNode    FaultKind = "reboot-node"    // SIGKILL a node as a machine crash would: its state file is rebuilt from snapshot + log
	PauseLeader   FaultKind = "pause-leader"   // SIGSTOP the leader past the election timeout, SIGCONT
	PauseRandom   FaultKind = "pause-random"   // SIGSTOP any node, SIGCONT
	IsolateLeader FaultKind = "isolate-leader" // cut the leader from both followers (both ways)
	IsolateNode   FaultKind = "isolate-node"   // cut any one node from the others (both ways)
	OneWayOut     FaultKind = "oneway-leader-out"
	OneWayIn      FaultKind = "oneway-leader-in"
	SnapshotLag   FaultKind = "snapshot-lag" // keep a follower away during a burst of writes so it needs a snapshot
	ClockSkew     FaultKind = "clock-skew"   // restart a node with a test-only clock offset and make it leader
	ClockJump     FaultKind = "clock-jump"   // jump the leader's and a follower's clocks back and forth at runtime
	ReplaceNode   FaultKind = "replace-node" // kill a follower, remove it from Raft, wipe it, start it fresh (re-added)
	UpgradeNode   FaultKind = "upgrade-node" // stop a node not yet upgraded (SIGTERM), start the new build on its data dir: followers first, the leader last

	// Disk faults, through each node's fault filesystem (internal/faultfs).
	PowerLossLeader   FaultKind = "power-loss-leader"   // SIGKILL the leader, drop its unsynced data, restart
	PowerLossFollower FaultKind = "power-loss-follower" // the same for a follower
	PowerLossTwo      FaultKind = "power-loss-two"      // the same for the leader and a follower at once
	PowerLossAll      FaultKind = "power-loss-all"      // the same for every node at once
	DiskFullLeader    FaultKind = "disk-full-leader"    // the leader's disk answers ENOSPC to writes needing space
	DiskFullFollower  FaultKind = "disk-full-follower"  // the same on a follower
	FsyncEIOLeader    FaultKind = "fsync-eio-leader"    // the leader's fsyncs answer EIO (once or throughout)

	FsyncEIOFollower FaultKind = "fsync-eio-follower" // the same on a follower
	SlowFsync        FaultKind = "slow-fsync"         // one node's fsyncs take 20 ms to 2 s longer
)

// upgradeSteps is how many upgrade-node faults a schedule holds: one per
// node of the harness's three-node cluster.
const upgradeSteps = 3

// needsDisk reports whether a fault needs the nodes' fault filesystems.
func needsDisk(k FaultKind) bool {
	switch k {
	case PowerLossLeader, PowerLossFollower, PowerLossTwo, PowerLossAll,
		DiskFullLeader, DiskFullFollower, FsyncEIOLeader, FsyncEIOFollower, SlowFsync:
		return true
	}
	return false
}

// needsPartition reports whether a fault needs a network that can cut links.
func needsPartition(k FaultKind) bool {
	switch k {
	case IsolateLeader, IsolateNode, OneWayOut, OneWayIn, SnapshotLag:
		return true
	}
	return false
}

// ScenarioNames lists the scenarios in a stable order.
func ScenarioNames() []string {
	return []string{"none", "kill", "pause", "partition", "snapshot", "clock", "members", "mixed", "upgrade",
		"power-loss", "disk-full", "fsync-eio", "slow-fsync"}
}

// ScenarioFaults returns the faults a scenario draws from.
func ScenarioFaults(name string) ([]FaultKind, bool) {
	switch name {
	case "none":
		return nil, true
	case "kill":
		// Listed twice: drawn twice as often as killing every node.
		return []FaultKind{KillLeader, KillFollower, KillRandom, KillLeader, KillFollower, KillRandom, KillAll, RebootNode}, true
	case "pause":
		return []FaultKind{PauseLeader, PauseRandom}, true
	case "partition":
		return []FaultKind{IsolateLeader, IsolateNode, OneWayOut, OneWayIn}, true
	case "snapshot":
		return []FaultKind{SnapshotLag}, true
	case "clock":
		return []FaultKind{ClockSkew, ClockJump}, true
	case "members":
		return []FaultKind{ReplaceNode}, true
	case "upgrade":
		// A rolling upgrade from Options.Binary to Options.UpgradeBinary.
		return []FaultKind{UpgradeNode}, true
	case "mixed":
		return []FaultKind{KillLeader, KillFollower, KillRandom, KillAll, RebootNode, PauseLeader, PauseRandom,
			IsolateLeader, IsolateNode, OneWayOut, OneWayIn, SnapshotLag, ReplaceNode}, true
	case "power-loss":
		// The leader and all three drawn twice as often as the others.
		return []FaultKind{PowerLossLeader, PowerLossFollower, PowerLossTwo, PowerLossAll, PowerLossLeader, PowerLossAll}, true
	case "disk-full":
		return []FaultKind{DiskFullLeader, DiskFullFollower}, true
	case "fsync-eio":
		return []FaultKind{FsyncEIOLeader, FsyncEIOFollower}, true
	case "slow-fsync":
		return []FaultKind{SlowFsync}, true
	}
	return nil, false
}

// Fault is one scheduled fault. Pick is a random number fixed by the seed
// that chooses among candidate nodes when the fault starts.
type Fault struct {
	At   time.Duration `json:"at"`
	Kind FaultKind     `json:"kind"`
	Hold time.Duration `json:"hold"`
	Pick uint64        `json:"pick"`
	// Offset is the clock offset of a clock-skew fault.
	Offset time.Duration `json:"offset,omitempty"`
	// Jumps are the clock offsets a clock-jump fault sets in turn, on the
	// leader (even positions) and on a follower (odd positions).
	Jumps []time.Duration `json:"jumps,omitempty"`
	// Delay is how much longer a slow-fsync fault makes each fsync.
	Delay time.Duration `json:"delay,omitempty"`
}

// String renders the fault as "+<at> <kind> for <hold>".
func (f Fault) String() string {
	return fmt.Sprintf("+%v %s for %v", f.At.Round(time.Millisecond), f.Kind, f.Hold.Round(time.Millisecond))
}

// ScenarioSeed derives a scenario's seed from the run's seed, so that one
// seed replays the same schedule of every scenario.
func ScenarioSeed(seed uint64, scenario string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(scenario))
	return seed ^ h.Sum64()
}

// NewSchedule draws the faults of a scenario of the given duration: a
// warm-up, then faults with random holds and gaps, ending early enough to
// leave a fault-free cool-down. The same seed gives the same schedule.
func NewSchedule(seed uint64, kinds []FaultKind, d time.Duration) []Fault {
	if len(kinds) == 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(seed, 0x6e656d65736973))
	ms := func(lo, hi int) time.Duration { return time.Duration(lo+rng.IntN(hi-lo+1)) * time.Millisecond }
	var out []Fault
	t := ms(3000, 5000)
	end := d - 8*time.Second
	upgrades := 0
	for t < end && upgrades < upgradeSteps {
		f := Fault{At: t, Kind: kinds[rng.IntN(len(kinds))], Pick: rng.Uint64()}
		switch f.Kind {
		case PauseLeader, PauseRandom:
			f.Hold = ms(3000, 14000) // past the election timeout, some past the request deadline
		case SnapshotLag:
			f.Hold = ms(12000, 18000)
		case ClockSkew, ReplaceNode:
			f.Hold = ms(8000, 12000)
			f.Offset = time.Duration(rng.IntN(61)-30) * time.Second
		case ClockJump:
			f.Hold = ms(8000, 16000)
			for range 3 + rng.IntN(3) {
				d := time.Duration(5+rng.IntN(56)) * time.Second // 5..60 s
				if rng.IntN(2) == 0 {
					d = -d
				}
				f.Jumps = append(f.Jumps, d)
			}
		case KillAll:
			f.Hold = ms(500, 2000)
		case UpgradeNode:
			f.Hold = ms(500, 2000) // the node is down while its binary is replaced
			upgrades++
		case PowerLossLeader, PowerLossFollower, PowerLossTwo, PowerLossAll:
			f.Hold = ms(500, 4000) // the time the nodes stay down
		case DiskFullLeader, DiskFullFollower, FsyncEIOLeader, FsyncEIOFollower:
			f.Hold = ms(3000, 10000)
		case SlowFsync:
			f.Hold = ms(5000, 12000)
			f.Delay = ms(20, 2000)
		case IsolateLeader, IsolateNode, OneWayOut, OneWayIn:
			f.Hold = ms(4000, 14000) // some beyond the 10s request deadline
		default:
			f.Hold = ms(2000, 8000)
		}
		if t+f.Hold > end {
			break
		}
		out = append(out, f)
		t += f.Hold + ms(3000, 6000)
	}
	return out
}

// FaultEvent records one fault as it happened.
type FaultEvent struct {
	Fault
	// Nodes are the nodes the fault hit; Start and End are history times.
	Nodes []int  `json:"nodes"`
	Start int64  `json:"start"`
	End   int64  `json:"end"`
	Note  string `json:"note,omitempty"`
	Err   string `json:"err,omitempty"`
	// Anomalies are what the fault itself found wrong (reported with
	// the history's).
	Anomalies []Anomaly `json:"anomalies,omitempty"`
}

// Nemesis injects a schedule of faults into a cluster.
type Nemesis struct {
	Cluster *Cluster
	Net     Network
	Hist    *History
	Log     *slog.Logger
	// Burst, when set, issues n writes through the given nodes (used by
	// snapshot-lag).
	Burst func(ctx context.Context, n int, nodes []int)
	// Upgrade is the exactonced executable upgrade-node starts.
	Upgrade string

	// upgraded holds the nodes upgrade-node moved to Upgrade.
	upgraded map[int]bool
}

// Run executes schedule (times relative to now) and returns what happened.
// Every fault is healed before the next starts and before Run returns.
func (n *Nemesis) Run(ctx context.Context, schedule []Fault) []FaultEvent {
	start := time.Now()
	var events []FaultEvent
	for _, f := range schedule {
		if wait := time.Until(start.Add(f.At)); wait > 0 {
			select {
			case <-ctx.Done():
				return events
			case <-time.After(wait):
			}
		}
		if ctx.Err() != nil {
			// The workload has ended: start no fault it cannot observe.
			return events
		}
		ev := n.inject(ctx, f)
		events = append(events, ev)
		lvl := slog.LevelInfo
		if ev.Err != "" {
			lvl = slog.LevelWarn
		}
		n.Log.Log(ctx, lvl, "fault", "kind", f.Kind, "nodes", ev.Nodes, "hold", f.Hold, "note", ev.Note, "err", ev.Err)
	}
	return events
}

func (n *Nemesis) sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// target resolves the node a fault hits.
func (n *Nemesis) target(ctx context.Context, f Fault) (int, string) {
	nodes := n.Cluster.Nodes()
	random := int(f.Pick%uint64(nodes)) + 1
	switch f.Kind {
	case KillLeader, PauseLeader, IsolateLeader, OneWayOut, OneWayIn,
		PowerLossLeader, PowerLossTwo, DiskFullLeader, FsyncEIOLeader:
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if l := n.Cluster.WaitLeader(lctx); l != 0 {
			return l, "leader"
		}
		return random, "no leader found; random node"
	case UpgradeNode:
		// Followers first, the leader last, as docs/upgrade.md says.
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		l := n.Cluster.WaitLeader(lctx)
		var fs []int
		for i := 1; i <= nodes; i++ {
			if i != l && !n.upgraded[i] {
				fs = append(fs, i)
			}
		}
		switch {
		case len(fs) > 0:
			return fs[int(f.Pick%uint64(len(fs)))], "follower"
		case l != 0 && !n.upgraded[l]:
			return l, "leader, upgraded last"
		}
		return 0, "every node runs the new build"
	case KillFollower, SnapshotLag, ReplaceNode, ClockJump,
		PowerLossFollower, DiskFullFollower, FsyncEIOFollower:
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		l := n.Cluster.WaitLeader(lctx)
		var fs []int
		for i := 1; i <= nodes; i++ {
			if i != l {
				fs = append(fs, i)
			}
		}
		if l == 0 {
			return random, "no leader found; random node"
		}
		return fs[int(f.Pick%uint64(len(fs)))], "follower"
	}
	return random, "random"
}

func (n *Nemesis) others(x int) []int {
	var out []int
	for i := 1; i <= n.Cluster.Nodes(); i++ {
		if i != x {
			out = append(out, i)
		}
	}
	return out
}

// inject applies one fault, holds it, and heals it.
func (n *Nemesis) inject(ctx context.Context, f Fault) (ev FaultEvent) {
	ev = FaultEvent{Fault: f, Start: n.Hist.Now()}
	defer func() { ev.End = n.Hist.Now() }()
	// Repairs (waiting for a killed node to exit, healing the network) use
	// their own context: when the workload's time runs out during a fault,
	// the hold ends early but the repair must still happen, or the checks
	// after the run find a node down (seed 2029, mixed: a kill at the very
	// end left node3 stopped).
	repair, cancelRepair := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancelRepair()
	var errs []error
	if needsPartition(f.Kind) && !n.Net.CanPartition() {
		ev.Note = "skipped: this network cannot cut links"
		return ev
	}
	if needsDisk(f.Kind) && !n.Cluster.HasDisks() {
		ev.Note = "skipped: the nodes run without fault filesystems (-faultfs off, no FUSE, or containers)"
		return ev
	}
	if (f.Kind == OneWayOut || f.Kind == OneWayIn) && !canCutOneWay(n.Net) {
		ev.Note = "skipped: this network cannot cut one direction only"
		return ev
	}
	x, how := n.target(ctx, f)
	ev.Note = how
	if x == 0 {
		ev.Note = "skipped: " + how
		return ev
	}
	ev.Nodes = []int{x}
	switch f.Kind {
	case KillLeader, KillFollower, KillRandom:
		errs = append(errs, n.Cluster.Kill(repair, x))
		n.sleep(ctx, f.Hold)
		errs = append(errs, n.Cluster.Start(x))
	case RebootNode:
		// What a machine crash leaves behind for the state file: the open
		// marker of another boot (fsm.Options.DeferSync). The node must
		// move the file aside and rebuild it from its snapshot and log.
		before := countInLog(n.Cluster.LogPath(x), stateRebuilt)
		errs = append(errs, n.Cluster.Kill(repair, x))
		marker := filepath.Join(n.Cluster.DataDir(x), "state.db.open")
		if _, err := os.Stat(marker); err == nil {
			errs = append(errs, os.WriteFile(marker, []byte("chaos-simulated-reboot\n"), 0o600))
		} else {
			errs = append(errs, fmt.Errorf("reboot-node: no open marker in %s: %w", n.Cluster.DataDir(x), err))
		}
		n.sleep(ctx, f.Hold)
		errs = append(errs, n.Cluster.Start(x))
		// The node logs the rebuild as it opens its state, soon after start.
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) && countInLog(n.Cluster.LogPath(x), stateRebuilt) == before && ctx.Err() == nil {
			n.sleep(ctx, 100*time.Millisecond)
		}
		if countInLog(n.Cluster.LogPath(x), stateRebuilt) > before {
			ev.Note += "; state file moved aside, rebuilt from snapshot and log"
		} else {
			errs = append(errs, fmt.Errorf("reboot-node: node %d did not rebuild its state file", x))
		}
	case KillAll:
		ev.Nodes = nil
		for i := 1; i <= n.Cluster.Nodes(); i++ {
			ev.Nodes = append(ev.Nodes, i)
			errs = append(errs, n.Cluster.Kill(repair, i))
		}
		n.sleep(ctx, f.Hold)
		for i := 1; i <= n.Cluster.Nodes(); i++ {
			errs = append(errs, n.Cluster.Start(i))
		}
	case UpgradeNode:
		errs = append(errs, n.upgrade(ctx, repair, f, x, &ev)...)
	case PauseLeader, PauseRandom:
		errs = append(errs, n.Cluster.Pause(x))
		n.sleep(ctx, f.Hold)
		errs = append(errs, n.Cluster.Resume(x))
	case IsolateLeader, IsolateNode:
		for _, y := range n.others(x) {
			errs = append(errs, n.Net.Cut(ctx, x, y), n.Net.Cut(ctx, y, x))
		}
		n.sleep(ctx, f.Hold)
		errs = append(errs, n.Net.Heal(repair))
	case OneWayOut:
		for _, y := range n.others(x) {
			errs = append(errs, n.Net.Cut(ctx, x, y))
		}
		n.sleep(ctx, f.Hold)
		errs = append(errs, n.Net.Heal(repair))
	case OneWayIn:
		for _, y := range n.others(x) {
			errs = append(errs, n.Net.Cut(ctx, y, x))
		}
		n.sleep(ctx, f.Hold)
		errs = append(errs, n.Net.Heal(repair))
	case SnapshotLag:
		// Without a restart, any snapshot restore is one sent by the leader.
		before := countInLog(n.Cluster.LogPath(x), snapshotRestored)
		for _, y := range n.others(x) {
			errs = append(errs, n.Net.Cut(ctx, x, y), n.Net.Cut(ctx, y, x))
		}
		holdEnd := time.Now().Add(f.Hold)
		if n.Burst != nil {
			bctx, cancel := context.WithDeadline(ctx, holdEnd)
			n.Burst(bctx, 400, n.others(x))
			cancel()
		}
		n.sleep(ctx, time.Until(holdEnd))
		errs = append(errs, n.Net.Heal(repair))
		// Give the node a bounded time to catch up, then report whether
		// it took a snapshot (needs the server's snapshot tuning hook).
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && countInLog(n.Cluster.LogPath(x), snapshotRestored) == before {
			n.sleep(ctx, 250*time.Millisecond)
		}
		if countInLog(n.Cluster.LogPath(x), snapshotRestored) > before {
			ev.Note += "; node installed a snapshot from the leader"
		} else {
			ev.Note += "; node caught up from the log (no snapshot installed)"
		}
	case ClockSkew:
		errs = append(errs, n.Cluster.Kill(repair, x))
		n.Cluster.SetNodeEnv(x, []string{"EXACTONCE_TEST_CLOCK_OFFSET=" + f.Offset.String()})
		errs = append(errs, n.Cluster.Start(x))
		ev.Note += fmt.Sprintf("; clock offset %v", f.Offset)
		// Make the skewed node leader, so that its clock stamps entries.
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := n.Cluster.WaitReady(rctx, x)
		if err == nil && n.Cluster.Leader(rctx) != x {
			_, err = n.Cluster.Admin(x).TransferLeadership(rctx, fmt.Sprintf("node%d", x))
		}
		cancel()
		if err != nil {
			ev.Note += "; leadership not transferred: " + err.Error()
		} else {
			ev.Note += "; skewed node made leader"
		}
		n.sleep(ctx, f.Hold)
		errs = append(errs, n.Cluster.Kill(repair, x))
		n.Cluster.SetNodeEnv(x, nil)
		errs = append(errs, n.Cluster.Start(x))
	case ClockJump:
		errs = append(errs, n.clockJumps(ctx, f, x, &ev)...)
	case PowerLossLeader, PowerLossFollower, PowerLossTwo, PowerLossAll:
		errs = append(errs, n.powerLoss(ctx, repair, f, x, &ev)...)
	case DiskFullLeader, DiskFullFollower, FsyncEIOLeader, FsyncEIOFollower, SlowFsync:
		errs = append(errs, n.diskFault(ctx, repair, f, x, &ev)...)
	case ReplaceNode:
		errs = append(errs, n.Cluster.Kill(repair, x))
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		var err error
		for rctx.Err() == nil {
			y := n.others(x)[0]
			if n.Cluster.Leader(rctx) == y {
				y = n.others(x)[1]
			}
			if _, err = n.Cluster.Admin(y).RemoveServer(rctx, fmt.Sprintf("node%d", x)); err == nil {
				break
			}
			n.sleep(rctx, 500*time.Millisecond)
		}
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("remove node%d: %w", x, err))
		}
		errs = append(errs, n.Cluster.Wipe(x))
		n.sleep(ctx, f.Hold)
		errs = append(errs, n.Cluster.Start(x))
		ev.Note += "; removed from Raft, data wiped, restarted empty"
	}
	if err := errors.Join(errs...); err != nil {
		ev.Err = err.Error()
	}
	// Wait (bounded) for every node to be ready again, so that faults do
	// not pile up; the schedule's times stay fixed.
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	all := make([]int, 0, n.Cluster.Nodes())
	for i := 1; i <= n.Cluster.Nodes(); i++ {
		all = append(all, i)
	}
	if err := n.Cluster.WaitReady(rctx, all...); err != nil && ctx.Err() == nil {
		ev.Note += "; not all nodes ready 20s after healing: " + err.Error()
	}
	return ev
}

// clockJumps runs a clock-jump fault: while the workload runs, the clocks
// of the leader and of follower x jump in turn to the fault's offsets (each
// ±5..60 s from the real time), spread over the hold; then both are reset.
// The leader's stamps must still never go back (time-went-backwards) and
// no consume may succeed outside its window by them
// (consume-outside-window).
func (n *Nemesis) clockJumps(ctx context.Context, f Fault, x int, ev *FaultEvent) []error {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	leader := n.Cluster.WaitLeader(lctx)
	cancel()
	if leader == 0 || leader == x {
		leader = n.others(x)[0]
	}
	ev.Nodes = []int{leader, x}
	var errs []error
	var done []string
	step := f.Hold / time.Duration(len(f.Jumps)+1)
	for i, d := range f.Jumps {
		node := leader
		if i%2 == 1 {
			node = x
		}
		n.sleep(ctx, step)
		if ctx.Err() != nil {
			break
		}
		if err := n.Cluster.SetClock(ctx, node, d); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, fmt.Sprintf("node%d %+v", node, d))
	}
	n.sleep(ctx, step)
	for _, node := range ev.Nodes {
		errs = append(errs, n.Cluster.SetClock(context.WithoutCancel(ctx), node, 0))
	}
	ev.Note = fmt.Sprintf("leader node%d, follower node%d; jumps: %s; reset", leader, x, strings.Join(done, ", "))
	return errs
}

// snapshotRestored is what the FSM logs when it restores a snapshot.
const snapshotRestored = "restored snapshot"

// upgrade replaces node x's build: a graceful stop (what a service
// manager does), the new executable on the same data dir, then a wait
// until the node is ready and reports the new build's version.
func (n *Nemesis) upgrade(ctx, repair context.Context, f Fault, x int, ev *FaultEvent) []error {
	if n.Upgrade == "" {
		return []error{errors.New("upgrade-node: no new build to upgrade to (Options.UpgradeBinary)")}
	}
	before := ""
	if st, err := n.Cluster.Status(repair, x); err == nil {
		before = st.Version
	}
	errs := []error{n.Cluster.Terminate(repair, x, 10*time.Second), n.Cluster.SetNodeBinary(x, n.Upgrade)}
	n.sleep(ctx, f.Hold)
	errs = append(errs, n.Cluster.Start(x))
	rctx, cancel := context.WithTimeout(repair, 60*time.Second)
	defer cancel()
	if err := n.Cluster.WaitReady(rctx, x); err != nil {
		return append(errs, fmt.Errorf("upgrade-node: node%d on the new build: %w", x, err))
	}
	st, err := n.Cluster.Status(rctx, x)
	if err != nil {
		return append(errs, err)
	}
	if n.upgraded == nil {
		n.upgraded = map[int]bool{}
	}
	n.upgraded[x] = true
	ev.Note += fmt.Sprintf("; version %q -> %q, ready", before, st.Version)
	if len(n.upgraded) == n.Cluster.Nodes() {
		// What an operator checks at the end (docs/upgrade.md): every
		// member's version, as this node's GET /v1/cluster reports them.
		ev.Note += "; " + n.memberVersions(rctx, x, st.Version)
	}
	return errs
}

// memberVersions waits (up to 15 s, gossip spreads a restarted member's
// metadata) until node x's GET /v1/cluster reports want for every member,
// and describes what it reports.
func (n *Nemesis) memberVersions(ctx context.Context, x int, want string) string {
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := n.Cluster.Status(ctx, x)
		var got []string
		same := err == nil && len(st.Members) == n.Cluster.Nodes()
		if err == nil {
			for _, m := range st.Members {
				got = append(got, fmt.Sprintf("%s=%q", m.ID, m.Version))
				same = same && m.Version == want
			}
		}
		if same {
			return fmt.Sprintf("every member reports %q", want)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Sprintf("members report %s (err %v)", strings.Join(got, ", "), err)
		}
		n.sleep(ctx, 250*time.Millisecond)
	}
}

// countInLog counts case-insensitive occurrences of s in a log file.
// stateRebuilt is logged by a node that discards its state file after a
// machine crash (fsm.Open with DeferSync).
const stateRebuilt = "moved it aside"

func countInLog(path, s string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(bytes.ToLower(b), []byte(strings.ToLower(s)))
}
