package bench

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
)

// WriteSideBySide prints one line per workload and concurrency with every
// system's figures next to each other (ops/s, p50 and p99 in ms, server
// CPU per operation in µs; contend: rounds/s, racer latency and CPU per
// round) and
// ExactOnce's ops/s over PostgreSQL's (with the standby) and etcd's.
// rows must be sorted (SortRows).
func WriteSideBySide(w io.Writer, rows []Row) error {
	var systems []string
	for _, sys := range SystemOrder {
		if slices.ContainsFunc(rows, func(r Row) bool { return r.System == sys }) {
			systems = append(systems, sys)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "workload\tconc\t")
	for _, sys := range systems {
		fmt.Fprintf(tw, "%s ops/s\tp50\tp99\tcpu\t", sys)
	}
	fmt.Fprintln(tw, "exactonce/postgres\texactonce/etcd\t")
	type key struct {
		w string
		c int
	}
	var keys []key
	byKey := map[key]map[string]Row{}
	for _, r := range rows {
		if r.Workload == WCSV || r.Workload == WHot {
			continue // not run by every system; in the full table
		}
		k := key{r.Workload, r.Concurrency}
		if byKey[k] == nil {
			byKey[k] = map[string]Row{}
			keys = append(keys, k)
		}
		byKey[k][r.System] = r
	}
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%d\t", k.w, k.c)
		for _, sys := range systems {
			r, ok := byKey[k][sys]
			if !ok {
				fmt.Fprint(tw, "-\t-\t-\t-\t")
				continue
			}
			cpu := "-"
			if r.CPUMicrosPerOp > 0 {
				cpu = fmt.Sprintf("%.0f", r.CPUMicrosPerOp)
			}
			rate := fmt.Sprintf("%.0f", r.OpsPerSec)
			if r.Errors > 0 {
				rate = fmt.Sprintf("(%d errors) %s", r.Errors, rate)
			}
			fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%s\t", rate, r.P50Ms, r.P99Ms, cpu)
		}
		eo := byKey[k][SysExactOnce]
		fmt.Fprintf(tw, "%s\t%s\t\n", ratio(eo.VsPG), ratio(eo.VsEtcd))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write side-by-side table: %w", err)
	}
	return nil
}
