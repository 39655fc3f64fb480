// Package fsm holds ExactOnce's replicated state machine: the contract of
// SPEC.md as pure decisions over stored actions, kept in bbolt on disk.
//
// Nothing in this package reads a clock, a random source or the network: every
// time comes from the leader's stamp in the log entry and every id or hash is
// computed by the proposer before the entry is written. Two FSMs that apply the
// same log therefore hold byte-identical state.
package fsm

// Times inside the FSM are Unix milliseconds (UTC). Zero means "not set".

// State is an action's state derived at a given time.
type State string

// The five states of SPEC.md.
const (
	StatePending  State = "pending"
	StateActive   State = "active"
	StateConsumed State = "consumed"
	StateExpired  State = "expired"
	StateCanceled State = "canceled"
)

// Consumed reasons.
const (
	ReasonConsumed   = "consumed"
	ReasonPINBurned  = "invalid_pin_burned"
	MaxPINAttempts   = 3
	IdempotencyTTLMS = 24 * 60 * 60 * 1000
)

// DemoClientID is the reserved client that owns demo actions. It always
// exists for the FSM and can never authenticate with a secret.
const DemoClientID = "cl_demo"

// Action is one stored one-time action.
type Action struct {
	ID       string `json:"id"`
	ClientID string `json:"clientId"`
	// SealedPayload is the payload encrypted by the proposer (AES-256-GCM);
	// the FSM never sees plaintext.
	SealedPayload []byte `json:"sealedPayload"`
	// PINHash is the keyed hash of the PIN, nil when no PIN is required.
	PINHash   []byte `json:"pinHash,omitempty"`
	CreatedAt int64  `json:"createdAt"`
	ActiveAt  int64  `json:"activeAt"`
	ExpiresAt int64  `json:"expiresAt"`

	ConsumedAt     int64  `json:"consumedAt,omitempty"`
	ConsumedReason string `json:"consumedReason,omitempty"`
	// Consumer is the free-form JSON object given by the winning consumer.
	Consumer          []byte `json:"consumer,omitempty"`
	CanceledAt        int64  `json:"canceledAt,omitempty"`
	FailedPINAttempts int    `json:"failedPinAttempts,omitempty"`
}

// StateAt derives the action's state at time now (Unix ms).
func (a *Action) StateAt(now int64) State {
	switch {
	case a.ConsumedAt != 0:
		return StateConsumed
	case a.CanceledAt != 0:
		return StateCanceled
	case now >= a.ExpiresAt:
		return StateExpired
	case now < a.ActiveAt:
		return StatePending
	default:
		return StateActive
	}
}

// Client is one tenant. Only a hash of its secret is kept.
type Client struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	SecretHash []byte `json:"secretHash"`
	CreatedAt  int64  `json:"createdAt"`
	RevokedAt  int64  `json:"revokedAt,omitempty"`
}

// Code is a typed outcome of a command. CodeOK is success; every other value
// is the "error" field of SPEC.md's JSON error body.
type Code string

// Outcome codes. The HTTP layer maps each to its status.
const (
	CodeOK                Code = ""
	CodeNotFound          Code = "action_not_found"
	CodeCanceled          Code = "canceled"
	CodeAlreadyUsed       Code = "already_used"
	CodeExpired           Code = "expired"
	CodeNotActive         Code = "not_active"
	CodePINRequired       Code = "pin_required"
	CodeInvalidPIN        Code = "invalid_pin"
	CodeIdempotencyReused Code = "idempotency_key_reused"
	CodeInvalidRequest    Code = "invalid_request"
	CodeUnauthorized      Code = "unauthorized"
	CodeClientNotFound    Code = "client_not_found"
	CodeConflict          Code = "conflict"
	CodePayloadTooLarge   Code = "payload_too_large"
	CodeInternal          Code = "internal"
	// CodeKeyMismatch answers a CmdRecordKeyCheck whose value differs from
	// the one already recorded: the proposer runs with another cluster key.
	CodeKeyMismatch Code = "cluster_key_mismatch"
	// CodeQuotaExceeded refuses a create that would leave the client with
	// more stored actions than the command's MaxActions (docs/api.md).
	CodeQuotaExceeded Code = "quota_exceeded"
)

// CommandType names a replicated write.
type CommandType uint8

// The replicated writes. Values are part of the log format: never renumber.
const (
	CmdCreateActions  CommandType = 1 // JSON create (one row) or CSV batch
	CmdConsume        CommandType = 2
	CmdCancel         CommandType = 3
	CmdCreateClient   CommandType = 4
	CmdRevokeClient   CommandType = 5
	CmdNoop           CommandType = 6 // advances time; used by tests and barriers
	CmdRecordKeyCheck CommandType = 7 // records the cluster key's check value once
	CmdSetRetention   CommandType = 8 // sets how long terminal actions are kept
)

// Command is one log entry's content. Time is the leader's stamp (Unix ms);
// the FSM uses max(Time, last applied stamp) so its clock never goes back.
type Command struct {
	Type     CommandType `json:"t"`
	Time     int64       `json:"ts"`
	ClientID string      `json:"c,omitempty"`
	// Idempotency, when set, makes the FSM remember this command's Result
	// for 24 h under (ClientID, Key) and replay it for a same-fingerprint repeat.
	Idempotency *Idempotency `json:"idem,omitempty"`

	Create       *CreateActions `json:"create,omitempty"`
	Consume      *Consume       `json:"consume,omitempty"`
	Cancel       *Cancel        `json:"cancel,omitempty"`
	CreateClient *CreateClient  `json:"newClient,omitempty"`
	RevokeClient *RevokeClient  `json:"revokeClient,omitempty"`
	KeyCheck     *KeyCheck      `json:"keyCheck,omitempty"`
	SetRetention *SetRetention  `json:"retention,omitempty"`
}

// SetRetention sets how long a terminal action is kept before the state
// machine deletes it (DESIGN.md, "Retention").
type SetRetention struct {
	RetentionMS int64 `json:"ms"`
}

// Idempotency identifies a client's retried request.
type Idempotency struct {
	Key string `json:"k"`
	// Fingerprint is SHA-256 over method, path and body, computed by the proposer.
	Fingerprint []byte `json:"f"`
}

// CreateActions creates the valid rows all together or not at all. A JSON
// create is one row; a CSV create is many. Rows that failed static
// validation in the proposer are carried with their error so that the
// remembered idempotent response is complete.
type CreateActions struct {
	// CSV is true for a batch create (the response shape differs).
	CSV  bool        `json:"csv,omitempty"`
	Rows []CreateRow `json:"rows"`
	// DefaultTTLMS and MaxTTLMS are the proposing server's settings; they
	// ride in the entry so that every node decides alike.
	DefaultTTLMS int64 `json:"dttl"`
	MaxTTLMS     int64 `json:"mttl"`
	// MaxActions is the proposing server's quota of stored actions per
	// client, carried for the same reason: 0 means DefaultMaxActions, a
	// negative value means no quota.
	MaxActions int64 `json:"maxa,omitempty"`
}

// CreateRow is one action to create, or a row already known to be invalid.
type CreateRow struct {
	Row int `json:"row,omitempty"` // CSV row number (header is row 1)
	// Error and Message are set for a row that failed static validation.
	Error   Code   `json:"err,omitempty"`
	Message string `json:"msg,omitempty"`

	ActionID      string `json:"id,omitempty"`
	SealedPayload []byte `json:"p,omitempty"`
	PINHash       []byte `json:"pin,omitempty"`
	ActiveAt      int64  `json:"a,omitempty"` // 0: the entry's time
	ExpiresAt     int64  `json:"e,omitempty"` // 0: ActiveAt... see DESIGN: now + DefaultTTLMS
}

// Consume tries to consume one action.
type Consume struct {
	ActionID string `json:"id"`
	// PINGiven is true when the request carried a PIN; PINHash is its keyed
	// hash under the action id, computed by the proposer.
	PINGiven bool   `json:"pg,omitempty"`
	PINHash  []byte `json:"ph,omitempty"`
	Consumer []byte `json:"cons,omitempty"`
}

// Cancel cancels one action.
type Cancel struct {
	ActionID string `json:"id"`
}

// CreateClient registers a tenant.
type CreateClient struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	SecretHash []byte `json:"sh"`
}

// RevokeClient revokes a tenant at once.
type RevokeClient struct {
	ID string `json:"id"`
}

// KeyCheck records the check value of the cluster key (secure.Keys.CheckValue)
// in the replicated state. The first record wins for the life of the state;
// a later one with another value is refused with CodeKeyMismatch, so nodes
// started with another key learn it before they seal or open anything.
type KeyCheck struct {
	Value []byte `json:"v"`
}

// Result is the FSM's answer to one command. It is what an idempotent
// repeat gets back, so it must be enough to render the full response.
type Result struct {
	Code    Code   `json:"code,omitempty"`
	Message string `json:"msg,omitempty"`
	// Action is the action after the command (for create, consume, cancel
	// and their typed errors: consumedAt, expiresAt, activeAt, canceledAt...).
	// Its SealedPayload is set only for a successful consume (the one
	// response that shows the payload); nil for not-found.
	Action *Action `json:"action,omitempty"`
	// AttemptsRemaining is set with CodeInvalidPIN.
	AttemptsRemaining int `json:"left,omitempty"`
	// Rows holds the per-row outcome of a CSV create, in row order.
	Rows []RowResult `json:"rows,omitempty"`
	// Client is set by CreateClient and RevokeClient.
	Client *Client `json:"client,omitempty"`
	// KeyCheck is the check value recorded in the state after a
	// CmdRecordKeyCheck (the earlier one when the command was refused).
	KeyCheck []byte `json:"keyCheck,omitempty"`
	// Replayed is true when the result comes from the idempotency record.
	// It is not part of the stored record.
	Replayed bool `json:"-"`
	// Time is the FSM time the command was decided at (Unix ms).
	Time int64 `json:"time"`
}

// RowResult is one CSV row's outcome.
type RowResult struct {
	Row      int    `json:"row"`
	ActionID string `json:"actionId,omitempty"`
	Error    Code   `json:"error,omitempty"`
	Message  string `json:"message,omitempty"`
}
