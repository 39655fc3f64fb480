package main

import (
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
)

// nodeGauges exposes the node's Raft role and progress, its state file and
// its disk on /metrics (docs/metrics.md).
func nodeGauges(node *cluster.Node, state *fsm.FSM, statePath, dataDir string, now func() time.Time, log *slog.Logger) []prometheus.Collector {
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "exactonce_node_ready", Help: "1 when the node knows a leader and has caught up (/readyz)."},
			func() float64 { return b2f(node.Ready()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "exactonce_node_leader", Help: "1 while this node is the ready Raft leader."},
			func() float64 { return b2f(node.IsLeader()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "exactonce_fsm_applied_index", Help: "Index of the last Raft log entry applied to the local state."},
			func() float64 { return float64(state.AppliedIndex()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "exactonce_state_file_bytes", Help: "Size of the state file (state.db) on disk."},
			func() float64 {
				st, err := os.Stat(statePath)
				if err != nil {
					return 0
				}
				return float64(st.Size())
			}),
		newStoredActions(state, now, log),
	}
	if _, _, ok := diskSpace(dataDir); ok {
		cs = append(cs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "exactonce_data_filesystem_avail_bytes", Help: "Bytes available to the server on the file system of the data dir."},
				func() float64 { avail, _, _ := diskSpace(dataDir); return float64(avail) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "exactonce_data_filesystem_size_bytes", Help: "Size of the file system of the data dir."},
				func() float64 { _, size, _ := diskSpace(dataDir); return float64(size) }),
		)
	}
	return cs
}

// storedActionsTTL is how long a count of the stored actions is served
// before it is recounted: scrapes every few seconds from several
// Prometheus servers cost one count per interval.
const storedActionsTTL = 10 * time.Second

// storedActionsChunk is how many clients one read transaction counts, so
// that a restore never waits long behind the count.
const storedActionsChunk = 64

var descStoredActions = prometheus.NewDesc("exactonce_stored_actions",
	"Actions stored in the replicated state, by state, over all clients (counted at most every 10 s).",
	[]string{"state"}, nil)

// allStates are the state label values, always all exported.
var allStates = []fsm.State{fsm.StatePending, fsm.StateActive, fsm.StateConsumed, fsm.StateExpired, fsm.StateCanceled}

// storedActions counts the stored actions by state from the FSM's
// per-client counters (fsm.View.Stats): each client's count is a bounded
// read whatever it stores, so a count costs in proportion to the number
// of clients, not of actions, and happens at most every storedActionsTTL.
type storedActions struct {
	state *fsm.FSM
	now   func() time.Time
	log   *slog.Logger

	mu      sync.Mutex
	counted time.Time
	byState map[fsm.State]int64
}

func newStoredActions(state *fsm.FSM, now func() time.Time, log *slog.Logger) *storedActions {
	return &storedActions{state: state, now: now, log: log}
}

// Describe implements prometheus.Collector.
func (s *storedActions) Describe(ch chan<- *prometheus.Desc) { ch <- descStoredActions }

// Collect implements prometheus.Collector. When the count fails (the
// state closing) the series are left out of this scrape.
func (s *storedActions) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byState == nil || time.Since(s.counted) >= storedActionsTTL {
		byState, err := s.count()
		if err != nil {
			if !errors.Is(err, fsm.ErrClosed) {
				s.log.Warn("count stored actions for /metrics", "err", err)
			}
			return
		}
		s.byState, s.counted = byState, time.Now()
	}
	for _, st := range allStates {
		ch <- prometheus.MustNewConstMetric(descStoredActions, prometheus.GaugeValue, float64(s.byState[st]), string(st))
	}
}

// count sums every client's Stats at the current time.
func (s *storedActions) count() (map[fsm.State]int64, error) {
	var ids []string
	if err := s.state.View(func(v *fsm.View) error {
		cs, err := v.Clients()
		for _, c := range cs {
			ids = append(ids, c.ID)
		}
		return err
	}); err != nil {
		return nil, err
	}
	now := s.now().UnixMilli()
	out := make(map[fsm.State]int64, len(allStates))
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), storedActionsChunk)]
		ids = ids[len(chunk):]
		if err := s.state.View(func(v *fsm.View) error {
			for _, id := range chunk {
				st, err := v.Stats(id, now)
				if err != nil {
					return err
				}
				for state, n := range st.ByState {
					out[state] += n
				}
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return out, nil
}
