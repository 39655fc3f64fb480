package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// remoteReadTimeout bounds one read-index request to the leader; the
// readers' own deadlines bound how often it is retried.
const remoteReadTimeout = 5 * time.Second

// Internal HTTP paths served by InternalHandler.
const (
	// ReadIndexPath answers a follower's request for a linearizable read
	// index: {"index": n}. Only the ready leader answers 200.
	ReadIndexPath = "/internal/v1/read-index"
	// NodeStatusPath answers this node's applied index (used by the leader
	// to decide when a nonvoter has caught up).
	NodeStatusPath = "/internal/v1/node-status"
)

// ReadBarrier returns once the local FSM reflects every write committed
// before the call (linearizable read): on the leader commit index, then
// VerifyLeader, then wait for the local FSM; on a follower the read index
// comes from the leader. Concurrent callers share one confirmation round.
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

// readIndexResponse is the body of ReadIndexPath.
type readIndexResponse struct {
	Index uint64 `json:"index"`
}

// nodeStatusResponse is the body of NodeStatusPath.
type nodeStatusResponse struct {
	ID           string `json:"id"`
	AppliedIndex uint64 `json:"appliedIndex"`
	// LastIndex is Raft's last index on the node (its last log entry or
	// snapshot, as Raft's own state says), which the leader's guard
	// compares with a snapshot before sending it (raftguard.go).
	LastIndex uint64 `json:"lastIndex"`
}

// remoteReadIndex asks the leader for a read index over HTTP. Followers
// call it through n.remote, so concurrent readers share one request.
func (n *Node) remoteReadIndex(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, remoteReadTimeout)
	defer cancel()
	base := n.LeaderHTTP()
	if base == "" {
		return 0, fmt.Errorf("cluster: read barrier: leader unknown: %w", ErrUnavailable)
	}
	var resp readIndexResponse
	if err := n.getJSON(ctx, base+ReadIndexPath, &resp); err != nil {
		return 0, fmt.Errorf("cluster: read barrier: read index from leader %s: %w (%w)", base, ErrUnavailable, err)
	}
	return resp.Index, nil
}

// getJSON GETs url and decodes a 200 JSON body into out.
func (n *Node) getJSON(ctx context.Context, url string, out interface{}) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	res, err := n.client.Do(req)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<16))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", res.StatusCode, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// newInternalClient builds the pooled client for node-to-node calls.
func newInternalClient(tlsCfg *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	tr.IdleConnTimeout = 90 * time.Second
	if tlsCfg != nil {
		tr.TLSClientConfig = tlsCfg.Clone()
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// InternalHandler serves the node-to-node endpoints (ReadIndexPath,
// NodeStatusPath). The HTTP layer mounts it; it should be reachable only
// by cluster members (mTLS or a private network).
func (n *Node) InternalHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+ReadIndexPath, n.handleReadIndex)
	mux.HandleFunc("GET "+NodeStatusPath, n.handleNodeStatus)
	return mux
}

func (n *Node) handleReadIndex(w http.ResponseWriter, r *http.Request) {
	index, err := n.leaderReadIndex(r.Context())
	if err != nil {
		code := "unavailable"
		if errors.Is(err, ErrNotLeader) {
			code = "not_leader"
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": code, "message": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, readIndexResponse{Index: index})
}

func (n *Node) handleNodeStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, nodeStatusResponse{ID: string(n.nodeID), AppliedIndex: n.sm.AppliedIndex(), LastIndex: n.raft.LastIndex()})
}

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
