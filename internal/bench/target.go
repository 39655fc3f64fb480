package bench

import "context"

// Consume outcomes.
const (
	// Won means this request consumed the action (HTTP 200, or an etcd
	// transaction whose compare succeeded).
	Won = iota
	// Lost means the action had already been consumed (HTTP 409
	// already_used, or a failed etcd compare).
	Lost
)

// Target is a system under test, seen through the operations the
// workloads need. Worker numbers let a target spread load over its nodes.
type Target interface {
	// Name is the system's name in reports ("exactonce", "etcd").
	Name() string
	// Create stores one new active action and returns its id.
	Create(ctx context.Context, w *Worker) (string, error)
	// CreateBatch stores n new active actions in as few requests as the
	// target allows and returns their ids.
	CreateBatch(ctx context.Context, n int) ([]string, error)
	// Consume tries to consume id and reports Won or Lost; any other
	// outcome is an error.
	Consume(ctx context.Context, w *Worker, id string) (int, error)
	// Verify reads id's state with a linearizable read.
	Verify(ctx context.Context, w *Worker, id string) error
	// Nodes is the number of nodes requests are spread over.
	Nodes() int
}

// Settler is implemented by a target whose replicas may still be applying
// a bulk load (the prefill before a run) when the load returns: Settle
// waits until every replica has applied it, so that the run measures the
// workload and not the replicas catching up.
type Settler interface {
	Settle(ctx context.Context) error
}

// nodeMapper is implemented by a target that can tell which of its server
// nodes a worker's next request goes to, so that latencies can be split
// by node (a leader answers differently from a follower).
type nodeMapper interface {
	// NodeOf is the index in NodeNames of the node w's next request
	// (at w.Seq) goes to.
	NodeOf(w *Worker) int
	// NodeNames names the nodes, in the order of the system's processes.
	NodeNames() []string
}
