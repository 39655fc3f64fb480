// Command exactonce-soak shows that a node's disk and memory level off
// under endless traffic once retention deletes what it must (make soak;
// docs/performance.md, "Soak").
//
// It starts one node (or -nodes N on loopback) from the built binary with a
// short --retention, drives create + consume cycles through the SDK from
// -workers goroutines, and every -every prints and records: elapsed time,
// actions created, the data dir's size on disk, the state file's size and
// the resident memory of the node(s). At the end it writes the series as
// CSV and draws it as a PNG.
//
//	go run ./cmd/exactonce-soak -duration 10m -retention 30s
//	go run ./cmd/exactonce-soak -plot-only docs/soak.csv -png docs/soak.png
package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/exactonce/exactonce/client"
	"github.com/exactonce/exactonce/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the command-line settings.
type options struct {
	bin       string
	nodes     int
	duration  time.Duration
	every     time.Duration
	retention string
	workers   int
	payload   int
	basePort  int
	tempBase  string
	csvPath   string
	pngPath   string
	plotOnly  string
	keep      bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	fl := flag.NewFlagSet("exactonce-soak", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.StringVar(&o.bin, "bin", "bin/exactonced", "the exactonced binary to run (make build)")
	fl.IntVar(&o.nodes, "nodes", 1, "nodes in the cluster")
	fl.DurationVar(&o.duration, "duration", 10*time.Minute, "how long to drive traffic")
	fl.DurationVar(&o.every, "every", 10*time.Second, "sampling period")
	fl.StringVar(&o.retention, "retention", "30s", "the nodes' --retention")
	fl.IntVar(&o.workers, "workers", 8, "goroutines each running create + consume cycles")
	fl.IntVar(&o.payload, "payload", 100, "bytes of each action's payload (a JSON object)")
	fl.IntVar(&o.basePort, "base-port", 61100, "first node's HTTP port; Raft at +100, gossip at +200 (above Linux's ephemeral range and clear of the ports tests and make bench use)")
	fl.StringVar(&o.tempBase, "tmp", "", "parent of the nodes' fresh data dirs (default $TMPDIR)")
	fl.StringVar(&o.csvPath, "csv", "docs/soak.csv", "where to write the series")
	fl.StringVar(&o.pngPath, "png", "docs/soak.png", "where to draw the plot (empty: no plot)")
	fl.BoolVar(&o.keep, "keep", false, "keep the nodes' data dirs and logs (removed by default)")
	fl.StringVar(&o.plotOnly, "plot-only", "", "draw -png from this CSV of an earlier run, run nothing")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "exactonce-soak: unexpected argument %q\n", fl.Arg(0))
		return 2
	}
	if o.plotOnly != "" {
		if err := replot(o.plotOnly, o.pngPath); err != nil {
			fmt.Fprintf(stderr, "exactonce-soak: %v\n", err)
			return 1
		}
		return 0
	}
	if o.nodes < 1 || o.workers < 1 || o.payload < 1 || o.every <= 0 || o.duration <= 0 {
		fmt.Fprintln(stderr, "exactonce-soak: -nodes, -workers, -payload, -every and -duration must be positive")
		return 2
	}
	if err := soak(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "exactonce-soak: %v\n", err)
		return 1
	}
	return 0
}

// sample is one row of the series.
type sample struct {
	Elapsed  time.Duration
	Created  int64
	Consumed int64
	Errors   int64
	// Stored and Purged are the client's stats: actions stored, and
	// deleted by retention (-1 when the stats call failed).
	Stored, Purged int64
	// DataDir is the bytes on disk of every node's data dir (blocks
	// allocated, so the Raft log's preallocated segments count in full).
	DataDir int64
	// StateFile is the size of the first node's state.db.
	StateFile int64
	// RSS is the resident memory of each node, in node order.
	RSS []int64
}

// meta describes the run, for the plot's title.
type meta struct {
	Nodes     int
	Retention string
	Workers   int
	Payload   int
}

func soak(ctx context.Context, o options, stdout, stderr io.Writer) error {
	if _, err := os.Stat(o.bin); err != nil {
		return fmt.Errorf("%w (run make build first, or give -bin)", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cl, err := bench.StartEOCluster(ctx, bench.EOClusterConfig{
		Bin: o.bin, TempBase: o.tempBase, Nodes: o.nodes,
		HTTPPort: o.basePort, RaftPort: o.basePort + 100, GossipPort: o.basePort + 200,
		Args: []string{"--retention", o.retention, "--log-level", "warn"},
		Log:  log,
	})
	if cl != nil {
		defer func() {
			cl.Stop()
			if o.keep {
				fmt.Fprintf(stdout, "kept %s\n", cl.Dir)
			} else {
				_ = os.RemoveAll(cl.Dir)
			}
		}()
	}
	if err != nil {
		return fmt.Errorf("start the cluster: %w", err)
	}
	id, secret, err := cl.CreateClient(ctx, "soak")
	if err != nil {
		return err
	}
	clients := make([]*client.Client, len(cl.Nodes))
	for i, n := range cl.Nodes {
		if clients[i], err = client.New(n.URL, client.WithCredentials(id, secret), client.WithUserAgent("exactonce-soak")); err != nil {
			return err
		}
	}
	// A JSON object of about -payload bytes.
	payload, err := json.Marshal(map[string]string{"d": strings.Repeat("x", max(o.payload-8, 1))})
	if err != nil {
		return err
	}

	var created, consumed, failed atomic.Int64
	var reportOnce sync.Once
	fail := func(ctx context.Context, err error) {
		if ctx.Err() != nil {
			return
		}
		failed.Add(1)
		reportOnce.Do(func() { fmt.Fprintf(stderr, "exactonce-soak: first error: %v\n", err) })
		// Do not spin on a node that refuses everything.
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	runCtx, stopRun := context.WithTimeout(ctx, o.duration)
	defer stopRun()
	var wg sync.WaitGroup
	for w := range o.workers {
		c := clients[w%len(clients)]
		wg.Go(func() {
			for runCtx.Err() == nil {
				a, err := c.Create(runCtx, client.CreateRequest{Payload: payload})
				if err != nil {
					fail(runCtx, err)
					continue
				}
				created.Add(1)
				if _, err := c.Consume(runCtx, a.ActionID, nil); err != nil {
					fail(runCtx, err)
					continue
				}
				consumed.Add(1)
			}
		})
	}

	m := meta{Nodes: o.nodes, Retention: o.retention, Workers: o.workers, Payload: o.payload}
	fmt.Fprintf(stdout, "soak: %d node(s), --retention %s, %d workers, %d B payloads, %s; data in %s\n",
		o.nodes, o.retention, o.workers, o.payload, o.duration, cl.Dir)
	fmt.Fprintf(stdout, "%8s %10s %8s %8s %10s %12s %10s %s\n", "elapsed", "created", "errors", "stored", "purged", "data_dir_MiB", "state_MiB", "rss_MiB")
	var series []sample
	start := time.Now()
	take := func() {
		s := sample{Elapsed: time.Since(start).Round(time.Second), Created: created.Load(), Consumed: consumed.Load(), Errors: failed.Load()}
		s.Stored, s.Purged = -1, -1
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if st, err := clients[0].Stats(sctx); err == nil {
			s.Stored, s.Purged = st.Total, st.Purged
		}
		cancel()
		s.DataDir = diskUsage(cl.Dir)
		if st, err := os.Stat(filepath.Join(cl.Dir, cl.Nodes[0].Name, "state.db")); err == nil {
			s.StateFile = st.Size()
		}
		for _, n := range cl.Nodes {
			s.RSS = append(s.RSS, rss(n.Pid()))
		}
		series = append(series, s)
		rssCol := make([]string, len(s.RSS))
		for i, r := range s.RSS {
			rssCol[i] = fmt.Sprintf("%.1f", mib(r))
		}
		fmt.Fprintf(stdout, "%8s %10d %8d %8d %10d %12.1f %10.1f %s\n", s.Elapsed, s.Created, s.Errors, s.Stored, s.Purged, mib(s.DataDir), mib(s.StateFile), strings.Join(rssCol, " "))
	}
	take()
	tick := time.NewTicker(o.every)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-tick.C:
			take()
		case <-runCtx.Done():
			done = true
		}
	}
	wg.Wait()
	take()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, n := range cl.Nodes {
		if !n.Running() {
			// A node that died is the finding: keep its log and data.
			o.keep = true
			return fmt.Errorf("%s exited during the soak: see %s", n.Name, n.LogPath)
		}
	}
	if err := writeCSV(o.csvPath, m, series); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", o.csvPath)
	if o.pngPath != "" {
		if err := drawPNG(o.pngPath, m, series); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s\n", o.pngPath)
	}
	first, last := series[0], series[len(series)-1]
	fmt.Fprintf(stdout, "summary: %d actions created (%d consumed, %d errors, %d stored at the end, %d purged) in %s with --retention %s; data dir %.1f -> %.1f MiB (peak %.1f), state file %.1f -> %.1f MiB, RSS %s -> %s MiB (peak %s)\n",
		last.Created, last.Consumed, last.Errors, last.Stored, last.Purged, last.Elapsed, o.retention,
		mib(first.DataDir), mib(last.DataDir), mib(peak(series, func(s sample) int64 { return s.DataDir })),
		mib(first.StateFile), mib(last.StateFile), fmtRSS(first.RSS), fmtRSS(last.RSS),
		fmt.Sprintf("%.1f", mib(peak(series, func(s sample) int64 { return maxOf(s.RSS) }))))
	return nil
}

// diskUsage is the bytes allocated on disk under dir (what du reports).
func diskUsage(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// rss is the resident set of pid in bytes (VmRSS of /proc/<pid>/status),
// 0 when unknown.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func maxOf(v []int64) int64 {
	var m int64
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func peak(series []sample, f func(sample) int64) int64 {
	var m int64
	for _, s := range series {
		m = max(m, f(s))
	}
	return m
}

func fmtRSS(v []int64) string {
	s := make([]string, len(v))
	for i, r := range v {
		s[i] = fmt.Sprintf("%.1f", mib(r))
	}
	return strings.Join(s, "/")
}

// csvHeader is the CSV's first row; rss_mib_N columns follow, one a node.
var csvHeader = []string{"elapsed_s", "created", "consumed", "errors", "stored", "purged", "data_dir_mib", "state_file_mib"}

// writeCSV writes the series, preceded by a comment line with the run's
// settings.
func writeCSV(path string, m meta, series []sample) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	fmt.Fprintf(f, "# nodes=%d retention=%s workers=%d payload_bytes=%d\n", m.Nodes, m.Retention, m.Workers, m.Payload)
	w := csv.NewWriter(f)
	head := append([]string(nil), csvHeader...)
	for i := range m.Nodes {
		head = append(head, fmt.Sprintf("rss_mib_%d", i+1))
	}
	_ = w.Write(head)
	for _, s := range series {
		row := []string{strconv.FormatInt(int64(s.Elapsed/time.Second), 10), strconv.FormatInt(s.Created, 10),
			strconv.FormatInt(s.Consumed, 10), strconv.FormatInt(s.Errors, 10),
			strconv.FormatInt(s.Stored, 10), strconv.FormatInt(s.Purged, 10),
			strconv.FormatFloat(mib(s.DataDir), 'f', 2, 64), strconv.FormatFloat(mib(s.StateFile), 'f', 2, 64)}
		for _, r := range s.RSS {
			row = append(row, strconv.FormatFloat(mib(r), 'f', 2, 64))
		}
		_ = w.Write(row)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		_ = f.Close()
		return fmt.Errorf("write csv: %w", err)
	}
	return f.Close()
}

// readCSV reads what writeCSV wrote.
func readCSV(path string) (meta, []sample, error) {
	var m meta
	b, err := os.ReadFile(path)
	if err != nil {
		return m, nil, err
	}
	text := string(b)
	if first, rest, ok := strings.Cut(text, "\n"); ok && strings.HasPrefix(first, "#") {
		for _, kv := range strings.Fields(strings.TrimPrefix(first, "#")) {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "nodes":
				m.Nodes, _ = strconv.Atoi(v)
			case "retention":
				m.Retention = v
			case "workers":
				m.Workers, _ = strconv.Atoi(v)
			case "payload_bytes":
				m.Payload, _ = strconv.Atoi(v)
			}
		}
		text = rest
	}
	rows, err := csv.NewReader(strings.NewReader(text)).ReadAll()
	if err != nil || len(rows) < 2 {
		return m, nil, fmt.Errorf("%s: not a soak CSV: %v", path, err)
	}
	var series []sample
	for _, r := range rows[1:] {
		if len(r) < len(csvHeader) {
			return m, nil, fmt.Errorf("%s: short row %q", path, r)
		}
		f := func(i int) float64 { v, _ := strconv.ParseFloat(r[i], 64); return v }
		s := sample{Elapsed: time.Duration(f(0)) * time.Second, Created: int64(f(1)), Consumed: int64(f(2)), Errors: int64(f(3)),
			Stored: int64(f(4)), Purged: int64(f(5)), DataDir: int64(f(6) * (1 << 20)), StateFile: int64(f(7) * (1 << 20))}
		for i := len(csvHeader); i < len(r); i++ {
			s.RSS = append(s.RSS, int64(f(i)*(1<<20)))
		}
		series = append(series, s)
	}
	if m.Nodes == 0 {
		m.Nodes = len(series[0].RSS)
	}
	return m, series, nil
}

// replot draws pngPath from an earlier run's CSV.
func replot(csvPath, pngPath string) error {
	if pngPath == "" {
		return errors.New("-plot-only needs -png")
	}
	m, series, err := readCSV(csvPath)
	if err != nil {
		return err
	}
	return drawPNG(pngPath, m, series)
}
