package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// ContendSpec describes a contend run: rounds, one after another, each
// releasing Racers consumes of one fresh action at once.
type ContendSpec struct {
	Racers    int
	Duration  time.Duration
	Warmup    time.Duration
	OpTimeout time.Duration
	// CPU reads the system's CPU time (nil: unknown), IdleCPU the idle
	// systems' (RunSpec).
	CPU, IdleCPU func() time.Duration
}

// ContendResult is what a contend run measured. Latency is each racer's,
// from the round's release to its answer; Rounds counts the measured
// rounds and Elapsed their time.
type ContendResult struct {
	RunResult
	// BadRounds counts rounds without exactly one winner, warm-up
	// included: an exactly-once violation (two or more) or a lost consume
	// (none).
	BadRounds int
	// Winners counts every round, warm-up included, by its number of
	// winners.
	Winners map[int]int
}

// Contend runs rounds of one fresh action, taken from pool, raced by
// spec.Racers consumes released at once: racer i of round r is worker
// {ID: i, Seq: r}, so the racers spread over every node and move on by
// one node each round. A round ends when every racer has its answer;
// exactly one must have won and the others lost. Rounds run for
// spec.Warmup unmeasured and then for spec.Duration; the run stops early,
// marked PoolExhausted, when the pool is empty.
func Contend(ctx context.Context, t Target, pool *Pool, spec ContendSpec) (ContendResult, error) {
	if spec.Racers < 1 {
		return ContendResult{}, fmt.Errorf("bench: contend needs at least one racer, got %d", spec.Racers)
	}
	if spec.OpTimeout <= 0 {
		spec.OpTimeout = 10 * time.Second
	}
	nm, _ := t.(nodeMapper)
	res := ContendResult{RunResult: RunResult{ErrorKinds: map[string]int{}}, Winners: map[int]int{}}
	var lat []time.Duration
	byNode := map[int][]time.Duration{}
	start := time.Now()
	measuring := spec.Warmup <= 0
	var t0 time.Time
	var cpu0, idle0 time.Duration
	beginMeasure := func() {
		measuring = true
		t0 = time.Now()
		if spec.CPU != nil {
			cpu0 = spec.CPU()
		}
		if spec.IdleCPU != nil {
			idle0 = spec.IdleCPU()
		}
	}
	if measuring {
		beginMeasure()
	}
	answers := make([]RaceAnswer, spec.Racers)
	nodes := make([]int, spec.Racers)
	for round := 0; ; round++ {
		if ctx.Err() != nil {
			return res, fmt.Errorf("bench: contend interrupted: %w", ctx.Err())
		}
		if !measuring && time.Since(start) >= spec.Warmup {
			beginMeasure()
		}
		if measuring && time.Since(t0) >= spec.Duration {
			break
		}
		id, ok := pool.Take()
		if !ok {
			res.PoolExhausted = true
			break
		}
		t1 := raceOnce(ctx, t, nm, id, round, spec.OpTimeout, answers, nodes)
		winners, errs := 0, 0
		for i, a := range answers {
			switch {
			case a.Err != nil:
				errs++
				if !measuring {
					continue
				}
				k := errorKind(a.Err)
				res.ErrorKinds[k]++
				res.Errors++
				if len(res.FirstErrors) < 5 {
					res.FirstErrors = append(res.FirstErrors, a.Err.Error())
				}
			case a.Out == Won:
				winners++
				fallthrough
			default:
				if measuring {
					d := a.At.Sub(t1)
					lat = append(lat, d)
					byNode[nodes[i]] = append(byNode[nodes[i]], d)
				}
			}
		}
		// Every round is checked, warm-up included: a second winner is
		// never noise.
		res.Winners[winners]++
		if winners != 1 {
			res.BadRounds++
			kind := fmt.Sprintf("round with %d winners", winners)
			res.ErrorKinds[kind]++
			res.Errors++
			if len(res.FirstErrors) < 5 {
				res.FirstErrors = append(res.FirstErrors, fmt.Sprintf("action %s: %d of %d racers won (%d errors)", id, winners, spec.Racers, errs))
			}
		}
		if measuring {
			res.Ops++
		}
	}
	if measuring {
		res.Elapsed = time.Since(t0)
		if spec.CPU != nil {
			res.CPU = spec.CPU() - cpu0
		}
		if spec.IdleCPU != nil {
			res.IdleCPU = spec.IdleCPU() - idle0
		}
	}
	res.Latency = Summarize(lat)
	if nm != nil {
		res.ByNode = map[int]Summary{}
		for n, v := range byNode {
			res.ByNode[n] = Summarize(v)
		}
	}
	return res, nil
}

// raceOnce releases len(answers) consumes of id at once and returns the
// release time once every racer has its answer.
func raceOnce(ctx context.Context, t Target, nm nodeMapper, id string, round int, opTimeout time.Duration, answers []RaceAnswer, nodes []int) time.Time {
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	for i := range answers {
		w := &Worker{ID: i, Seq: round}
		nodes[i] = 0
		if nm != nil {
			nodes[i] = nm.NodeOf(w)
		}
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			rctx, cancel := context.WithTimeout(ctx, opTimeout)
			defer cancel()
			out, err := t.Consume(rctx, w, id)
			answers[i] = RaceAnswer{Out: out, Err: err, At: time.Now()}
		}()
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	done.Wait()
	return t0
}

// nodeP50s names each node's p50 in milliseconds (nil without a nodeMapper).
func nodeP50s(t Target, by map[int]Summary) map[string]float64 {
	nm, ok := t.(nodeMapper)
	if !ok || len(by) == 0 {
		return nil
	}
	names := nm.NodeNames()
	out := map[string]float64{}
	for n, sm := range by {
		if n >= 0 && n < len(names) && sm.Count > 0 {
			out[names[n]] = ms(sm.P50)
		}
	}
	return out
}

// nodeNote renders "p50 by node: node1 (leader) 2.10 ms, node2 61.00 ms".
func nodeNote(r Row) string {
	if len(r.NodeP50Ms) < 2 {
		return ""
	}
	names := make([]string, 0, len(r.NodeP50Ms))
	for n := range r.NodeP50Ms {
		names = append(names, n)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, n := range names {
		l := ""
		if n == r.Leader {
			l = " (leader)"
		}
		parts[i] = fmt.Sprintf("%s%s %.2f ms", n, l, r.NodeP50Ms[n])
	}
	return "p50 by node: " + strings.Join(parts, ", ")
}

// contend runs the contend workload on sd and records its row. A round
// without exactly one winner is recorded as an error and fails the
// session.
func (s *session) contend(ctx context.Context, sd *side, sides []*side) (Row, error) {
	t := sd.t
	racers := s.cfg.ContendRacers
	// Prepare for three times the best rate seen so far, or 3,000
	// rounds/s before any (a round is at least a consume's round trip).
	rate := 1000.0
	for k, r := range s.rates {
		if strings.HasPrefix(k, t.Name()+"/"+WContend+"/") {
			rate = max(rate, r)
		}
	}
	need := int(3*rate*(s.cfg.Duration+s.cfg.Warmup).Seconds()) + 50
	if err := s.prefill(ctx, t, sd.pool, min(need, s.cfg.MaxPrefill)); err != nil {
		return Row{}, err
	}
	leader := s.leaderName(ctx, sd)
	seed := s.seed()
	s.log.Info("run", "system", t.Name(), "workload", WContend, "racers", racers, "leader", leader)
	res, err := Contend(ctx, t, sd.pool, ContendSpec{Racers: racers, Duration: s.cfg.Duration, Warmup: s.cfg.Warmup,
		OpTimeout: s.cfg.OpTimeout, CPU: sd.cpu(), IdleCPU: idleCPU(sides, sd)})
	if err != nil {
		return Row{}, fmt.Errorf("%s %s: %w", t.Name(), WContend, err)
	}
	row := NewRow(t.Name(), WContend, racers, seed, res.RunResult)
	row.NodeP50Ms = nodeP50s(t, res.ByNode)
	row.Leader = leader
	all := 0
	for _, n := range res.Winners {
		all += n
	}
	row.Note = fmt.Sprintf("ops = rounds of %d racers on one fresh action; latency per racer, release to answer; %d rounds measured, %d of %d with warm-up without exactly one winner",
		racers, res.Ops, res.BadRounds, all)
	if n := nodeNote(row); n != "" {
		row.Note += "; " + n
	}
	if res.BadRounds > 0 {
		s.failures = append(s.failures, fmt.Errorf("%s contend: %d of %d rounds without exactly one winner (%v)", t.Name(), res.BadRounds, all, res.FirstErrors))
	}
	return row, nil
}
