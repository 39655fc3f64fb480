package bench

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// BigClientRead is how long one kind of read of the benchmark's client
// took once it stored every action of the run (issue: a client with ten
// million actions gets a page or its stats in milliseconds).
type BigClientRead struct {
	Query   string  `json:"query"`
	Actions int     `json:"actions"`
	Reads   int     `json:"reads"`
	P50Ms   float64 `json:"p50Ms"`
	MaxMs   float64 `json:"maxMs"`
	Errors  int     `json:"errors"`
	// FirstError says what the first failed read got.
	FirstError string `json:"firstError,omitempty"`
}

// bigClientQueries are the reads timed: stats, the first page of the
// default list, a state filter that walks the state index, and filters
// that match nothing (the scan budget ends those pages early).
var bigClientQueries = []string{
	"/v1/stats",
	"/v1/actions?limit=100",
	"/v1/actions?state=active&limit=100",
	"/v1/actions?state=canceled&limit=100",
	"/v1/actions?state=pending&order_by=expiresAt&limit=100",
}

// bigClientReadsPerQuery is how many times each query is timed.
const bigClientReadsPerQuery = 20

// bigClientReads times each of bigClientQueries n times, one at a time,
// spread over the nodes (linearizable reads: each pays a read barrier).
func (s *session) bigClientReads(ctx context.Context, t *ExactOnce, n int) {
	// Untimed, one read per node first: the raw client's kept-alive
	// connections sat idle through the load (another client's), and the
	// server may have closed them ("read status line: EOF").
	for i := range t.Nodes() {
		_, _, _ = t.do(ctx, "GET", i, bigClientQueries[0], "", nil)
	}
	for _, q := range bigClientQueries {
		r := BigClientRead{Query: q, Actions: s.rep.Stored, Reads: n}
		var ms []float64
		for i := range n {
			start := time.Now()
			status, _, err := t.do(ctx, "GET", i%t.Nodes(), q, "", nil)
			d := time.Since(start)
			if err != nil || status != 200 {
				r.Errors++
				if r.FirstError == "" {
					r.FirstError = fmt.Sprintf("status %d, error %v", status, err)
				}
				continue
			}
			ms = append(ms, float64(d.Microseconds())/1000)
		}
		if len(ms) > 0 {
			slices.Sort(ms)
			r.P50Ms, r.MaxMs = ms[len(ms)/2], ms[len(ms)-1]
		}
		s.rep.BigClient = append(s.rep.BigClient, r)
		s.log.Info("big client read", "query", q, "actions", r.Actions, "p50_ms", r.P50Ms, "max_ms", r.MaxMs, "errors", r.Errors, "first_error", r.FirstError)
	}
}

// bigClientCheck is the target verdict of the big-client reads.
func (s *session) bigClientCheck() (Check, bool) {
	if len(s.rep.BigClient) == 0 {
		return Check{}, false
	}
	worst := slices.MaxFunc(s.rep.BigClient, func(a, b BigClientRead) int { return int(a.P50Ms*1000 - b.P50Ms*1000) })
	errs := 0
	for _, r := range s.rep.BigClient {
		errs += r.Errors
	}
	n := s.rep.BigClient[0].Actions
	name := fmt.Sprintf("stats and list pages of one client with %d actions: p50 < 50 ms", n)
	return Check{name, verdict(worst.P50Ms < 50 && errs == 0),
		fmt.Sprintf("slowest p50 %.1f ms (%s), max %.1f ms, %d errors", worst.P50Ms, worst.Query, worst.MaxMs, errs)}, true
}
