package fsm

// API SKELETON — the fsm helper replaces the bodies; the signatures are the
// contract that cluster/ and httpapi/ build against. Change a signature only
// together with its callers.

import (
	"errors"
	"io"

	"github.com/hashicorp/raft"
)

var errTODO = errors.New("fsm: not implemented yet")

// Options configures an FSM.
type Options struct {
	// Path of the bbolt file holding the state.
	Path string
	// NoSync disables fsync of state commits (tests only).
	NoSync bool
}

// FSM is the replicated state machine: raft.BatchingFSM over a bbolt file.
// It is safe for concurrent readers while Raft applies.
type FSM struct{}

var _ raft.BatchingFSM = (*FSM)(nil)

// Open opens (or creates) the state file.
func Open(opts Options) (*FSM, error) { return nil, errTODO }

// Close closes the state file.
func (f *FSM) Close() error { return errTODO }

// Apply applies one log entry (raft.FSM).
func (f *FSM) Apply(l *raft.Log) interface{} { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies committed entries in one storage transaction. Each
// response is a *Result, or an error for an entry that could not be decoded.
// Entries at or below AppliedIndex (already in the state file) are skipped.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} { return make([]interface{}, len(logs)) }

// Snapshot returns a consistent point-in-time copy of the state (raft.FSM).
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errTODO }

// Restore replaces the whole state with a snapshot, atomically for readers.
func (f *FSM) Restore(rc io.ReadCloser) error { return errTODO }

// AppliedIndex is the index of the last log entry in the state file.
func (f *FSM) AppliedIndex() uint64 { return 0 }

// LastTime is the FSM clock: the largest leader stamp applied (Unix ms).
func (f *FSM) LastTime() int64 { return 0 }

// WaitApplied blocks until AppliedIndex >= index or done is closed.
// It returns false when done closed first.
func (f *FSM) WaitApplied(index uint64, done <-chan struct{}) bool { return false }

// StateHash is a SHA-256 over the whole replicated state (not the applied
// index), equal on nodes that applied the same log.
func (f *FSM) StateHash() ([]byte, error) { return nil, errTODO }

// View runs fn against a consistent read-only view of the state.
func (f *FSM) View(fn func(v *View) error) error { return errTODO }

// View is a read-only, consistent view of the state.
type View struct{}

// Action returns the client's action, or nil when there is none (an action
// of another client is reported as absent).
func (v *View) Action(clientID, actionID string) (*Action, error) { return nil, errTODO }

// Client returns a client, or nil when unknown.
func (v *View) Client(clientID string) (*Client, error) { return nil, errTODO }

// Clients lists all clients, ordered by id.
func (v *View) Clients() ([]*Client, error) { return nil, errTODO }

// OrderBy is a list ordering field.
type OrderBy string

// The list orderings.
const (
	OrderCreatedAt OrderBy = "createdAt"
	OrderActiveAt  OrderBy = "activeAt"
	OrderExpiresAt OrderBy = "expiresAt"
)

// ListQuery selects a client's actions. Zero values mean "no filter".
// Time bounds are Unix ms: From is inclusive, To is exclusive.
type ListQuery struct {
	ClientID       string
	State          State
	ConsumedReason string
	CreatedFrom    int64
	CreatedTo      int64
	ActiveFrom     int64
	ActiveTo       int64
	OrderBy        OrderBy
	Desc           bool
	Limit          int
	// After is the opaque position returned as ListPage.Next; nil starts at
	// the beginning. Paging by position returns every match exactly once.
	After []byte
	// Now is the time states are derived at (Unix ms).
	Now int64
}

// ListPage is one page of a list.
type ListPage struct {
	Actions []*Action
	// Next is the position after the last returned action, nil at the end.
	Next []byte
}

// List returns one page of the client's actions.
func (v *View) List(q ListQuery) (ListPage, error) { return ListPage{}, errTODO }

// Stats are a client's counts at a time.
type Stats struct {
	Total           int64
	ByState         map[State]int64
	Burned          int64
	CreatedLast24h  int64
	ConsumedLast24h int64
}

// Stats counts the client's actions at time now (Unix ms).
func (v *View) Stats(clientID string, now int64) (Stats, error) { return Stats{}, errTODO }

// EncodeCommand encodes a command for the log.
func EncodeCommand(c *Command) ([]byte, error) { return nil, errTODO }

// DecodeCommand decodes a log entry's data.
func DecodeCommand(b []byte) (*Command, error) { return nil, errTODO }
