package cluster

// The exported contract other packages build against: errors and Config.
// The Node type and its methods live in node.go and the files beside it.

import (
	"errors"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/exactonce/exactonce/fsm"
)

// Errors returned by Node. httpapi maps them to SPEC.md's 503 codes.
var (
	// ErrLagging: ReadBarrierWithin gave up waiting on a follower that has
	// not applied the read index yet; nothing is wrong, the leader can
	// serve the read at once (httpapi forwards it there).
	ErrLagging = errors.New("cluster: this follower has not applied the read index yet")
	// ErrUnavailable: nothing was proposed (no leader, not ready, enqueue
	// timeout, deadline before proposing). Safe to retry. 503 unavailable.
	ErrUnavailable = errors.New("cluster: no leader available")
	// ErrOutcomeUnknown: the entry was proposed but its fate is unknown
	// (leadership lost, deadline while waiting). 503 outcome_unknown.
	ErrOutcomeUnknown = errors.New("cluster: outcome unknown")
	// ErrNotLeader: this node is not the leader. Apply forwards by itself;
	// operator calls and the internal service return it.
	ErrNotLeader = errors.New("cluster: not the leader")
	// ErrRejected: the leader's Config.Vet refused the command; nothing was
	// proposed. 500 internal: the node cannot serve it (a payload its key
	// cannot open).
	ErrRejected = errors.New("cluster: the leader refused to propose the command")
)

// DefaultSnapshotsRetain is how many snapshot files a node keeps when
// Config.SnapshotsRetain is 0.
const DefaultSnapshotsRetain = 2

// Config configures a node.
type Config struct {
	NodeID  string
	DataDir string
	// RaftAddr is the bind address of the internal port, which carries
	// Raft and every other node-to-node call (DESIGN.md, "The internal
	// channel"); RaftAdvertise is what peers dial (default RaftAddr).
	RaftAddr      string
	RaftAdvertise string
	// HTTPAdvertise is this node's API base URL as clients reach it
	// (e.g. "http://127.0.0.1:8080"); carried in gossip metadata and shown
	// to operators. Nodes never call each other's API.
	HTTPAdvertise string
	// Version is the build's version (internal/buildinfo), carried in
	// gossip metadata and shown per member in Status, so that an operator
	// sees which nodes a rolling upgrade has reached. Empty: not shown.
	Version string
	// GossipAddr is the memberlist bind address ("" disables gossip: single node).
	GossipAddr      string
	GossipAdvertise string
	// Join lists gossip addresses of existing members.
	Join []string
	// BootstrapExpect is how many nodes form the first cluster (1 when no Join).
	BootstrapExpect int
	// GossipKey encrypts gossip (16, 24 or 32 bytes), nil for none.
	GossipKey []byte
	// Identity authenticates this node and its peers on the internal
	// channel: the cluster key, and optionally an operator's node
	// certificate and CA. Required.
	Identity PeerIdentity
	// Vet, when set, is asked on the leader before each command is
	// proposed; an error refuses it (ErrRejected) and nothing is written.
	Vet func(*fsm.Command) error
	// Registerer, when set, receives the package's metrics.
	Registerer prometheus.Registerer
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
	// SnapshotsRetain is how many snapshot files stay on disk (default
	// DefaultSnapshotsRetain).
	SnapshotsRetain int
	// ClockTick is how long the leader lets the cluster go without a new
	// entry before it proposes a stamped no-op, so that the state
	// machine's clock, and what it decides by time (retention's sweeps),
	// moves while nobody writes (default DefaultClockTick).
	ClockTick time.Duration
	// Seed, when set, starts this fresh node from a backup of a cluster's
	// state (backup.go): Open refuses it when the node already holds Raft
	// state or the state machine has applied anything.
	Seed *Seed
	// NoSync disables fsync of the Raft log's segment files (tests only;
	// the WAL's small meta DB still syncs, see logstore.go).
	NoSync bool

	// wrapLog, when set, wraps the Raft log store under parallelLog, so
	// tests can hold or fail this node's log writes.
	wrapLog func(raft.LogStore) raft.LogStore
}
