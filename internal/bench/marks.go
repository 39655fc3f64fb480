package bench

import (
	"fmt"
	"slices"
	"strings"
)

// The marks ExactOnce is to meet against PostgreSQL with a synchronous
// standby (docs/performance.md, "Against PostgreSQL").
const (
	markConsume64P99Ms     = 25.0
	markRacerP50Ms         = 5.0
	markFollowerConsumeP50 = 0.8
	markCPUPerConsumeUs    = 150.0
	markVsEtcd             = 5.0
)

// runsOf returns system's runs of wl at c: every target round when rounds
// ran, else the sweep's run (nil when it never ran).
func (s *session) runsOf(system, wl string, c int) []Row {
	var runs []Row
	for _, r := range s.rep.Rounds {
		if r.System == system && r.Workload == wl && r.Concurrency == c {
			runs = append(runs, r)
		}
	}
	if len(runs) == 0 {
		if r, ok := s.row(system, wl, c); ok {
			runs = []Row{r}
		}
	}
	return runs
}

// medianOf returns the median of f over runs.
func medianOf(runs []Row, f func(Row) float64) float64 {
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = f(r)
	}
	return median(v)
}

// slowestNodeP50 is the p50 of the node whose requests took longest; ok
// is false without per-node figures.
func slowestNodeP50(r Row, skip string) (name string, p50 float64, ok bool) {
	for n, v := range r.NodeP50Ms {
		if n != skip && (!ok || v > p50) {
			name, p50, ok = n, v, true
		}
	}
	return name, p50, ok
}

// pgChecks are the marks of ExactOnce against PostgreSQL with its
// synchronous standby, single-node PostgreSQL and etcd. Each figure is the
// median of a target row's alternating runs, or the sweep's run.
func (s *session) pgChecks() []Check {
	var out []Check
	eo := func(wl string, c int) []Row { return s.runsOf(SysExactOnce, wl, c) }
	ops := func(r Row) float64 { return r.OpsPerSec }
	type wc struct {
		wl string
		c  int
	}
	beat := []wc{{WConsume, 1}, {WConsume, 16}, {WConsume, 64}, {WCreate, 64}}
	if s.cfg.ContendRacers > 0 {
		beat = append(beat, wc{WContend, s.cfg.ContendRacers})
	}
	for _, b := range beat {
		name := fmt.Sprintf("%s @%d: ExactOnce ops/s > PostgreSQL with a synchronous standby", b.wl, b.c)
		if b.wl == WContend {
			name = fmt.Sprintf("contend, %d racers: ExactOnce rounds/s > PostgreSQL with a synchronous standby", b.c)
		}
		er, pr := eo(b.wl, b.c), s.runsOf(SysPostgres, b.wl, b.c)
		if len(er) == 0 || len(pr) == 0 {
			out = append(out, na(name, "not run on both"))
			continue
		}
		e, p := medianOf(er, ops), medianOf(pr, ops)
		out = append(out, Check{name, verdict(e > p), fmt.Sprintf("%s%.0f vs %.0f = %.2fx", runsLabel(len(er)), e, p, e/p)})
	}
	if s.cfg.ContendRacers > 0 {
		name := "contend: exactly one winner in every round, every system"
		var parts []string
		bad := 0
		systems := slices.Clone(SystemOrder)
		for _, r := range s.rows {
			if !slices.Contains(systems, r.System) {
				systems = append(systems, r.System)
			}
		}
		for _, sys := range systems {
			rounds, badRounds := 0, 0
			for _, r := range s.runsOf(sys, WContend, s.cfg.ContendRacers) {
				rounds += r.Ops
				for k, n := range r.ErrorKinds {
					if strings.HasPrefix(k, "round with ") {
						badRounds += n
					}
				}
			}
			if rounds+badRounds > 0 {
				parts = append(parts, fmt.Sprintf("%s %d rounds wrong, %d measured", sys, badRounds, rounds))
				bad += badRounds
			}
		}
		if len(parts) == 0 {
			out = append(out, na(name, "not run"))
		} else {
			out = append(out, Check{name, verdict(bad == 0), strings.Join(parts, "; ")})
		}
	}
	{
		name := fmt.Sprintf("consume @64 >= single-node PostgreSQL's rate, p99 < %.0f ms", markConsume64P99Ms)
		er, pr := eo(WConsume, 64), s.runsOf(SysPostgres1, WConsume, 64)
		switch {
		case len(er) == 0:
			out = append(out, na(name, "not run"))
		case len(pr) == 0:
			out = append(out, na(name, "single-node PostgreSQL not run"))
		default:
			e, p := medianOf(er, ops), medianOf(pr, ops)
			p99 := medianOf(er, func(r Row) float64 { return r.P99Ms })
			out = append(out, Check{name, verdict(e >= p && p99 < markConsume64P99Ms),
				fmt.Sprintf("%s%.0f ops/s vs %.0f (%.2fx), p99 %.1f ms", runsLabel(len(er)), e, p, e/p, p99)})
		}
	}
	if s.cfg.ContendRacers > 0 {
		name := fmt.Sprintf("contend: a racer's p50 <= %.0f ms through every node", markRacerP50Ms)
		runs := eo(WContend, s.cfg.ContendRacers)
		var worst []float64
		var parts []string
		for _, r := range runs {
			if n, v, ok := slowestNodeP50(r, ""); ok {
				worst = append(worst, v)
				parts = append(parts, fmt.Sprintf("%s %.2f ms", n, v))
			}
		}
		if len(worst) == 0 {
			out = append(out, na(name, "not run"))
		} else {
			m := median(worst)
			out = append(out, Check{name, verdict(m <= markRacerP50Ms),
				fmt.Sprintf("%sslowest node's racer p50 %.2f ms (runs: %s)", runsLabel(len(worst)), m, strings.Join(parts, ", "))})
		}
	}
	{
		name := fmt.Sprintf("consume @1 through a follower: p50 <= %.1f ms", markFollowerConsumeP50)
		r, ok := s.row(SysExactOnce, WConsume, 1)
		switch {
		case !ok:
			out = append(out, na(name, "not run"))
		case r.Leader == "":
			out = append(out, na(name, "leader unknown"))
		default:
			if n, v, ok := slowestNodeP50(r, r.Leader); ok {
				out = append(out, Check{name, verdict(v <= markFollowerConsumeP50),
					fmt.Sprintf("%s (follower) p50 %.2f ms; %s", n, v, nodeNote(r))})
			} else {
				out = append(out, na(name, "no follower figure (one node?)"))
			}
		}
	}
	{
		name := fmt.Sprintf("server CPU per consume @64 <= %.0f us, summed over the nodes", markCPUPerConsumeUs)
		runs := eo(WConsume, 64)
		cpu := medianOf(runs, func(r Row) float64 { return r.CPUMicrosPerOp })
		if len(runs) == 0 || cpu == 0 {
			out = append(out, na(name, "not measured"))
		} else {
			m := fmt.Sprintf("%s%.0f us", runsLabel(len(runs)), cpu)
			if pr := s.runsOf(SysPostgres, WConsume, 64); len(pr) > 0 {
				m += fmt.Sprintf(" (PostgreSQL with the standby: %.0f us)", medianOf(pr, func(r Row) float64 { return r.CPUMicrosPerOp }))
			}
			out = append(out, Check{name, verdict(cpu <= markCPUPerConsumeUs), m})
		}
	}
	{
		name := fmt.Sprintf("every workload >= %.0fx etcd's ops/s", markVsEtcd)
		var below, all []string
		seen := map[wc]bool{}
		for _, r := range s.rows {
			k := wc{r.Workload, r.Concurrency}
			if r.System != SysExactOnce || r.Workload == WCSV || r.Workload == WHot || seen[k] {
				continue
			}
			seen[k] = true
			er, et := eo(k.wl, k.c), s.runsOf(SysEtcd, k.wl, k.c)
			if len(et) == 0 {
				continue
			}
			e, x := medianOf(er, ops), medianOf(et, ops)
			if x <= 0 {
				continue
			}
			f := fmt.Sprintf("%s@%d %.2fx", k.wl, k.c, e/x)
			all = append(all, f)
			if e/x < markVsEtcd {
				below = append(below, f)
			}
		}
		switch {
		case len(all) == 0:
			out = append(out, na(name, "etcd not run"))
		case len(below) > 0:
			slices.Sort(below)
			out = append(out, Check{name, "FAIL", "below: " + strings.Join(below, ", ")})
		default:
			out = append(out, Check{name, "PASS", strings.Join(all, ", ")})
		}
	}
	return out
}
