package chaos

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// hb builds synthetic histories: each op is given explicit times.
type hb struct{ ops []*Op }

func (h *hb) add(op Op) *Op {
	op.ID = len(h.ops)
	if len(op.Attempts) == 0 && !op.Outcome.Unknown {
		op.Attempts = []Attempt{{Call: op.Call, Return: op.Return, Status: op.Outcome.Status, Code: op.Outcome.Code, ConsumedAt: op.Outcome.ConsumedAt}}
	}
	if op.Outcome.Unknown {
		op.Return = -1
	}
	h.ops = append(h.ops, &op)
	return &op
}

func (h *hb) create(id string, pin bool, call, ret int64) {
	h.add(Op{Process: 0, Kind: OpCreate, Action: id, Key: id + "-c", HasPIN: pin, Call: call, Return: ret, Outcome: Outcome{Status: 201}})
}

func (h *hb) consume(p int, id, key string, call, ret int64, out Outcome) {
	if out.Status == 200 {
		out.PayloadOK = true
	}
	h.add(Op{Process: p, Kind: OpConsume, Action: id, Key: key, Call: call, Return: ret, Outcome: out})
}

func (h *hb) verify(p int, id string, final bool, call, ret int64, out Outcome) {
	h.add(Op{Process: p, Kind: OpVerify, Action: id, Final: final, Call: call, Return: ret, Outcome: out})
}

const at = "2026-01-01T00:00:00.000Z"

func kinds(r *Report) string {
	var ks []string
	for _, a := range r.Anomalies {
		ks = append(ks, a.Kind)
	}
	return strings.Join(ks, ",")
}

func check(t *testing.T, h *hb) *Report {
	t.Helper()
	r := Check(context.Background(), h.ops, 10*time.Second)
	for _, a := range r.Anomalies {
		t.Logf("anomaly: %s", a)
	}
	return r
}

func TestCheckAcceptsCorrectRace(t *testing.T) {
	h := &hb{}
	h.create("a1", false, 0, 10)
	h.consume(1, "a1", "k1", 20, 40, Outcome{Status: 200, ConsumedAt: at})
	h.consume(2, "a1", "k2", 21, 50, Outcome{Status: 409, Code: "already_used", Reason: "consumed", ConsumedAt: at})
	h.consume(3, "a1", "k3", 22, 60, Outcome{Unknown: true})
	h.verify(4, "a1", true, 100, 110, Outcome{Status: 200, State: "consumed", Reason: "consumed", ConsumedAt: at})
	r := check(t, h)
	if !r.OK() || r.Linearizable != "Ok" {
		t.Fatalf("correct history rejected: %s (%s)", kinds(r), r.Linearizable)
	}
	if r.Unknown != 1 {
		t.Errorf("unknown = %d, want 1", r.Unknown)
	}
}

func TestCheckReportsDoubleConsume(t *testing.T) {
	h := &hb{}
	h.create("a1", false, 0, 10)
	h.consume(1, "a1", "k1", 20, 40, Outcome{Status: 200, ConsumedAt: at})
	h.consume(2, "a1", "k2", 21, 50, Outcome{Status: 200, ConsumedAt: at})
	r := check(t, h)
	if got := kinds(r); !strings.Contains(got, KindDoubleConsume) || !strings.Contains(got, KindNotLinearizable) {
		t.Fatalf("double consume not reported: %q", got)
	}
}

func TestCheckReportsLostAcknowledgedConsume(t *testing.T) {
	h := &hb{}
	h.create("a1", false, 0, 10)
	h.consume(1, "a1", "k1", 20, 40, Outcome{Status: 200, ConsumedAt: at})
	h.verify(2, "a1", true, 100, 110, Outcome{Status: 200, State: "active"})
	r := check(t, h)
	if got := kinds(r); !strings.Contains(got, KindLostWrite) || !strings.Contains(got, KindNotLinearizable) {
		t.Fatalf("lost consume not reported: %q", got)
	}
}

func TestCheckReportsLostAcknowledgedCreate(t *testing.T) {
	h := &hb{}
	h.create("a1", false, 0, 10)
	h.verify(2, "a1", true, 100, 110, Outcome{Status: 404, Code: "action_not_found"})
	r := check(t, h)
	if got := kinds(r); !strings.Contains(got, KindLostWrite) || !strings.Contains(got, KindNotLinearizable) {
		t.Fatalf("lost create not reported: %q", got)
	}
}

func TestCheckReportsStaleRead(t *testing.T) {
	h := &hb{}
	h.create("a1", false, 0, 10)
	h.consume(1, "a1", "k1", 20, 40, Outcome{Status: 200, ConsumedAt: at})
	h.verify(2, "a1", false, 50, 60, Outcome{Status: 200, State: "active"})
	h.verify(2, "a1", true, 100, 110, Outcome{Status: 200, State: "consumed", Reason: "consumed", ConsumedAt: at})
	r := check(t, h)
	if got := kinds(r); got != KindNotLinearizable {
		t.Fatalf("stale read: got %q, want only %s", got, KindNotLinearizable)
	}
}

func TestCheckUnknownConsumeMayApplyLate(t *testing.T) {
	h := &hb{}
	h.create("a1", false, 0, 10)
	h.consume(1, "a1", "k1", 20, -1, Outcome{Unknown: true})
	h.verify(2, "a1", false, 50, 60, Outcome{Status: 200, State: "active"})
	h.consume(3, "a1", "k3", 70, 80, Outcome{Status: 409, Code: "already_used", Reason: "consumed", ConsumedAt: at})
	h.verify(2, "a1", true, 100, 110, Outcome{Status: 200, State: "consumed", Reason: "consumed", ConsumedAt: at})
	if r := check(t, h); !r.OK() {
		t.Fatalf("an unknown consume applied late was rejected: %s", kinds(r))
	}
}

func TestCheckIdempotentReplayIsOneWinner(t *testing.T) {
	h := &hb{}
	h.create("a1", false, 0, 10)
	h.add(Op{Process: 1, Kind: OpConsume, Action: "a1", Key: "k1", Call: 20, Return: 90,
		Outcome:  Outcome{Status: 200, ConsumedAt: at, PayloadOK: true},
		Attempts: []Attempt{{Call: 20, Return: 30, Err: "timeout"}, {Call: 40, Return: 45, Status: 503, Code: "outcome_unknown"}, {Call: 80, Return: 90, Status: 200, ConsumedAt: at}}})
	h.consume(2, "a1", "k2", 50, 60, Outcome{Status: 409, Code: "already_used", Reason: "consumed", ConsumedAt: at})
	if r := check(t, h); !r.OK() {
		t.Fatalf("idempotent replay counted as a second winner: %s", kinds(r))
	}
}

func TestCheckReportsReplayMismatch(t *testing.T) {
	h := &hb{}
	h.create("a1", false, 0, 10)
	h.add(Op{Process: 1, Kind: OpConsume, Action: "a1", Key: "k1", Call: 20, Return: 90,
		Outcome:  Outcome{Status: 409, Code: "already_used", Reason: "consumed", ConsumedAt: at},
		Attempts: []Attempt{{Call: 20, Return: 30, Status: 200, ConsumedAt: at}, {Call: 80, Return: 90, Status: 409, Code: "already_used", ConsumedAt: at}}})
	if got := kinds(check(t, h)); !strings.Contains(got, KindReplayMismatch) {
		t.Fatalf("replay mismatch not reported: %q", got)
	}
}

func TestCheckPINs(t *testing.T) {
	good := &hb{}
	good.create("a1", true, 0, 10)
	for i, rem := range []int{2, 1, 0} {
		good.add(Op{Process: 1, Kind: OpConsume, Action: "a1", PIN: "wrong", Key: "w" + string(rune('0'+i)), Call: int64(20 + 10*i), Return: int64(25 + 10*i),
			Outcome: Outcome{Status: 401, Code: "invalid_pin", AttemptsRemaining: rem}})
	}
	good.add(Op{Process: 1, Kind: OpConsume, Action: "a1", PIN: "right", Key: "r", Call: 60, Return: 65,
		Outcome: Outcome{Status: 409, Code: "already_used", Reason: "invalid_pin_burned", ConsumedAt: at}})
	good.verify(2, "a1", true, 100, 110, Outcome{Status: 200, State: "consumed", Reason: "invalid_pin_burned", FailedPINs: 3, ConsumedAt: at})
	if r := check(t, good); !r.OK() {
		t.Fatalf("correct burn rejected: %s", kinds(r))
	}

	bad := &hb{}
	bad.create("a1", true, 0, 10)
	for i := range 4 {
		bad.add(Op{Process: 1 + i, Kind: OpConsume, Action: "a1", PIN: "wrong", Key: "w" + string(rune('0'+i)), Call: 20, Return: 30,
			Outcome: Outcome{Status: 401, Code: "invalid_pin", AttemptsRemaining: 0}})
	}
	if got := kinds(check(t, bad)); !strings.Contains(got, KindTooManyPINs) || !strings.Contains(got, KindNotLinearizable) {
		t.Fatalf("a fourth counted wrong PIN not reported: %q", got)
	}
}

func TestCheckReportsConsumeAfterCancel(t *testing.T) {
	h := &hb{}
	h.create("a1", false, 0, 10)
	h.add(Op{Process: 1, Kind: OpCancel, Action: "a1", Key: "c1", Call: 20, Return: 30, Outcome: Outcome{Status: 200}})
	h.consume(2, "a1", "k2", 40, 50, Outcome{Status: 200, ConsumedAt: at})
	if got := kinds(check(t, h)); !strings.Contains(got, KindNotLinearizable) {
		t.Fatalf("consume after cancel not reported: %q", got)
	}
}

func TestCheckReportsUnexpectedStatus(t *testing.T) {
	h := &hb{}
	h.create("a1", false, 0, 10)
	h.consume(1, "a1", "k1", 20, 30, Outcome{Status: 500, Code: "internal"})
	if got := kinds(check(t, h)); got != KindUnexpected {
		t.Fatalf("got %q, want %s", got, KindUnexpected)
	}
}

func TestVisualizeAndHistoryRoundTrip(t *testing.T) {
	h := &hb{}
	h.create("a1", false, 0, 10)
	h.consume(1, "a1", "k1", 20, 40, Outcome{Status: 200, ConsumedAt: at})
	h.consume(2, "a1", "k2", 21, 50, Outcome{Status: 200, ConsumedAt: at})
	r := check(t, h)
	var buf bytes.Buffer
	if err := Visualize(r, h.ops, &buf, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "<html") {
		t.Fatalf("visualization is not HTML")
	}
	b, err := MarshalHistory(h.ops)
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalHistory(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(Check(context.Background(), back, 5*time.Second)); got != kinds(r) {
		t.Fatalf("re-checked history from JSON reports %q, want %q", got, kinds(r))
	}
}

func TestCheckReportsClockGoingBackwards(t *testing.T) {
	h := &hb{}
	h.create("a1", false, 0, 10)
	h.create("a2", false, 0, 10)
	h.consume(1, "a1", "k1", 20, 30, Outcome{Status: 200, ConsumedAt: "2026-01-01T00:00:10.000Z"})
	h.consume(1, "a2", "k2", 40, 50, Outcome{Status: 200, ConsumedAt: "2026-01-01T00:00:09.000Z"})
	if got := kinds(check(t, h)); got != KindClockBackwards {
		t.Fatalf("got %q, want %s", got, KindClockBackwards)
	}
	ok := &hb{}
	ok.create("a1", false, 0, 10)
	ok.create("a2", false, 0, 10)
	// Concurrent consumes may be stamped in either order.
	ok.consume(1, "a1", "k1", 20, 50, Outcome{Status: 200, ConsumedAt: "2026-01-01T00:00:10.000Z"})
	ok.consume(2, "a2", "k2", 30, 60, Outcome{Status: 200, ConsumedAt: "2026-01-01T00:00:09.000Z"})
	if r := check(t, ok); !r.OK() {
		t.Fatalf("concurrent consumes flagged: %s", kinds(r))
	}
}

// windowCreate records a short-window create whose 201 answered the window
// [activeAt, expiresAt).
func (h *hb) windowCreate(id, activeAt, expiresAt string, call, ret int64) {
	h.add(Op{Process: 0, Kind: OpCreate, Action: id, Key: id + "-c", Window: true, Call: call, Return: ret,
		Outcome: Outcome{Status: 201, ActiveAt: activeAt, ExpiresAt: expiresAt}})
}

func (h *hb) cancel(p int, id, key string, call, ret int64, out Outcome) {
	h.add(Op{Process: p, Kind: OpCancel, Action: id, Key: key, Call: call, Return: ret, Outcome: out})
}

const (
	winFrom  = "2026-01-01T00:00:01.000Z"
	winUntil = "2026-01-01T00:00:03.000Z"
)

func TestCheckReportsConsumeOutsideWindow(t *testing.T) {
	for _, consumedAt := range []string{
		"2026-01-01T00:00:00.999Z", // a millisecond before activeAt
		winUntil,                   // at expiresAt: already expired
		"2026-01-01T00:00:07.000Z", // well after
	} {
		h := &hb{}
		h.windowCreate("a1", winFrom, winUntil, 0, 10)
		h.consume(1, "a1", "k1", 20, 30, Outcome{Status: 200, ConsumedAt: consumedAt})
		r := check(t, h)
		if got := kinds(r); got != KindOutsideWindow {
			t.Errorf("consumedAt %s: got %q, want only %s", consumedAt, got, KindOutsideWindow)
		}
		if r.WindowConsumes != 1 || r.WindowShort != 1 {
			t.Errorf("consumedAt %s: %d window consumes checked (%d short), want 1 (1)", consumedAt, r.WindowConsumes, r.WindowShort)
		}
	}
	// An ordinary action too: a consume stamped before its activeAt.
	h := &hb{}
	h.add(Op{Process: 0, Kind: OpCreate, Action: "a2", Key: "c", Call: 0, Return: 10,
		Outcome: Outcome{Status: 201, ActiveAt: winFrom, ExpiresAt: "2026-01-02T00:00:01.000Z"}})
	h.consume(1, "a2", "k1", 20, 30, Outcome{Status: 200, ConsumedAt: at})
	if got := kinds(check(t, h)); got != KindOutsideWindow {
		t.Errorf("ordinary action consumed before activeAt: got %q, want %s", got, KindOutsideWindow)
	}
}

func TestCheckAcceptsConsumesAroundTheWindow(t *testing.T) {
	h := &hb{}
	// Consumed inside: too early first, the winner at activeAt, then late.
	h.windowCreate("a1", winFrom, winUntil, 0, 10)
	h.consume(1, "a1", "k1", 20, 30, Outcome{Status: 409, Code: "not_active"})
	h.verify(2, "a1", false, 31, 32, Outcome{Status: 200, State: "pending"})
	h.consume(1, "a1", "k2", 40, 50, Outcome{Status: 200, ConsumedAt: winFrom})
	h.consume(3, "a1", "k3", 60, 70, Outcome{Status: 409, Code: "already_used", Reason: "consumed", ConsumedAt: winFrom})
	h.verify(2, "a1", true, 100, 110, Outcome{Status: 200, State: "consumed", Reason: "consumed", ConsumedAt: winFrom})
	// Never consumed: too early, inside (a verify), too late, cancel too late.
	h.windowCreate("a2", winFrom, winUntil, 0, 10)
	h.consume(1, "a2", "k4", 20, 30, Outcome{Status: 409, Code: "not_active"})
	h.verify(2, "a2", false, 35, 36, Outcome{Status: 200, State: "active"})
	h.consume(1, "a2", "k5", 40, 50, Outcome{Status: 410, Code: "expired"})
	h.cancel(1, "a2", "k6", 51, 52, Outcome{Status: 410, Code: "expired"})
	h.consume(3, "a2", "k7", 60, -1, Outcome{Unknown: true})
	h.verify(2, "a2", true, 100, 110, Outcome{Status: 200, State: "expired"})
	// Canceled while pending; canceling again after expiry repeats the 200.
	h.windowCreate("a3", winFrom, winUntil, 0, 10)
	h.cancel(1, "a3", "k8", 20, 30, Outcome{Status: 200})
	h.cancel(1, "a3", "k9", 40, 50, Outcome{Status: 200})
	h.consume(1, "a3", "k10", 60, 70, Outcome{Status: 410, Code: "canceled"})
	h.verify(2, "a3", true, 100, 110, Outcome{Status: 200, State: "canceled"})
	r := check(t, h)
	if !r.OK() || r.Linearizable != "Ok" {
		t.Fatalf("correct window history rejected: %s (%s)", kinds(r), r.Linearizable)
	}
	if r.WindowConsumes != 1 || r.WindowShort != 1 || r.WindowStamps != 3 {
		t.Errorf("checked %d consumes (%d short, %d stamps), want 1 (1, 3)", r.WindowConsumes, r.WindowShort, r.WindowStamps)
	}
}

func TestModelWindowPhasesNeverGoBack(t *testing.T) {
	cases := map[string]func(h *hb){
		"consume 200 after an expired answer": func(h *hb) {
			h.consume(1, "a1", "k1", 20, 30, Outcome{Status: 410, Code: "expired"})
			h.consume(2, "a1", "k2", 40, 50, Outcome{Status: 200, ConsumedAt: "2026-01-01T00:00:02.000Z"})
		},
		"not_active after a consume's 200": func(h *hb) {
			h.consume(1, "a1", "k1", 20, 30, Outcome{Status: 200, ConsumedAt: "2026-01-01T00:00:02.000Z"})
			h.consume(2, "a1", "k2", 40, 50, Outcome{Status: 409, Code: "not_active"})
		},
		"not_active after an expired answer": func(h *hb) {
			h.consume(1, "a1", "k1", 20, 30, Outcome{Status: 410, Code: "expired"})
			h.consume(2, "a1", "k2", 40, 50, Outcome{Status: 409, Code: "not_active"})
		},
		"verify pending after an expired answer": func(h *hb) {
			h.consume(1, "a1", "k1", 20, 30, Outcome{Status: 410, Code: "expired"})
			h.verify(2, "a1", false, 40, 50, Outcome{Status: 200, State: "pending"})
		},
		"expired after a cancel": func(h *hb) {
			h.cancel(1, "a1", "k1", 20, 30, Outcome{Status: 200})
			h.consume(2, "a1", "k2", 40, 50, Outcome{Status: 410, Code: "expired"})
		},
	}
	for name, add := range cases {
		h := &hb{}
		h.windowCreate("a1", winFrom, winUntil, 0, 10)
		add(h)
		if got := kinds(check(t, h)); !strings.Contains(got, KindNotLinearizable) {
			t.Errorf("%s: got %q, want %s", name, got, KindNotLinearizable)
		}
	}
	// An action with the default window (24 h) is never pending or expired
	// during a run.
	h := &hb{}
	h.create("a1", false, 0, 10)
	h.consume(1, "a1", "k1", 20, 30, Outcome{Status: 410, Code: "expired"})
	if got := kinds(check(t, h)); got != KindNotLinearizable {
		t.Errorf("an ordinary action answered expired: got %q, want %s", got, KindNotLinearizable)
	}
	h = &hb{}
	h.create("a1", false, 0, 10)
	h.verify(1, "a1", false, 20, 30, Outcome{Status: 200, State: "pending"})
	if got := kinds(check(t, h)); got != KindNotLinearizable {
		t.Errorf("an ordinary action read back pending: got %q, want %s", got, KindNotLinearizable)
	}
}
