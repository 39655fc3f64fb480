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
		default:
			s.Canceled = true
			return expected{Status: 200}, s
		}
	case OpVerify:
		if !s.Exists {
			return expected{Status: 404, Code: "action_not_found"}, s
		}
		e := expected{Status: 200, State: "active", Fails: s.Fails}
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
			e, next := step(s, op)
			if indefinite(op) {
				if next == s || e.Status < 0 {
					return []interface{}{s}
				}
				return []interface{}{s, next}
			}
			if e.Status < 0 || !matches(e, op) {
				return nil
			}
			return []interface{}{next}
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
			st := "active"
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
