package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/traceparent"
)

// gathered is one scrape of a registry: the families by name.
type gathered map[string]*dto.MetricFamily

func gather(t *testing.T, g prometheus.Gatherer) gathered {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := gathered{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// value is the value of the family's one series whose labels include
// labels (name, value pairs): a gauge's or counter's value, a histogram's
// sample count. It fails the test when there is no such series.
func (g gathered) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	f, ok := g[name]
	if !ok {
		t.Fatalf("no metric family %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// TestNodeMetrics checks the Raft, storage and snapshot metrics of a
// single node against what it did: writes committed and applied, fsyncs
// and commits timed, one snapshot of a known size, one leader.
func TestNodeMetrics(t *testing.T) {
	tn := newTestNode(t, "m1")
	reg := prometheus.NewRegistry()
	tn.cfg.Registerer = reg
	tn.mustOpen()
	waitFor(t, "leader", 10*time.Second, tn.node.IsLeader)
	mustApply(t, tn.node, clientCmd("cl_m"))
	for i := range 5 {
		mustApply(t, tn.node, createCmd("cl_m", fmt.Sprintf("act_m_%d", i)))
	}
	if err := tn.node.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	g := gather(t, reg)

	if v := g.value(t, "exactonce_raft_term"); v < 1 {
		t.Errorf("term = %v, want >= 1", v)
	}
	commit := g.value(t, "exactonce_raft_commit_index")
	if commit < 7 { // configuration, barrier, client, five creates
		t.Errorf("commit index = %v, want >= 7", commit)
	}
	if v := g.value(t, "exactonce_raft_last_log_index"); v < commit {
		t.Errorf("last log index = %v < commit index %v", v, commit)
	}
	if v := g.value(t, "exactonce_raft_apply_lag_entries"); v != 0 {
		t.Errorf("apply lag on an idle leader = %v, want 0", v)
	}
	if v := g.value(t, "exactonce_raft_last_leader_contact_seconds"); v != 0 {
		t.Errorf("last leader contact on the leader = %v, want 0", v)
	}
	if v := g.value(t, "exactonce_raft_leader_changes_total"); v != 1 {
		t.Errorf("leader changes = %v, want 1", v)
	}
	if v := g.value(t, "exactonce_raft_log_fsync_duration_seconds"); v < 6 {
		t.Errorf("log fsyncs timed = %v, want one per write at least", v)
	}
	if v := g.value(t, "exactonce_state_commit_duration_seconds"); v < 1 {
		t.Errorf("state commits timed = %v, want > 0", v)
	}
	if v := g.value(t, "exactonce_snapshot_duration_seconds"); v != 1 {
		t.Errorf("snapshots timed = %v, want 1", v)
	}
	if v := g.value(t, "exactonce_snapshot_size_bytes"); v <= 0 {
		t.Errorf("snapshot size = %v, want > 0", v)
	}
	if v := g.value(t, "exactonce_raft_snapshots_bytes"); v < g.value(t, "exactonce_snapshot_size_bytes") {
		t.Errorf("snapshots on disk = %v bytes, less than the last snapshot", v)
	}
	if v := g.value(t, "exactonce_raft_log_bytes"); v <= 0 {
		t.Errorf("raft log bytes = %v, want > 0", v)
	}
	if v := g.value(t, "exactonce_raft_wal_log_entries_written_total"); v < 6 {
		t.Errorf("raft-wal entries written = %v, want >= 6", v)
	}
	for _, r := range forwardResults {
		if v := g.value(t, "exactonce_forwarded_commands_total", "result", r); v != 0 {
			t.Errorf("forwarded commands %s on a single node = %v, want 0", r, v)
		}
	}
}

// forwardLog records the traceparent of every "forwarded command" line.
type forwardLog struct {
	mu           sync.Mutex
	traceparents []string
}

func (l *forwardLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *forwardLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *forwardLog) WithGroup(string) slog.Handler            { return l }
func (l *forwardLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "forwarded command" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "traceparent" {
			l.mu.Lock()
			l.traceparents = append(l.traceparents, a.Value.String())
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

func (l *forwardLog) seen() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.traceparents)
}

// TestFollowerMetrics checks what only a follower shows: the leader it saw
// elected, recent contact with it, and the writes it forwarded; and that
// a forwarded write's traceparent reaches the leader's log.
func TestFollowerMetrics(t *testing.T) {
	nodes := newGossipCluster(t, 3, nil)
	regs := map[*testNode]*prometheus.Registry{}
	logs := map[*testNode]*forwardLog{}
	for _, tn := range nodes {
		regs[tn] = prometheus.NewRegistry()
		tn.cfg.Registerer = regs[tn]
		logs[tn] = &forwardLog{}
		tn.cfg.Logger = slog.New(logs[tn])
		tn.mustOpen()
	}
	leader := waitOneLeader(t, nodes, 20*time.Second)
	waitVoters(t, leader, 3)
	mustApply(t, leader.node, clientCmd("cl_f"))
	f := followers(nodes, leader)[0]
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := traceparent.NewContext(ctxTimeout(t, 10*time.Second), tp)
	if res, err := f.node.Apply(ctx, createCmd("cl_f", "act_f")); err != nil || res.Code != fsm.CodeOK {
		t.Fatalf("forwarded create: %+v, %v", res, err)
	}
	if got := logs[leader].seen(); !slices.Equal(got, []string{tp}) {
		t.Errorf("traceparents the leader logged for forwarded commands = %q, want [%s]", got, tp)
	}
	waitFor(t, "the follower applied the write", 5*time.Second, func() bool {
		return f.fsm.AppliedIndex() >= leader.fsm.AppliedIndex()
	})

	g := gather(t, regs[f])
	if v := g.value(t, "exactonce_forwarded_commands_total", "result", "ok"); v != 1 {
		t.Errorf("forwarded ok = %v, want 1", v)
	}
	// Leader changes are counted as seen: an election on the loaded test
	// machine may add one, but a follower has seen a leader take office.
	if v := g.value(t, "exactonce_raft_leader_changes_total"); v < 1 {
		t.Errorf("leader changes on a follower = %v, want >= 1", v)
	}
	// The leader heartbeats every testHeartbeat/10 or so: well under 5 s.
	if v := g.value(t, "exactonce_raft_last_leader_contact_seconds"); v <= 0 || v > 5 {
		t.Errorf("last leader contact on a follower = %vs, want in (0, 5]", v)
	}
	if lt, ft := gather(t, regs[leader]).value(t, "exactonce_raft_term"), g.value(t, "exactonce_raft_term"); lt != ft {
		t.Errorf("follower term %v, leader term %v", ft, lt)
	}
}

func TestTraceparentsHeader(t *testing.T) {
	const a = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	const b = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	calls := []*fwdCall{{traceparent: a}, {}, {traceparent: b}}
	h := encodeTraceparents(calls)
	if got := decodeTraceparents(h, 3); !slices.Equal(got, []string{a, "", b}) {
		t.Errorf("round trip of %q = %q", h, got)
	}
	if h := encodeTraceparents([]*fwdCall{{}, {}}); h != "" {
		t.Errorf("no traceparents encoded as %q, want no header", h)
	}
	for _, tc := range []struct {
		h     string
		count int
		want  []string
	}{
		{"", 2, nil},
		{a, 2, nil},                       // one entry for two commands: ignored whole
		{a + "," + b, 1, nil},             // two for one
		{"junk," + b, 2, []string{"", b}}, // an invalid entry is dropped alone
	} {
		if got := decodeTraceparents(tc.h, tc.count); !slices.Equal(got, tc.want) {
			t.Errorf("decodeTraceparents(%q, %d) = %q, want %q", tc.h, tc.count, got, tc.want)
		}
	}
}
