// Command exactonce-bench benchmarks ExactOnce against PostgreSQL with a
// synchronous standby and against etcd on one machine.
//
// It builds bin/exactonced, starts a three-node ExactOnce cluster, a
// three-member etcd cluster, a PostgreSQL primary with a synchronous
// streaming standby and a single PostgreSQL node on loopback (fresh
// temporary data directories), runs the workloads at each concurrency on
// one system at a time, and prints tables, target verdicts and JSON lines.
// Everything it starts is stopped and removed on exit (also on Ctrl-C).
//
//	go run ./cmd/exactonce-bench                 # the default sweep, ~5 minutes
//	go run ./cmd/exactonce-bench -million        # plus one million stored actions
//	go run ./cmd/exactonce-bench -d 30s -c 64    # longer, one concurrency
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/exactonce/exactonce/internal/bench"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command-line settings beyond bench.Config.
type options struct {
	build    bool
	outDir   string
	timeout  time.Duration
	verbose  bool
	noEtcd   bool
	noPG     bool
	pgWl     string
	pgOneWl  string
	million  bool
	conc     string
	wl       string
	etcdWl   string
	seed     uint64
	pprof    bool
	selfProf string
	ab       string
	abRounds int
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	var cfg bench.Config
	fs := flag.NewFlagSet("exactonce-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.ServerBin, "server-bin", "bin/exactonced", "exactonced binary (built from ./cmd/exactonced unless -build=false)")
	fs.BoolVar(&o.build, "build", true, "build the server binary first")
	fs.StringVar(&cfg.EtcdBin, "etcd-bin", "", "etcd binary (default: etcd from PATH)")
	fs.BoolVar(&o.noEtcd, "no-etcd", false, "skip the etcd comparison")
	fs.IntVar(&cfg.Nodes, "nodes", 3, "ExactOnce cluster size (1: a single node)")
	fs.StringVar(&o.conc, "c", "1,16,64,256", "comma-separated concurrencies (clients)")
	fs.DurationVar(&cfg.Duration, "d", 4*time.Second, "measured duration of each closed-loop run")
	fs.DurationVar(&cfg.Warmup, "warmup", 500*time.Millisecond, "unmeasured warm-up before each run")
	fs.DurationVar(&cfg.OpTimeout, "op-timeout", 10*time.Second, "timeout of one operation")
	fs.StringVar(&o.wl, "workloads", "create,consume,verify,mix,contend,csv,hot", "ExactOnce workloads")
	fs.StringVar(&o.etcdWl, "etcd-workloads", "create,consume,verify,mix,contend,hot", "etcd workloads (csv has no etcd equivalent)")
	fs.BoolVar(&o.noPG, "no-postgres", false, "skip the PostgreSQL comparison")
	fs.StringVar(&cfg.PGBinDir, "pg-bin-dir", "", "directory of PostgreSQL's postgres, initdb and pg_basebackup, 15 or newer (default: found from initdb on PATH or /usr/lib/postgresql/*/bin)")
	fs.StringVar(&o.pgWl, "pg-workloads", "create,consume,verify,mix,contend,hot", "workloads of PostgreSQL with a synchronous standby (csv has no equivalent)")
	fs.StringVar(&o.pgOneWl, "pg-single-workloads", "create,consume,contend", "workloads of single-node PostgreSQL (empty: no single node)")
	fs.IntVar(&cfg.PGPort, "pg-port", 24321, "PostgreSQL primary's port (standby +1, single node +2)")
	fs.IntVar(&cfg.PGConns, "pg-conns", 64, "pooled connections to a PostgreSQL primary (pgx); more clients wait for one")
	fs.StringVar(&cfg.PGOSUser, "pg-os-user", "postgres", "OS user PostgreSQL runs as when the harness runs as root")
	fs.IntVar(&cfg.ContendRacers, "contend-racers", 64, "clients racing for each round's fresh action in the contend workload (0: no contend runs)")
	fs.IntVar(&cfg.HotRacers, "hot-racers", 10000, "concurrent consumers of the one hot action")
	fs.IntVar(&cfg.HotConns, "hot-conns", 1500, "connections the hot racers share, over all nodes (ExactOnce)")
	fs.BoolVar(&cfg.RawClient, "raw-client", true, "send ExactOnce's create/consume/verify requests with the lean raw HTTP/1.1 keep-alive client; false: net/http")
	fs.BoolVar(&cfg.HotPipelined, "hot-pipelined", true, "race on ExactOnce with pipelined raw HTTP/1.1 (every request in flight at once, low client CPU); false: a goroutine and net/http request per racer")
	fs.IntVar(&cfg.CSVRows, "csv-rows", 10000, "rows per CSV batch create")
	fs.IntVar(&cfg.CSVRepeats, "csv-repeats", 5, "CSV batch creates to time")
	fs.IntVar(&cfg.MaxPrefill, "max-prefill", 400000, "most actions prepared for one consume run")
	fs.IntVar(&cfg.TargetRounds, "target-rounds", 3, "runs per system of the target rows (consume and verify at 64 clients), the sweep's included, alternating; the checks use the median")
	fs.BoolVar(&o.million, "million", false, "also load one million actions, then measure RSS and a restart")
	fs.IntVar(&cfg.Million, "million-count", 1000000, "actions stored by -million")
	fs.DurationVar(&cfg.IdleWindow, "idle-window", 10*time.Second, "measure every node's CPU for this long with both clusters up and no requests, before the runs (0: skip)")
	fs.IntVar(&cfg.EtcdConns, "etcd-conns", 12, "etcd gRPC clients (connections), spread over the members")
	fs.Uint64Var(&o.seed, "seed", 0, "random seed (0: from the clock; printed)")
	fs.IntVar(&cfg.HTTPPort, "http-port", 18081, "first ExactOnce node's HTTP port (node i adds i)")
	fs.IntVar(&cfg.RaftPort, "raft-port", 18301, "first ExactOnce node's Raft port")
	fs.IntVar(&cfg.GossipPort, "gossip-port", 18401, "first ExactOnce node's gossip port")
	fs.IntVar(&cfg.PprofPort, "pprof-port", 18601, "first ExactOnce node's pprof port (with -pprof)")
	fs.IntVar(&cfg.EtcdClientPort, "etcd-client-port", 23791, "first etcd member's client port")
	fs.IntVar(&cfg.EtcdPeerPort, "etcd-peer-port", 23801, "first etcd member's peer port")
	fs.BoolVar(&o.pprof, "pprof", false, "start every node with a loopback --pprof-addr and profile it during extra consume, verify and CSV runs")
	fs.IntVar(&cfg.ProfileSeconds, "profile-seconds", 8, "length of the CPU profile")
	fs.IntVar(&cfg.ProfileConc, "profile-conc", 64, "concurrency of the profiled runs")
	fs.StringVar(&o.outDir, "out", "bin/bench", "directory for results.jsonl, report.json, table.txt and profiles")
	fs.StringVar(&cfg.TempBase, "tmp", "", "parent of the fresh data directories (default $TMPDIR)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep data directories and node logs")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "abort the whole session after this long")
	fs.BoolVar(&o.verbose, "v", false, "debug logging")
	fs.StringVar(&o.ab, "ab", "", "A/B mode: two exactonced binaries `old,new`; alternate rounds of one-client consumes between a cluster of each and print both latencies (nothing else runs)")
	fs.IntVar(&o.abRounds, "ab-rounds", 20, "A/B rounds (300 consumes per binary each)")
	fs.StringVar(&o.selfProf, "self-cpuprofile", "", "write a CPU profile of the load generator itself to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.Log = log
	if o.ab != "" {
		return runAB(cfg, o, stdout, stderr)
	}
	if err := complete(&cfg, &o); err != nil {
		fmt.Fprintln(stderr, "exactonce-bench:", err)
		return 2
	}
	fmt.Fprintf(stdout, "exactonce-bench seed=%d concurrency=%v duration=%s warmup=%s\n", cfg.Seed, cfg.Concurrency, cfg.Duration, cfg.Warmup)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	if o.build {
		if err := buildServer(ctx, log, cfg.ServerBin); err != nil {
			fmt.Fprintln(stderr, "exactonce-bench:", err)
			return 1
		}
	}
	if o.selfProf != "" {
		f, err := os.Create(o.selfProf)
		if err != nil {
			fmt.Fprintln(stderr, "exactonce-bench:", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "exactonce-bench: start CPU profile:", err)
			return 1
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	rep, runErr := bench.Run(ctx, cfg)
	if runErr != nil {
		log.Error("session failed", "err", runErr)
	}
	if rep != nil {
		if err := write(stdout, o.outDir, rep); err != nil {
			log.Error("write report", "err", err)
			return 1
		}
	}
	if runErr != nil {
		return 1
	}
	return 0
}

// runAB is the -ab mode (bench.RunAB).
func runAB(cfg bench.Config, o options, stdout, stderr io.Writer) int {
	bins := splitList(o.ab)
	if len(bins) != 2 {
		fmt.Fprintln(stderr, "exactonce-bench: -ab wants two binaries, old,new")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	res, err := bench.RunAB(ctx, bench.ABConfig{Bins: [2]string{bins[0], bins[1]}, Rounds: o.abRounds, PerRound: 300,
		HTTPPort: cfg.HTTPPort, RaftPort: cfg.RaftPort, GossipPort: cfg.GossipPort, TempBase: cfg.TempBase, Log: cfg.Log})
	if err != nil {
		fmt.Fprintln(stderr, "exactonce-bench:", err)
		return 1
	}
	bench.PrintAB(stdout, res)
	return 0
}

// complete fills in derived settings.
func complete(cfg *bench.Config, o *options) error {
	for _, f := range strings.Split(o.conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("bad concurrency %q", f)
		}
		cfg.Concurrency = append(cfg.Concurrency, n)
	}
	cfg.Workloads = splitList(o.wl)
	cfg.EtcdWorkloads = splitList(o.etcdWl)
	cfg.PGWorkloads = splitList(o.pgWl)
	cfg.PGSingleWorkloads = splitList(o.pgOneWl)
	if cfg.ContendRacers < 0 {
		return fmt.Errorf("bad -contend-racers %d", cfg.ContendRacers)
	}
	for _, w := range append(cfg.PGWorkloads, cfg.PGSingleWorkloads...) {
		if w == bench.WCSV {
			return errors.New("csv has no PostgreSQL equivalent (-pg-workloads, -pg-single-workloads)")
		}
	}
	for _, w := range slices.Concat(cfg.Workloads, cfg.EtcdWorkloads, cfg.PGWorkloads, cfg.PGSingleWorkloads) {
		if !contains(bench.WorkloadOrder, w) {
			return fmt.Errorf("unknown workload %q (have %v)", w, bench.WorkloadOrder)
		}
	}
	if !o.million {
		cfg.Million = 0
	}
	cfg.Seed = o.seed
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	if o.noEtcd {
		cfg.EtcdBin = ""
	} else if cfg.EtcdBin == "" {
		p, err := exec.LookPath("etcd")
		if err != nil {
			return fmt.Errorf("etcd not found in PATH (apt-get install etcd-server, or -no-etcd): %w", err)
		}
		cfg.EtcdBin = p
	}
	if o.noPG {
		cfg.PGBinDir = ""
	} else if cfg.PGBinDir == "" {
		d, err := bench.FindPGBinDir()
		if err != nil {
			return err
		}
		cfg.PGBinDir = d
	}
	if o.pprof {
		cfg.ProfileDir = o.outDir
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// buildServer builds ./cmd/exactonced into bin. Profiling needs no special
// build: the nodes serve pprof through their own --pprof-addr.
func buildServer(ctx context.Context, log *slog.Logger, bin string) error {
	args := []string{"build", "-o", bin}
	args = append(args, "./cmd/exactonced")
	log.Info("building server", "cmd", "go "+strings.Join(args, " "))
	var last error
	// A shared build cache under concurrent builds occasionally fails
	// transiently; try a few times before giving up.
	for attempt := range 3 {
		if attempt > 0 {
			log.Warn("build failed; retrying", "err", last)
			select {
			case <-ctx.Done():
				return fmt.Errorf("build %s: %w", bin, ctx.Err())
			case <-time.After(3 * time.Second):
			}
		}
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		last = fmt.Errorf("build %s: %w\n%s", bin, err, out)
	}
	return last
}

// write prints the table, checks and JSON lines, and saves them in outDir.
func write(stdout io.Writer, outDir string, rep *bench.Report) error {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", outDir, err)
	}
	var table strings.Builder
	fmt.Fprintf(&table, "seed %d\n\n", rep.Seed)
	table.WriteString("side by side (contend: ops = rounds, latency = racers'):\n")
	if err := bench.WriteSideBySide(&table, rep.Rows); err != nil {
		return err
	}
	table.WriteString("\nevery run:\n")
	if err := bench.WriteTable(&table, rep.Rows); err != nil {
		return err
	}
	table.WriteString("\n(* = the run ended early because its prepared actions ran out; figures cover the time it ran)\n\nnotes:\n")
	for _, r := range rep.Rows {
		if r.Note != "" {
			fmt.Fprintf(&table, "  %-9s %-7s c=%-5d %s\n", r.System, r.Workload, r.Concurrency, r.Note)
		}
	}
	if len(rep.Rounds) > 0 {
		table.WriteString("\ntarget rows, every run (the targets below use each system's median):\n")
		if err := bench.WriteRounds(&table, rep.Rounds); err != nil {
			return err
		}
	}
	if len(rep.Idle) > 0 {
		fmt.Fprintf(&table, "\nidle CPU (clusters up, no requests, %.0f s), percent of one core:\n", rep.Idle[0].Seconds)
		total := map[string]float64{}
		var order []string
		for _, n := range rep.Idle {
			if _, ok := total[n.System]; !ok {
				order = append(order, n.System)
			}
			total[n.System] += n.Percent
		}
		for _, sys := range order {
			fmt.Fprintf(&table, "  %-9s total %5.2f %%:", sys, total[sys])
			for _, n := range rep.Idle {
				if n.System == sys {
					l := ""
					if n.Leader {
						l = " (leader)"
					}
					fmt.Fprintf(&table, "  %s%s %.2f", n.Node, l, n.Percent)
				}
			}
			table.WriteString("\n")
		}
	}
	table.WriteString("\nmemory:\n")
	for _, m := range rep.Memory {
		l := ""
		if m.Leader {
			l = " (leader)"
		}
		actions := ""
		if m.System == "exactonce" {
			actions = fmt.Sprintf("  actions %d", m.Actions)
		}
		fmt.Fprintf(&table, "  %-9s %-5s%-9s %-13s RSS %6.1f MiB (anon %6.1f, file %6.1f)  peak %6.1f MiB  data %7.1f MiB%s\n",
			m.System, m.Node, l, m.Stage, m.RSSMiB, m.AnonMiB, m.FileMiB, m.PeakMiB, m.DataMiB, actions)
	}
	for _, r := range rep.Restart {
		fmt.Fprintf(&table, "restart: %s ready after %.2f s with %d actions stored %s\n", r.Node, r.Seconds, r.Actions, r.Err)
	}
	if len(rep.BigClient) > 0 {
		fmt.Fprintf(&table, "\nreads of the one client holding %d actions (linearizable, one at a time):\n", rep.BigClient[0].Actions)
		for _, r := range rep.BigClient {
			fmt.Fprintf(&table, "  %-58s p50 %7.2f ms  max %7.2f ms  %d reads  %d errors\n", r.Query, r.P50Ms, r.MaxMs, r.Reads, r.Errors)
		}
	}
	for _, p := range rep.Profiles {
		fmt.Fprintf(&table, "profile: %s (tops in the .txt files beside it)\n", p)
	}
	fmt.Fprintf(&table, "load average (1m 5m 15m; %d cores): %s\n", runtime.NumCPU(), strings.Join(rep.Load, "; "))
	table.WriteString("\ntargets:\n")
	if err := bench.WriteChecks(&table, rep.Checks); err != nil {
		return err
	}
	if _, err := io.WriteString(stdout, "\n"+table.String()); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	if err := os.WriteFile(filepath.Join(outDir, "table.txt"), []byte(table.String()), 0o644); err != nil {
		return fmt.Errorf("save table: %w", err)
	}
	fmt.Fprintln(stdout, "\nJSON lines:")
	var jl strings.Builder
	if err := bench.WriteJSONLines(&jl, rep.Rows); err != nil {
		return err
	}
	for _, c := range rep.Checks {
		b, _ := json.Marshal(c)
		jl.Write(b)
		jl.WriteByte('\n')
	}
	if _, err := io.WriteString(stdout, jl.String()); err != nil {
		return fmt.Errorf("write JSON lines: %w", err)
	}
	if err := os.WriteFile(filepath.Join(outDir, "results.jsonl"), []byte(jl.String()), 0o644); err != nil {
		return fmt.Errorf("save JSON lines: %w", err)
	}
	full, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(outDir, "report.json"), full, 0o644); err != nil {
		return fmt.Errorf("save report: %w", err)
	}
	return nil
}
