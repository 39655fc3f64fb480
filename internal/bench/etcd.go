package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Etcd drives an etcd cluster through the official gRPC client. An action
// is a key whose value is its state; consume is the compare-and-swap
// transaction If value == "active" Then Put "consumed".
type Etcd struct {
	clients []*clientv3.Client
	// members is the number of endpoints; client i talks to member i mod members.
	members int
	prefix  string
	seq     atomic.Uint64
	// BatchOps is the number of puts per transaction in CreateBatch (etcd's
	// default --max-txn-ops is 128).
	BatchOps int
}

// NewEtcd opens conns clients, client i pinned to endpoints[i mod len]. The
// key prefix makes this run's keys unique (pass something seeded).
func NewEtcd(ctx context.Context, endpoints []string, conns int, prefix string) (*Etcd, error) {
	if conns < len(endpoints) {
		conns = len(endpoints)
	}
	e := &Etcd{prefix: "/actions/" + prefix + "-", BatchOps: 100, members: len(endpoints)}
	for i := range conns {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:            []string{endpoints[i%len(endpoints)]},
			DialTimeout:          5 * time.Second,
			DialKeepAliveTime:    30 * time.Second,
			DialKeepAliveTimeout: 10 * time.Second,
			Logger:               zap.NewNop(),
			Context:              ctx,
		})
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("etcd client for %s: %w", endpoints[i%len(endpoints)], err)
		}
		e.clients = append(e.clients, c)
	}
	return e, nil
}

// Close closes every client.
func (e *Etcd) Close() {
	for _, c := range e.clients {
		_ = c.Close()
	}
}

// Name implements Target.
func (e *Etcd) Name() string { return "etcd" }

// Nodes implements Target.
func (e *Etcd) Nodes() int { return len(e.clients) }

// NodeOf implements nodeMapper: the member w's client is pinned to.
func (e *Etcd) NodeOf(w *Worker) int {
	if w == nil {
		return 0
	}
	return w.Node(len(e.clients)) % e.members
}

// NodeNames implements nodeMapper: e1, e2, ... as the harness names the members.
func (e *Etcd) NodeNames() []string {
	names := make([]string, e.members)
	for i := range names {
		names[i] = "e" + strconv.Itoa(i+1)
	}
	return names
}

func (e *Etcd) client(w *Worker) *clientv3.Client {
	if w == nil {
		return e.clients[0]
	}
	return e.clients[w.Node(len(e.clients))]
}

func (e *Etcd) newKey() string {
	return e.prefix + strconv.FormatUint(e.seq.Add(1), 36)
}

func etcdErr(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		return &OpError{Kind: "timeout", Err: err}
	}
	return &OpError{Kind: "etcd", Err: err}
}

// Create implements Target with a Put of "active".
func (e *Etcd) Create(ctx context.Context, w *Worker) (string, error) {
	k := e.newKey()
	if _, err := e.client(w).Put(ctx, k, "active"); err != nil {
		return "", etcdErr(ctx, err)
	}
	return k, nil
}

// CreateBatch implements Target with transactions of BatchOps puts, eight
// in flight at a time.
func (e *Etcd) CreateBatch(ctx context.Context, n int) ([]string, error) {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = e.newKey()
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for lo := 0; lo < n; lo += e.BatchOps {
		hi := min(n, lo+e.BatchOps)
		sem <- struct{}{}
		wg.Add(1)
		go func(batch []string, c *clientv3.Client) {
			defer func() { <-sem; wg.Done() }()
			ops := make([]clientv3.Op, len(batch))
			for i, k := range batch {
				ops[i] = clientv3.OpPut(k, "active")
			}
			if _, err := c.Txn(ctx).Then(ops...).Commit(); err != nil {
				mu.Lock()
				firstErr = errors.Join(firstErr, err)
				mu.Unlock()
			}
		}(keys[lo:hi], e.clients[(lo/e.BatchOps)%len(e.clients)])
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("etcd batch create: %w", firstErr)
	}
	return keys, nil
}

// Consume implements Target with If value == "active" Then Put "consumed".
func (e *Etcd) Consume(ctx context.Context, w *Worker, id string) (int, error) {
	resp, err := e.client(w).Txn(ctx).
		If(clientv3.Compare(clientv3.Value(id), "=", "active")).
		Then(clientv3.OpPut(id, "consumed")).
		Commit()
	if err != nil {
		return 0, etcdErr(ctx, err)
	}
	if resp.Succeeded {
		return Won, nil
	}
	return Lost, nil
}

// Verify implements Target with a linearizable Get.
func (e *Etcd) Verify(ctx context.Context, w *Worker, id string) error {
	resp, err := e.client(w).Get(ctx, id)
	if err != nil {
		return etcdErr(ctx, err)
	}
	if resp.Count != 1 {
		return &OpError{Kind: "not_found", Err: fmt.Errorf("key %s", id)}
	}
	return nil
}

// Settle implements Settler: a linearizable read through a client of each
// member returns once that member has applied everything committed before.
func (e *Etcd) Settle(ctx context.Context) error {
	for i := range min(len(e.clients), 3) {
		if _, err := e.clients[i].Get(ctx, e.prefix+"settle"); err != nil {
			return fmt.Errorf("etcd settle: %w", err)
		}
	}
	return nil
}
