// Command exactonce-chaos is ExactOnce's Jepsen-style fault-injection
// harness. It builds exactonced, runs a three-node cluster (each node in its
// own network namespace when run as root, or, with -backend containers, as
// containers under docker-compose), drives a workload of creates,
// hot and cold consumes, PIN attempts, cancels and verifies while killing,
// pausing and partitioning nodes, and checks the recorded history for
// linearizability and exactly-once violations. See docs/chaos.md.
//
//	exactonce-chaos [flags]                 run scenarios; exit 1 on any anomaly
//	exactonce-chaos -recheck history.json  re-check a saved history
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/exactonce/exactonce/internal/chaos"
	"github.com/exactonce/exactonce/internal/faultfs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// stringList is a repeatable string flag.
type stringList []string

// String implements flag.Value.
func (s *stringList) String() string { return strings.Join(*s, ",") }

// Set implements flag.Value: each use appends.
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// run is the whole command; it returns the exit status: 0 no anomaly, 1
// anomalies (or, with -expect-anomaly, none found), 2 usage or harness error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("exactonce-chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seed := fs.Uint64("seed", 0, "seed for the fault schedule and workload choices (0: random, printed)")
	scenarios := fs.String("scenarios", "kill,pause,partition,snapshot", "comma-separated scenarios: "+scenarioNames())
	duration := fs.Duration("duration", 4*time.Minute, "total workload time, split evenly over the scenarios")
	tags := fs.String("tags", "chaostest", "build tags for exactonced (add chaosbug for the self-test)")
	binPath := fs.String("binary", "", "use this exactonced binary instead of building one")
	upgradeTo := fs.String("upgrade-to", "", "scenario upgrade: the exactonced binary that replaces -binary's, one node at a time (make upgrade-test)")
	outDir := fs.String("out", "chaos-out", "results directory (<out>/<seed>/<scenario>/)")
	workDir := fs.String("workdir", filepath.Join(os.TempDir(), "exactonce-chaos"), "node data directory (wiped per scenario)")
	backend := fs.String("backend", "process", "process|containers: nodes as local processes (placed by -net) or as containers under docker-compose")
	project := fs.String("project", "exactoncechaos", "-backend containers: compose project, container, network and image name prefix")
	dockerSubnet := fs.String("docker-subnet", "172.30", "-backend containers: first two octets of the cluster (.10.0/24) and api (.20.0/24) networks")
	faultFS := fs.String("faultfs", "auto", "auto|on|off: each node's data dir on a fault filesystem (FUSE, internal/faultfs) for the disk faults; auto: on where /dev/fuse and fusermount3 exist, with -backend process")
	netMode := fs.String("net", "auto", "auto|netns|loopback: where nodes run (loopback cannot partition)")
	prefix := fs.String("prefix", "eoc", "name prefix of the namespaces and links the harness creates")
	subnet := fs.String("subnet", "10.77.0", "private /24 (first three octets) for the namespaces")
	basePort := fs.Int("base-port", 18000, "first port for -net loopback")
	workers := fs.Int("workers-per-node", 2, "sequential clients pinned to each node")
	racers := fs.Int("racers", 5, "most concurrent consumers of one hot action")
	reqTimeout := fs.Duration("request-timeout", 12*time.Second, "timeout of one HTTP attempt (above the server's 10s request deadline, so its 503s are seen)")
	attempts := fs.Int("attempts", 6, "tries of one operation (same Idempotency-Key) before its outcome stays unknown")
	think := fs.Duration("think", 20*time.Millisecond, "pause between a worker's operations")
	checkTimeout := fs.Duration("check-timeout", 2*time.Minute, "time budget of the linearizability check per scenario")
	expectAnomaly := fs.Bool("expect-anomaly", false, "self-test: succeed only if an anomaly is found (use with -tags chaosbug)")
	recheck := fs.String("recheck", "", "re-check a saved history.json and exit")
	verbose := fs.Bool("v", false, "debug logging")
	var nodeEnv stringList
	fs.Var(&nodeEnv, "node-env", "KEY=VALUE added to every node's environment (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if *recheck != "" {
		return recheckFile(ctx, *recheck, *checkTimeout, stdout, stderr)
	}
	names := strings.Split(*scenarios, ",")
	for _, n := range names {
		if _, ok := chaos.ScenarioFaults(n); !ok {
			fmt.Fprintf(stderr, "exactonce-chaos: unknown scenario %q (have %s)\n", n, scenarioNames())
			return 2
		}
	}
	if *seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		*seed = binary.LittleEndian.Uint64(b[:]) >> 1
	}
	fmt.Fprintf(stdout, "exactonce-chaos seed %d (replay the same fault schedule with -seed %d)\n", *seed, *seed)

	if err := os.MkdirAll(*workDir, 0o700); err != nil {
		fmt.Fprintf(stderr, "exactonce-chaos: %v\n", err)
		return 2
	}
	bin := *binPath
	if bin == "" {
		bin = filepath.Join(*workDir, "exactonced")
		if err := build(ctx, bin, *tags, stdout); err != nil {
			fmt.Fprintf(stderr, "exactonce-chaos: %v\n", err)
			return 2
		}
	}

	var network chaos.Network
	var err error
	switch *backend {
	case "process":
		network, err = pickNetwork(*netMode, *prefix, *subnet, *basePort, log)
	case "containers":
		network = &chaos.Containers{Project: *project, Subnet: *dockerSubnet, Nodes: 3, Binary: bin, Dir: *workDir, Log: log}
	default:
		err = fmt.Errorf("-backend %q: want process or containers", *backend)
	}
	if err != nil {
		fmt.Fprintf(stderr, "exactonce-chaos: %v\n", err)
		return 2
	}
	if err := network.Setup(ctx); err != nil {
		fmt.Fprintf(stderr, "exactonce-chaos: %v\n", err)
		_ = network.Teardown(context.WithoutCancel(ctx))
		return 2
	}
	defer func() {
		if err := network.Teardown(context.WithoutCancel(ctx)); err != nil {
			log.Warn("network teardown", "err", err)
		}
	}()
	if !network.CanPartition() {
		fmt.Fprintln(stdout, "note: this network cannot cut links (network namespaces need root); partition faults are skipped")
	}
	useFaultFS, err := pickFaultFS(*faultFS, *backend)
	if err != nil {
		fmt.Fprintf(stderr, "exactonce-chaos: %v\n", err)
		return 2
	}
	if !useFaultFS {
		fmt.Fprintln(stdout, "note: the nodes run without fault filesystems; disk faults (power-loss, disk-full, fsync-eio, slow-fsync) are skipped")
	}
	if *backend == "containers" {
		fmt.Fprintf(stdout, "note: containers (compose project %s, networks %s.10.0/24 and %s.20.0/24): a partition disconnects a whole node, one-way cuts are skipped\n", *project, *dockerSubnet, *dockerSubnet)
	}

	// Small snapshot settings (test-only server hooks); -node-env values
	// come later and win.
	defaults := chaos.FrequentSnapshotEnv()
	o := chaos.Options{
		Seed: *seed, Scenarios: names, Duration: *duration / time.Duration(len(names)),
		Binary: bin, UpgradeBinary: *upgradeTo, WorkDir: *workDir, OutDir: *outDir, Net: network, DefaultNodeEnv: defaults, NodeEnv: nodeEnv,
		Workload: chaos.WorkloadConfig{WorkersPerNode: *workers, Racers: *racers, RequestTimeout: *reqTimeout,
			Attempts: *attempts, Think: *think, Seed: *seed},
		CheckTimeout: *checkTimeout, Log: log, Out: stdout, FaultFS: useFaultFS,
	}
	anomalies, failed := 0, false
	for _, name := range names {
		res, err := chaos.RunScenario(ctx, o, name)
		if err != nil {
			fmt.Fprintf(stderr, "exactonce-chaos: scenario %s: %v\n", name, err)
			failed = true
			break
		}
		anomalies += len(res.Report.Anomalies)
	}
	fmt.Fprintf(stdout, "== seed %d: %d anomalies in %d scenarios; results in %s\n", *seed, anomalies, len(names), filepath.Join(*outDir, fmt.Sprint(*seed)))
	switch {
	case failed:
		return 2
	case *expectAnomaly && anomalies == 0:
		fmt.Fprintln(stdout, "SELF-TEST FAILED: the harness found no anomaly in a cluster built to have one")
		return 1
	case *expectAnomaly:
		fmt.Fprintln(stdout, "self-test passed: the harness reported the injected bug")
		return 0
	case anomalies > 0:
		return 1
	}
	return 0
}

// pickFaultFS resolves -faultfs: "on" fails where FUSE cannot work or
// with containers (their data dirs are bind mounts), "auto" is on where
// it can be.
func pickFaultFS(mode, backend string) (bool, error) {
	switch mode {
	case "off":
		return false, nil
	case "on":
		if backend != "process" {
			return false, fmt.Errorf("-faultfs on needs -backend process")
		}
		if err := faultfs.Available(); err != nil {
			return false, fmt.Errorf("-faultfs on: %w", err)
		}
		return true, nil
	case "auto":
		return backend == "process" && faultfs.Available() == nil, nil
	}
	return false, fmt.Errorf("-faultfs %q: want auto, on or off", mode)
}

func scenarioNames() string { return strings.Join(chaos.ScenarioNames(), ", ") }

// build compiles exactonced with the extra build tags.
func build(ctx context.Context, out, tags string, stdout io.Writer) error {
	args := []string{"build", "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, "github.com/exactonce/exactonce/cmd/exactonced")
	fmt.Fprintf(stdout, "building exactonced (tags %q)\n", tags)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = stdout, stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build exactonced: %w", err)
	}
	return nil
}

// pickNetwork chooses network namespaces when possible.
func pickNetwork(mode, prefix, subnet string, basePort int, log *slog.Logger) (chaos.Network, error) {
	ns := &chaos.NetNS{Prefix: prefix, Subnet: subnet, Nodes: 3, Log: log}
	switch mode {
	case "netns":
		return ns, nil
	case "loopback":
		return &chaos.Loopback{BasePort: basePort}, nil
	case "auto":
		if os.Geteuid() == 0 {
			if _, err := exec.LookPath("ip"); err == nil {
				if _, err := exec.LookPath("iptables"); err == nil {
					return ns, nil
				}
			}
		}
		log.Warn("network namespaces need root, ip and iptables; falling back to loopback (no partitions)")
		return &chaos.Loopback{BasePort: basePort}, nil
	}
	return nil, fmt.Errorf("-net %q: want auto, netns or loopback", mode)
}

// recheckFile checks a saved history again (e.g. after changing the checker).
func recheckFile(ctx context.Context, path string, timeout time.Duration, stdout, stderr io.Writer) int {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "exactonce-chaos: %v\n", err)
		return 2
	}
	ops, err := chaos.UnmarshalHistory(b)
	if err != nil {
		fmt.Fprintf(stderr, "exactonce-chaos: %v\n", err)
		return 2
	}
	r := chaos.Check(ctx, ops, timeout)
	fmt.Fprintf(stdout, "%d ops on %d actions, %d unknown; linearizable: %s; %d anomalies\n", r.Ops, r.Actions, r.Unknown, r.Linearizable, len(r.Anomalies))
	for _, a := range r.Anomalies {
		fmt.Fprintf(stdout, "  %s\n", a)
	}
	if !r.OK() {
		return 1
	}
	return 0
}
