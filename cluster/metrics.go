package cluster

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	walmetrics "github.com/hashicorp/raft-wal/metrics"
	"github.com/hashicorp/raft-wal/types"
	"github.com/prometheus/client_golang/prometheus"
)

// The package's metrics (docs/metrics.md lists them with the rest). Each
// Node has its own collectors, registered with Config.Registerer: nothing
// here is global, so one process may run several nodes (tests).

// Histogram buckets.
var (
	// diskBuckets spans an fsync or a state commit: 50 µs (a fast NVMe
	// fsync, an empty commit) to about 1.6 s (a disk in trouble).
	diskBuckets = prometheus.ExponentialBuckets(50e-6, 2, 16)
	// snapshotBuckets spans a snapshot: 1 ms (an empty state) to about
	// 4.4 min (millions of actions on a slow disk).
	snapshotBuckets = prometheus.ExponentialBuckets(1e-3, 4, 10)
)

// forwardResults are the result label values of forwarded commands, all
// exported from the start (at zero) so that rates and alerts see a series
// before the first failure.
var forwardResults = []string{"ok", "not_leader", "retry", "outcome_unknown", "error"}

// metrics are the package's Prometheus collectors.
type metrics struct {
	// forwards counts commands a follower forwarded to the leader, by result.
	forwards *prometheus.CounterVec
	// logFsync times the fsyncs of the Raft log's segment files.
	logFsync prometheus.Histogram
	// stateCommit times the application of one Raft batch to the state
	// machine, its storage commit included.
	stateCommit prometheus.Histogram
	// snapshotDuration times a snapshot, from the state machine's
	// Snapshot through Persist; snapshotSize is the last one's size.
	snapshotDuration prometheus.Histogram
	snapshotSize     prometheus.Gauge
	// leaderChanges counts the leaders this node saw taking office.
	leaderChanges prometheus.Counter
	// wal bridges raft-wal's counters and gauges.
	wal *walCollector
}

func newMetrics() *metrics {
	m := &metrics{
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exactonce_forwarded_commands_total",
			Help: "Writes this follower forwarded to the leader over the internal channel, by result (ok, not_leader, retry, outcome_unknown, error).",
		}, []string{"result"}),
		logFsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "exactonce_raft_log_fsync_duration_seconds",
			Help:    "Time of each fsync of a Raft log (raft-wal) segment file.",
			Buckets: diskBuckets,
		}),
		stateCommit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "exactonce_state_commit_duration_seconds",
			Help:    "Time to apply one batch of committed Raft entries to the state file and commit its transaction.",
			Buckets: diskBuckets,
		}),
		snapshotDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "exactonce_snapshot_duration_seconds",
			Help:    "Time to take and persist one snapshot of the state (successful snapshots only).",
			Buckets: snapshotBuckets,
		}),
		snapshotSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "exactonce_snapshot_size_bytes",
			Help: "Size of the last snapshot this node persisted (0 before the first).",
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exactonce_raft_leader_changes_total",
			Help: "Leaders this node saw take office (a different server, or any server after a time without a leader).",
		}),
		wal: newWALCollector(),
	}
	for _, r := range forwardResults {
		m.forwards.WithLabelValues(r)
	}
	return m
}

// register registers every collector with reg, the node's own gauges
// (read from n on each scrape) included.
func (m *metrics) register(reg prometheus.Registerer, n *Node) error {
	for _, c := range []prometheus.Collector{m.forwards, m.logFsync, m.stateCommit,
		m.snapshotDuration, m.snapshotSize, m.leaderChanges, m.wal, &nodeCollector{n: n}} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register: %w", err)
		}
	}
	return nil
}

// Descriptions of the gauges nodeCollector reads on each scrape.
var (
	descTerm = prometheus.NewDesc("exactonce_raft_term",
		"Current Raft term of this node.", nil, nil)
	descCommitIndex = prometheus.NewDesc("exactonce_raft_commit_index",
		"Highest Raft log index this node knows committed.", nil, nil)
	descLastIndex = prometheus.NewDesc("exactonce_raft_last_log_index",
		"Last index in this node's Raft log (committed or not).", nil, nil)
	descApplyLag = prometheus.NewDesc("exactonce_raft_apply_lag_entries",
		"Committed Raft entries not yet applied to the local state (commit index minus applied index).", nil, nil)
	descLeaderContact = prometheus.NewDesc("exactonce_raft_last_leader_contact_seconds",
		"Seconds since this follower last heard from the leader (since it started when never); 0 on the leader.", nil, nil)
	descLogBytes = prometheus.NewDesc("exactonce_raft_log_bytes",
		"Bytes of the Raft log and stable store on disk (the raft-wal directory).", nil, nil)
	descSnapshotsBytes = prometheus.NewDesc("exactonce_raft_snapshots_bytes",
		"Bytes of the snapshots kept on disk.", nil, nil)
)

// nodeCollector reads a node's Raft progress on each scrape: a few atomic
// loads and the listing of two small directories, whatever the load.
type nodeCollector struct{ n *Node }

// Describe implements prometheus.Collector.
func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTerm, descCommitIndex, descLastIndex, descApplyLag,
		descLeaderContact, descLogBytes, descSnapshotsBytes} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	r := n.raft
	commit, applied := r.CommitIndex(), n.sm.AppliedIndex()
	lag := uint64(0)
	if commit > applied {
		lag = commit - applied
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	gauge(descTerm, float64(r.CurrentTerm()))
	gauge(descCommitIndex, float64(commit))
	gauge(descLastIndex, float64(r.LastIndex()))
	gauge(descApplyLag, float64(lag))
	gauge(descLeaderContact, n.leaderContactAge().Seconds())
	raftDir := filepath.Join(n.cfg.DataDir, "raft")
	logPath := filepath.Join(raftDir, walDirName)
	gauge(descLogBytes, float64(diskUsage(logPath)))
	gauge(descSnapshotsBytes, float64(diskUsage(filepath.Join(raftDir, "snapshots"))))
}

// leaderContactAge is how long ago this node last heard from the leader:
// zero on the leader, the time since Open when it never has.
func (n *Node) leaderContactAge() time.Duration {
	if n.raft.State() == raft.Leader {
		return 0
	}
	last := n.raft.LastContact()
	if last.IsZero() {
		last = n.opened
	}
	return time.Since(last)
}

// diskUsage is the total size of the regular files at or under path (0
// when it does not exist; unreadable entries are skipped: a gauge that is
// roughly right beats a scrape error).
func diskUsage(path string) int64 {
	var total int64
	_ = filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}

// leaderObserver counts leader changes in its filter, which Raft calls
// synchronously on each observation: nothing is queued, so none is lost,
// and the observer's channel never receives anything.
func (n *Node) leaderObserver() *raft.Observer {
	var last atomic.Value // raft.ServerID of the last leader seen ("" when none)
	last.Store(raft.ServerID(""))
	return raft.NewObserver(make(chan raft.Observation), false, func(o *raft.Observation) bool {
		lo, ok := o.Data.(raft.LeaderObservation)
		if !ok {
			return false
		}
		if prev := last.Swap(lo.LeaderID).(raft.ServerID); lo.LeaderID != "" && lo.LeaderID != prev {
			n.metrics.leaderChanges.Inc()
		}
		return false
	})
}

// walCollector is raft-wal's metrics.Collector as Prometheus collectors:
// each of wal.MetricDefinitions becomes exactonce_raft_wal_<name>, with
// "_total" on the counters.
type walCollector struct {
	counters map[string]prometheus.Counter
	gauges   map[string]prometheus.Gauge
}

var _ walmetrics.Collector = (*walCollector)(nil)

func newWALCollector() *walCollector {
	c := &walCollector{counters: map[string]prometheus.Counter{}, gauges: map[string]prometheus.Gauge{}}
	for _, d := range wal.MetricDefinitions.Counters {
		c.counters[d.Name] = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exactonce_raft_wal_" + d.Name + "_total", Help: "raft-wal: " + d.Desc})
	}
	for _, d := range wal.MetricDefinitions.Gauges {
		c.gauges[d.Name] = prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "exactonce_raft_wal_" + d.Name, Help: "raft-wal: " + d.Desc})
	}
	return c
}

// IncrementCounter implements raft-wal's metrics.Collector. A name
// raft-wal did not declare is ignored (raft-wal's own collectors panic).
func (c *walCollector) IncrementCounter(name string, delta uint64) {
	if m, ok := c.counters[name]; ok {
		m.Add(float64(delta))
	}
}

// SetGauge implements raft-wal's metrics.Collector.
func (c *walCollector) SetGauge(name string, val uint64) {
	if m, ok := c.gauges[name]; ok {
		m.Set(float64(val))
	}
}

// Describe implements prometheus.Collector.
func (c *walCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.counters {
		m.Describe(ch)
	}
	for _, m := range c.gauges {
		m.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (c *walCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.counters {
		m.Collect(ch)
	}
	for _, m := range c.gauges {
		m.Collect(ch)
	}
}

// measuredSnapshot times a snapshot and counts the bytes it persists.
type measuredSnapshot struct {
	raft.FSMSnapshot
	start time.Time
	m     *metrics
}

// Persist implements raft.FSMSnapshot.
func (s *measuredSnapshot) Persist(sink raft.SnapshotSink) error {
	cs := &countingSink{SnapshotSink: sink}
	if err := s.FSMSnapshot.Persist(cs); err != nil {
		return err
	}
	s.m.snapshotDuration.Observe(time.Since(s.start).Seconds())
	s.m.snapshotSize.Set(float64(cs.n))
	return nil
}

// countingSink counts the bytes written to a snapshot sink.
type countingSink struct {
	raft.SnapshotSink
	n int64
}

func (s *countingSink) Write(p []byte) (int, error) {
	n, err := s.SnapshotSink.Write(p)
	s.n += int64(n)
	return n, err
}

// timedSyncVFS times the fsyncs of the segment files of a raft-wal VFS.
type timedSyncVFS struct {
	types.VFS
	observe prometheus.Histogram
}

func (v timedSyncVFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	f, err := v.VFS.Create(dir, name, size)
	if err != nil {
		return nil, err
	}
	return timedSyncFile{f, v.observe}, nil
}

func (v timedSyncVFS) OpenWriter(dir, name string) (types.WritableFile, error) {
	f, err := v.VFS.OpenWriter(dir, name)
	if err != nil {
		return nil, err
	}
	return timedSyncFile{f, v.observe}, nil
}

// timedSyncFile is a segment file whose Sync is timed.
type timedSyncFile struct {
	types.WritableFile
	observe prometheus.Histogram
}

func (f timedSyncFile) Sync() error {
	start := time.Now()
	err := f.WritableFile.Sync()
	f.observe.Observe(time.Since(start).Seconds())
	return err
}
