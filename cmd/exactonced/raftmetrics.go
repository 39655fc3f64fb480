package main

import (
	"fmt"
	"time"

	gometrics "github.com/hashicorp/go-metrics/compat"
	gmprometheus "github.com/hashicorp/go-metrics/compat/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// raftMetricsExpiry is how long a hashicorp/raft timing or counter that is
// no longer updated stays on /metrics (a summary of an idle path would
// otherwise show its last quantiles forever).
const raftMetricsExpiry = 2 * time.Minute

// raftPerPeerNames are go-metrics keys hashicorp/raft emits twice: with a
// peer label, and (deprecated) with the peer id in the metric name. The
// second form is dropped: a metric name per peer is unusable in queries.
var raftPerPeerNames = []string{
	"raft.replication.heartbeat.",
	"raft.replication.appendEntries.rpc.",
	"raft.replication.appendEntries.logs.",
	"raft.replication.installSnapshot.",
}

// installRaftMetrics routes hashicorp/raft's go-metrics (commit time, FSM
// apply, snapshot, replication timings; docs/metrics.md) into a Prometheus
// registry of their own, which /metrics serves beside the node's.
//
// It is the process's only global state, and it is here because
// hashicorp/raft leaves no choice: raft v1.7 reports through go-metrics'
// package-level functions (github.com/hashicorp/go-metrics/compat, backed
// by armon/go-metrics unless built with -tags hashicorpmetrics), which
// write to one process-wide sink. So main installs the sink once, before
// any node starts, and nothing else does: tests that run several nodes in
// one process (cluster, httpapi) leave go-metrics' default sink in place,
// and their nodes' own metrics are per node, in per-node registries.
//
// Call it once per process.
func installRaftMetrics() (prometheus.Gatherer, error) {
	reg := prometheus.NewRegistry()
	sink, err := gmprometheus.NewPrometheusSinkFrom(gmprometheus.PrometheusOpts{
		Expiration: raftMetricsExpiry,
		Registerer: reg,
		Name:       "exactonce_raft_gometrics_sink",
	})
	if err != nil {
		return nil, fmt.Errorf("raft metrics: prometheus sink: %w", err)
	}
	conf := gometrics.DefaultConfig("")
	conf.EnableHostname = false       // no host name inside metric names
	conf.EnableRuntimeMetrics = false // the Go collector already reports the runtime
	conf.BlockedPrefixes = raftPerPeerNames
	if _, err := gometrics.NewGlobal(conf, sink); err != nil {
		return nil, fmt.Errorf("raft metrics: install the go-metrics sink: %w", err)
	}
	return reg, nil
}
