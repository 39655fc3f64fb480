// Package chaos is ExactOnce's Jepsen-style fault-injection harness: it runs a
// workload against a real three-node cluster, injects process and network
// faults, records every operation with its call and return times and outcome,
// and checks the history for linearizability (porcupine) and for the
// exactly-once guarantees of SPEC.md.
package chaos

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"
)

// OpKind names what an operation did.
type OpKind string

// The recorded operation kinds.
const (
	OpCreate  OpKind = "create"
	OpConsume OpKind = "consume"
	OpVerify  OpKind = "verify"
	OpCancel  OpKind = "cancel"
)

// Attempt is one HTTP request of a logical operation. A logical operation
// (one Idempotency-Key) is retried after an unknown outcome; every try is
// kept for the record.
type Attempt struct {
	Node   int    `json:"node"`
	Call   int64  `json:"call"`
	Return int64  `json:"return"`
	Status int    `json:"status"`
	Code   string `json:"code,omitempty"`
	Err    string `json:"err,omitempty"`
	// ConsumedAt is the consumedAt of a 200 consume or a 409 already_used.
	ConsumedAt string `json:"consumedAt,omitempty"`
	// PayloadOK reports that a 200 consume returned the created payload.
	PayloadOK bool `json:"payloadOk,omitempty"`

	resp response
}

// Outcome is what a logical operation finally answered. Status 0 with
// Unknown set means no definite answer was ever received: the operation may
// or may not have taken effect.
type Outcome struct {
	Unknown bool   `json:"unknown,omitempty"`
	Status  int    `json:"status,omitempty"`
	Code    string `json:"code,omitempty"`
	// State, Reason and FailedPINs are parsed from a verify answer.
	State      string `json:"state,omitempty"`
	Reason     string `json:"reason,omitempty"`
	FailedPINs int    `json:"failedPins,omitempty"`
	// AttemptsRemaining is parsed from a 401 invalid_pin answer.
	AttemptsRemaining int `json:"attemptsRemaining,omitempty"`
	// ConsumedAt is parsed from consume (200 or 409) and verify answers.
	ConsumedAt string `json:"consumedAt,omitempty"`
	// PayloadOK reports, for a 200 consume, that the payload returned is
	// the payload the action was created with.
	PayloadOK bool `json:"payloadOk,omitempty"`
	// ActiveAt and ExpiresAt are the action's window as a 201 create (or a
	// 200 verify) answered it.
	ActiveAt  string `json:"activeAt,omitempty"`
	ExpiresAt string `json:"expiresAt,omitempty"`
}

// Op is one logical operation of the history. Times are nanoseconds since
// the start of the run; Return is -1 while the outcome is unknown.
type Op struct {
	ID      int    `json:"id"`
	Process int    `json:"process"`
	Kind    OpKind `json:"kind"`
	Action  string `json:"action,omitempty"`
	Key     string `json:"key,omitempty"`
	// PIN describes the PIN sent: "" none, "right" or "wrong". HasPIN, on
	// a create, says the action requires a PIN.
	PIN    string `json:"pin,omitempty"`
	HasPIN bool   `json:"hasPin,omitempty"`
	// Window, on a create, marks an action created with a short window
	// (active_at a little ahead, expires_at shortly after): its consumes
	// may answer 409 not_active or 410 expired, and the create itself 400
	// when the leader's clock is already past expires_at.
	Window bool `json:"window,omitempty"`
	// Final marks the read-backs done after healing.
	Final    bool      `json:"final,omitempty"`
	Call     int64     `json:"call"`
	Return   int64     `json:"return"`
	Outcome  Outcome   `json:"outcome"`
	Attempts []Attempt `json:"attempts,omitempty"`

	body []byte   // request body, kept to retry after an unknown outcome
	last response // the last answer parsed
}

// parsed builds a definite outcome from one attempt's answer.
func (o *Op) parsed(a Attempt) Outcome {
	r := a.resp
	out := Outcome{Status: a.Status, Code: a.Code, ConsumedAt: r.ConsumedAt, Reason: r.ConsumedReason,
		AttemptsRemaining: r.AttemptsRemaining, PayloadOK: a.PayloadOK, ActiveAt: r.ActiveAt, ExpiresAt: r.ExpiresAt}
	if o.Kind == OpVerify && a.Status == 200 {
		out.State, out.FailedPINs = r.State, r.FailedPINAttempts
	}
	return out
}

// Definite reports whether the operation got a definite answer.
func (o *Op) Definite() bool { return !o.Outcome.Unknown }

// OK reports a definite 2xx answer.
func (o *Op) OK() bool {
	return !o.Outcome.Unknown && o.Outcome.Status >= 200 && o.Outcome.Status < 300
}

// String renders the operation for reports.
func (o *Op) String() string {
	res := "unknown"
	if !o.Outcome.Unknown {
		res = fmt.Sprint(o.Outcome.Status)
		if o.Outcome.Code != "" {
			res += " " + o.Outcome.Code
		}
		if o.Outcome.State != "" {
			res += fmt.Sprintf(" state=%s failedPins=%d", o.Outcome.State, o.Outcome.FailedPINs)
		}
	}
	if n := len(o.Attempts); n > 0 {
		res += fmt.Sprintf(" (node%d", o.Attempts[n-1].Node)
		if n > 1 {
			res += fmt.Sprintf(", %d tries", n)
		}
		res += ")"
	}
	pin := ""
	if o.PIN != "" {
		pin = " pin=" + o.PIN
	}
	key := ""
	if o.Key != "" {
		key = " key=" + o.Key
	}
	return fmt.Sprintf("op#%d p%d %s %s%s%s [%s, %s] -> %s", o.ID, o.Process, o.Kind, o.Action, pin, key,
		time.Duration(o.Call), retString(o.Return), res)
}

func retString(r int64) string {
	if r < 0 {
		return "∞"
	}
	return time.Duration(r).String()
}

// History is a concurrency-safe, append-only record of operations.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []*Op
}

// NewHistory starts a history whose time zero is now.
func NewHistory() *History { return &History{start: time.Now()} }

// Now returns the history's clock: nanoseconds since its start (monotonic).
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Add records a finished operation and assigns its id.
func (h *History) Add(op *Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.ID = len(h.ops)
	h.ops = append(h.ops, op)
}

// Ops returns a snapshot of the recorded operations sorted by call time.
func (h *History) Ops() []*Op {
	h.mu.Lock()
	out := append([]*Op(nil), h.ops...)
	h.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].Call < out[j].Call })
	return out
}

// MarshalHistory renders ops as indented JSON.
func MarshalHistory(ops []*Op) ([]byte, error) {
	b, err := json.MarshalIndent(ops, "", " ")
	if err != nil {
		return nil, fmt.Errorf("marshal history: %w", err)
	}
	return b, nil
}

// UnmarshalHistory parses a history written by MarshalHistory.
func UnmarshalHistory(b []byte) ([]*Op, error) {
	var ops []*Op
	if err := json.Unmarshal(b, &ops); err != nil {
		return nil, fmt.Errorf("parse history: %w", err)
	}
	return ops, nil
}
