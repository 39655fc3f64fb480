package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// targetRows are the closed-loop rows whose targets are judged on the
// median of several runs (Config.TargetRounds); contend, at any number of
// racers, is one too.
var targetRows = []targetRow{{WConsume, 64}, {WVerify, 64}}

// targetRow is a workload at a concurrency.
type targetRow struct {
	wl string
	c  int
}

// targetRounds runs wl at c TargetRounds-1 more times on every side that
// just ran it in the sweep, when it is a target row, and keeps every run
// (the sweep's as round 1) in the report. The runs follow the sweep's at
// once, in an A B B A A B order, so that both systems are measured at the
// same stage of the session: each run adds to the state a system holds,
// and etcd, which keeps every revision, slows down as it grows.
func (s *session) targetRounds(ctx context.Context, sides []*side, wl string, c int) error {
	isTarget := slices.ContainsFunc(targetRows, func(tr targetRow) bool { return tr.wl == wl && tr.c == c })
	if !isTarget && wl != WContend {
		return nil
	}
	var ran []*side
	for _, sd := range sides {
		if r, ok := s.row(sd.t.Name(), wl, c); ok {
			r.Round = 1
			s.rep.Rounds = append(s.rep.Rounds, r)
			ran = append(ran, sd)
		}
	}
	for round := 2; round <= s.cfg.TargetRounds; round++ {
		order := slices.Clone(ran)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, sd := range order {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			row, err := s.runOne(ctx, sd, sides, wl, c)
			if err != nil {
				return err
			}
			row.Round = round
			s.rep.Rounds = append(s.rep.Rounds, row)
			s.log.Info("target round done", "round", round, "system", row.System, "workload", row.Workload,
				"conc", row.Concurrency, "ops/s", int(row.OpsPerSec), "p99ms", row.P99Ms, "errors", row.Errors)
		}
	}
	return nil
}

// runSummary is one system's runs of one target row.
type runSummary struct {
	// OpsPerSec and P99Ms are the medians over the runs (each taken
	// separately); Errors is the total.
	OpsPerSec float64
	P99Ms     float64
	Errors    int
	// Rates lists every run's ops/s in the order they ran.
	Rates []float64
}

// summarizeRuns returns the median rate and p99 of runs (the middle one of an
// odd count, the mean of the middle two of an even one).
func summarizeRuns(runs []Row) runSummary {
	var sum runSummary
	var p99s []float64
	for _, r := range runs {
		sum.Rates = append(sum.Rates, r.OpsPerSec)
		p99s = append(p99s, r.P99Ms)
		sum.Errors += r.Errors
	}
	sum.OpsPerSec = median(sum.Rates)
	sum.P99Ms = median(p99s)
	return sum
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// target returns system's runs of wl at c summarized: every round when
// rounds ran, else the sweep's single run. ok is false when it never ran.
func (s *session) target(system, wl string, c int) (runSummary, bool) {
	var runs []Row
	for _, r := range s.rep.Rounds {
		if r.System == system && r.Workload == wl && r.Concurrency == c {
			runs = append(runs, r)
		}
	}
	if len(runs) == 0 {
		r, ok := s.row(system, wl, c)
		if !ok {
			return runSummary{}, false
		}
		runs = []Row{r}
	}
	return summarizeRuns(runs), true
}

// ratesString prints a summary's runs, "2790/3100/2505".
func (r runSummary) ratesString() string {
	parts := make([]string, len(r.Rates))
	for i, v := range r.Rates {
		parts[i] = fmt.Sprintf("%.0f", v)
	}
	return strings.Join(parts, "/")
}

// WriteRounds prints every run of the target rows.
func WriteRounds(w io.Writer, rounds []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tconc\tround\tsystem\tops/s\tp50 ms\tp99 ms\terrors\tcpu us/op\tidle system cpu %\t")
	sorted := slices.Clone(rounds)
	slices.SortStableFunc(sorted, func(a, b Row) int {
		if c := strings.Compare(a.Workload, b.Workload); c != 0 {
			return c
		}
		return a.Round - b.Round
	})
	for _, r := range sorted {
		cpu := "-"
		if r.CPUMicrosPerOp > 0 {
			cpu = fmt.Sprintf("%.0f", r.CPUMicrosPerOp)
		}
		idle := "-"
		if r.IdleSystemCPUPercent > 0 {
			idle = fmt.Sprintf("%.1f", r.IdleSystemCPUPercent)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.0f\t%.2f\t%.2f\t%d\t%s\t%s\t\n",
			r.Workload, r.Concurrency, r.Round, r.System, r.OpsPerSec, r.P50Ms, r.P99Ms, r.Errors, cpu, idle)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write rounds: %w", err)
	}
	return nil
}
