// Package httpapi is ExactOnce's HTTP layer: the endpoints of SPEC.md on a
// gorilla/mux router, linearizable reads, request ids, structured logs and
// Prometheus metrics. Writes become fsm.Commands that the Backend proposes
// on the leader (the cluster package carries them there); DESIGN.md.
//
// The handlers are the proposers of the replicated state machine: they
// validate requests statically, generate ids, seal payloads and hash PINs,
// then hand one fsm.Command to the Backend. Every 2xx/4xx body of a write is
// rendered as a pure function of the fsm.Result, so an idempotent replay of
// a remembered Result renders byte-identical bodies.
package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/secure"
)

// Default limits, used for zero Config fields.
const (
	DefaultMaxBodyBytes      = 1 << 20
	DefaultMaxCSVBodyBytes   = 16 << 20
	DefaultMaxPayloadBytes   = 16 << 10
	DefaultMaxConsumerBytes  = 1 << 10
	DefaultMaxCSVRows        = 10000
	DefaultTTL               = 24 * time.Hour
	DefaultMaxTTL            = 366 * 24 * time.Hour
	DefaultRequestTimeout    = 10 * time.Second
	DefaultDemoRatePerMinute = 10
	// DefaultMaxConcurrentRequests is the default cap on requests served
	// at once by one node (Config.MaxConcurrentRequests).
	DefaultMaxConcurrentRequests = 1024
	// DefaultBodyReadTimeout bounds the reading of a request body.
	DefaultBodyReadTimeout = 10 * time.Second
	// DefaultMaxStaleness bounds how long a node may go without hearing
	// from a leader and still serve ?consistency=stale reads.
	DefaultMaxStaleness = 5 * time.Second
	// DefaultMaxHeaderBytes bounds a request's line and header.
	DefaultMaxHeaderBytes = 64 << 10
	// DemoTTL is the lifetime of a demo action.
	DemoTTL = 5 * time.Minute
	// DefaultListLimit and MaxListLimit bound GET /v1/actions pages.
	DefaultListLimit = 100
	MaxListLimit     = 1000
	// DefaultMaxActionsPerClient is the quota of stored actions per client
	// for a zero Config.MaxActionsPerClient: finite, so the default
	// configuration is the safe one.
	DefaultMaxActionsPerClient = fsm.DefaultMaxActions
)

// Config configures the HTTP layer. Zero values mean the defaults above.
type Config struct {
	// MaxBodyBytes bounds a JSON request body (413 beyond).
	MaxBodyBytes int64
	// MaxCSVBodyBytes bounds a text/csv create body (413 beyond).
	MaxCSVBodyBytes int64
	// MaxPayloadBytes bounds an action's payload, compact JSON encoding.
	MaxPayloadBytes int
	// MaxConsumerBytes bounds the consume "consumer" object, compact encoding.
	MaxConsumerBytes int
	// MaxCSVRows bounds the data rows of one CSV create; values below
	// DefaultMaxCSVRows are raised to it (SPEC requires at least 10,000).
	MaxCSVRows int
	// DefaultTTL is the lifetime of an action created without expires_at.
	DefaultTTL time.Duration
	// MaxTTL bounds expires_at - max(now, active_at).
	MaxTTL time.Duration
	// MaxActionsPerClient is the quota of actions one client may store
	// (429 quota_exceeded beyond; a CSV that would exceed it is refused
	// whole). 0 means DefaultMaxActionsPerClient, negative means no quota.
	// It rides in each create command, so every replica decides alike.
	MaxActionsPerClient int64
	// AdminTokenHash is secure.HashSecret of the admin bearer token. Empty
	// disables every admin call (401).
	AdminTokenHash []byte
	// Keys seals payloads and hashes PINs. Required.
	Keys *secure.Keys
	// DemoRatePerMinute is how many demo actions one remote address may
	// create per minute (burst of the same size). Negative disables the demo.
	DemoRatePerMinute int
	// RequestTimeout is the deadline of every request, including waiting
	// for a leader and for the command's commit.
	RequestTimeout time.Duration
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
	// AccessLog logs every client request at Info. Without it, only
	// requests answered with a 5xx status are logged at Info and the rest
	// at Debug: at thousands of requests per second, a line each is noise
	// and a measurable share of the CPU (docs/performance.md).
	AccessLog bool
	// Registry registers the metrics; Gatherer serves /metrics. When
	// Registry is nil a fresh registry is used for both.
	Registry prometheus.Registerer
	Gatherer prometheus.Gatherer
	// Now is the local clock (default time.Now). It is only used to derive
	// states for reads; writes use the leader's stamp.
	Now func() time.Time
	// PublicURL is this node's advertised API base URL (exactonced:
	// --http-advertise), such as "https://node1.example.com:8080". Demo
	// reveal URLs are built from it, never from request headers, which the
	// client controls. Empty makes them paths ("/v1/demo/.../reveal").
	PublicURL string
	// MaxConcurrentRequests caps the requests this node serves at once
	// (health, readiness and metrics are not counted); over it, requests
	// are answered 503 overloaded before their body is read. Negative
	// means no cap.
	MaxConcurrentRequests int
	// BodyReadTimeout bounds the reading of a request body, from the
	// moment the handler starts reading it (408 request_timeout beyond),
	// so that a body trickled byte by byte cannot hold a connection.
	BodyReadTimeout time.Duration
	// MaxStaleness bounds ?consistency=stale reads: a node that has not
	// heard from a leader for longer answers 503 unavailable. Negative
	// means no bound.
	MaxStaleness time.Duration
	// MaxHeaderBytes bounds a request's line and header (431
	// headers_too_large beyond, as JSON). The http.Server's own
	// MaxHeaderBytes must be larger, or net/http answers first, in plain
	// text.
	MaxHeaderBytes int
	// Extra, when set, mounts more routes (cluster internals, /v1/cluster).
	// They get the same request id, logging, metrics and timeout middleware.
	Extra func(r *mux.Router)
}

// Backend is what the HTTP layer needs from a cluster node; *cluster.Node
// implements it.
type Backend interface {
	// Apply proposes one command on the leader, wherever this node stands,
	// and returns the state machine's result.
	Apply(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error)
	// ReadBarrier returns once the local FSM reflects every committed write.
	ReadBarrier(ctx context.Context) error
	// ReadBarrierWithin is ReadBarrier, but a follower that has not caught
	// up with the read index within lag returns cluster.ErrLagging.
	ReadBarrierWithin(ctx context.Context, lag time.Duration) error
	// FSM returns the local state machine.
	FSM() *fsm.FSM
	// IsLeader reports whether this node is a leader ready to serve.
	IsLeader() bool
	// ReadOnLeader runs a read query on the leader (cluster.Node.ReadOnLeader).
	ReadOnLeader(ctx context.Context, query []byte) ([]byte, error)
	// Ready reports whether the node knows a leader and has caught up.
	Ready() bool
	// LeaderContact is how long ago this node last heard from the leader:
	// 0 on the leader itself, and very long on a node that never has.
	LeaderContact() time.Duration
}

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if out.Keys == nil {
		return out, errors.New("httpapi: Config.Keys is required")
	}
	if out.MaxBodyBytes <= 0 {
		out.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if out.MaxCSVBodyBytes <= 0 {
		out.MaxCSVBodyBytes = DefaultMaxCSVBodyBytes
	}
	if out.MaxPayloadBytes <= 0 {
		out.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if out.MaxConsumerBytes <= 0 {
		out.MaxConsumerBytes = DefaultMaxConsumerBytes
	}
	if out.MaxCSVRows < DefaultMaxCSVRows {
		out.MaxCSVRows = DefaultMaxCSVRows
	}
	if out.DefaultTTL <= 0 {
		out.DefaultTTL = DefaultTTL
	}
	if out.MaxTTL <= 0 {
		out.MaxTTL = DefaultMaxTTL
	}
	if out.MaxActionsPerClient == 0 {
		out.MaxActionsPerClient = DefaultMaxActionsPerClient
	}
	if out.DefaultTTL > out.MaxTTL {
		return out, errors.New("httpapi: DefaultTTL exceeds MaxTTL")
	}
	if out.DemoRatePerMinute == 0 {
		out.DemoRatePerMinute = DefaultDemoRatePerMinute
	}
	if out.RequestTimeout <= 0 {
		out.RequestTimeout = DefaultRequestTimeout
	}
	if out.MaxConcurrentRequests == 0 {
		out.MaxConcurrentRequests = DefaultMaxConcurrentRequests
	}
	if out.BodyReadTimeout <= 0 {
		out.BodyReadTimeout = DefaultBodyReadTimeout
	}
	if out.MaxStaleness == 0 {
		out.MaxStaleness = DefaultMaxStaleness
	}
	if out.MaxHeaderBytes <= 0 {
		out.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	out.PublicURL = strings.TrimRight(out.PublicURL, "/")
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.Registry == nil {
		reg := prometheus.NewRegistry()
		out.Registry = reg
		if out.Gatherer == nil {
			out.Gatherer = reg
		}
	}
	if out.Gatherer == nil {
		if g, ok := out.Registry.(prometheus.Gatherer); ok {
			out.Gatherer = g
		} else {
			out.Gatherer = prometheus.DefaultGatherer
		}
	}
	if out.Now == nil {
		out.Now = time.Now
	}
	return out, nil
}

// *cluster.Node is the production Backend.
var _ Backend = (*cluster.Node)(nil)
