package cluster

// API SKELETON — the cluster helper replaces the bodies; the signatures are
// the contract httpapi/ and cmd/ build against. Change a signature only
// together with its callers.

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"time"

	"github.com/exactonce/exactonce/fsm"
)

// Errors returned by Node. httpapi maps them to SPEC.md's 503 codes.
var (
	// ErrUnavailable: nothing was proposed (no leader, not ready, enqueue
	// timeout, deadline before proposing). Safe to retry. 503 unavailable.
	ErrUnavailable = errors.New("cluster: no leader available")
	// ErrOutcomeUnknown: the entry was proposed but its fate is unknown
	// (leadership lost, deadline while waiting). 503 outcome_unknown.
	ErrOutcomeUnknown = errors.New("cluster: outcome unknown")
	// ErrNotLeader: this node is not the leader; the caller forwards.
	ErrNotLeader = errors.New("cluster: not the leader")
)

// Config configures a node.
type Config struct {
	NodeID  string
	DataDir string
	// RaftAddr is the Raft bind address; RaftAdvertise what peers dial (default RaftAddr).
	RaftAddr      string
	RaftAdvertise string
	// HTTPAdvertise is this node's API base URL as others reach it
	// (e.g. "http://127.0.0.1:8080"); carried in gossip metadata.
	HTTPAdvertise string
	// GossipAddr is the memberlist bind address ("" disables gossip: single node).
	GossipAddr      string
	GossipAdvertise string
	// Join lists gossip addresses of existing members.
	Join []string
	// BootstrapExpect is how many nodes form the first cluster (1 when no Join).
	BootstrapExpect int
	// GossipKey encrypts gossip (16, 24 or 32 bytes), nil for none.
	GossipKey []byte
	// RaftTLS, when set, is used for mutual TLS on the Raft transport.
	RaftTLS *tls.Config
	// FSM is the state machine, already open.
	FSM *fsm.FSM
	// Now is the clock used to stamp entries (default time.Now). Tests and the
	// chaos harness's clock hook may replace it.
	Now func() time.Time
	// Logger receives structured logs.
	Logger *slog.Logger
	// Tuning; zero values mean production defaults.
	HeartbeatTimeout  time.Duration
	ElectionTimeout   time.Duration
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// NoSync disables fsync (tests only).
	NoSync bool
}

// Node is one ExactOnce cluster member: Raft, membership and read barriers.
type Node struct{}

// Open starts a node: opens Raft storage, bootstraps once when the
// configuration calls for it, joins gossip and begins serving.
func Open(ctx context.Context, cfg Config) (*Node, error) { return nil, errors.New("TODO") }

// Apply stamps cmd.Time with this leader's clock (never going back), proposes
// it and waits for the FSM's result. Returns ErrNotLeader on a follower,
// ErrUnavailable when nothing was proposed and ErrOutcomeUnknown when the
// outcome cannot be known.
func (n *Node) Apply(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	return nil, ErrUnavailable
}

// ReadBarrier returns once the local FSM reflects every write committed
// before the call (linearizable read): on the leader commit index, then
// VerifyLeader, then wait for the local FSM; on a follower the read index
// comes from the leader. Concurrent callers share one confirmation round.
func (n *Node) ReadBarrier(ctx context.Context) error { return ErrUnavailable }

// FSM returns the local state machine.
func (n *Node) FSM() *fsm.FSM { return nil }

// IsLeader reports whether this node is the leader and has applied a
// barrier in its term (ready to serve).
func (n *Node) IsLeader() bool { return false }

// LeaderHTTP returns the leader's API base URL, "" when unknown.
func (n *Node) LeaderHTTP() string { return "" }

// Ready reports whether the node knows a leader and has caught up.
func (n *Node) Ready() bool { return false }

// Close shuts the node down (leadership transferred first when leader).
func (n *Node) Close(ctx context.Context) error { return nil }
