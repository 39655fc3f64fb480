package chaos

import (
	"fmt"
	"sort"

	"github.com/anishathalye/porcupine"
)

// MaxPINAttempts is SPEC.md's number of wrong PINs that burns an action.
const MaxPINAttempts = 3

// actionState is the model's view of one action. It is a comparable value so
// porcupine can compare and cache states with ==.
type actionState struct {
	Exists   bool
	HasPIN   bool
	Consumed bool // consumed by a winner
	Burned   bool // consumed by the third wrong PIN
	Canceled bool
	Fails    int
	// Windowed marks an action created with a short activation window
	// (Op.Window); only such an action leaves the active phase.
	Windowed bool
	// Phase is where the time of the last write linearized so far lies
	// relative to the action's window (the leader's stamps never go back,
	// so a write never sees an earlier phase than the writes before it).
	Phase phase
}

// phase is the position of a time relative to an action's window
// [activeAt, expiresAt): before it, inside it, or at/after its end.
type phase int8

// The phases, in time order. The zero value is active: an action created
// with the default activation time is active from its create on, and its
// expiry (24 h) lies beyond any run.
const (
	phasePending phase = -1
	phaseActive  phase = 0
	phaseExpired phase = 1
)

// name is the verify state of an open (not settled) action in the phase.
func (p phase) name() string {
	switch p {
	case phasePending:
		return "pending"
	case phaseExpired:
		return "expired"
	}
	return "active"
}

// expected is the answer SPEC.md requires for an operation in a state.
type expected struct {
	Status    int
	Code      string
	State     string
	Reason    string
	Fails     int
	Remaining int
}

// step applies op to s as SPEC.md's sequential specification: the answer
// the operation must get and the state after it.
func step(s actionState, op *Op) (expected, actionState) {
	switch op.Kind {
	case OpCreate:
		if s.Exists {
			// A second create of one id cannot happen: ids are random.
			return expected{Status: -1}, s
		}
		s.Exists, s.HasPIN = true, op.HasPIN
		if op.Window {
			// Its window opens a little after the create (by the client's
			// clock); the model lets any later operation find it open or
			// already closed, never going back.
			s.Windowed, s.Phase = true, phasePending
		}
		return expected{Status: 201}, s
	case OpConsume:
		switch {
		case !s.Exists:
			return expected{Status: 404, Code: "action_not_found"}, s
		case s.Canceled:
			return expected{Status: 410, Code: "canceled"}, s
		case s.Consumed:
			return expected{Status: 409, Code: "already_used", Reason: "consumed"}, s
		case s.Burned:
			return expected{Status: 409, Code: "already_used", Reason: "invalid_pin_burned"}, s
		case s.Phase == phaseExpired:
			return expected{Status: 410, Code: "expired"}, s
		case s.Phase == phasePending:
			return expected{Status: 409, Code: "not_active"}, s
		case s.HasPIN && op.PIN == "":
			return expected{Status: 401, Code: "pin_required"}, s
		case s.HasPIN && op.PIN == "wrong":
			s.Fails++
			if s.Fails >= MaxPINAttempts {
				s.Burned = true
			}
			return expected{Status: 401, Code: "invalid_pin", Remaining: MaxPINAttempts - s.Fails}, s
		default:
			s.Consumed = true
			return expected{Status: 200}, s
		}
	case OpCancel:
		switch {
		case !s.Exists:
			return expected{Status: 404, Code: "action_not_found"}, s
		case s.Consumed || s.Burned:
			return expected{Status: 409, Code: "already_used"}, s
		case !s.Canceled && s.Phase == phaseExpired:
			return expected{Status: 410, Code: "expired"}, s
		default:
			s.Canceled = true
			return expected{Status: 200}, s
		}
	case OpVerify:
		if !s.Exists {
			return expected{Status: 404, Code: "action_not_found"}, s
		}
		e := expected{Status: 200, State: s.Phase.name(), Fails: s.Fails}
		switch {
		case s.Consumed:
			e.State, e.Reason = "consumed", "consumed"
		case s.Burned:
			e.State, e.Reason = "consumed", "invalid_pin_burned"
		case s.Canceled:
			e.State = "canceled"
		}
		return e, s
	}
	return expected{Status: -1}, s
}

// matches reports whether a definite outcome is the expected answer.
func matches(e expected, op *Op) bool {
	o := op.Outcome
	if o.Status != e.Status || o.Code != e.Code {
		return false
	}
	switch {
	case op.Kind == OpVerify && e.Status == 200:
		return o.State == e.State && o.Reason == e.Reason && o.FailedPINs == e.Fails
	case e.Code == "invalid_pin":
		return o.AttemptsRemaining == e.Remaining
	case e.Code == "already_used" && op.Kind == OpConsume && o.Reason != "":
		return o.Reason == e.Reason
	}
	return true
}

// noEffect reports a definite answer that SPEC.md says changed nothing:
// 503 unavailable (nothing was proposed).
func noEffect(op *Op) bool {
	return !op.Outcome.Unknown && op.Outcome.Status == 503 && op.Outcome.Code == "unavailable"
}

// indefinite reports an answer the model cannot interpret (unknown, or an
// unexpected status such as 500): the operation may or may not have applied.
func indefinite(op *Op) bool {
	if op.Outcome.Unknown {
		return true
	}
	if noEffect(op) {
		return false
	}
	return op.Outcome.Status >= 500 || op.Outcome.Status == 0
}

// Model is the porcupine model of one action's history: create, consume
// (with right, wrong or no PIN), cancel and verify. An operation with an
// unknown outcome may or may not have taken effect; a verify with an unknown
// outcome constrains nothing. Histories are partitioned by action id.
//
// Time is not observable in a failed answer, so an action with a short
// window (Op.Window) has a phase (pending, active, expired) that any write
// may find advanced but never back (the leader's stamps never go back): a
// 409 not_active says the action was open and before its window at that
// point, a 410 expired that it was open and past it, a 200 that it was
// inside. A verify may show a later phase than the writes before it (the
// reading node's clock may be ahead of the leader's) but never an earlier
// one (a node derives states no earlier than its applied stamps), and it
// does not advance the phase. When each consume's stamp really lies in the
// window is checked directly (checkWindows).
func Model() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition: partitionByAction,
		Init:      func() []interface{} { return []interface{}{actionState{}} },
		Step: func(state, input, _ interface{}) []interface{} {
			s := state.(actionState)
			op := input.(*Op)
			if noEffect(op) {
				return []interface{}{s}
			}
			var out []interface{}
			add := func(n actionState) {
				for _, o := range out {
					if o.(actionState) == n {
						return
					}
				}
				out = append(out, n)
			}
			unknown := indefinite(op)
			if unknown {
				add(s) // it may not have taken effect
			}
			for _, p := range phases(s) {
				at := s
				at.Phase = p
				e, next := step(at, op)
				if op.Kind == OpVerify {
					// A read does not move the writes' time: its node's
					// clock may run ahead of the next leader's stamp.
					next.Phase = s.Phase
				}
				if e.Status < 0 {
					continue
				}
				if unknown || matches(e, op) {
					add(next)
				}
			}
			return out
		},
		Equal: func(a, b interface{}) bool { return a.(actionState) == b.(actionState) },
		DescribeOperation: func(input, _ interface{}) string {
			return input.(*Op).String()
		},
		DescribeState: func(state interface{}) string {
			s := state.(actionState)
			if !s.Exists {
				return "absent"
			}
			st := s.Phase.name()
			switch {
			case s.Consumed:
				st = "consumed"
			case s.Burned:
				st = "burned"
			case s.Canceled:
				st = "canceled"
			}
			return fmt.Sprintf("%s pin=%v fails=%d", st, s.HasPIN, s.Fails)
		},
	}
	return nm.ToModel()
}

// phases lists the phases an operation may find an action in: its phase
// so far or a later one (time passes). Without a window only active.
func phases(s actionState) []phase {
	if !s.Windowed {
		return []phase{s.Phase}
	}
	out := make([]phase, 0, 3)
	for p := s.Phase; p <= phaseExpired; p++ {
		out = append(out, p)
	}
	return out
}

// partitionByAction splits a history into one sub-history per action.
func partitionByAction(history []porcupine.Operation) [][]porcupine.Operation {
	groups := map[string][]porcupine.Operation{}
	for _, o := range history {
		id := o.Input.(*Op).Action
		groups[id] = append(groups[id], o)
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([][]porcupine.Operation, 0, len(keys))
	for _, k := range keys {
		out = append(out, groups[k])
	}
	return out
}

// porcupineOps converts recorded operations with a known action id into
// porcupine operations. Unknown outcomes return after every other event.
func porcupineOps(ops []*Op) []porcupine.Operation {
	var end int64
	for _, op := range ops {
		end = max(end, op.Call, op.Return)
	}
	out := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		if op.Action == "" {
			continue
		}
		ret := op.Return
		if op.Outcome.Unknown || ret < 0 {
			ret = end + 1
		}
		out = append(out, porcupine.Operation{ClientId: op.Process, Input: op, Call: op.Call, Output: op, Return: ret})
	}
	return out
}
