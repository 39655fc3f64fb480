package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Workload names, in report order.
const (
	WCreate  = "create"
	WConsume = "consume"
	WVerify  = "verify"
	WMix     = "mix"
	WCSV     = "csv"
	WHot     = "hot"
	// WContend is rounds of one fresh action raced by ContendRacers
	// clients spread over every node (Contend).
	WContend = "contend"
)

// WorkloadOrder is the order workloads run and are reported in.
var WorkloadOrder = []string{WCreate, WConsume, WVerify, WMix, WContend, WCSV, WHot}

// System names in reports, in the order tables list them.
const (
	SysExactOnce = "exactonce"
	// SysPostgres is PostgreSQL with a synchronous streaming standby.
	SysPostgres = "postgres"
	// SysPostgres1 is PostgreSQL on one node (commits wait for the local
	// flush only).
	SysPostgres1 = "postgres-1"
	SysEtcd      = "etcd"
)

// SystemOrder is the order of the systems in tables.
var SystemOrder = []string{SysExactOnce, SysPostgres, SysPostgres1, SysEtcd}

// Config is everything one benchmark session needs.
type Config struct {
	// ServerBin is the exactonced binary; EtcdBin the etcd binary ("" skips etcd).
	ServerBin string
	EtcdBin   string
	// TempBase is the parent of the clusters' fresh data dirs ("" for $TMPDIR).
	TempBase string
	// Nodes is the size of the ExactOnce cluster (default 3; 1 measures a
	// single node, as the README's first command runs it).
	Nodes int
	// Keep leaves the data dirs (and logs) in place after the run.
	Keep bool

	// Concurrency lists the client counts of the sweep; every closed-loop
	// run measures for Duration after an unmeasured Warmup, and one
	// operation may take up to OpTimeout.
	Concurrency []int
	Duration    time.Duration
	Warmup      time.Duration
	OpTimeout   time.Duration
	// Workloads to run against ExactOnce, etcd, PostgreSQL with its
	// standby and PostgreSQL on one node.
	Workloads         []string
	EtcdWorkloads     []string
	PGWorkloads       []string
	PGSingleWorkloads []string

	// PGBinDir holds PostgreSQL's server binaries ("" skips PostgreSQL);
	// PGPort is the primary's port (the standby's is PGPort+1, the
	// single node's PGPort+2); PGConns the pooled connections the load
	// generator opens to a primary; PGOSUser the OS user the servers run
	// as when the harness is root.
	PGBinDir string
	PGPort   int
	PGConns  int
	PGOSUser string

	// ContendRacers is the number of clients racing for each round's
	// action in the contend workload.
	ContendRacers int

	// HotRacers is the number of concurrent consumers of the hot action.
	HotRacers int
	// HotConns caps the connections the hot-action racers share (over all nodes).
	HotConns int
	// HotPipelined races on ExactOnce with pipelined raw HTTP/1.1
	// connections (all requests in flight at once, little client CPU)
	// instead of one goroutine and net/http request per racer.
	HotPipelined bool
	// CSVRows is the size of a CSV batch create; CSVRepeats how many are timed.
	CSVRows    int
	CSVRepeats int
	// MaxPrefill caps the actions prepared for one consume run.
	MaxPrefill int
	// TargetRounds is how many closed-loop runs each system makes of the
	// target rows (consume and verify at 64 clients), the sweep's run
	// included. The extra runs come after the sweep and alternate between
	// the systems; the checks judge each system's median run, so that one
	// burst of load from outside the bench does not decide a verdict. 1
	// means the sweep's run alone.
	TargetRounds int

	// Million loads this many actions (0: skip) and then measures RSS and a restart.
	Million int
	// IdleWindow, when positive, measures each node's CPU over this long
	// once every cluster is up and before any request: what a cluster
	// costs doing nothing (heartbeats, timers, gossip).
	IdleWindow time.Duration

	// EtcdConns is the number of etcd clients (gRPC connections); Seed
	// seeds every run's randomness.
	EtcdConns int
	Seed      uint64
	// RawClient sends ExactOnce's single-action requests through the raw
	// HTTP/1.1 client (less client CPU) instead of net/http.
	RawClient bool

	// Ports of the first ExactOnce node (node i adds i) and etcd member.
	HTTPPort, RaftPort, GossipPort int
	EtcdClientPort, EtcdPeerPort   int

	// ProfileDir, when set, receives CPU profiles of every ExactOnce node
	// taken during extra consume, verify and CSV runs (through each node's
	// --pprof-addr), and PprofPort is the first node's pprof port.
	ProfileDir     string
	ProfileSeconds int
	ProfileConc    int
	PprofPort      int

	// Log receives progress: every run's figures as it completes.
	Log *slog.Logger
}

// Report is the outcome of a session.
type Report struct {
	Seed    uint64            `json:"seed"`
	Rows    []Row             `json:"rows"`
	Checks  []Check           `json:"checks"`
	Memory  []NodeMem         `json:"memory"`
	Restart []RestartResult   `json:"restart"`
	Hot     map[string]HotRes `json:"hot"`
	CSV     *Row              `json:"csv,omitempty"`
	// Profiles lists the nodes' CPU profiles, if any were taken.
	Profiles []string `json:"profiles,omitempty"`
	// Load samples /proc/loadavg around each phase: the machine may be
	// shared, and a busy machine explains noisy figures.
	Load []string `json:"loadavg"`
	// Stored counts the actions the harness created in ExactOnce.
	Stored int `json:"stored"`
	// Rounds holds every run of the target rows (Config.TargetRounds), the
	// sweep's included, in the order they ran.
	Rounds []Row `json:"rounds,omitempty"`
	// Idle is every node's CPU while no requests ran (Config.IdleWindow).
	Idle []NodeIdle `json:"idle,omitempty"`
	// BigClient times stats and list pages of the client holding every
	// stored action, at the largest size the session reached.
	BigClient []BigClientRead `json:"bigClient,omitempty"`
}

// NodeIdle is a node's CPU over the idle window, in percent of one core.
type NodeIdle struct {
	System  string  `json:"system"`
	Node    string  `json:"node"`
	Leader  bool    `json:"leader"`
	Seconds float64 `json:"seconds"`
	Percent float64 `json:"cpuPercent"`
}

// NodeMem is a node's memory after the runs.
type NodeMem struct {
	System  string  `json:"system"`
	Node    string  `json:"node"`
	Leader  bool    `json:"leader"`
	Stage   string  `json:"stage"`
	Actions int     `json:"actions"`
	RSSMiB  float64 `json:"rssMiB"`
	AnonMiB float64 `json:"rssAnonMiB"`
	FileMiB float64 `json:"rssFileMiB"`
	PeakMiB float64 `json:"peakMiB"`
	DataMiB float64 `json:"dataMiB"`
}

// RestartResult is how long a restarted node took to become ready.
type RestartResult struct {
	Node    string  `json:"node"`
	Actions int     `json:"actions"`
	Seconds float64 `json:"seconds"`
	Err     string  `json:"error,omitempty"`
}

// HotRes is the outcome of a hot-action race.
type HotRes struct {
	Racers  int            `json:"racers"`
	Won     int            `json:"won"`
	Lost    int            `json:"lost"`
	Errors  int            `json:"errors"`
	Kinds   map[string]int `json:"errorKinds,omitempty"`
	Seconds float64        `json:"seconds"`
	PerSec  float64        `json:"answersPerSec"`
	StateOK bool           `json:"finalStateConsumed"`
	Pass    bool           `json:"pass"`
}

// session carries the state of one Run.
type session struct {
	cfg    Config
	log    *slog.Logger
	rows   []Row
	runIdx uint64
	rep    *Report
	rates  map[string]float64 // "system/workload/conc" -> ops/s
	// failures are correctness failures seen during runs (a contend round
	// without exactly one winner): they fail the session.
	failures []error
}

func (s *session) seed() uint64 {
	s.runIdx++
	return s.cfg.Seed + s.runIdx*0x9E3779B97F4A7C15
}

func (s *session) add(r Row) {
	s.rows = append(s.rows, r)
	s.rates[fmt.Sprintf("%s/%s/%d", r.System, r.Workload, r.Concurrency)] = r.OpsPerSec
	s.log.Info("run done", "system", r.System, "workload", r.Workload, "conc", r.Concurrency,
		"ops/s", int(r.OpsPerSec), "p50ms", r.P50Ms, "p99ms", r.P99Ms, "errors", r.Errors, "pool_exhausted", r.PoolExhausted)
	if len(r.FirstErrors) > 0 {
		s.log.Warn("run errors", "system", r.System, "workload", r.Workload, "conc", r.Concurrency, "sample", r.FirstErrors)
	}
}

// side is one system under test during a session.
type side struct {
	t         Target
	pool      *Pool
	workloads []string
	eo        *EOCluster
	eoT       *ExactOnce
	etcd      *EtcdCluster
	pg        *PGCluster
}

// cpu returns a function summing the CPU time of the side's processes (nil
// when it has none).
func (sd *side) cpu() func() time.Duration {
	if procs := sd.procs(); procs != nil {
		return cpuOf(procs)
	}
	return nil
}

// procs are the side's server processes.
func (sd *side) procs() []*Proc {
	switch {
	case sd.eo != nil:
		return sd.eo.Procs()
	case sd.etcd != nil:
		return sd.etcd.Members
	case sd.pg != nil:
		return sd.pg.Procs()
	}
	return nil
}

// leader is the index of the side's current leader in procs(), -1 when
// unknown.
func (sd *side) leader(ctx context.Context) int {
	switch {
	case sd.eo != nil:
		return sd.eo.Leader(ctx)
	case sd.etcd != nil:
		return sd.etcd.Leader(ctx)
	case sd.pg != nil:
		return 0 // the primary
	}
	return -1
}

// leaderName names sd's current leader as its target's nodeMapper does
// ("" when unknown).
func (s *session) leaderName(ctx context.Context, sd *side) string {
	nm, ok := sd.t.(nodeMapper)
	if !ok {
		return ""
	}
	i := sd.leader(ctx)
	if names := nm.NodeNames(); i >= 0 && i < len(names) {
		return names[i]
	}
	return ""
}

// idleCPU reads the CPU time of every side but sd (nil when sd runs
// alone), to show what the idle system costs the one being measured.
func idleCPU(sides []*side, sd *side) func() time.Duration {
	var procs []*Proc
	for _, o := range sides {
		if o != sd {
			procs = append(procs, o.procs()...)
		}
	}
	if len(procs) == 0 {
		return nil
	}
	return cpuOf(procs)
}

// Run executes a whole session. Both clusters run at the same time and
// the closed-loop runs alternate between them (ExactOnce at c, then etcd at
// c), so both see the same background load on a shared machine; the idle
// cluster only exchanges heartbeats meanwhile.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 10 * time.Second
	}
	s := &session{cfg: cfg, log: cfg.Log, rates: map[string]float64{},
		rep: &Report{Seed: cfg.Seed, Hot: map[string]HotRes{}}}
	var errs []error
	s.loadavg("start")
	var sides []*side
	if len(cfg.Workloads) > 0 || cfg.Million > 0 {
		eo, stop, err := s.startExactOnce(ctx)
		defer stop()
		if err != nil {
			errs = append(errs, fmt.Errorf("exactonce: %w", err))
		} else {
			sides = append(sides, eo)
		}
	}
	if cfg.EtcdBin != "" && len(cfg.EtcdWorkloads) > 0 && ctx.Err() == nil {
		et, stop, err := s.startEtcd(ctx)
		defer stop()
		if err != nil {
			errs = append(errs, fmt.Errorf("etcd: %w", err))
		} else {
			sides = append(sides, et)
		}
	}
	if cfg.PGBinDir != "" && ctx.Err() == nil {
		for _, pg := range []struct {
			name    string
			standby bool
			port    int
			wl      []string
		}{{SysPostgres, true, cfg.PGPort, cfg.PGWorkloads}, {SysPostgres1, false, cfg.PGPort + 2, cfg.PGSingleWorkloads}} {
			if len(pg.wl) == 0 {
				continue
			}
			sd, stop, err := s.startPostgres(ctx, pg.name, pg.standby, pg.port, pg.wl)
			defer stop()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", pg.name, err))
			} else {
				sides = append(sides, sd)
			}
		}
	}
	if cfg.IdleWindow > 0 && len(sides) > 0 {
		if err := s.idle(ctx, sides); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.sweep(ctx, sides); err != nil {
		errs = append(errs, err)
	}
	for _, sd := range sides {
		if err := s.finish(ctx, sd); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sd.t.Name(), err))
		}
	}
	s.loadavg("end")
	Compare(s.rows)
	SortRows(s.rows, WorkloadOrder)
	s.rep.Rows = s.rows
	s.rep.Checks = s.checks()
	errs = append(errs, s.failures...)
	return s.rep, errors.Join(errs...)
}

// loadavg records the machine's load average.
func (s *session) loadavg(stage string) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return
	}
	f := strings.Fields(string(b))
	if len(f) >= 3 {
		v := fmt.Sprintf("%s: %s %s %s", stage, f[0], f[1], f[2])
		s.rep.Load = append(s.rep.Load, v)
		s.log.Info("load average", "stage", stage, "1m", f[0], "5m", f[1], "15m", f[2])
	}
}

func (s *session) cleanupDir(dir string) {
	if s.cfg.Keep || dir == "" {
		if dir != "" {
			s.log.Info("kept data dir", "dir", dir)
		}
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		s.log.Warn("remove data dir", "dir", dir, "err", err)
	}
}

// startExactOnce starts the ExactOnce cluster and its client. stop is
// always safe to call.
func (s *session) startExactOnce(ctx context.Context) (*side, func(), error) {
	cfg := s.cfg
	s.log.Info("starting ExactOnce cluster", "bin", cfg.ServerBin, "http", cfg.HTTPPort)
	pport := 0
	if cfg.ProfileDir != "" {
		pport = cfg.PprofPort
	}
	var t *ExactOnce
	var args []string
	if cfg.Million > 0 {
		// The harness keeps every action under one client: -million (and
		// the runs before it) would pass the default quota of a million.
		args = append(args, "--max-actions-per-client", "-1")
	}
	cl, err := StartEOCluster(ctx, EOClusterConfig{Bin: cfg.ServerBin, TempBase: cfg.TempBase, Nodes: max(cfg.Nodes, 1),
		HTTPPort: cfg.HTTPPort, RaftPort: cfg.RaftPort, GossipPort: cfg.GossipPort, PprofPort: pport, Args: args, Log: s.log})
	stop := func() {
		if t != nil {
			t.Close()
		}
		if cl != nil {
			cl.Stop()
			s.cleanupDir(cl.Dir)
		}
	}
	if err != nil {
		return nil, stop, err
	}
	id, secret, err := cl.CreateClient(ctx, "bench")
	if err != nil {
		return nil, stop, err
	}
	// Room for every worker of the largest run, profiled runs included, so
	// that no run pays for new connections.
	maxConc := slices.Max(append([]int{1, cfg.ProfileConc}, cfg.Concurrency...))
	t = NewExactOnce(cl.URLs(), id, secret, maxConc+8)
	t.AdminToken = cl.AdminToken
	if cfg.RawClient {
		if err := t.UseRaw(maxConc + 8); err != nil {
			return nil, stop, err
		}
	}
	return &side{t: t, eoT: t, eo: cl, pool: &Pool{}, workloads: cfg.Workloads}, stop, nil
}

// startEtcd starts the etcd cluster and its clients. stop is always safe
// to call.
func (s *session) startEtcd(ctx context.Context) (*side, func(), error) {
	cfg := s.cfg
	s.log.Info("starting etcd cluster", "bin", cfg.EtcdBin, "client", cfg.EtcdClientPort)
	var t *Etcd
	ec, err := StartEtcdCluster(ctx, EtcdClusterConfig{Bin: cfg.EtcdBin, TempBase: cfg.TempBase, Members: 3,
		ClientPort: cfg.EtcdClientPort, PeerPort: cfg.EtcdPeerPort, Log: s.log})
	stop := func() {
		if t != nil {
			t.Close()
		}
		if ec != nil {
			ec.Stop()
			s.cleanupDir(ec.Dir)
		}
	}
	if err != nil {
		return nil, stop, err
	}
	t, err = NewEtcd(ctx, ec.Endpoints, cfg.EtcdConns, strconv.FormatUint(cfg.Seed, 36))
	if err != nil {
		return nil, stop, err
	}
	return &side{t: t, etcd: ec, pool: &Pool{}, workloads: cfg.EtcdWorkloads}, stop, nil
}

// startPostgres starts PostgreSQL (with its synchronous standby when
// standby is set) and its pooled client. stop is always safe to call.
func (s *session) startPostgres(ctx context.Context, name string, standby bool, port int, workloads []string) (*side, func(), error) {
	cfg := s.cfg
	s.log.Info("starting PostgreSQL", "system", name, "bin", cfg.PGBinDir, "port", port, "standby", standby)
	var t *Postgres
	conns := max(cfg.PGConns, 1)
	pc, err := StartPGCluster(ctx, PGClusterConfig{BinDir: cfg.PGBinDir, TempBase: cfg.TempBase, Port: port, Standby: standby,
		MaxConnections: conns + 20, OSUser: cfg.PGOSUser, Log: s.log})
	stop := func() {
		if t != nil {
			t.Close()
		}
		if pc != nil {
			pc.Stop()
			s.cleanupDir(pc.Dir)
		}
	}
	if err != nil {
		return nil, stop, err
	}
	// The same payload as ExactOnce's actions.
	payload := NewExactOnce(nil, "", "", 0).Payload
	t, err = NewPostgres(ctx, name, pc.DSN, conns, strconv.FormatUint(cfg.Seed, 36), payload)
	if err != nil {
		return nil, stop, err
	}
	return &side{t: t, pg: pc, pool: &Pool{}, workloads: workloads}, stop, nil
}

// finish runs what follows the sweep on one side: CSV and hot race, then
// (ExactOnce) profiles, memory, restart and the million; (etcd) memory.
func (s *session) finish(ctx context.Context, sd *side) error {
	cfg := s.cfg
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if t := sd.eoT; t != nil && slices.Contains(sd.workloads, WCSV) {
		if err := s.csv(ctx, t, sd.pool); err != nil {
			return err
		}
	}
	if slices.Contains(sd.workloads, WHot) && ctx.Err() == nil {
		var target Target = sd.t
		var warm func(context.Context)
		if t := sd.eoT; t != nil {
			hot := t.WithTransport(NewTransport(cfg.HotConns/3+1, cfg.HotConns/3+1))
			if !cfg.HotPipelined {
				warm = func(ctx context.Context) { warmConns(ctx, hot, cfg.HotConns) }
			}
			target = hot
		}
		if err := s.hot(ctx, target, warm); err != nil {
			return err
		}
	}
	if sd.pg != nil {
		for _, p := range sd.pg.Procs() {
			m, err := ReadMem(p.Pid())
			if err != nil {
				s.log.Warn("postgres memory", "err", err)
				continue
			}
			// The postmaster alone: its backends share its memory.
			s.rep.Memory = append(s.rep.Memory, NodeMem{System: sd.t.Name(), Node: p.Name, Leader: p == sd.pg.Primary, Stage: "after runs",
				RSSMiB: mib(m.RSS), AnonMiB: mib(m.Anon), FileMiB: mib(m.File), PeakMiB: mib(m.Peak),
				DataMiB: mib(dirSize(filepath.Join(sd.pg.Dir, p.Name)))})
		}
		return ctx.Err()
	}
	if ec := sd.etcd; ec != nil {
		leader := ec.Leader(ctx)
		for i, p := range ec.Members {
			m, err := ReadMem(p.Pid())
			if err != nil {
				s.log.Warn("etcd memory", "err", err)
				continue
			}
			s.rep.Memory = append(s.rep.Memory, NodeMem{System: "etcd", Node: p.Name, Leader: i == leader, Stage: "after runs",
				RSSMiB: mib(m.RSS), AnonMiB: mib(m.Anon), FileMiB: mib(m.File), PeakMiB: mib(m.Peak),
				DataMiB: mib(dirSize(filepath.Join(ec.Dir, p.Name)))})
		}
		return ctx.Err()
	}
	cl, t := sd.eo, sd.eoT
	if cfg.ProfileDir != "" && ctx.Err() == nil {
		for _, wl := range []string{WCreate, WConsume, profSettled, WVerify, WCSV} {
			if err := s.profile(ctx, cl, t, sd.pool, wl); err != nil {
				s.log.Warn("no CPU profile", "workload", wl, "err", err)
			}
		}
	}
	s.memory(ctx, cl, "after runs")
	if ctx.Err() == nil {
		s.bigClientReads(ctx, t, bigClientReadsPerQuery)
		s.restart(ctx, cl)
	}
	if cfg.Million > 0 && ctx.Err() == nil {
		if err := s.million(ctx, cl, t); err != nil {
			return err
		}
		s.memory(ctx, cl, "after million")
		s.rep.BigClient = nil // the larger client replaces the earlier figures
		s.bigClientReads(ctx, t, bigClientReadsPerQuery)
		if cfg.ProfileDir != "" {
			if err := s.heapProfile(ctx, cl); err != nil {
				s.log.Warn("no heap profile", "err", err)
			}
		}
		s.restart(ctx, cl)
	}
	return ctx.Err()
}

func mib(b int64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }

// sweep runs the closed-loop workloads over every concurrency, each run
// on every side in turn, then the contend workload on every side; a
// target row runs again right away (targetRounds).
func (s *session) sweep(ctx context.Context, sides []*side) error {
	type step struct {
		wl string
		c  int
	}
	var steps []step
	for _, wl := range []string{WCreate, WConsume, WVerify, WMix} {
		for _, c := range s.cfg.Concurrency {
			steps = append(steps, step{wl, c})
		}
	}
	if s.cfg.ContendRacers > 0 {
		steps = append(steps, step{WContend, s.cfg.ContendRacers})
	}
	for _, st := range steps {
		for _, sd := range sides {
			if !slices.Contains(sd.workloads, st.wl) {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			row, err := s.runOne(ctx, sd, sides, st.wl, st.c)
			if err != nil {
				return err
			}
			s.add(row)
		}
		if err := s.targetRounds(ctx, sides, st.wl, st.c); err != nil {
			return err
		}
	}
	return nil
}

// runOne runs wl at c on sd: contend, or a closed loop.
func (s *session) runOne(ctx context.Context, sd *side, sides []*side, wl string, c int) (Row, error) {
	if wl == WContend {
		return s.contend(ctx, sd, sides)
	}
	leader := s.leaderName(ctx, sd)
	row, err := s.closedLoop(ctx, sd.t, sd.pool, sd.cpu(), idleCPU(sides, sd), wl, c)
	if err != nil {
		return row, err
	}
	row.Leader = leader
	if n := nodeNote(row); n != "" && wl != WMix {
		row.Note = n
	}
	return row, nil
}

// estimate returns a generous guess of the ops/s of wl at c on t: three
// times the best rate seen so far for wl, create or consume at c, or for
// wl at any concurrency.
func (s *session) estimate(t Target, wl string, c int) float64 {
	best := 0.0
	for k, r := range s.rates {
		var sys, w string
		var conc int
		parts := strings.Split(k, "/")
		if len(parts) != 3 {
			continue
		}
		sys, w = parts[0], parts[1]
		conc, _ = strconv.Atoi(parts[2])
		if sys != t.Name() {
			continue
		}
		if w == wl || (conc == c && (w == WCreate || w == WConsume)) {
			best = max(best, r)
		}
	}
	if best == 0 {
		for k, r := range s.rates {
			if strings.HasPrefix(k, t.Name()+"/") {
				best = max(best, r)
			}
		}
	}
	if best == 0 {
		best = 2000
	}
	return best * 3
}

// prefill makes sure pool has at least n fresh actions.
func (s *session) prefill(ctx context.Context, t Target, pool *Pool, n int) error {
	need := n - pool.Fresh()
	if need <= 0 {
		return nil
	}
	t0 := time.Now()
	ids, err := t.CreateBatch(ctx, need)
	pool.Add(ids...)
	if t.Name() == "exactonce" {
		s.rep.Stored += len(ids)
	}
	if err != nil {
		return fmt.Errorf("prefill %d actions: %w", need, err)
	}
	took := time.Since(t0)
	if st, ok := t.(Settler); ok {
		if err := st.Settle(ctx); err != nil {
			return fmt.Errorf("prefill %d actions: %w", need, err)
		}
	}
	s.log.Info("prefilled", "system", t.Name(), "actions", need, "took", took.Round(time.Millisecond),
		"settled_after", (time.Since(t0) - took).Round(time.Millisecond))
	return nil
}

// closedLoop runs wl at c clients against t. cpu reads the CPU time of
// t's processes, idle that of the other system's (nil when none).
func (s *session) closedLoop(ctx context.Context, t Target, pool *Pool, cpu, idle func() time.Duration, wl string, c int) (Row, error) {
	window := (s.cfg.Duration + s.cfg.Warmup).Seconds()
	need := int(s.estimate(t, wl, c)*window) + 2*c + 100
	need = min(need, s.cfg.MaxPrefill)
	isEO := t.Name() == "exactonce"
	var created countAtomic
	var op Op
	var mix *kindLatency
	switch wl {
	case WCreate:
		op = func(ctx context.Context, w *Worker) error {
			id, err := t.Create(ctx, w)
			if err != nil {
				return err
			}
			pool.Add(id)
			created.add(1)
			return nil
		}
	case WConsume:
		if err := s.prefill(ctx, t, pool, need); err != nil {
			return Row{}, err
		}
		op = consumeOp(t, pool)
	case WVerify:
		if err := s.prefill(ctx, t, pool, 1000); err != nil {
			return Row{}, err
		}
		op = func(ctx context.Context, w *Worker) error {
			id, ok := pool.Any(w.Rand)
			if !ok {
				return ErrPoolEmpty
			}
			return t.Verify(ctx, w, id)
		}
	case WMix:
		if err := s.prefill(ctx, t, pool, need/6+c+100); err != nil {
			return Row{}, err
		}
		consume := consumeOp(t, pool)
		mix = &kindLatency{}
		op = func(ctx context.Context, w *Worker) error {
			t0 := time.Now()
			switch (w.Seq + w.ID) % 6 {
			case 0:
				id, err := t.Create(ctx, w)
				if err != nil {
					return err
				}
				mix.add("create", time.Since(t0))
				pool.Add(id)
				created.add(1)
				return nil
			case 1:
				err := consume(ctx, w)
				if err == nil {
					mix.add("consume", time.Since(t0))
				}
				return err
			default:
				id, ok := pool.Any(w.Rand)
				if !ok {
					return ErrPoolEmpty
				}
				err := t.Verify(ctx, w, id)
				if err == nil {
					mix.add("verify", time.Since(t0))
				}
				return err
			}
		}
	default:
		return Row{}, fmt.Errorf("unknown workload %q", wl)
	}
	seed := s.seed()
	s.log.Info("run", "system", t.Name(), "workload", wl, "conc", c, "seed", seed)
	spec := RunSpec{Concurrency: c, Duration: s.cfg.Duration, Warmup: s.cfg.Warmup,
		OpTimeout: s.cfg.OpTimeout, Seed: seed, Op: op, CPU: cpu, IdleCPU: idle}
	if nm, ok := t.(nodeMapper); ok && wl != WMix {
		spec.NodeOf = nm.NodeOf
	}
	res, err := RunLoop(ctx, spec)
	if isEO {
		s.rep.Stored += created.load()
	}
	if err != nil {
		return Row{}, fmt.Errorf("%s %s c=%d: %w", t.Name(), wl, c, err)
	}
	row := NewRow(t.Name(), wl, c, seed, res)
	row.NodeP50Ms = nodeP50s(t, res.ByNode)
	if mix != nil {
		row.Note = mix.String()
	}
	return row, nil
}

// kindLatency keeps the latencies of a mix's operations by kind. (They
// include the warm-up; the note is a breakdown, not the row's figures.)
type kindLatency struct {
	mu sync.Mutex
	m  map[string][]time.Duration
}

func (k *kindLatency) add(kind string, d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string][]time.Duration{}
	}
	k.m[kind] = append(k.m[kind], d)
}

// String renders "create p50/p99 a/b ms; ..." for the kinds seen.
func (k *kindLatency) String() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var parts []string
	for _, kind := range []string{"create", "consume", "verify"} {
		if v := k.m[kind]; len(v) > 0 {
			sm := Summarize(v)
			parts = append(parts, fmt.Sprintf("%s p50/p99 %.2f/%.2f ms", kind, ms(sm.P50), ms(sm.P99)))
		}
	}
	return strings.Join(parts, "; ")
}

func consumeOp(t Target, pool *Pool) Op {
	return func(ctx context.Context, w *Worker) error {
		id, ok := pool.Take()
		if !ok {
			return ErrPoolEmpty
		}
		out, err := t.Consume(ctx, w, id)
		if err != nil {
			return err
		}
		if out != Won {
			return &OpError{Kind: "lost", Err: fmt.Errorf("fresh action %s was already consumed", id)}
		}
		return nil
	}
}
