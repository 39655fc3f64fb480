package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// ABConfig compares the one-client consume latency of two server binaries
// (an A/B run): both clusters run side by side and the rounds alternate
// between them, so drift in the machine's load hits both alike. Two
// full bench runs minutes apart differ by more than a small change gains.
type ABConfig struct {
	// Bins are the two exactonced binaries, A then B.
	Bins [2]string
	// Rounds alternate A, B, A, B...; PerRound consumes go to each side
	// per round, one at a time, spread over the nodes as a bench worker's.
	Rounds, PerRound int
	// HTTPPort, RaftPort, GossipPort are A's first ports; B adds 50.
	HTTPPort, RaftPort, GossipPort int
	TempBase                       string
	Log                            *slog.Logger
}

// ABSide is one binary's result: every consume, and those sent to the
// leader and to a follower (forwarded) apart.
type ABSide struct {
	Bin                 string
	All, Leader, Follow Summary
}

// RunAB runs an A/B comparison (see ABConfig).
func RunAB(ctx context.Context, cfg ABConfig) ([2]ABSide, error) {
	var out [2]ABSide
	type side struct {
		t      *ExactOnce
		ids    []string
		leader int
		all    []time.Duration
		lead   []time.Duration
		follow []time.Duration
	}
	var sides [2]*side
	for i, bin := range cfg.Bins {
		cl, err := StartEOCluster(ctx, EOClusterConfig{Bin: bin, TempBase: cfg.TempBase, Nodes: 3,
			HTTPPort: cfg.HTTPPort + 50*i, RaftPort: cfg.RaftPort + 50*i, GossipPort: cfg.GossipPort + 50*i, Log: cfg.Log})
		if cl != nil {
			defer cl.Stop()
		}
		if err != nil {
			return out, fmt.Errorf("start cluster %s: %w", bin, err)
		}
		id, secret, err := cl.CreateClient(ctx, "ab")
		if err != nil {
			return out, err
		}
		t := NewExactOnce(cl.URLs(), id, secret, 4)
		t.AdminToken = cl.AdminToken
		if err := t.UseRaw(4); err != nil {
			return out, err
		}
		defer t.Close()
		ids, err := t.CreateBatch(ctx, cfg.Rounds*cfg.PerRound)
		if err != nil {
			return out, fmt.Errorf("prefill %s: %w", bin, err)
		}
		sides[i] = &side{t: t, ids: ids, leader: cl.Leader(ctx)}
	}
	w := &Worker{}
	for r := 0; r < cfg.Rounds; r++ {
		for _, s := range sides {
			for i := 0; i < cfg.PerRound; i++ {
				node := w.Node(3)
				t0 := time.Now()
				_, err := s.t.Consume(ctx, w, s.ids[r*cfg.PerRound+i])
				d := time.Since(t0)
				w.Seq++
				if err != nil {
					return out, fmt.Errorf("consume: %w", err)
				}
				s.all = append(s.all, d)
				if node == s.leader {
					s.lead = append(s.lead, d)
				} else {
					s.follow = append(s.follow, d)
				}
			}
		}
	}
	for i, s := range sides {
		out[i] = ABSide{Bin: cfg.Bins[i], All: Summarize(s.all), Leader: Summarize(s.lead), Follow: Summarize(s.follow)}
	}
	return out, nil
}

// PrintAB writes an A/B result as a table.
func PrintAB(w io.Writer, res [2]ABSide) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/1e6) }
	fmt.Fprintf(w, "%-28s %7s %9s %9s %9s %14s %16s\n", "binary", "ops", "p50 ms", "p95 ms", "p99 ms", "to leader p50", "to follower p50")
	for _, s := range res {
		fmt.Fprintf(w, "%-28s %7d %9s %9s %9s %14s %16s\n", s.Bin, s.All.Count, ms(s.All.P50), ms(s.All.P95), ms(s.All.P99), ms(s.Leader.P50), ms(s.Follow.P50))
	}
	fmt.Fprintf(w, "B/A p50: %.3f\n", float64(res[1].All.P50)/float64(res[0].All.P50))
}
