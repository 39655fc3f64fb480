package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type countAtomic struct{ n atomic.Int64 }

func (c *countAtomic) add(n int) { c.n.Add(int64(n)) }
func (c *countAtomic) load() int { return int(c.n.Load()) }

// csv sends CSVRepeats batch creates of CSVRows rows, one at a time.
func (s *session) csv(ctx context.Context, t *ExactOnce, pool *Pool) error {
	body := CSVBody(s.cfg.CSVRows, t.Payload)
	var lat []time.Duration
	errKinds := map[string]int{}
	var first []string
	errs := 0
	t0 := time.Now()
	for i := range s.cfg.CSVRepeats {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		b0 := time.Now()
		ids, err := t.CreateCSV(cctx, i, body, s.cfg.CSVRows)
		d := time.Since(b0)
		cancel()
		pool.Add(ids...)
		s.rep.Stored += len(ids)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs++
			errKinds[errorKind(err)]++
			if len(first) < 3 {
				first = append(first, err.Error())
			}
			continue
		}
		lat = append(lat, d)
	}
	res := RunResult{Ops: len(lat), Errors: errs, ErrorKinds: errKinds, FirstErrors: first,
		Elapsed: time.Since(t0), Latency: Summarize(lat)}
	row := NewRow(t.Name(), WCSV, 1, s.cfg.Seed, res)
	if res.Latency.Mean > 0 {
		row.Note = fmt.Sprintf("%d rows per request, %.0f rows/s", s.cfg.CSVRows, float64(s.cfg.CSVRows)/res.Latency.Mean.Seconds())
	}
	s.add(row)
	s.rep.CSV = &row
	return nil
}

// warmConns opens about n keep-alive connections through t's transport
// (spread over the nodes) so the race measures requests, not dials.
func warmConns(ctx context.Context, t *ExactOnce, n int) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URLs[i%len(t.URLs)]+"/healthz", nil)
			if err != nil {
				return
			}
			if resp, err := t.HTTP.Do(req); err == nil {
				_, _ = resp.Body.Read(make([]byte, 512))
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
}

// hot creates one action and releases HotRacers consume requests on it at
// once, spread over the nodes: exactly one must win, the rest must be told
// already_used.
func (s *session) hot(ctx context.Context, t Target, warm func(context.Context)) error {
	id, err := t.Create(ctx, nil)
	if err != nil {
		return fmt.Errorf("create hot action: %w", err)
	}
	if t.Name() == "exactonce" {
		s.rep.Stored++
	}
	if warm != nil {
		warm(ctx)
	}
	return s.hotRace(ctx, t, id)
}

// hotRace releases HotRacers consumes of id at once and records the row.
// ExactOnce with HotPipelined races over pipelined raw connections;
// otherwise each racer is a goroutine calling t.Consume.
func (s *session) hotRace(ctx context.Context, t Target, id string) error {
	n := s.cfg.HotRacers
	var answers []RaceAnswer
	var t0 time.Time
	client := "goroutine per racer"
	eoT, isEO := t.(*ExactOnce)
	settled0 := -1 // settledMetric before the race, -1 when unknown
	if isEO {
		if n, err := eoT.SettledLocally(ctx); err == nil {
			settled0 = n
		}
	}
	if isEO && s.cfg.HotPipelined {
		client = "pipelined HTTP/1.1"
		s.log.Info("hot race", "system", t.Name(), "racers", n, "conns", s.cfg.HotConns, "client", client)
		var err error
		answers, t0, err = eoT.PipelinedRace(ctx, id, n, s.cfg.HotConns)
		if err != nil {
			return fmt.Errorf("hot race: %w", err)
		}
	} else {
		answers = make([]RaceAnswer, n)
		start := make(chan struct{})
		var ready, done sync.WaitGroup
		for i := range n {
			ready.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				w := &Worker{ID: i}
				ready.Done()
				<-start
				rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				defer cancel()
				out, err := t.Consume(rctx, w, id)
				answers[i] = RaceAnswer{Out: out, Err: err, At: time.Now()}
			}()
		}
		ready.Wait()
		s.log.Info("hot race", "system", t.Name(), "racers", n, "client", client)
		t0 = time.Now()
		close(start)
		done.Wait()
	}
	// How many losers were answered from a node's own state (no log
	// entry); the rest went through Raft before the win was applied there.
	settledNote := ""
	if settled0 >= 0 {
		if m, err := eoT.SettledLocally(ctx); err == nil {
			settledNote = fmt.Sprintf("; answered from local state: %d", m-settled0)
		}
	}
	h := HotRes{Racers: n, Kinds: map[string]int{}}
	var lat []time.Duration
	var first []string
	var last time.Time
	for _, a := range answers {
		if a.At.After(last) {
			last = a.At
		}
		switch {
		case a.Err != nil:
			h.Errors++
			h.Kinds[errorKind(a.Err)]++
			if len(first) < 3 {
				first = append(first, a.Err.Error())
			}
		case a.Out == Won:
			h.Won++
			lat = append(lat, a.At.Sub(t0))
		default:
			h.Lost++
			lat = append(lat, a.At.Sub(t0))
		}
	}
	elapsed := last.Sub(t0)
	h.Seconds = elapsed.Seconds()
	if elapsed > 0 {
		h.PerSec = float64(h.Won+h.Lost) / elapsed.Seconds()
	}
	out, err := t.Consume(ctx, &Worker{ID: 1}, id)
	h.StateOK = err == nil && out == Lost
	h.Pass = h.Won == 1 && h.Lost == n-1 && h.Errors == 0 && h.StateOK
	if len(h.Kinds) == 0 {
		h.Kinds = nil
	}
	s.rep.Hot[t.Name()] = h
	res := RunResult{Ops: h.Won + h.Lost, Errors: h.Errors, ErrorKinds: h.Kinds, FirstErrors: first,
		Elapsed: elapsed, Latency: Summarize(lat)}
	row := NewRow(t.Name(), WHot, n, s.cfg.Seed, res)
	row.Note = fmt.Sprintf("won=%d lost=%d errors=%d; latency from release to answer; client: %s", h.Won, h.Lost, h.Errors, client)
	row.Note += settledNote
	s.add(row)
	return nil
}

// profSettled is a profiled-only workload: consumes of an action already
// consumed (the losers of a hot race) at ProfileConc clients.
const profSettled = "settled"

// profile takes CPU profiles of every ExactOnce node (file names mark the
// leader) during an extra, unreported run of workload wl (create, consume,
// settled, verify at ProfileConc clients, or csv at one).
func (s *session) profile(ctx context.Context, cl *EOCluster, t *ExactOnce, pool *Pool, wl string) error {
	leader := cl.Leader(ctx)
	if err := os.MkdirAll(s.cfg.ProfileDir, 0o755); err != nil {
		return fmt.Errorf("profile dir: %w", err)
	}
	secs := s.cfg.ProfileSeconds
	c := s.cfg.ProfileConc
	var op Op
	var created countAtomic
	switch wl {
	case WCreate:
		op = func(ctx context.Context, w *Worker) error {
			_, err := t.Create(ctx, w)
			if err == nil {
				created.add(1)
			}
			return err
		}
	case WConsume:
		need := int(s.estimate(t, WConsume, c)*float64(secs+2)) + 1000
		if err := s.prefill(ctx, t, pool, min(need, s.cfg.MaxPrefill)); err != nil {
			return err
		}
		op = consumeOp(t, pool)
	case WVerify:
		op = func(ctx context.Context, w *Worker) error {
			id, ok := pool.Any(w.Rand)
			if !ok {
				return ErrPoolEmpty
			}
			return t.Verify(ctx, w, id)
		}
	case profSettled:
		// The hot race's losers: consumes of one action already consumed,
		// answered from local state.
		if err := s.prefill(ctx, t, pool, 1); err != nil {
			return err
		}
		id, ok := pool.Take()
		if !ok {
			return ErrPoolEmpty
		}
		if _, err := t.Consume(ctx, &Worker{Rand: rand.New(rand.NewPCG(s.seed(), 0))}, id); err != nil {
			return fmt.Errorf("profile: consume the settled action: %w", err)
		}
		op = func(ctx context.Context, w *Worker) error {
			out, err := t.Consume(ctx, w, id)
			if err != nil {
				return err
			}
			if out == Won {
				return &OpError{Kind: "won", Err: fmt.Errorf("consumed action %s was consumed again", id)}
			}
			return nil
		}
	case WCSV:
		c = 1
		body := CSVBody(s.cfg.CSVRows, t.Payload)
		op = func(ctx context.Context, w *Worker) error {
			ids, err := t.CreateCSV(ctx, w.Node(len(t.URLs)), body, s.cfg.CSVRows)
			s.rep.Stored += len(ids) // one worker: no race
			return err
		}
	default:
		return fmt.Errorf("profile: workload %q not supported", wl)
	}
	type prof struct {
		path string
		errc chan error
	}
	var profs []prof
	for i, n := range cl.Nodes {
		if n.PprofAddr == "" {
			return fmt.Errorf("profile: %s has no pprof address", n.Name)
		}
		role := "follower"
		if i == leader {
			role = "leader"
		}
		p := prof{path: filepath.Join(s.cfg.ProfileDir, fmt.Sprintf("exactonce-%s-%s-%s.pprof", wl, n.Name, role)), errc: make(chan error, 1)}
		go func() {
			p.errc <- fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", n.PprofAddr, secs), p.path, time.Duration(secs+30)*time.Second)
		}()
		profs = append(profs, p)
	}
	res, err := RunLoop(ctx, RunSpec{Concurrency: c, Duration: time.Duration(secs)*time.Second + time.Second,
		OpTimeout: s.cfg.OpTimeout, Seed: s.seed(), Op: op})
	s.rep.Stored += created.load()
	if err != nil {
		return err
	}
	s.log.Info("profiled run (not in the table)", "workload", wl, "conc", c,
		"ops/s", int(float64(res.Ops)/res.Elapsed.Seconds()), "dir", s.cfg.ProfileDir)
	var errs []error
	for _, p := range profs {
		if err := <-p.errc; err != nil {
			errs = append(errs, err)
			continue
		}
		s.rep.Profiles = append(s.rep.Profiles, p.path)
		for _, mode := range []string{"flat", "cum"} {
			args := []string{"tool", "pprof", "-top", "-nodecount=40"}
			if mode == "cum" {
				args = append(args, "-cum")
			}
			out, err := exec.CommandContext(ctx, "go", append(args, cl.Bin, p.path)...).CombinedOutput()
			if err != nil {
				errs = append(errs, fmt.Errorf("go tool pprof: %w: %s", err, out))
				break
			}
			if err := os.WriteFile(p.path+"."+mode+".txt", out, 0o644); err != nil {
				errs = append(errs, fmt.Errorf("write profile top: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

func fetch(ctx context.Context, url, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: status %d", url, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := f.ReadFrom(resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("save %s: %w", path, err)
	}
	return f.Close()
}

// memory records each node's RSS.
func (s *session) memory(ctx context.Context, cl *EOCluster, stage string) {
	leader := cl.Leader(ctx)
	for i, n := range cl.Nodes {
		m, err := ReadMem(n.Pid())
		if err != nil {
			s.log.Warn("node memory", "node", n.Name, "err", err)
			continue
		}
		nm := NodeMem{System: "exactonce", Node: n.Name, Leader: i == leader, Stage: stage, Actions: s.rep.Stored,
			RSSMiB: mib(m.RSS), AnonMiB: mib(m.Anon), FileMiB: mib(m.File), PeakMiB: mib(m.Peak),
			DataMiB: mib(dirSize(filepath.Join(cl.Dir, n.Name)))}
		s.rep.Memory = append(s.rep.Memory, nm)
		s.log.Info("memory", "node", n.Name, "leader", nm.Leader, "stage", stage, "actions", nm.Actions, "rssMiB", nm.RSSMiB,
			"anonMiB", nm.AnonMiB, "fileMiB", nm.FileMiB, "peakMiB", nm.PeakMiB, "dataMiB", nm.DataMiB)
	}
}

// heapProfile saves the in-use heap profile of every node and its top.
func (s *session) heapProfile(ctx context.Context, cl *EOCluster) error {
	var errs []error
	for _, n := range cl.Nodes {
		if n.PprofAddr == "" {
			continue
		}
		path := filepath.Join(s.cfg.ProfileDir, fmt.Sprintf("exactonce-heap-%s-%dactions.pprof", n.Name, s.rep.Stored))
		if err := fetch(ctx, "http://"+n.PprofAddr+"/debug/pprof/heap", path, 30*time.Second); err != nil {
			errs = append(errs, err)
			continue
		}
		s.rep.Profiles = append(s.rep.Profiles, path)
		out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-sample_index=inuse_space", "-nodecount=30", cl.Bin, path).CombinedOutput()
		if err != nil {
			errs = append(errs, fmt.Errorf("go tool pprof: %w: %s", err, out))
			continue
		}
		if err := os.WriteFile(path+".inuse.txt", out, 0o644); err != nil {
			errs = append(errs, fmt.Errorf("write heap top: %w", err))
		}
	}
	return errors.Join(errs...)
}

// restart restarts a follower and records how long it took to be ready.
func (s *session) restart(ctx context.Context, cl *EOCluster) {
	leader := cl.Leader(ctx)
	i := len(cl.Nodes) - 1
	if i == leader && len(cl.Nodes) > 1 {
		i-- // a follower; a single node restarts itself
	}
	d, err := cl.Restart(ctx, i)
	r := RestartResult{Node: cl.Nodes[i].Name, Actions: s.rep.Stored, Seconds: d.Seconds()}
	if err != nil {
		r.Err = err.Error()
	}
	s.rep.Restart = append(s.rep.Restart, r)
	s.log.Info("restart", "node", r.Node, "leader_was", leader, "actions", r.Actions, "ready_after", d.Round(time.Millisecond), "err", r.Err)
	if err := cl.WaitReady(ctx, 60*time.Second); err != nil {
		s.log.Warn("cluster not ready after restart", "err", err)
	}
}

// million loads actions with CSV batches until Million are stored.
func (s *session) million(ctx context.Context, cl *EOCluster, t *ExactOnce) error {
	todo := s.cfg.Million - s.rep.Stored
	if todo <= 0 {
		return nil
	}
	rows := max(1, min(10000, s.cfg.CSVRows))
	body := CSVBody(rows, t.Payload)
	batches := (todo + rows - 1) / rows
	s.log.Info("loading actions", "actions", batches*rows, "batches", batches)
	t0 := time.Now()
	var next atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for p := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				b := int(next.Add(1)) - 1
				if b >= batches || ctx.Err() != nil {
					return
				}
				var ids []string
				var err error
				for attempt := 0; attempt < 3; attempt++ {
					cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
					ids, err = t.CreateCSV(cctx, b+p, body, rows)
					cancel()
					if err == nil || len(ids) > 0 {
						break
					}
				}
				mu.Lock()
				s.rep.Stored += len(ids)
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if b%20 == 0 {
					s.log.Info("loading", "stored", s.rep.Stored, "elapsed", time.Since(t0).Round(time.Second))
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("million load: %w", firstErr)
	}
	s.log.Info("loaded", "stored", s.rep.Stored, "took", time.Since(t0).Round(time.Millisecond),
		"rows/s", int(float64(batches*rows)/time.Since(t0).Seconds()))
	// Memory is read next: a follower still applying the last batches holds
	// the pages it is writing, which is not the resident set of a node
	// with a million actions stored.
	if err := t.Settle(ctx); err != nil {
		return fmt.Errorf("million load: %w", err)
	}
	return ctx.Err()
}

func (s *session) row(system, wl string, c int) (Row, bool) {
	for _, r := range s.rows {
		if r.System == system && r.Workload == wl && r.Concurrency == c {
			return r, true
		}
	}
	return Row{}, false
}

// runsLabel prefixes a target's figures with how many runs they are the
// median of.
func runsLabel(n int) string {
	if n <= 1 {
		return ""
	}
	return fmt.Sprintf("median of %d alternating runs: ", n)
}

func na(name, why string) Check { return Check{Name: name, Status: "N/A", Measured: why} }

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// checks evaluates the targets.
func (s *session) checks() []Check {
	var out []Check
	{
		name := "consume distinct @64: >= 3x etcd ops/s and p99 < 50 ms"
		r, ok := s.target("exactonce", WConsume, 64)
		e, eok := s.target("etcd", WConsume, 64)
		runs := runsLabel(len(r.Rates))
		switch {
		case !ok:
			out = append(out, na(name, "not run"))
		case !eok || e.OpsPerSec == 0:
			out = append(out, Check{name, verdict(r.P99Ms < 50 && r.Errors == 0) + "?", fmt.Sprintf("%s%.0f ops/s, p99 %.1f ms, no etcd figure", runs, r.OpsPerSec, r.P99Ms)})
		default:
			ratio := r.OpsPerSec / e.OpsPerSec
			m := fmt.Sprintf("%s%.0f ops/s = %.2fx etcd (%.0f), p99 %.1f ms, %d errors", runs, r.OpsPerSec, ratio, e.OpsPerSec, r.P99Ms, r.Errors)
			if len(r.Rates) > 1 {
				m += fmt.Sprintf("; runs %s vs etcd %s ops/s", r.ratesString(), e.ratesString())
			}
			out = append(out, Check{name, verdict(ratio >= 3 && r.P99Ms < 50 && r.Errors == 0), m})
		}
	}
	{
		name := "consume @1: p50 <= etcd p50"
		r, ok := s.row("exactonce", WConsume, 1)
		e, eok := s.row("etcd", WConsume, 1)
		if !ok || !eok {
			out = append(out, na(name, "not run on both"))
		} else {
			out = append(out, Check{name, verdict(r.P50Ms <= e.P50Ms), fmt.Sprintf("p50 %.2f ms vs etcd %.2f ms", r.P50Ms, e.P50Ms)})
		}
	}
	if h, ok := s.rep.Hot["exactonce"]; ok {
		out = append(out, Check{fmt.Sprintf("hot action, %d racers over all nodes: exactly one 200, the rest already_used", h.Racers),
			verdict(h.Pass), fmt.Sprintf("won=%d lost=%d errors=%d%s, one more consume answers 409: %v", h.Won, h.Lost, h.Errors, kindsString(h.Kinds), h.StateOK)})
		out = append(out, Check{"hot action answered at >= 20,000/s", verdict(h.PerSec >= 20000 && h.Racers >= 10000),
			fmt.Sprintf("%.0f answers/s (%d in %.3f s)", h.PerSec, h.Won+h.Lost, h.Seconds)})
	} else {
		out = append(out, na("hot action", "not run"))
	}
	if h, ok := s.rep.Hot["etcd"]; ok {
		// The reference judges only what its name says: one success. etcd
		// may refuse racers when its apply falls behind ("too many
		// requests"); those are listed, not judged, since they are
		// etcd's load shedding, not a second winner.
		out = append(out, Check{fmt.Sprintf("(reference) etcd hot key, %d racers: exactly one compare succeeds", h.Racers), verdict(h.Won == 1),
			fmt.Sprintf("won=%d lost=%d errors=%d%s, %.0f answers/s", h.Won, h.Lost, h.Errors, kindsString(h.Kinds), h.PerSec)})
	}
	if r, ok := s.target("exactonce", WVerify, 64); ok {
		m := fmt.Sprintf("%s%.0f ops/s, p99 %.1f ms, %d errors", runsLabel(len(r.Rates)), r.OpsPerSec, r.P99Ms, r.Errors)
		if len(r.Rates) > 1 {
			m += fmt.Sprintf("; runs %s ops/s", r.ratesString())
		}
		out = append(out, Check{"linearizable verify @64 >= 10,000/s", verdict(r.OpsPerSec >= 10000 && r.Errors == 0), m})
	} else {
		out = append(out, na("linearizable verify @64 >= 10,000/s", "not run"))
	}
	if c := s.rep.CSV; c != nil && s.cfg.CSVRows < 10000 {
		out = append(out, na("CSV create of 10,000 rows < 1 s", fmt.Sprintf("ran %d rows per request", s.cfg.CSVRows)))
	} else if c != nil {
		name := fmt.Sprintf("CSV create of %d rows < 1 s", s.cfg.CSVRows)
		out = append(out, Check{name, verdict(c.Ops > 0 && c.MaxMs < 1000 && c.Errors == 0 && s.cfg.CSVRows >= 10000),
			fmt.Sprintf("max %.0f ms, p50 %.0f ms over %d requests, %d errors", c.MaxMs, c.P50Ms, c.Ops, c.Errors)})
	} else {
		out = append(out, na("CSV create < 1 s", "not run"))
	}
	if c, ok := s.bigClientCheck(); ok {
		out = append(out, c)
	}
	out = append(out, s.pgChecks()...)
	var mem []NodeMem
	stage := "after million"
	for _, m := range s.rep.Memory {
		if m.System == "exactonce" && m.Stage == stage {
			mem = append(mem, m)
		}
	}
	million := len(mem) > 0 && mem[0].Actions >= 1000000
	if len(mem) == 0 {
		stage = "after runs"
		for _, m := range s.rep.Memory {
			if m.System == "exactonce" && m.Stage == stage {
				mem = append(mem, m)
			}
		}
	}
	if len(mem) > 0 {
		worst := slices.MaxFunc(mem, func(a, b NodeMem) int { return int(a.RSSMiB - b.RSSMiB) })
		var parts []string
		for _, m := range mem {
			parts = append(parts, fmt.Sprintf("%s %.0f MiB", m.Node, m.RSSMiB))
		}
		name := "each node < 512 MiB RSS with one million actions"
		st := verdict(worst.RSSMiB < 512 && mem[0].Actions >= 1000000)
		if !million {
			st = "N/A"
			name = "each node < 512 MiB RSS (one million not stored; run -million)"
		}
		out = append(out, Check{name, st, fmt.Sprintf("%s at %d actions", strings.Join(parts, ", "), mem[0].Actions)})
	}
	if n := len(s.rep.Restart); n > 0 {
		r := s.rep.Restart[n-1]
		name := "restarted node ready < 5 s with one million actions"
		st := verdict(r.Err == "" && r.Seconds < 5 && r.Actions >= 1000000)
		if r.Actions < 1000000 {
			name = "restarted node ready < 5 s (one million not stored; run -million)"
			if r.Err != "" || r.Seconds >= 5 {
				st = "FAIL"
			} else {
				st = "N/A"
			}
		}
		m := fmt.Sprintf("%s ready after %.2f s at %d actions", r.Node, r.Seconds, r.Actions)
		if r.Err != "" {
			m += " (" + r.Err + ")"
		}
		out = append(out, Check{name, st, m})
	}
	return out
}

func kindsString(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for k, n := range m {
		parts = append(parts, fmt.Sprintf("%s:%d", k, n))
	}
	slices.Sort(parts)
	return " (" + strings.Join(parts, ",") + ")"
}

// idle measures every node's CPU over IdleWindow while no requests run:
// both clusters up, ExactOnce's client created, nothing else.
func (s *session) idle(ctx context.Context, sides []*side) error {
	var groups []idleGroup
	for _, sd := range sides {
		groups = append(groups, idleGroup{system: sd.t.Name(), procs: sd.procs(), leader: sd.leader(ctx)})
	}
	nodes, err := measureIdle(ctx, groups, s.cfg.IdleWindow)
	s.rep.Idle = append(s.rep.Idle, nodes...)
	if err != nil {
		return err
	}
	s.log.Info("idle CPU measured", "window", s.cfg.IdleWindow)
	return nil
}

// idleGroup is one system's processes; leader indexes procs (-1: none).
type idleGroup struct {
	system string
	procs  []*Proc
	leader int
}

// measureIdle reads every process's CPU time, waits window, and returns
// what each used meanwhile in percent of one core.
func measureIdle(ctx context.Context, groups []idleGroup, window time.Duration) ([]NodeIdle, error) {
	t0 := time.Now()
	cpu0 := make([][]time.Duration, len(groups))
	for g, grp := range groups {
		for _, p := range grp.procs {
			cpu0[g] = append(cpu0[g], p.CPUTime())
		}
	}
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return nil, fmt.Errorf("idle window: %w", ctx.Err())
	}
	secs := time.Since(t0).Seconds()
	var out []NodeIdle
	for g, grp := range groups {
		for i, p := range grp.procs {
			pct := 100 * (p.CPUTime() - cpu0[g][i]).Seconds() / secs
			out = append(out, NodeIdle{System: grp.system, Node: p.Name, Leader: i == grp.leader,
				Seconds: math.Round(secs*10) / 10, Percent: math.Round(pct*100) / 100})
		}
	}
	return out, nil
}
