package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
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
)

// WorkloadOrder is the order workloads run and are reported in.
var WorkloadOrder = []string{WCreate, WConsume, WVerify, WMix, WCSV, WHot}

// Config is everything one benchmark session needs.
type Config struct {
	// ServerBin is the exactonced binary; EtcdBin the etcd binary ("" skips etcd).
	ServerBin string
	EtcdBin   string
	// TempBase is the parent of the clusters' fresh data dirs ("" for $TMPDIR).
	TempBase string
	// Keep leaves the data dirs (and logs) in place after the run.
	Keep bool

	Concurrency []int
	Duration    time.Duration
	Warmup      time.Duration
	OpTimeout   time.Duration
	// Workloads to run against ExactOnce and against etcd.
	Workloads     []string
	EtcdWorkloads []string

	HotRacers int
	// HotConns caps the connections the hot-action racers share (over all nodes).
	HotConns   int
	CSVRows    int
	CSVRepeats int
	// MaxPrefill caps the actions prepared for one consume run.
	MaxPrefill int

	// Million loads this many actions (0: skip) and then measures RSS and a restart.
	Million int

	EtcdConns int
	Seed      uint64

	// Ports of the first ExactOnce node (node i adds i) and etcd member.
	HTTPPort, RaftPort, GossipPort int
	EtcdClientPort, EtcdPeerPort   int

	// ProfileDir, when set, receives CPU profiles of every ExactOnce node
	// taken during extra consume, verify and CSV runs (the server binary must honour
	// BENCH_PPROF_ADDR; see the harness's pprof overlay), and PprofPort is
	// the first node's pprof port.
	ProfileDir     string
	ProfileSeconds int
	ProfileConc    int
	PprofPort      int

	Log *slog.Logger
	// Progress receives each row as it completes ("" lines of the table).
	Progress io.Writer
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
}

// NodeMem is a node's memory after the runs.
type NodeMem struct {
	System  string  `json:"system"`
	Node    string  `json:"node"`
	Leader  bool    `json:"leader"`
	Stage   string  `json:"stage"`
	Actions int     `json:"actions"`
	RSSMiB  float64 `json:"rssMiB"`
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

// Run executes a whole session: ExactOnce first (then stopped), etcd next.
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
	if len(cfg.Workloads) > 0 || cfg.Million > 0 {
		if err := s.runExactOnce(ctx); err != nil {
			errs = append(errs, fmt.Errorf("exactonce: %w", err))
		}
		s.loadavg("after exactonce")
	}
	if cfg.EtcdBin != "" && len(cfg.EtcdWorkloads) > 0 && ctx.Err() == nil {
		if err := s.runEtcd(ctx); err != nil {
			errs = append(errs, fmt.Errorf("etcd: %w", err))
		}
		s.loadavg("after etcd")
	}
	Compare(s.rows)
	SortRows(s.rows, WorkloadOrder)
	s.rep.Rows = s.rows
	s.rep.Checks = s.checks()
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

func (s *session) runExactOnce(ctx context.Context) (err error) {
	cfg := s.cfg
	s.log.Info("starting ExactOnce cluster", "bin", cfg.ServerBin, "http", cfg.HTTPPort)
	pport := 0
	if cfg.ProfileDir != "" {
		pport = cfg.PprofPort
	}
	cl, err := StartEOCluster(ctx, EOClusterConfig{Bin: cfg.ServerBin, TempBase: cfg.TempBase, Nodes: 3,
		HTTPPort: cfg.HTTPPort, RaftPort: cfg.RaftPort, GossipPort: cfg.GossipPort, PprofPort: pport, Log: s.log})
	if cl != nil {
		defer func() {
			cl.Stop()
			if err != nil && cl.Dir != "" && !cfg.Keep {
				s.log.Info("logs of the failed cluster are removed; rerun with -keep to keep them")
			}
			s.cleanupDir(cl.Dir)
		}()
	}
	if err != nil {
		return err
	}
	id, secret, err := cl.CreateClient(ctx, "bench")
	if err != nil {
		return err
	}
	maxConc := slices.Max(append([]int{1}, cfg.Concurrency...))
	t := NewExactOnce(cl.URLs(), id, secret, maxConc+8)
	pool := &Pool{}
	if err := s.sweep(ctx, t, pool, cfg.Workloads); err != nil {
		return err
	}
	if slices.Contains(cfg.Workloads, WCSV) && ctx.Err() == nil {
		if err := s.csv(ctx, t, pool); err != nil {
			return err
		}
	}
	if slices.Contains(cfg.Workloads, WHot) && ctx.Err() == nil {
		hot := t.WithTransport(NewTransport(cfg.HotConns/3+1, cfg.HotConns/3+1))
		warm := func(ctx context.Context) { warmConns(ctx, hot, cfg.HotConns) }
		if err := s.hot(ctx, hot, warm); err != nil {
			return err
		}
	}
	if cfg.ProfileDir != "" && ctx.Err() == nil {
		for _, wl := range []string{WConsume, WVerify, WCSV} {
			if err := s.profile(ctx, cl, t, pool, wl); err != nil {
				s.log.Warn("no CPU profile", "workload", wl, "err", err)
			}
		}
	}
	s.memory(ctx, cl, "after runs")
	if ctx.Err() == nil {
		s.restart(ctx, cl)
	}
	if cfg.Million > 0 && ctx.Err() == nil {
		if err := s.million(ctx, cl, t); err != nil {
			return err
		}
		s.memory(ctx, cl, "after million")
		s.restart(ctx, cl)
	}
	return ctx.Err()
}

func (s *session) runEtcd(ctx context.Context) (err error) {
	cfg := s.cfg
	s.log.Info("starting etcd cluster", "bin", cfg.EtcdBin, "client", cfg.EtcdClientPort)
	ec, err := StartEtcdCluster(ctx, EtcdClusterConfig{Bin: cfg.EtcdBin, TempBase: cfg.TempBase, Members: 3,
		ClientPort: cfg.EtcdClientPort, PeerPort: cfg.EtcdPeerPort, Log: s.log})
	if ec != nil {
		defer func() { ec.Stop(); s.cleanupDir(ec.Dir) }()
	}
	if err != nil {
		return err
	}
	t, err := NewEtcd(ctx, ec.Endpoints, cfg.EtcdConns, strconv.FormatUint(cfg.Seed, 36))
	if err != nil {
		return err
	}
	defer t.Close()
	pool := &Pool{}
	if err := s.sweep(ctx, t, pool, cfg.EtcdWorkloads); err != nil {
		return err
	}
	if slices.Contains(cfg.EtcdWorkloads, WHot) && ctx.Err() == nil {
		if err := s.hot(ctx, t, nil); err != nil {
			return err
		}
	}
	leader := ec.Leader(ctx)
	for i, p := range ec.Members {
		m, err := ReadMem(p.Pid())
		if err != nil {
			s.log.Warn("etcd memory", "err", err)
			continue
		}
		s.rep.Memory = append(s.rep.Memory, NodeMem{System: "etcd", Node: p.Name, Leader: i == leader, Stage: "after runs",
			RSSMiB: mib(m.RSS), PeakMiB: mib(m.Peak), DataMiB: mib(dirSize(ec.Dir + "/" + p.Name))})
	}
	return ctx.Err()
}

func mib(b int64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }

// sweep runs the closed-loop workloads over every concurrency.
func (s *session) sweep(ctx context.Context, t Target, pool *Pool, workloads []string) error {
	for _, wl := range []string{WCreate, WConsume, WVerify, WMix} {
		if !slices.Contains(workloads, wl) {
			continue
		}
		for _, c := range s.cfg.Concurrency {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			row, err := s.closedLoop(ctx, t, pool, wl, c)
			if err != nil {
				return err
			}
			s.add(row)
		}
	}
	return nil
}

// estimate returns a generous guess of the ops/s of wl at c on t.
func (s *session) estimate(t Target, wl string, c int) float64 {
	best := 0.0
	for _, w := range []string{wl, WCreate, WConsume} {
		if r := s.rates[fmt.Sprintf("%s/%s/%d", t.Name(), w, c)]; r > best {
			best = r
		}
	}
	if best == 0 {
		for k, r := range s.rates {
			if len(k) > len(t.Name()) && k[:len(t.Name())] == t.Name() && r > best {
				best = r
			}
		}
	}
	if best == 0 {
		best = 2000
	}
	return best * 2
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
	s.log.Info("prefilled", "system", t.Name(), "actions", need, "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

func (s *session) closedLoop(ctx context.Context, t Target, pool *Pool, wl string, c int) (Row, error) {
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
	res, err := RunLoop(ctx, RunSpec{Concurrency: c, Duration: s.cfg.Duration, Warmup: s.cfg.Warmup,
		OpTimeout: s.cfg.OpTimeout, Seed: seed, Op: op})
	if isEO {
		s.rep.Stored += created.load()
	}
	if err != nil {
		return Row{}, fmt.Errorf("%s %s c=%d: %w", t.Name(), wl, c, err)
	}
	row := NewRow(t.Name(), wl, c, seed, res)
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
