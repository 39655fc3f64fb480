package chaos

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/exactonce/exactonce/client"
	"github.com/exactonce/exactonce/fsm"
)

// Options configures a harness run.
type Options struct {
	Seed uint64
	// Scenarios run in order; each gets a fresh cluster.
	Scenarios []string
	// Duration is each scenario's workload time.
	Duration time.Duration
	// Binary is the exactonced executable.
	Binary string
	// UpgradeBinary is the executable the upgrade scenario replaces
	// Binary with, one node at a time.
	UpgradeBinary string
	// WorkDir holds the nodes' data (wiped per scenario).
	WorkDir string
	// OutDir receives results: <OutDir>/<seed>/<scenario>/.
	OutDir string
	// Net is where the nodes run.
	Net Network
	// DefaultNodeEnv is the harness's environment for every node (test
	// hooks); a scenario may override it (scenarioEnv), NodeEnv overrides both.
	DefaultNodeEnv []string
	// NodeEnv is extra environment for every node (test hooks), from the user.
	NodeEnv []string
	// FaultFS puts each node's data dir on a fault filesystem of its own
	// (internal/faultfs): needed by the disk faults, which are skipped
	// without it.
	FaultFS      bool
	Workload     WorkloadConfig
	CheckTimeout time.Duration
	Log          *slog.Logger
	// Out receives the human-readable summary.
	Out io.Writer
}

// ScenarioResult is the outcome of one scenario.
type ScenarioResult struct {
	Scenario string       `json:"scenario"`
	Seed     uint64       `json:"seed"`
	Schedule []Fault      `json:"schedule"`
	Faults   []FaultEvent `json:"faults"`
	Report   *Report      `json:"report"`
	// Resolved and Unresolved count unknown writes retried after healing.
	Resolved   int    `json:"resolved"`
	Unresolved int    `json:"unresolved"`
	Converged  string `json:"converged"`
	// Replay says whether each node's log replayed to its live state.
	Replay string `json:"replay"`
	// Windows counts the short-window actions the workload created.
	Windows int    `json:"windows"`
	Dir     string `json:"dir"`
	Elapsed string `json:"elapsed"`
}

// RunScenario runs one scenario end to end on a fresh cluster and checks
// its history. An error means the harness itself failed (not an anomaly).
func RunScenario(ctx context.Context, o Options, name string) (res *ScenarioResult, err error) {
	kinds, ok := ScenarioFaults(name)
	if !ok {
		return nil, fmt.Errorf("unknown scenario %q", name)
	}
	if slices.Contains(kinds, UpgradeNode) && o.UpgradeBinary == "" {
		return nil, fmt.Errorf("scenario %s: no build to upgrade to (-upgrade-to)", name)
	}
	began := time.Now()
	seed := ScenarioSeed(o.Seed, name)
	res = &ScenarioResult{Scenario: name, Seed: seed, Schedule: NewSchedule(seed, kinds, o.Duration)}
	res.Dir = filepath.Join(o.OutDir, fmt.Sprint(o.Seed), name)
	log := o.Log.With("scenario", name)
	fmt.Fprintf(o.Out, "== scenario %s (seed %d, scenario seed %d, %v, %d faults)\n", name, o.Seed, seed, o.Duration, len(res.Schedule))
	for _, f := range res.Schedule {
		fmt.Fprintf(o.Out, "   planned %s\n", f)
	}

	dir := filepath.Join(o.WorkDir, name)
	UnmountStaleDisks(dir, 3)
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("wipe %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	token, key := randomToken(32), base64.StdEncoding.EncodeToString(randomBytes(32))
	cl, err := NewCluster(ClusterConfig{Binary: o.Binary, Dir: dir, Net: o.Net, Nodes: 3,
		AdminToken: token, ClusterKey: key, Env: nodeEnv(o, name), Log: log})
	if err != nil {
		return nil, err
	}
	cl.KillLeftovers()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		cl.StopAll(sctx, 10*time.Second)
		if err := cl.UnmountDisks(sctx); err != nil {
			log.Warn("unmount the nodes' fault filesystems", "err", err)
		}
		_ = o.Net.Heal(sctx)
		if res != nil {
			res.Elapsed = time.Since(began).Round(time.Second).String()
		}
	}()
	// Only the scenarios that draw disk faults run on the fault
	// filesystems: the others keep the real filesystem they have always
	// run on, so that whatever FUSE adds (its own caching and ordering
	// under kill -9) cannot show up as, or hide, a fault of the nodes.
	if o.FaultFS && slices.ContainsFunc(kinds, needsDisk) {
		if err := cl.MountDisks(); err != nil {
			return nil, fmt.Errorf("fault filesystems: %w", err)
		}
	}
	all := []int{1, 2, 3}
	for _, n := range all {
		if err := cl.Start(n); err != nil {
			return nil, err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = cl.WaitReady(rctx, all...)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("cluster did not start: %w", err)
	}
	clientID, secret, err := createClient(ctx, cl)
	if err != nil {
		return nil, err
	}

	hist := NewHistory()
	wl, err := NewWorkload(o.Workload, cl, hist, clientID, secret, log)
	if err != nil {
		return nil, err
	}
	nem := &Nemesis{Cluster: cl, Net: o.Net, Hist: hist, Log: log, Burst: wl.Burst, Upgrade: o.UpgradeBinary}
	wctx, stopWorkload := context.WithTimeout(ctx, o.Duration)
	defer stopWorkload()
	var wg sync.WaitGroup
	wg.Go(func() { wl.Run(wctx) })
	res.Faults = nem.Run(wctx, res.Schedule)
	wg.Wait()
	if ctx.Err() != nil {
		return res, fmt.Errorf("interrupted: %w", ctx.Err())
	}

	// Heal everything, wait for the cluster, then settle the history.
	_ = o.Net.Heal(ctx)
	cl.HealDisks()
	for _, n := range all {
		if cl.Paused(n) {
			_ = cl.Resume(n)
		}
		if !cl.Running(n) {
			_ = cl.Start(n)
		}
	}
	var extra []Anomaly
	for _, ev := range res.Faults {
		extra = append(extra, ev.Anomalies...)
	}
	rctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	err = cl.WaitReady(rctx, all...)
	cancel()
	if err != nil {
		extra = append(extra, Anomaly{Kind: "unavailable-after-healing", Detail: err.Error()})
	}
	settle := 100000
	res.Resolved, res.Unresolved = wl.Resolve(ctx, all, settle)
	// A write through the leader commits everything before it; the
	// read-backs that follow are linearizable reads on every node.
	wl.create(ctx, settle+1, 1, false)
	// Short-window actions change state as time passes: read them back
	// once their windows have closed, so every node agrees on them.
	wl.WaitWindowsClosed(ctx)
	// Bounded: a node that never recovers must fail the run (its read-backs
	// end unanswered and count as missing), not hang it.
	rbCtx, rbCancel := context.WithTimeout(ctx, readBackTimeout)
	unread := wl.ReadBack(rbCtx, all, settle+2)
	if rbCtx.Err() != nil {
		extra = append(extra, Anomaly{Kind: "readback-timeout",
			Detail: fmt.Sprintf("reading every action back after healing took over %s; %d not confirmed (a node that never recovers)", readBackTimeout, unread)})
	}
	rbCancel()
	conv, div := converge(ctx, cl, wl)
	extra = append(extra, div...)
	// Stop every node at once (SIGKILL: no leadership transfer appends an
	// entry meanwhile) and compare the state files themselves.
	for _, n := range all {
		_ = cl.Kill(ctx, n)
	}
	live, offline, div := compareStateFiles(cl, log)
	res.Converged = conv + "; " + offline
	extra = append(extra, div...)
	// Replaying each node's Raft log (from its snapshot) into a fresh
	// state machine must give its live state.
	if live != nil {
		res.Replay, div = replayNodes(cl, live, log)
		extra = append(extra, div...)
	} else {
		res.Replay = "log replay not run: no state files"
	}

	ops := hist.Ops()
	res.Windows = wl.Windows()
	res.Report = Check(ctx, ops, o.CheckTimeout)
	res.Report.Anomalies = append(res.Report.Anomalies, extra...)
	if err := writeResult(o, res, ops, cl); err != nil {
		log.Warn("could not save results", "err", err)
	}
	printResult(o.Out, res)
	return res, nil
}

// createClient registers the workload's tenant, retrying until a leader
// accepts it.
func createClient(ctx context.Context, cl *Cluster) (string, string, error) {
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last error
	for i := 0; cctx.Err() == nil; i++ {
		// The same key on every try: a lost answer does not make two clients.
		nc, err := cl.Admin(i%3+1).CreateClient(cctx, "chaos", client.WithIdempotencyKey("chaos-client"))
		if err == nil {
			return nc.ClientID, nc.ClientSecret, nil
		}
		last = err
		select {
		case <-cctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
	return "", "", fmt.Errorf("create chaos client: %w", errors.Join(last, cctx.Err()))
}

// converge waits until every node has applied the same index (and reports
// the same state hash when the server exposes one), then compares each
// node's own view (consistency=stale) of the stats and of every action.
func converge(ctx context.Context, cl *Cluster, wl *Workload) (string, []Anomaly) {
	var out []Anomaly
	// Every node must be a voter again (a replaced node is re-added as a
	// nonvoter and promoted once caught up).
	deadline := time.Now().Add(60 * time.Second)
	for {
		l := cl.Leader(ctx)
		var st *NodeStatus
		if l != 0 {
			st, _ = cl.Status(ctx, l)
		}
		if st != nil && st.Voters() == cl.Nodes() {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			d := "no leader"
			if st != nil {
				d = fmt.Sprintf("%+v", st.Members)
			}
			out = append(out, Anomaly{Kind: KindMembership, Detail: "not every node is a voter 60s after healing: " + d})
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	deadline = time.Now().Add(30 * time.Second)
	var sts []*NodeStatus
	for {
		sts = sts[:0]
		for n := 1; n <= cl.Nodes(); n++ {
			if st, err := cl.StatusWithHash(ctx, n); err == nil {
				sts = append(sts, st)
			}
		}
		if len(sts) == cl.Nodes() && sameApplied(sts) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "no", append(out, Anomaly{Kind: KindDiverged, Detail: "nodes did not reach the same applied index within 30s: " + describeStatuses(sts)})
		}
		time.Sleep(200 * time.Millisecond)
	}
	how := fmt.Sprintf("applied index %d on every node", sts[0].AppliedIndex)
	if sts[0].StateHash != "" {
		for _, st := range sts[1:] {
			if st.StateHash != sts[0].StateHash {
				out = append(out, Anomaly{Kind: KindDiverged, Detail: "state hashes differ at the same applied index: " + describeStatuses(sts)})
				break
			}
		}
		how += ", same state hash"
	}
	// Each node's local state, action by action.
	views := make([]map[string]string, cl.Nodes())
	for n := 1; n <= cl.Nodes(); n++ {
		views[n-1] = wl.localView(ctx, n)
	}
	for n := 2; n <= cl.Nodes(); n++ {
		if !reflect.DeepEqual(views[0], views[n-1]) {
			var diffs []string
			for id, v := range views[0] {
				if views[n-1][id] != v {
					diffs = append(diffs, fmt.Sprintf("%s: node1 %q node%d %q", id, v, n, views[n-1][id]))
				}
			}
			sort.Strings(diffs)
			if len(diffs) > 5 {
				diffs = append(diffs[:5], "...")
			}
			out = append(out, Anomaly{Kind: KindDiverged, Detail: fmt.Sprintf("node1 and node%d hold different action states (stale local reads): %s", n, strings.Join(diffs, "; "))})
		}
	}
	how += fmt.Sprintf(", %d actions identical in every node's local state", len(views[0]))
	if len(out) > 0 {
		return "no", out
	}
	return "yes (" + how + ")", nil
}

// compareStateFiles opens each stopped node's FSM state file and compares
// the state hashes of the nodes that applied the same index. It returns
// every node's applied index and hash (nil when a file could not be read).
func compareStateFiles(cl *Cluster, log *slog.Logger) ([]liveState, string, []Anomaly) {
	var sts []liveState
	for n := 1; n <= cl.Nodes(); n++ {
		// The server keeps its FSM in <data-dir>/state.db; fsm.Open would
		// create a missing file, so check first.
		path := filepath.Join(cl.StoppedDataDir(n), "state.db")
		if _, err := os.Stat(path); err != nil {
			return nil, "state files not compared: " + err.Error(), nil
		}
		f, err := fsm.Open(fsm.Options{Path: path, NoSync: true, Logger: log, InitialMmapSize: 1 << 24})
		if err != nil {
			return nil, "state files not compared: " + err.Error(), nil
		}
		h, err := f.StateHash()
		st := liveState{applied: f.AppliedIndex(), hash: h}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, "state files not compared: " + err.Error(), nil
		}
		sts = append(sts, st)
	}
	for _, st := range sts[1:] {
		if st.applied != sts[0].applied {
			var idx []uint64
			for _, s := range sts {
				idx = append(idx, s.applied)
			}
			return sts, fmt.Sprintf("state files not compared (applied indexes %v)", idx), nil
		}
	}
	h0 := hex.EncodeToString(sts[0].hash)
	for i, st := range sts[1:] {
		if h := hex.EncodeToString(st.hash); h != h0 {
			return sts, "state files differ", []Anomaly{{Kind: KindDiverged,
				Detail: fmt.Sprintf("node1 and node%d state files differ at applied index %d: %s vs %s", i+2, st.applied, h0[:16], h[:16])}}
		}
	}
	return sts, fmt.Sprintf("state files identical (sha256 %s… at index %d)", h0[:12], sts[0].applied), nil
}

func sameApplied(sts []*NodeStatus) bool {
	for _, st := range sts[1:] {
		if st.AppliedIndex != sts[0].AppliedIndex {
			return false
		}
	}
	return true
}

func describeStatuses(sts []*NodeStatus) string {
	var parts []string
	for _, st := range sts {
		parts = append(parts, fmt.Sprintf("%s applied=%d commit=%d hash=%q", st.NodeID, st.AppliedIndex, st.CommitIndex, st.StateHash))
	}
	return strings.Join(parts, "; ")
}

// localView reads every known action from node n's local state
// (consistency=stale) and renders the fields that must agree.
func (w *Workload) localView(ctx context.Context, n int) map[string]string {
	w.mu.Lock()
	ids := make([]string, 0, len(w.actions))
	for _, a := range w.actions {
		ids = append(ids, a.id)
	}
	w.mu.Unlock()
	out := make(map[string]string, len(ids))
	for _, id := range ids {
		a, err := w.clients[n-1].Get(ctx, id, client.Stale())
		if err != nil {
			out[id] = "error: " + client.ErrorCode(err)
			continue
		}
		ca := ""
		if a.ConsumedAt != nil {
			ca = a.ConsumedAt.UTC().Format(time.RFC3339Nano)
		}
		out[id] = fmt.Sprintf("%s/%s/%d/%s", a.State, a.ConsumedReason, a.FailedPINAttempts, ca)
	}
	return out
}

// writeResult saves the history, faults and report; on anomalies also the
// porcupine visualization and the node logs.
func writeResult(o Options, res *ScenarioResult, ops []*Op, cl *Cluster) error {
	if err := os.MkdirAll(res.Dir, 0o755); err != nil {
		return fmt.Errorf("result dir: %w", err)
	}
	hb, err := MarshalHistory(ops)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(res.Dir, "history.json"), hb, 0o644); err != nil {
		return fmt.Errorf("write history: %w", err)
	}
	rb, err := json.MarshalIndent(res, "", " ")
	if err != nil {
		return fmt.Errorf("marshal result: %w", err)
	}
	if err := os.WriteFile(filepath.Join(res.Dir, "result.json"), rb, 0o644); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	if res.Report.OK() {
		return nil
	}
	f, err := os.Create(filepath.Join(res.Dir, "linearizability.html"))
	if err != nil {
		return fmt.Errorf("visualization: %w", err)
	}
	verr := Visualize(res.Report, ops, f, o.CheckTimeout)
	if err := f.Close(); err != nil {
		verr = errors.Join(verr, err)
	}
	for n := 1; n <= cl.Nodes(); n++ {
		if b, err := os.ReadFile(cl.LogPath(n)); err == nil {
			_ = os.WriteFile(filepath.Join(res.Dir, fmt.Sprintf("node%d.log", n)), b, 0o644)
		}
	}
	return verr
}

// printResult writes a scenario's summary.
func printResult(w io.Writer, res *ScenarioResult) {
	r := res.Report
	fmt.Fprintf(w, "-- scenario %s: %d ops on %d actions, %d unknown outcomes (%d resolved by retry after healing, %d left unknown), %d ops retried\n",
		res.Scenario, r.Ops, r.Actions, r.Unknown, res.Resolved, res.Unresolved, r.Retried)
	keys := make([]string, 0, len(r.ByOutcome))
	for k := range r.ByOutcome {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "   %-40s %6d\n", k, r.ByOutcome[k])
	}
	fmt.Fprintf(w, "   faults injected: %d\n", len(res.Faults))
	for _, f := range res.Faults {
		msg := fmt.Sprintf("     %s nodes=%v, ran %v..%v (%s)", f.Fault, f.Nodes,
			time.Duration(f.Start).Round(time.Millisecond), time.Duration(f.End).Round(time.Millisecond), f.Note)
		if f.Err != "" {
			msg += " error: " + f.Err
		}
		fmt.Fprintln(w, msg)
	}
	fmt.Fprintf(w, "   windows: %d short-window actions; %d successful consumes checked inside their window (%d of short-window actions), %d consumedAt answers in all\n",
		res.Windows, r.WindowConsumes, r.WindowShort, r.WindowStamps)
	fmt.Fprintf(w, "   linearizable: %s; replicas converged: %s\n", r.Linearizable, res.Converged)
	if res.Replay != "" {
		fmt.Fprintf(w, "   %s\n", res.Replay)
	}
	if r.OK() {
		fmt.Fprintf(w, "   no anomalies (history: %s)\n", filepath.Join(res.Dir, "history.json"))
		return
	}
	byKind := map[string]int{}
	for _, a := range r.Anomalies {
		byKind[a.Kind]++
	}
	kinds := make([]string, 0, len(byKind))
	for k, n := range byKind {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(kinds)
	fmt.Fprintf(w, "   ANOMALIES: %d: %s\n", len(r.Anomalies), strings.Join(kinds, ", "))
	fmt.Fprintf(w, "   history, visualization and node logs in %s\n", res.Dir)
	for i, a := range r.Anomalies {
		if i == 10 {
			fmt.Fprintf(w, "     ... %d more in result.json\n", len(r.Anomalies)-10)
			break
		}
		fmt.Fprintf(w, "     %s\n", a)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return b
}

func randomToken(n int) string { return base64.RawURLEncoding.EncodeToString(randomBytes(n)) }

// readBackTimeout bounds the final read-back of every action after healing.
const readBackTimeout = 5 * time.Minute

// fullLogTrailing is the trailing log kept by scenarios that need no
// compaction: Raft still snapshots, but keeps (nearly) every entry, so the
// final log replay rebuilds the state from the first entry, not from a
// snapshot taken a moment before the end.
const fullLogTrailing = "EXACTONCE_TEST_TRAILING_LOGS=10000000"

// FrequentSnapshotEnv is the test-only server hooks exactonce-chaos gives
// every node by default (Options.DefaultNodeEnv): small snapshot settings,
// so nodes snapshot often, restarts restore snapshots and a node kept away
// catches up by snapshot. Scenarios without snapshot faults keep a long
// log instead (nodeEnv).
func FrequentSnapshotEnv() []string {
	return []string{
		"EXACTONCE_TEST_SNAPSHOT_THRESHOLD=256",
		"EXACTONCE_TEST_TRAILING_LOGS=128",
		"EXACTONCE_TEST_SNAPSHOT_INTERVAL=2s",
	}
}

// nodeEnv is a scenario's node environment: the harness defaults, the
// scenario's override, then the user's -node-env (the last value of a key
// wins). Scenarios whose faults need a compacted log (a node catching up by
// snapshot, a replaced node, a power loss that must find every snapshot
// whole) keep the defaults.
func nodeEnv(o Options, scenario string) []string {
	env := append([]string{}, o.DefaultNodeEnv...)
	switch scenario {
	case "snapshot", "members", "mixed", "upgrade", "power-loss":
	default:
		env = append(env, fullLogTrailing)
	}
	return append(env, o.NodeEnv...)
}
