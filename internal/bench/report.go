package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Row is one line of the report: a workload at one concurrency against one
// system.
type Row struct {
	System      string         `json:"system"`
	Workload    string         `json:"workload"`
	Concurrency int            `json:"concurrency"`
	Ops         int            `json:"ops"`
	Errors      int            `json:"errors"`
	ErrorKinds  map[string]int `json:"errorKinds,omitempty"`
	FirstErrors []string       `json:"firstErrors,omitempty"`
	Seconds     float64        `json:"seconds"`
	OpsPerSec   float64        `json:"opsPerSec"`
	MeanMs      float64        `json:"meanMs"`
	P50Ms       float64        `json:"p50Ms"`
	P95Ms       float64        `json:"p95Ms"`
	P99Ms       float64        `json:"p99Ms"`
	MaxMs       float64        `json:"maxMs"`
	// VsEtcd is this row's ops/s divided by etcd's for the same workload
	// and concurrency (every system's rows but etcd's).
	VsEtcd *float64 `json:"vsEtcdOpsPerSec,omitempty"`
	// P50VsEtcd is this row's p50 divided by etcd's (lower is better).
	P50VsEtcd *float64 `json:"vsEtcdP50,omitempty"`
	// VsPG and P50VsPG compare the same way with PostgreSQL with its
	// synchronous standby (every system's rows but its own).
	VsPG          *float64 `json:"vsPostgresOpsPerSec,omitempty"`
	P50VsPG       *float64 `json:"vsPostgresP50,omitempty"`
	PoolExhausted bool     `json:"poolExhausted,omitempty"`
	// CPUMicrosPerOp is the CPU time (user+system, all of the system's
	// processes) spent per successful operation in the measured window: the
	// system's cost per operation, which varies far less than its rate on a
	// shared machine. 0 when unknown.
	CPUMicrosPerOp float64 `json:"cpuMicrosPerOp,omitempty"`
	// IdleSystemCPUPercent is the CPU the other system (idle beside this
	// run) used over the measured window, in percent of one core: it
	// shows whether the idle cluster took CPU from the one measured. 0
	// when unknown or when only one system runs.
	IdleSystemCPUPercent float64 `json:"idleSystemCpuPercent,omitempty"`
	// NodeP50Ms is the p50 of the operations sent to each node, by node
	// name (contend: of the racers on each node); Leader names the node
	// that led when the run started ("" when unknown or leaderless).
	NodeP50Ms map[string]float64 `json:"nodeP50Ms,omitempty"`
	Leader    string             `json:"leader,omitempty"`
	// Round numbers the runs of a target row (Config.TargetRounds); 0 in
	// the sweep's table.
	Round int    `json:"round,omitempty"`
	Note  string `json:"note,omitempty"`
	Seed  uint64 `json:"seed"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// NewRow turns a run result into a row.
func NewRow(system, workload string, conc int, seed uint64, r RunResult) Row {
	row := Row{
		System: system, Workload: workload, Concurrency: conc, Seed: seed,
		Ops: r.Ops, Errors: r.Errors, ErrorKinds: r.ErrorKinds, FirstErrors: r.FirstErrors,
		Seconds:       r.Elapsed.Seconds(),
		MeanMs:        ms(r.Latency.Mean),
		P50Ms:         ms(r.Latency.P50),
		P95Ms:         ms(r.Latency.P95),
		P99Ms:         ms(r.Latency.P99),
		MaxMs:         ms(r.Latency.Max),
		PoolExhausted: r.PoolExhausted,
	}
	if len(row.ErrorKinds) == 0 {
		row.ErrorKinds = nil
	}
	if r.Elapsed > 0 {
		row.OpsPerSec = float64(r.Ops) / r.Elapsed.Seconds()
	}
	if r.CPU > 0 && r.Ops > 0 {
		row.CPUMicrosPerOp = float64(r.CPU.Microseconds()) / float64(r.Ops)
	}
	if r.IdleCPU > 0 && r.Elapsed > 0 {
		row.IdleSystemCPUPercent = 100 * r.IdleCPU.Seconds() / r.Elapsed.Seconds()
	}
	return row
}

// Compare fills VsEtcd and P50VsEtcd on every row but etcd's, and VsPG
// and P50VsPG on every row but PostgreSQL's (with the standby), that has a
// row of that system with the same workload and concurrency.
func Compare(rows []Row) {
	type key struct {
		w string
		c int
	}
	etcd, pg := map[key]Row{}, map[key]Row{}
	for _, r := range rows {
		switch r.System {
		case SysEtcd:
			etcd[key{r.Workload, r.Concurrency}] = r
		case SysPostgres:
			pg[key{r.Workload, r.Concurrency}] = r
		}
	}
	ratios := func(r, ref Row) (ops, p50 *float64) {
		if ref.OpsPerSec > 0 {
			v := r.OpsPerSec / ref.OpsPerSec
			ops = &v
		}
		if ref.P50Ms > 0 {
			v := r.P50Ms / ref.P50Ms
			p50 = &v
		}
		return ops, p50
	}
	for i := range rows {
		r := &rows[i]
		k := key{r.Workload, r.Concurrency}
		if e, ok := etcd[k]; ok && r.System != SysEtcd {
			r.VsEtcd, r.P50VsEtcd = ratios(*r, e)
		}
		if p, ok := pg[k]; ok && r.System != SysPostgres {
			r.VsPG, r.P50VsPG = ratios(*r, p)
		}
	}
}

// systemPos is a system's place in tables (unknown systems last).
func systemPos(name string) int {
	for i, s := range SystemOrder {
		if s == name {
			return i
		}
	}
	return len(SystemOrder)
}

// SortRows orders rows by workload order, concurrency and system
// (SystemOrder).
func SortRows(rows []Row, order []string) {
	pos := map[string]int{}
	for i, w := range order {
		pos[w] = i
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if pos[a.Workload] != pos[b.Workload] {
			return pos[a.Workload] < pos[b.Workload]
		}
		if a.Concurrency != b.Concurrency {
			return a.Concurrency < b.Concurrency
		}
		return systemPos(a.System) < systemPos(b.System)
	})
}

func ratio(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.2fx", *p)
}

// WriteTable prints rows as an aligned table.
func WriteTable(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tworkload\tconc\tops\tsecs\tops/s\tp50 ms\tp95 ms\tp99 ms\tmax ms\terrors\tcpu us/op\tops/s vs pg\tp50 vs pg\tops/s vs etcd\tp50 vs etcd\t")
	for _, r := range rows {
		errs := fmt.Sprint(r.Errors)
		if r.Errors > 0 {
			var kinds []string
			for k, n := range r.ErrorKinds {
				kinds = append(kinds, fmt.Sprintf("%s:%d", k, n))
			}
			sort.Strings(kinds)
			errs += " (" + strings.Join(kinds, ",") + ")"
		}
		wl := r.Workload
		if r.PoolExhausted {
			wl += "*"
		}
		cpu := "-"
		if r.CPUMicrosPerOp > 0 {
			cpu = fmt.Sprintf("%.0f", r.CPUMicrosPerOp)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.1f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			r.System, wl, r.Concurrency, r.Ops, r.Seconds, r.OpsPerSec,
			r.P50Ms, r.P95Ms, r.P99Ms, r.MaxMs, errs, cpu, ratio(r.VsPG), ratio(r.P50VsPG), ratio(r.VsEtcd), ratio(r.P50VsEtcd))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// WriteJSONLines prints one JSON object per row.
func WriteJSONLines(w io.Writer, rows []Row) error {
	enc := json.NewEncoder(w)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("write JSON line: %w", err)
		}
	}
	return nil
}

// Check is one target's verdict.
type Check struct {
	Name     string `json:"check"`
	Status   string `json:"status"` // PASS, FAIL or N/A
	Measured string `json:"measured"`
}

// WriteChecks prints the verdicts, one per line.
func WriteChecks(w io.Writer, checks []Check) error {
	for _, c := range checks {
		if _, err := fmt.Fprintf(w, "%-4s  %s: %s\n", c.Status, c.Name, c.Measured); err != nil {
			return fmt.Errorf("write checks: %w", err)
		}
	}
	return nil
}
