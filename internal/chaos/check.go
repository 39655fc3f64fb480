package chaos

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Anomaly is one violation of the contract found in a history.
type Anomaly struct {
	// Kind is a stable short name, e.g. "double-consume" or "lost-write".
	Kind   string `json:"kind"`
	Action string `json:"action,omitempty"`
	Detail string `json:"detail"`
	// Ops are the ids of the operations involved.
	Ops []int `json:"ops,omitempty"`
}

// String renders the anomaly on one line.
func (a Anomaly) String() string {
	s := a.Kind
	if a.Action != "" {
		s += " " + a.Action
	}
	return s + ": " + a.Detail
}

// Anomaly kinds reported by Check.
const (
	KindNotLinearizable  = "not-linearizable"
	KindDoubleConsume    = "double-consume"
	KindLostWrite        = "lost-write"
	KindTooManyPINs      = "too-many-wrong-pins"
	KindConsumedAtDiffer = "consumed-at-disagreement"
	KindWrongPayload     = "wrong-payload"
	KindReplayMismatch   = "idempotent-replay-mismatch"
	KindUnexpected       = "unexpected-response"
	KindDiverged         = "replicas-diverged"
	KindCheckerTimeout   = "checker-timeout"
	KindClockBackwards   = "time-went-backwards"
	KindMembership       = "membership-not-restored"
	KindOutsideWindow    = "consume-outside-window"
	KindReplayDiverged   = "log-replay-diverged"
)

// Report is the result of checking a history.
type Report struct {
	Ops int `json:"ops"`
	// ByOutcome counts logical operations by "kind status code".
	ByOutcome map[string]int `json:"byOutcome"`
	// Unknown counts operations that never got a definite answer.
	Unknown int `json:"unknown"`
	// Retried counts operations that needed more than one attempt.
	Retried int `json:"retried"`
	// Actions is how many actions the history touches.
	Actions int `json:"actions"`
	// Linearizable is porcupine's verdict: Ok, Illegal or Unknown (timeout).
	Linearizable string    `json:"linearizable"`
	Anomalies    []Anomaly `json:"anomalies"`
	// WindowConsumes counts the successful consumes whose consumedAt was
	// checked against the window of their create's answer; WindowShort
	// those of actions created with a short window (Op.Window), and
	// WindowStamps every consumedAt checked (also from 409 and verify
	// answers).
	WindowConsumes int `json:"windowConsumes"`
	WindowShort    int `json:"windowShort"`
	WindowStamps   int `json:"windowStamps"`

	// illegal lists the actions whose sub-history is not linearizable.
	illegal []string
}

// OK reports whether the history showed no anomaly.
func (r *Report) OK() bool { return len(r.Anomalies) == 0 }

func (r *Report) add(a Anomaly) { r.Anomalies = append(r.Anomalies, a) }

// expectedStatus reports whether SPEC.md allows the answer "status code"
// (as rendered by statusKey) for an operation. A short-window create may
// answer 400: the leader's clock (shifted by a clock fault) may already be
// past its expires_at.
func expectedStatus(op *Op, key string) bool {
	kind := op.Kind
	switch key {
	case "503 unavailable":
		return true
	case "503 outcome_unknown":
		return kind != OpVerify
	case "404 action_not_found":
		return kind != OpCreate
	}
	switch kind {
	case OpCreate:
		return key == "201" || (op.Window && key == "400 invalid_request")
	case OpConsume:
		switch key {
		case "200", "401 pin_required", "401 invalid_pin", "409 already_used", "410 canceled",
			"409 not_active", "410 expired":
			return true
		}
	case OpCancel:
		return key == "200" || key == "409 already_used" || key == "410 expired"
	case OpVerify:
		return key == "200"
	}
	return false
}

func statusKey(status int, code string) string {
	if code == "" {
		return fmt.Sprint(status)
	}
	return fmt.Sprintf("%d %s", status, code)
}

// Check checks a history: porcupine linearizability per action (bounded
// by timeout) and the direct exactly-once checks, which name the anomaly.
func Check(ctx context.Context, ops []*Op, timeout time.Duration) *Report {
	r := &Report{Ops: len(ops), ByOutcome: map[string]int{}, Anomalies: []Anomaly{}}
	byAction := map[string][]*Op{}
	for _, op := range ops {
		k := string(op.Kind) + " unknown"
		if !op.Outcome.Unknown {
			k = string(op.Kind) + " " + statusKey(op.Outcome.Status, op.Outcome.Code)
		}
		if op.Final {
			k = "final " + k
		}
		r.ByOutcome[k]++
		if op.Outcome.Unknown {
			r.Unknown++
		}
		if len(op.Attempts) > 1 {
			r.Retried++
		}
		checkAttempts(r, op)
		if op.Action != "" {
			byAction[op.Action] = append(byAction[op.Action], op)
		}
	}
	r.Actions = len(byAction)
	ids := make([]string, 0, len(byAction))
	for id := range byAction {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		checkAction(r, id, byAction[id])
		checkWindow(r, id, byAction[id])
	}
	checkClock(r, ops)
	checkLinearizable(ctx, r, ids, byAction, timeout)
	return r
}

// checkClock checks that the FSM's clock never goes back: a consume that
// returned 200 before another was called has a consumedAt no later than
// the other's (the leader's stamps never go backwards, SPEC.md).
func checkClock(r *Report, ops []*Op) {
	type stamp struct {
		op *Op
		at time.Time
	}
	var byCall []stamp
	for _, op := range ops {
		if op.Kind != OpConsume || !op.OK() || op.Return < 0 {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, op.Outcome.ConsumedAt)
		if err != nil {
			continue
		}
		byCall = append(byCall, stamp{op, at})
	}
	byReturn := append([]stamp(nil), byCall...)
	sort.Slice(byCall, func(i, j int) bool { return byCall[i].op.Call < byCall[j].op.Call })
	sort.Slice(byReturn, func(i, j int) bool { return byReturn[i].op.Return < byReturn[j].op.Return })
	var latest *stamp
	j, reported := 0, 0
	for _, cur := range byCall {
		for ; j < len(byReturn) && byReturn[j].op.Return < cur.op.Call; j++ {
			if latest == nil || byReturn[j].at.After(latest.at) {
				latest = &byReturn[j]
			}
		}
		if latest != nil && cur.at.Before(latest.at) {
			if reported++; reported <= 10 {
				r.add(Anomaly{Kind: KindClockBackwards, Action: cur.op.Action, Ops: []int{latest.op.ID, cur.op.ID},
					Detail: fmt.Sprintf("consumed at %s, after op#%d had returned consumedAt %s", cur.op.Outcome.ConsumedAt, latest.op.ID, latest.op.Outcome.ConsumedAt)})
			}
		}
	}
}

// checkWindow checks that no consume succeeded outside its action's window
// by the leader's stamp: every consumedAt answered for the action (the 200
// of a consume, and the consumedAt repeated by 409 already_used and verify
// answers) lies in [activeAt, expiresAt) of the create's 201.
func checkWindow(r *Report, id string, ops []*Op) {
	var create *Op
	for _, op := range ops {
		if op.Kind == OpCreate && op.OK() && op.Outcome.ActiveAt != "" && op.Outcome.ExpiresAt != "" {
			create = op
			break
		}
	}
	if create == nil {
		return
	}
	from, err1 := time.Parse(time.RFC3339Nano, create.Outcome.ActiveAt)
	until, err2 := time.Parse(time.RFC3339Nano, create.Outcome.ExpiresAt)
	if err1 != nil || err2 != nil {
		r.add(Anomaly{Kind: KindUnexpected, Action: id, Ops: []int{create.ID},
			Detail: fmt.Sprintf("create answered an unparsable window [%q, %q)", create.Outcome.ActiveAt, create.Outcome.ExpiresAt)})
		return
	}
	reported := map[string]bool{}
	inside := func(op *Op, consumedAt string, win bool) {
		at, err := time.Parse(time.RFC3339Nano, consumedAt)
		if err != nil {
			r.add(Anomaly{Kind: KindUnexpected, Action: id, Ops: []int{op.ID}, Detail: fmt.Sprintf("unparsable consumedAt %q", consumedAt)})
			return
		}
		r.WindowStamps++
		if win {
			r.WindowConsumes++
			if create.Window {
				r.WindowShort++
			}
		}
		if !at.Before(from) && at.Before(until) || reported[consumedAt] {
			return
		}
		reported[consumedAt] = true
		r.add(Anomaly{Kind: KindOutsideWindow, Action: id, Ops: []int{create.ID, op.ID},
			Detail: fmt.Sprintf("op#%d answered consumedAt %s, outside the window [%s, %s) the create op#%d answered",
				op.ID, consumedAt, create.Outcome.ActiveAt, create.Outcome.ExpiresAt, create.ID)})
	}
	for _, op := range ops {
		switch op.Kind {
		case OpConsume:
			for _, a := range op.Attempts {
				if a.ConsumedAt != "" && (a.Status == 200 || a.Code == "already_used") {
					inside(op, a.ConsumedAt, a.Status == 200)
				}
			}
		case OpVerify:
			if op.OK() && op.Outcome.ConsumedAt != "" {
				inside(op, op.Outcome.ConsumedAt, false)
			}
		}
	}
}

// checkAttempts flags unexpected answers and replays that differ from the
// first remembered answer of the same Idempotency-Key.
func checkAttempts(r *Report, op *Op) {
	var first *Attempt
	for i := range op.Attempts {
		a := &op.Attempts[i]
		if a.Status == 0 {
			continue
		}
		if !expectedStatus(op, statusKey(a.Status, a.Code)) {
			r.add(Anomaly{Kind: KindUnexpected, Action: op.Action, Ops: []int{op.ID},
				Detail: fmt.Sprintf("%s answered %s (attempt %d on node%d)", op.Kind, statusKey(a.Status, a.Code), i+1, a.Node)})
			continue
		}
		if a.Status == 503 || op.Key == "" {
			continue
		}
		if first == nil {
			first = a
			continue
		}
		if a.Status != first.Status || a.Code != first.Code || a.ConsumedAt != first.ConsumedAt {
			r.add(Anomaly{Kind: KindReplayMismatch, Action: op.Action, Ops: []int{op.ID},
				Detail: fmt.Sprintf("key %s answered %s (consumedAt %q) then %s (consumedAt %q)", op.Key,
					statusKey(first.Status, first.Code), first.ConsumedAt, statusKey(a.Status, a.Code), a.ConsumedAt)})
		}
	}
}

// checkAction runs the direct checks on one action's operations.
func checkAction(r *Report, id string, ops []*Op) {
	var winners, wrongPINs []int
	var created, consumed, canceled bool
	consumedAt := map[string][]int{}
	for _, op := range ops {
		o := op.Outcome
		switch {
		case op.Kind == OpCreate && op.OK():
			created = true
		case op.Kind == OpConsume && op.OK():
			if !op.Final {
				winners = append(winners, op.ID)
				consumed = true
			}
			if !o.PayloadOK {
				r.add(Anomaly{Kind: KindWrongPayload, Action: id, Ops: []int{op.ID}, Detail: "consume returned a payload other than the one created"})
			}
		case op.Kind == OpConsume && !o.Unknown && o.Code == "invalid_pin":
			wrongPINs = append(wrongPINs, op.ID)
		case op.Kind == OpCancel && op.OK():
			canceled = true
		case op.Kind == OpVerify && op.OK() && o.FailedPINs > MaxPINAttempts:
			r.add(Anomaly{Kind: KindTooManyPINs, Action: id, Ops: []int{op.ID}, Detail: fmt.Sprintf("verify reports %d failed PIN attempts", o.FailedPINs)})
		}
		for _, a := range op.Attempts {
			if a.ConsumedAt != "" && (a.Status == 200 || a.Code == "already_used") {
				consumedAt[a.ConsumedAt] = append(consumedAt[a.ConsumedAt], op.ID)
			}
		}
		if op.Kind == OpVerify && op.OK() && o.ConsumedAt != "" {
			consumedAt[o.ConsumedAt] = append(consumedAt[o.ConsumedAt], op.ID)
		}
	}
	if len(winners) > 1 {
		r.add(Anomaly{Kind: KindDoubleConsume, Action: id, Ops: winners,
			Detail: fmt.Sprintf("%d consumes with different Idempotency-Keys got 200", len(winners))})
	}
	if len(wrongPINs) > MaxPINAttempts {
		r.add(Anomaly{Kind: KindTooManyPINs, Action: id, Ops: wrongPINs,
			Detail: fmt.Sprintf("%d wrong PINs answered invalid_pin (at most %d may count)", len(wrongPINs), MaxPINAttempts)})
	}
	if len(consumedAt) > 1 {
		var all []int
		var vals []string
		for v, ids := range consumedAt {
			vals = append(vals, v)
			all = append(all, ids...)
		}
		sort.Strings(vals)
		sort.Ints(all)
		r.add(Anomaly{Kind: KindConsumedAtDiffer, Action: id, Ops: all,
			Detail: "answers disagree on consumedAt: " + strings.Join(vals, ", ")})
	}
	// Lost writes: the read-backs after healing must show every
	// acknowledged write.
	for _, op := range ops {
		if !op.Final || op.Kind != OpVerify || op.Outcome.Unknown {
			continue
		}
		o := op.Outcome
		switch {
		case created && o.Status == 404:
			r.add(Anomaly{Kind: KindLostWrite, Action: id, Ops: []int{op.ID}, Detail: "acknowledged create is gone after healing"})
		case consumed && o.Status == 200 && !(o.State == "consumed" && o.Reason == "consumed"):
			r.add(Anomaly{Kind: KindLostWrite, Action: id, Ops: append([]int{op.ID}, winners...),
				Detail: fmt.Sprintf("acknowledged consume reads back as %s after healing", o.State)})
		case canceled && o.Status == 200 && o.State != "canceled":
			r.add(Anomaly{Kind: KindLostWrite, Action: id, Ops: []int{op.ID},
				Detail: fmt.Sprintf("acknowledged cancel reads back as %s after healing", o.State)})
		case o.Status == 200 && len(wrongPINs) > o.FailedPINs && len(wrongPINs) <= MaxPINAttempts:
			r.add(Anomaly{Kind: KindLostWrite, Action: id, Ops: append([]int{op.ID}, wrongPINs...),
				Detail: fmt.Sprintf("%d acknowledged wrong PINs but %d counted after healing", len(wrongPINs), o.FailedPINs)})
		}
	}
}

// checkLinearizable runs porcupine on each action's sub-history.
func checkLinearizable(ctx context.Context, r *Report, ids []string, byAction map[string][]*Op, timeout time.Duration) {
	model := Model()
	deadline := time.Now().Add(timeout)
	r.Linearizable = string(porcupine.Ok)
	for _, id := range ids {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			r.Linearizable = string(porcupine.Unknown)
			r.add(Anomaly{Kind: KindCheckerTimeout, Detail: "linearizability check ran out of time; raise -check-timeout"})
			return
		}
		switch porcupine.CheckOperationsTimeout(model, porcupineOps(byAction[id]), left) {
		case porcupine.Illegal:
			r.Linearizable = string(porcupine.Illegal)
			r.illegal = append(r.illegal, id)
			var opIDs []int
			var lines []string
			for _, op := range byAction[id] {
				opIDs = append(opIDs, op.ID)
				if len(lines) < 12 {
					lines = append(lines, "\n       "+op.String())
				}
			}
			if len(byAction[id]) > len(lines) {
				lines = append(lines, fmt.Sprintf("\n       ... %d more", len(byAction[id])-len(lines)))
			}
			r.add(Anomaly{Kind: KindNotLinearizable, Action: id, Ops: opIDs,
				Detail: "no order of this action's operations is allowed by SPEC.md (see the visualization):" + strings.Join(lines, "")})
		case porcupine.Unknown:
			r.Linearizable = string(porcupine.Unknown)
			r.add(Anomaly{Kind: KindCheckerTimeout, Action: id, Detail: "linearizability check timed out for this action"})
			return
		}
	}
}

// maxVisualized bounds how many non-linearizable actions Visualize draws.
const maxVisualized = 20

// Visualize writes porcupine's HTML visualization of the first actions that
// are not linearizable (or of every action when all are), for a browser.
func Visualize(r *Report, ops []*Op, w io.Writer, timeout time.Duration) error {
	sel := ops
	if len(r.illegal) > 0 {
		// A few actions are enough to read; hundreds make a huge page.
		want := map[string]bool{}
		for _, id := range r.illegal[:min(len(r.illegal), maxVisualized)] {
			want[id] = true
		}
		sel = nil
		for _, op := range ops {
			if want[op.Action] {
				sel = append(sel, op)
			}
		}
	}
	model := Model()
	_, info := porcupine.CheckOperationsVerbose(model, porcupineOps(sel), timeout)
	if err := porcupine.Visualize(model, info, w); err != nil {
		return fmt.Errorf("porcupine visualization: %w", err)
	}
	return nil
}
