package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// ErrPoolEmpty is returned by an operation when it has no more prepared
// actions to work on; the worker stops and the run ends early.
var ErrPoolEmpty = errors.New("bench: pool of prepared actions is empty")

// OpError is an operation's unexpected outcome, grouped in reports by Kind
// (for example "409 already_used" or "timeout").
type OpError struct {
	Kind string
	Err  error
}

// Error renders the kind and the underlying error.
func (e *OpError) Error() string {
	if e.Err != nil {
		return e.Kind + ": " + e.Err.Error()
	}
	return e.Kind
}

// Unwrap returns the underlying error.
func (e *OpError) Unwrap() error { return e.Err }

// errorKind returns the report group of err.
func errorKind(err error) string {
	var oe *OpError
	switch {
	case errors.As(err, &oe):
		return oe.Kind
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "error"
	}
}

// Worker is the per-goroutine state handed to an operation.
type Worker struct {
	// ID numbers the workers of a run from 0; operations use it to spread
	// workers over the nodes.
	ID int
	// Seq counts the operations this worker has started in the run.
	Seq int
	// Rand is seeded from the run's seed and the worker's ID.
	Rand *rand.Rand
}

// Node picks which of n nodes the worker's next request goes to: workers
// start on different nodes and each moves on to the next node with every
// operation, so even a single worker spreads its requests over all nodes.
func (w *Worker) Node(n int) int { return (w.ID + w.Seq) % n }

// Op is one operation of a workload. It returns nil on the expected
// outcome, ErrPoolEmpty to stop the worker, or another error, which counts
// as an error of the run.
type Op func(ctx context.Context, w *Worker) error

// RunSpec describes one closed-loop run.
type RunSpec struct {
	Concurrency int
	Duration    time.Duration
	// Warmup runs the operation for this long before measuring.
	Warmup time.Duration
	// OpTimeout bounds each operation.
	OpTimeout time.Duration
	Seed      uint64
	Op        Op
	// CPU, when set, returns the CPU time used so far by the system under
	// test; RunLoop reads it when measuring starts and when the run ends.
	CPU func() time.Duration
	// IdleCPU, when set, is CPU for the system that is not under test (it
	// runs beside it, idle), read at the same moments: what the idle
	// system takes from the shared machine during the run.
	IdleCPU func() time.Duration
	// NodeOf, when set, says which node a worker's next operation goes
	// to; the result then also summarizes the latency of each node.
	NodeOf func(w *Worker) int
}

// RunResult is what a run measured.
type RunResult struct {
	Ops           int
	Errors        int
	ErrorKinds    map[string]int
	FirstErrors   []string
	Elapsed       time.Duration
	Latency       Summary
	PoolExhausted bool
	// CPU is the system's CPU time (user+system) over the measured window
	// (RunSpec.CPU), 0 when unknown.
	CPU time.Duration
	// IdleCPU is the idle system's CPU time over the same window
	// (RunSpec.IdleCPU), 0 when unknown.
	IdleCPU time.Duration
	// ByNode summarizes the latency of the operations sent to each node
	// (RunSpec.NodeOf), nil without NodeOf.
	ByNode map[int]Summary
}

type workerStats struct {
	samples []time.Duration
	byNode  map[int][]time.Duration
	errs    map[string]int
	first   []string
	empty   bool
}

// RunLoop executes spec: Concurrency workers each call Op in a loop until
// Duration has passed (after Warmup), ctx ends or the pool runs dry. Only
// successful operations count towards Ops and the latency summary.
func RunLoop(ctx context.Context, spec RunSpec) (RunResult, error) {
	if spec.Concurrency < 1 || spec.Op == nil {
		return RunResult{}, fmt.Errorf("bench: invalid run spec (concurrency %d)", spec.Concurrency)
	}
	if spec.OpTimeout <= 0 {
		spec.OpTimeout = 10 * time.Second
	}
	stats := make([]workerStats, spec.Concurrency)
	start := make(chan struct{})
	measureFrom := make(chan struct{})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i := range spec.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &stats[i]
			st.errs = map[string]int{}
			w := &Worker{ID: i, Rand: rand.New(rand.NewPCG(spec.Seed, uint64(i)+1))}
			<-start
			for runCtx.Err() == nil {
				measured := false
				select {
				case <-measureFrom:
					measured = true
				default:
				}
				node := -1
				if spec.NodeOf != nil {
					node = spec.NodeOf(w)
				}
				opCtx, opCancel := context.WithTimeout(runCtx, spec.OpTimeout)
				t0 := time.Now()
				err := spec.Op(opCtx, w)
				d := time.Since(t0)
				opCancel()
				w.Seq++
				if errors.Is(err, ErrPoolEmpty) {
					st.empty = true
					return
				}
				if runCtx.Err() != nil {
					// An operation cut short by the end of the run is not an error.
					return
				}
				if !measured {
					continue
				}
				if err != nil {
					k := errorKind(err)
					st.errs[k]++
					if len(st.first) < 3 {
						st.first = append(st.first, err.Error())
					}
					continue
				}
				st.samples = append(st.samples, d)
				if node >= 0 {
					if st.byNode == nil {
						st.byNode = map[int][]time.Duration{}
					}
					st.byNode[node] = append(st.byNode[node], d)
				}
			}
		}()
	}
	close(start)
	if spec.Warmup > 0 {
		select {
		case <-time.After(spec.Warmup):
		case <-ctx.Done():
		}
	}
	close(measureFrom)
	t0 := time.Now()
	var cpu0, idle0 time.Duration
	if spec.CPU != nil {
		cpu0 = spec.CPU()
	}
	if spec.IdleCPU != nil {
		idle0 = spec.IdleCPU()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timer := time.NewTimer(spec.Duration)
	defer timer.Stop()
	select {
	case <-timer.C:
		cancel()
		<-done
	case <-done:
	case <-ctx.Done():
		<-done
	}
	// Workers stopped by the deadline may finish an in-flight op after it;
	// the measured window is the configured duration unless they all stopped early.
	elapsed := time.Since(t0)
	if elapsed > spec.Duration {
		elapsed = spec.Duration
	}
	res := RunResult{ErrorKinds: map[string]int{}, Elapsed: elapsed}
	if spec.CPU != nil {
		res.CPU = spec.CPU() - cpu0
	}
	if spec.IdleCPU != nil {
		res.IdleCPU = spec.IdleCPU() - idle0
	}
	var all []time.Duration
	byNode := map[int][]time.Duration{}
	for i := range stats {
		all = append(all, stats[i].samples...)
		for n, v := range stats[i].byNode {
			byNode[n] = append(byNode[n], v...)
		}
		for k, n := range stats[i].errs {
			res.ErrorKinds[k] += n
			res.Errors += n
		}
		for _, e := range stats[i].first {
			if len(res.FirstErrors) < 5 {
				res.FirstErrors = append(res.FirstErrors, e)
			}
		}
		res.PoolExhausted = res.PoolExhausted || stats[i].empty
	}
	res.Ops = len(all)
	res.Latency = Summarize(all)
	if spec.NodeOf != nil {
		res.ByNode = map[int]Summary{}
		for n, v := range byNode {
			res.ByNode[n] = Summarize(v)
		}
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("bench: run interrupted: %w", err)
	}
	return res, nil
}
