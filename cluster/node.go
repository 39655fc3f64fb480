// Package cluster runs one ExactOnce cluster member: the Raft node that
// replicates fsm commands, leadership tracking with a per-term barrier,
// linearizable read barriers, gossip membership (hashicorp/memberlist) and
// the reconciliation of gossip into the Raft configuration.
//
// See DESIGN.md in this directory for the invariants and why they hold.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/exactonce/exactonce/fsm"
)

// stateMachine is what the node needs from the replicated state machine.
// *fsm.FSM implements it; tests may substitute a small fake.
type stateMachine interface {
	raft.BatchingFSM
	AppliedIndex() uint64
	LastTime() int64
	WaitApplied(index uint64, done <-chan struct{}) bool
	StateHashAt() (hash []byte, applied uint64, err error)
}

// Timing constants not worth a Config field.
const (
	// enqueueTimeout bounds how long Apply waits to hand an entry to Raft.
	enqueueTimeout = 2 * time.Second
	// maxAppendEntries caps entries per AppendEntries RPC and the size of
	// the batched apply channel.
	maxAppendEntries = 256
	// commitTimeout is Raft's CommitTimeout, its default (see raftConfig).
	commitTimeout = 50 * time.Millisecond
)

// Node is one ExactOnce cluster member: Raft, membership and read barriers.
type Node struct {
	cfg    Config
	log    *slog.Logger
	sm     stateMachine
	fsm    *fsm.FSM
	now    func() time.Time
	nodeID raft.ServerID

	raft      *raft.Raft
	transport raft.Transport
	store     raftStore
	plog      *parallelLog
	snaps     raft.SnapshotStore

	// guard wraps transport for Raft (hashicorp/raft #695 and #697, see
	// raftguard.go).
	guard *raftGuard

	ml      *memberlist.Memberlist
	members *memberTable
	// memberEvents is a coalescing "gossip membership changed" signal.
	memberEvents chan struct{}

	// ctx lives as long as the node; cancel ends every background goroutine.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	notifyCh chan bool

	// mu guards the leadership readiness fields below.
	mu sync.Mutex
	// readyTerm is the term whose barrier applied while this node led it
	// (0: not ready). See readiness.
	readyTerm uint64
	// changed is closed and replaced whenever ready or the leadership
	// changes, so waiters can re-check.
	changed chan struct{}
	// hasState records that this node holds Raft state (bootstrapped or
	// received entries); advertised in gossip to stop others bootstrapping.
	hasState atomic.Bool

	// stampMu serialises stamping and enqueueing so log order is stamp order.
	stampMu   sync.Mutex
	lastStamp int64

	// verifier coalesces the leader's VerifyLeader rounds; remote
	// coalesces a follower's read-index requests to the leader.
	verifier *coalescer
	remote   *coalescer

	// peer is this node's internal-channel identity; mux its listener,
	// rpc the cluster service on it, peers the clients of other nodes'
	// services and fwd the forwarding of writes to the leader.
	peer    *peerTLS
	mux     *internalMux
	rpc     *rpcServer
	peers   *peerClients
	fwd     *forwarder
	metrics *metrics
	// leaderReader serves ReadOnLeader on the leader.
	leaderReader atomic.Pointer[LeaderReader]

	// opened is when Open started, the "last contact" of a follower that
	// has never heard from a leader.
	opened time.Time

	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool
}

// Open starts a node: opens Raft storage, bootstraps once when the
// configuration calls for it, joins gossip and begins serving.
func Open(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.FSM == nil {
		return nil, errors.New("cluster: open: Config.FSM is nil")
	}
	return openWith(ctx, cfg, cfg.FSM, nil)
}

// openWith is Open over any stateMachine and, when trans is not nil, a
// given Raft transport (tests use raft's in-memory transport to partition
// nodes).
func openWith(ctx context.Context, cfg Config, sm stateMachine, trans raft.Transport) (*Node, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("cluster: open: NodeID is empty")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("cluster: open: DataDir is empty")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BootstrapExpect <= 0 {
		cfg.BootstrapExpect = 1
	}
	if cfg.GossipAddr == "" && trans == nil && (len(cfg.Join) > 0 || cfg.BootstrapExpect > 1) {
		// Without gossip such a node could never bootstrap nor be found.
		return nil, errors.New("cluster: open: Join and BootstrapExpect > 1 need GossipAddr")
	}
	if cfg.RaftAdvertise == "" {
		cfg.RaftAdvertise = cfg.RaftAddr
	}
	if cfg.GossipAdvertise == "" {
		cfg.GossipAdvertise = cfg.GossipAddr
	}
	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:          cfg,
		log:          cfg.Logger.With("component", "cluster", "node", cfg.NodeID),
		sm:           sm,
		fsm:          cfg.FSM,
		now:          cfg.Now,
		nodeID:       raft.ServerID(cfg.NodeID),
		ctx:          nctx,
		cancel:       cancel,
		changed:      make(chan struct{}),
		notifyCh:     make(chan bool, 16),
		members:      newMemberTable(),
		memberEvents: make(chan struct{}, 1),
		metrics:      newMetrics(),
		opened:       time.Now(),
	}
	peer, err := newPeerTLS(cfg.NodeID, cfg.Identity)
	if err != nil {
		cancel()
		return nil, err
	}
	n.peer = peer
	n.peers = newPeerClients(peer)
	n.fwd = newForwarder(n)
	n.verifier = newCoalescer(nctx, func(ctx context.Context) (uint64, error) {
		return 0, waitFuture(ctx, n.raft.VerifyLeader())
	})
	n.remote = newCoalescer(nctx, n.remoteReadIndex)
	if err := n.start(ctx, trans); err != nil {
		cancel()
		if cerr := n.closeStores(); cerr != nil {
			n.log.Warn("close stores after failed open", "err", cerr)
		}
		return nil, err
	}
	// Registered once Raft runs: the node's gauges read it on each scrape.
	if cfg.Registerer != nil {
		if err := n.metrics.register(cfg.Registerer, n); err != nil {
			err = fmt.Errorf("cluster: register metrics: %w", err)
			if cerr := n.shutdown(ctx, false); cerr != nil {
				err = errors.Join(err, cerr)
			}
			return nil, err
		}
	}
	return n, nil
}

// FSM returns the local state machine.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// IsLeader reports whether this node is the leader and has applied a
// barrier in its term (ready to serve).
func (n *Node) IsLeader() bool {
	ready, _ := n.readiness()
	return ready
}

// LeaderHTTP returns the leader's API base URL, "" when unknown.
func (n *Node) LeaderHTTP() string {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return ""
	}
	if id == n.nodeID {
		return n.cfg.HTTPAdvertise
	}
	if m, ok := n.members.get(string(id)); ok {
		return m.HTTP
	}
	return ""
}

// Ready reports whether the node knows a leader and has caught up: the
// leader once its term barrier applied, a follower once its FSM reached
// the commit index it last heard from the leader.
func (n *Node) Ready() bool {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return false
	}
	if id == n.nodeID {
		return n.IsLeader()
	}
	return n.sm.AppliedIndex() >= n.raft.CommitIndex()
}

// WaitLeader blocks until some leader is known and this node is Ready.
func (n *Node) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if n.Ready() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: wait for leader: %w", errors.Join(ErrUnavailable, ctx.Err()))
		case <-n.ctx.Done():
			return fmt.Errorf("cluster: wait for leader: node closed: %w", ErrUnavailable)
		case <-t.C:
		}
	}
}

// Close shuts the node down (leadership transferred first when leader).
// It does not close the FSM: the caller owns it. Close is idempotent.
func (n *Node) Close(ctx context.Context) error {
	n.closeOnce.Do(func() {
		n.closeErr = n.shutdown(ctx, true)
	})
	return n.closeErr
}

// shutdown stops the node; transfer=false skips the leadership handoff
// (tests use it to simulate a crash).
func (n *Node) shutdown(ctx context.Context, transfer bool) error {
	var errs []error
	if transfer && n.raft.State() == raft.Leader && n.otherVoters() {
		f := n.raft.LeadershipTransfer()
		if err := waitFuture(ctx, f); err != nil {
			n.log.Warn("leadership transfer before shutdown failed", "err", err)
		}
	}
	n.closed.Store(true)
	if n.ml != nil {
		if err := n.ml.Leave(time.Second); err != nil {
			n.log.Debug("gossip leave", "err", err)
		}
	}
	// Wake every waiter before stopping Raft so nothing blocks on it.
	n.cancel()
	n.unsetReady()
	if err := n.raft.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
	}
	if n.ml != nil {
		if err := n.ml.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("memberlist shutdown: %w", err))
		}
	}
	n.rpc.close()
	n.wg.Wait()
	if err := n.closeStores(); err != nil {
		errs = append(errs, err)
	}
	n.peers.closeIdle()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster: close: %w", err)
	}
	return nil
}

// closeStores closes the transport, the internal port and the Raft log
// and stable store.
func (n *Node) closeStores() error {
	var errs []error
	if c, ok := n.transport.(raft.WithClose); ok {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft transport: %w", err))
		}
	}
	if n.mux != nil {
		if err := n.mux.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close the internal port: %w", err))
		}
	}
	if n.plog != nil {
		n.plog.Close()
	}
	if n.store != nil {
		if err := n.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft store: %w", err))
		}
	}
	return errors.Join(errs...)
}

// otherVoters reports whether the Raft configuration has a voter besides us.
func (n *Node) otherVoters() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.ID != n.nodeID && s.Suffrage == raft.Voter {
			return true
		}
	}
	return false
}

// waitFuture waits for a Raft future within ctx. The future's own Error is
// awaited in a goroutine because some futures are never answered once Raft
// shuts down.
func waitFuture(ctx context.Context, f raft.Future) error {
	ch := make(chan error, 1)
	go func() { ch <- f.Error() }()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// mergeCtx returns a context ended by either ctx or the node's lifetime.
func (n *Node) mergeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(n.ctx, cancel)
	return c, func() { stop(); cancel() }
}
