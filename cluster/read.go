package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// remoteReadTimeout bounds one read-index request to the leader; the
// readers' own deadlines bound how often it is retried.
const remoteReadTimeout = 5 * time.Second

// ReadBarrier returns once the local FSM reflects every write committed
// before the call (linearizable read): on the leader commit index, then
// VerifyLeader, then wait for the local FSM; on a follower the read index
// comes from the leader over the cluster service. Concurrent callers share one confirmation round.
// Every failure is ErrUnavailable (wrapped).
func (n *Node) ReadBarrier(ctx context.Context) error {
	return n.readBarrier(ctx, 0)
}

// ReadBarrierWithin is ReadBarrier for a caller that can send the read to
// the leader instead of waiting here: on a follower whose FSM has not
// reached the read index within lag, it returns ErrLagging (wrapped).
//
// Why: a follower learns that an entry is committed only from the
// leader's next AppendEntries, which hashicorp/raft sends when there is a
// new entry or after CommitTimeout (50-100 ms) when idle. A read on a
// follower right after a write (read-your-writes through another node)
// would wait that long; the leader answers it at once.
func (n *Node) ReadBarrierWithin(ctx context.Context, lag time.Duration) error {
	return n.readBarrier(ctx, lag)
}

// readBarrier is ReadBarrier, or ReadBarrierWithin when lag > 0.
func (n *Node) readBarrier(ctx context.Context, lag time.Duration) error {
	ctx, cancel := n.mergeCtx(ctx)
	defer cancel()
	// Transient failures (no leader yet, leader changing) are retried until
	// ctx ends: the caller's deadline decides when to give up with 503.
	backoff := 10 * time.Millisecond
	var index uint64
	for {
		i, err := n.readIndex(ctx)
		if err == nil {
			index = i
			break
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
	if lag > 0 && n.sm.AppliedIndex() < index && n.raft.State() != raft.Leader {
		lagCtx, cancelLag := context.WithTimeout(ctx, lag)
		applied := n.sm.WaitApplied(index, lagCtx.Done())
		cancelLag()
		if applied {
			return nil
		}
		if ctx.Err() == nil {
			return fmt.Errorf("cluster: read barrier: index %d not applied here within %s: %w", index, lag, ErrLagging)
		}
	}
	if !n.sm.WaitApplied(index, ctx.Done()) {
		return fmt.Errorf("cluster: read barrier: waiting for index %d: %w", index, ErrUnavailable)
	}
	return nil
}

// readIndex obtains a read index: locally on the leader, else from the
// leader over HTTP.
func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	if n.raft.State() == raft.Leader {
		i, err := n.leaderReadIndex(ctx)
		if !errors.Is(err, ErrNotLeader) {
			return i, err
		}
	}
	index, err := n.remote.do(ctx)
	if err != nil && !errors.Is(err, ErrUnavailable) {
		return 0, fmt.Errorf("cluster: read barrier: %w (%w)", ErrUnavailable, err)
	}
	return index, err
}

// leaderReadIndex is the leader's half of the read-index protocol: after
// the term barrier, take the commit index, then confirm leadership with a
// quorum round that started after that. Returns ErrNotLeader (unwrapped)
// when this node is not the leader.
func (n *Node) leaderReadIndex(ctx context.Context) (uint64, error) {
	if err := n.waitTermReady(ctx); err != nil {
		if errors.Is(err, ErrNotLeader) {
			return 0, ErrNotLeader
		}
		return 0, fmt.Errorf("cluster: read barrier: %w", err)
	}
	index := n.raft.CommitIndex()
	if _, err := n.verifier.do(ctx); err != nil {
		return 0, fmt.Errorf("cluster: read barrier: verify leadership: %w (%w)", ErrUnavailable, err)
	}
	return index, nil
}

// coalescer shares one round of an expensive confirmation among
// concurrent readers. Readers that arrive while a round is running wait for
// the next round, and one round serves all of them. A reader never joins a
// round that started before it arrived, so whatever the round observes
// (a quorum confirming leadership, the leader's commit index) happened
// after the reader's call began. Rounds run one at a time.
type coalescer struct {
	// round does the work; ctx is the node's lifetime.
	round   func(ctx context.Context) (uint64, error)
	ctx     context.Context
	mu      sync.Mutex
	next    *coalescedRound
	running bool
	// rounds counts executed rounds (observability and tests).
	rounds atomic.Uint64
}

type coalescedRound struct {
	done  chan struct{}
	index uint64
	err   error
}

func newCoalescer(ctx context.Context, round func(context.Context) (uint64, error)) *coalescer {
	return &coalescer{ctx: ctx, round: round}
}

// do waits for the next round to complete (or ctx) and returns its result.
func (c *coalescer) do(ctx context.Context) (uint64, error) {
	c.mu.Lock()
	if c.next == nil {
		c.next = &coalescedRound{done: make(chan struct{})}
	}
	r := c.next
	if !c.running {
		c.running = true
		go c.run()
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run executes rounds while readers are waiting for one.
func (c *coalescer) run() {
	for {
		c.mu.Lock()
		r := c.next
		c.next = nil
		if r == nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.rounds.Add(1)
		r.index, r.err = c.round(c.ctx)
		close(r.done)
	}
}

// remoteReadIndex asks the leader for a read index over the cluster
// service. Followers call it through n.remote, so concurrent readers share
// one request.
func (n *Node) remoteReadIndex(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, remoteReadTimeout)
	defer cancel()
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return 0, fmt.Errorf("cluster: read barrier: leader unknown: %w", ErrUnavailable)
	}
	var resp readIndexResponse
	if err := n.callPeer(ctx, string(id), http.MethodGet, rpcReadIndex, nil, &resp); err != nil {
		return 0, fmt.Errorf("cluster: read barrier: read index from leader %s: %w (%w)", id, ErrUnavailable, err)
	}
	return resp.Index, nil
}
