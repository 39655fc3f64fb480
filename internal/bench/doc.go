// Package bench is the machinery behind cmd/exactonce-bench: it starts a
// three-node ExactOnce cluster and a three-member etcd cluster on loopback,
// drives closed-loop workloads against each (create, consume, hot-action
// race, linearizable verify, mix, CSV batch create), and reports throughput
// and latency percentiles as a table and as JSON lines, with ExactOnce's
// figures divided by etcd's for every comparable row.
package bench
