package cluster

// The exported contract other packages build against: errors and Config.
// The Node type and its methods live in node.go and the files beside it.

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"

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
	// RaftTLS, when set, is used for mutual TLS on the Raft transport. It must
	// hold this node's certificate, the CA pool of peers as both RootCAs and
	// ClientCAs, and ClientAuth = tls.RequireAndVerifyClientCert.
	RaftTLS *tls.Config
	// InternalTLS, when set, is the client TLS configuration used to call
	// other nodes' internal HTTP endpoints (read index, status). Nil uses the
	// default HTTP client transport settings.
	InternalTLS *tls.Config
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
	// NoSync disables fsync of the Raft log's segment files (tests only;
	// the WAL's small meta DB still syncs, see logstore.go).
	NoSync bool

	// legacyBoltStore makes the node keep its log and stable store in
	// raft-boltdb at raft/raft.db, the layout before the raft WAL, so tests
	// can build such a data dir and check its migration.
	legacyBoltStore bool
	// wrapLog, when set, wraps the Raft log store under parallelLog, so
	// tests can hold or fail this node's log writes.
	wrapLog func(raft.LogStore) raft.LogStore
}
