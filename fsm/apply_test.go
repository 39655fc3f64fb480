package fsm

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// TestConsumeExactlyOnceAndPINBurn drives the consume table through the log:
// three wrong PINs burn the action, the burn is durable state, and every
// later consume (even with the right PIN) answers already_used.
func TestConsumeExactlyOnceAndPINBurn(t *testing.T) {
	h := newHarness(t)
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_p", PINHash: pinHash("1234")}))
	if r := h.apply(consumeCmd(clA, t0+1, "act_p")); r.Code != CodePINRequired {
		t.Fatalf("no pin: %q", r.Code)
	}
	for i, want := range []int{2, 1, 0} {
		r := h.apply(consumePIN(clA, t0+2, "act_p", "9999"))
		if r.Code != CodeInvalidPIN || r.AttemptsRemaining != want {
			t.Fatalf("wrong pin %d: %q remaining %d, want %d", i+1, r.Code, r.AttemptsRemaining, want)
		}
	}
	r := h.apply(consumePIN(clA, t0+3, "act_p", "1234"))
	if r.Code != CodeAlreadyUsed || r.Action.ConsumedReason != ReasonPINBurned || r.Action.ConsumedAt != t0+2 {
		t.Fatalf("after burn: %q %+v", r.Code, r.Action)
	}
	a := h.action(clA, "act_p")
	if a.FailedPINAttempts != 3 || a.StateAt(t0+4) != StateConsumed {
		t.Fatalf("stored %+v", a)
	}

	// Plain consume: one winner, then already_used.
	h.mustOK(createCmd(clA, t0+10, CreateRow{ActionID: "act_x"}))
	r = h.mustOK(withConsumer(consumeCmd(clA, t0+11, "act_x"), `{"ip":"1"}`))
	if string(r.Action.SealedPayload) != "sealed:act_x" || r.Action.ConsumedAt != t0+11 {
		t.Fatalf("winner result %+v", r.Action)
	}
	for i := 0; i < 3; i++ {
		r = h.apply(consumeCmd(clA, t0+12, "act_x"))
		if r.Code != CodeAlreadyUsed || r.Action.ConsumedAt != t0+11 || r.Action.SealedPayload != nil {
			t.Fatalf("loser %d: %q %+v", i, r.Code, r.Action)
		}
	}
	if a := h.action(clA, "act_x"); string(a.Consumer) != `{"ip":"1"}` {
		t.Fatalf("consumer %q", a.Consumer)
	}
}

func withConsumer(c *Command, consumer string) *Command {
	c.Consume.Consumer = []byte(consumer)
	return c
}

// TestClientIsolationAndAuth: another client's action is absent, unknown or
// revoked clients are unauthorized, the demo client always exists.
func TestClientIsolationAndAuth(t *testing.T) {
	h := newHarness(t)
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_a"}))
	if r := h.apply(consumeCmd(clB, t0+1, "act_a")); r.Code != CodeNotFound || r.Action != nil {
		t.Fatalf("other client consume: %q", r.Code)
	}
	if r := h.apply(cancelCmd(clB, t0+1, "act_a")); r.Code != CodeNotFound {
		t.Fatalf("other client cancel: %q", r.Code)
	}
	if a := h.action(clB, "act_a"); a != nil {
		t.Fatalf("other client sees the action")
	}
	if r := h.apply(createCmd(clB, t0+1, CreateRow{ActionID: "act_a"})); r.Code != CodeConflict {
		t.Fatalf("id taken by another client: %q", r.Code)
	}
	if r := h.apply(createCmd("cl_nobody", t0+1, CreateRow{ActionID: "act_n"})); r.Code != CodeUnauthorized {
		t.Fatalf("unknown client: %q", r.Code)
	}
	h.mustOK(createCmd(DemoClientID, t0+1, CreateRow{ActionID: "act_demo"}))
	h.mustOK(consumeCmd(DemoClientID, t0+2, "act_demo"))

	r := h.mustOK(revokeCmd(clA, t0+3))
	if r.Client == nil || r.Client.RevokedAt != t0+3 {
		t.Fatalf("revoke result %+v", r.Client)
	}
	if r := h.apply(consumeCmd(clA, t0+4, "act_a")); r.Code != CodeUnauthorized {
		t.Fatalf("revoked client consume: %q", r.Code)
	}
	if r := h.mustOK(revokeCmd(clA, t0+5)); r.Client.RevokedAt != t0+3 {
		t.Fatalf("revoke again changed revokedAt")
	}
	if r := h.apply(revokeCmd("cl_nobody", t0+5)); r.Code != CodeClientNotFound {
		t.Fatalf("revoke unknown: %q", r.Code)
	}
	if r := h.apply(clientCmd(clB, t0+5)); r.Code != CodeConflict {
		t.Fatalf("duplicate client: %q", r.Code)
	}
	if r := h.apply(clientCmd(DemoClientID, t0+5)); r.Code != CodeConflict {
		t.Fatalf("demo client: %q", r.Code)
	}
	err := h.f.View(func(v *View) error {
		cs, err := v.Clients()
		if err != nil {
			return err
		}
		if len(cs) != 2 || cs[0].ID != clA || cs[1].ID != clB || cs[0].RevokedAt == 0 {
			return fmt.Errorf("clients %+v", cs)
		}
		c, err := v.Client(clB)
		if err != nil || c == nil || c.Name != "name cl_b" {
			return fmt.Errorf("client %+v %v", c, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCreateThroughLog covers defaults, validation, id conflicts and the CSV
// all-valid-rows-together shape.
func TestCreateThroughLog(t *testing.T) {
	h := newHarness(t)
	r := h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_1", PINHash: pinHash("1")}))
	if r.Action == nil || r.Action.CreatedAt != t0 || r.Action.ExpiresAt != t0+DefaultTTLMS ||
		r.Action.ClientID != clA || len(r.Action.PINHash) == 0 {
		t.Fatalf("create result %+v", r.Action)
	}
	r = h.apply(createCmd(clA, t0, CreateRow{ActionID: "act_1"}))
	if r.Code != CodeConflict {
		t.Fatalf("duplicate id: %q", r.Code)
	}
	if a := h.action(clA, "act_1"); len(a.PINHash) == 0 {
		t.Fatalf("duplicate create overwrote the action")
	}
	r = h.apply(createCmd(clA, t0, CreateRow{ActionID: "act_2", ExpiresAt: t0 - 1, ActiveAt: t0 - 2}))
	if r.Code != CodeInvalidRequest || r.Message != "expires_at must be in the future" || r.Action != nil {
		t.Fatalf("past expiry: %q %q", r.Code, r.Message)
	}
	if h.action(clA, "act_2") != nil {
		t.Fatalf("invalid row was created")
	}

	csv := &Command{Type: CmdCreateActions, Time: t0 + 1, ClientID: clA, Create: &CreateActions{CSV: true,
		DefaultTTLMS: hour, MaxTTLMS: 2 * hour, Rows: []CreateRow{
			{Row: 2, ActionID: "act_c2"},
			{Row: 3, Error: CodeInvalidRequest, Message: "payload_json: invalid JSON"},
			{Row: 4, ActionID: "act_c4", ExpiresAt: t0 + 3*hour},
			{Row: 5, ActionID: "act_1"},
			{Row: 6, ActionID: "act_c6", ActiveAt: t0 + hour},
			{Row: 7, ActionID: "act_c2"},
		}}}
	r = h.mustOK(csv)
	want := []RowResult{
		{Row: 2, ActionID: "act_c2"},
		{Row: 3, Error: CodeInvalidRequest, Message: "payload_json: invalid JSON"},
		{Row: 4, Error: CodeInvalidRequest, Message: "expires_at is beyond the maximum TTL of 0 days"},
		{Row: 5, Error: CodeConflict, Message: "action id already exists"},
		{Row: 6, ActionID: "act_c6"},
		{Row: 7, Error: CodeConflict, Message: "action id already exists"},
	}
	if fmt.Sprint(r.Rows) != fmt.Sprint(want) {
		t.Fatalf("rows\n got %+v\nwant %+v", r.Rows, want)
	}
	if a := h.action(clA, "act_c6"); a == nil || a.ExpiresAt != t0+2*hour || a.CreatedAt != t0+1 {
		t.Fatalf("csv row 6: %+v", a)
	}
	if h.action(clA, "act_c4") != nil {
		t.Fatalf("invalid csv row created")
	}
}

// TestIdempotency: a repeat replays the first result without work, a
// different request with the key answers idempotency_key_reused, records
// expire after 24 h of stamped time, and keys are scoped per client.
func TestIdempotency(t *testing.T) {
	h := newHarness(t)
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_1"}))
	first := h.mustOK(withIdem(consumeCmd(clA, t0+1, "act_1"), "k1", "fp1"))
	if first.Replayed {
		t.Fatalf("first marked replayed")
	}
	// Another consumer without the key loses.
	if r := h.apply(consumeCmd(clA, t0+2, "act_1")); r.Code != CodeAlreadyUsed {
		t.Fatalf("other consumer: %q", r.Code)
	}
	hashBefore := hashOf(t, h.f)
	// Stamped no later than the FSM clock, so a replay must leave the state
	// hash unchanged.
	r := h.mustOK(withIdem(consumeCmd(clA, t0+2, "act_1"), "k1", "fp1"))
	if !r.Replayed || string(r.Action.SealedPayload) != "sealed:act_1" || r.Action.ConsumedAt != t0+1 || r.Time != t0+1 {
		t.Fatalf("replay: %+v %+v", r, r.Action)
	}
	if hashOf(t, h.f) != hashBefore {
		t.Fatalf("replay changed the state")
	}
	r = h.apply(withIdem(consumeCmd(clA, t0+4, "act_1"), "k1", "fp-other"))
	if r.Code != CodeIdempotencyReused {
		t.Fatalf("reused key: %q", r.Code)
	}
	// Same key, other client: independent.
	h.mustOK(createCmd(clB, t0+5, CreateRow{ActionID: "act_b"}))
	if r := h.apply(withIdem(consumeCmd(clB, t0+5, "act_b"), "k1", "fp-other")); r.Code != CodeOK || r.Replayed {
		t.Fatalf("other client's key: %q replayed %v", r.Code, r.Replayed)
	}
	// Typed errors are remembered too: a later state change does not alter them.
	h.mustOK(createCmd(clA, t0+6, CreateRow{ActionID: "act_2", ActiveAt: t0 + hour}))
	if r := h.apply(withIdem(consumeCmd(clA, t0+7, "act_2"), "k2", "fp2")); r.Code != CodeNotActive {
		t.Fatalf("pending: %q", r.Code)
	}
	if r := h.apply(withIdem(consumeCmd(clA, t0+hour+1, "act_2"), "k2", "fp2")); r.Code != CodeNotActive || !r.Replayed {
		t.Fatalf("replayed typed error: %q %v", r.Code, r.Replayed)
	}
	// Still live 1 ms before 24 h, gone at 24 h.
	if r := h.apply(withIdem(consumeCmd(clA, t0+1+IdempotencyTTLMS-1, "act_1"), "k1", "fp1")); !r.Replayed {
		t.Fatalf("record expired early")
	}
	r = h.apply(withIdem(consumeCmd(clA, t0+1+IdempotencyTTLMS, "act_1"), "k1", "fp-new"))
	if r.Replayed || r.Code != CodeAlreadyUsed {
		t.Fatalf("after expiry: %q replayed %v", r.Code, r.Replayed)
	}
}

// TestIdempotencyCreateReplay: a replayed create does not create twice and
// returns the first outcome.
func TestIdempotencyCreateReplay(t *testing.T) {
	h := newHarness(t)
	first := h.mustOK(withIdem(createCmd(clA, t0, CreateRow{ActionID: "act_1"}), "k", "fp"))
	// The retry was given a fresh id by its proposer; the replay still
	// answers with the first action and creates nothing.
	r := h.mustOK(withIdem(createCmd(clA, t0+1, CreateRow{ActionID: "act_2"}), "k", "fp"))
	if !r.Replayed || r.Action.ID != first.Action.ID {
		t.Fatalf("replay %+v", r.Action)
	}
	if h.action(clA, "act_2") != nil {
		t.Fatalf("replay created an action")
	}
}

// TestIdempotencyPurge: expired records are purged, driven by FSM time.
func TestIdempotencyPurge(t *testing.T) {
	h := newHarness(t)
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_1"}))
	for i := 0; i < 10; i++ {
		h.apply(withIdem(cancelCmd(clA, t0+int64(i), "act_1"), fmt.Sprint("k", i), "fp"))
	}
	count := func() (n int) {
		_ = h.f.db.View(func(tx *boltTx) error {
			n = tx.Bucket(bucketIdem).Stats().KeyN + tx.Bucket(bucketIdemExp).Stats().KeyN
			return nil
		})
		return n
	}
	if n := count(); n != 20 {
		t.Fatalf("records %d, want 20", n)
	}
	h.mustOK(noopCmd(t0 + IdempotencyTTLMS + 4))
	if n := count(); n != 10 {
		t.Fatalf("after partial expiry %d, want 10", n)
	}
	h.mustOK(noopCmd(t0 + IdempotencyTTLMS + 100))
	if n := count(); n != 0 {
		t.Fatalf("after expiry %d, want 0", n)
	}
}

// TestTimeNeverGoesBack: an entry stamped earlier than the FSM clock is
// decided at the FSM clock.
func TestTimeNeverGoesBack(t *testing.T) {
	h := newHarness(t)
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_1", ExpiresAt: t0 + hour}))
	h.mustOK(noopCmd(t0 + 2*hour))
	if h.f.LastTime() != t0+2*hour {
		t.Fatalf("last time %d", h.f.LastTime())
	}
	r := h.apply(consumeCmd(clA, t0+1, "act_1"))
	if r.Code != CodeExpired || r.Time != t0+2*hour {
		t.Fatalf("old stamp: %q at %d", r.Code, r.Time)
	}
	r = h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_2"}))
	if r.Action.CreatedAt != t0+2*hour {
		t.Fatalf("createdAt %d", r.Action.CreatedAt)
	}
	if h.f.LastTime() != t0+2*hour {
		t.Fatalf("clock went back to %d", h.f.LastTime())
	}
}

// TestCancelThroughLog: cancel then consume answers canceled, cancel again
// keeps canceledAt, consumed cannot be canceled.
func TestCancelThroughLog(t *testing.T) {
	h := newHarness(t)
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_1"}))
	r := h.mustOK(cancelCmd(clA, t0+1, "act_1"))
	if r.Action.CanceledAt != t0+1 {
		t.Fatalf("canceledAt %d", r.Action.CanceledAt)
	}
	if r := h.mustOK(cancelCmd(clA, t0+2, "act_1")); r.Action.CanceledAt != t0+1 {
		t.Fatalf("cancel again: %d", r.Action.CanceledAt)
	}
	if r := h.apply(consumeCmd(clA, t0+3, "act_1")); r.Code != CodeCanceled || r.Action.CanceledAt != t0+1 {
		t.Fatalf("consume canceled: %q", r.Code)
	}
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_2"}))
	h.mustOK(consumeCmd(clA, t0+4, "act_2"))
	if r := h.apply(cancelCmd(clA, t0+5, "act_2")); r.Code != CodeAlreadyUsed {
		t.Fatalf("cancel consumed: %q", r.Code)
	}
	if r := h.apply(cancelCmd(clA, t0+5, "act_none")); r.Code != CodeNotFound {
		t.Fatalf("cancel unknown: %q", r.Code)
	}
}

// TestApplyBatchEntries: non-command entries and already-applied entries
// advance nothing but the applied index.
func TestApplyBatchEntries(t *testing.T) {
	h := newHarness(t)
	base := h.idx
	logs := []*raft.Log{
		{Index: base + 1, Term: 1, Type: raft.LogConfiguration, Data: []byte("cfg")},
		entry(t, base+2, noopCmd(t0+9)),
		{Index: base + 3, Term: 1, Type: raft.LogNoop},
	}
	out := h.f.ApplyBatch(logs)
	if out[0] != nil || out[2] != nil {
		t.Errorf("non-command entry responses %v, %v", out[0], out[2])
	}
	if r, ok := out[1].(*Result); !ok || r.Time != t0+9 {
		t.Errorf("good entry: %v", out[1])
	}
	if h.f.AppliedIndex() != base+3 {
		t.Fatalf("applied %d, want %d", h.f.AppliedIndex(), base+3)
	}
	hash := hashOf(t, h.f)
	// Re-applying old entries is a no-op.
	out = h.f.ApplyBatch([]*raft.Log{entry(t, base+2, noopCmd(t0+hour))})
	if out[0] != nil || hashOf(t, h.f) != hash || h.f.LastTime() != t0+9 {
		t.Fatalf("re-applied an old entry: %v", out[0])
	}
}

// applyPanic applies logs and returns what ApplyBatch panicked with (nil
// when it returned).
func applyPanic(f *FSM, logs []*raft.Log) (p any) {
	defer func() { p = recover() }()
	f.ApplyBatch(logs)
	return nil
}

// TestUnknownEntryStopsTheNode: a committed entry this build cannot decode
// (another format version, an unknown command type: a newer leader wrote
// it; or garbage) is never skipped. ApplyBatch panics with an
// *UnreadableEntryError naming the entry and what to do, the whole batch
// is rolled back (the entries before it are applied again by the next
// try), and it stops at the same entry every time it is handed it again, as
// after a restart, while the state stays usable for a build that reads it.
func TestUnknownEntryStopsTheNode(t *testing.T) {
	newer := func(idx uint64, b []byte) *raft.Log {
		return &raft.Log{Index: idx, Term: 7, Type: raft.LogCommand, Data: b}
	}
	good, _ := EncodeCommand(noopCmd(t0 + 5))
	for _, tc := range []struct {
		name      string
		data      []byte
		want      error
		fromNewer bool // the message says a newer version wrote it
	}{
		{"format version 2", append([]byte{2}, good[1:]...), ErrUnknownFormat, true},
		{"command type 99", []byte{CommandFormat, 99, 0, 0, 0}, ErrUnknownCommand, true},
		{"malformed", []byte{CommandFormat, byte(CmdNoop)}, ErrBadCommand, false},
		{"empty", nil, ErrBadCommand, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			f, err := Open(Options{Path: path, NoSync: true, InitialMmapSize: 64 << 20})
			if err != nil {
				t.Fatal(err)
			}
			h := &harness{t: t, f: f}
			h.mustOK(clientCmd(clA, t0))
			base := h.idx
			hash := hashOf(t, f)
			batch := []*raft.Log{
				entry(t, base+1, createCmd(clA, t0+1, CreateRow{ActionID: "act_1"})),
				newer(base+2, tc.data),
				entry(t, base+3, noopCmd(t0+3)),
			}
			for try := 0; try < 2; try++ {
				p := applyPanic(f, batch)
				ue, ok := p.(*UnreadableEntryError)
				if !ok {
					t.Fatalf("try %d: ApplyBatch panicked with %T %v, want *UnreadableEntryError", try, p, p)
				}
				if ue.Index != base+2 || ue.Term != 7 || !errors.Is(ue, tc.want) {
					t.Fatalf("try %d: %+v, want index %d term 7 wrapping %v", try, ue, base+2, tc.want)
				}
				msg := ue.Error()
				for _, s := range []string{fmt.Sprintf("log entry %d ", base+2), "never skips", "docs/upgrade.md"} {
					if !strings.Contains(msg, s) {
						t.Errorf("message %q does not say %q", msg, s)
					}
				}
				if got := strings.Contains(msg, "upgrade this node"); got != tc.fromNewer {
					t.Errorf("message %q: says to upgrade %v, want %v", msg, got, tc.fromNewer)
				}
				if f.AppliedIndex() != base || hashOf(t, f) != hash {
					t.Fatalf("try %d: applied %d (want %d) or the state changed: part of the batch was kept", try, f.AppliedIndex(), base)
				}
				if try == 0 {
					// A restart hands it the same entries again.
					if err := f.Close(); err != nil {
						t.Fatal(err)
					}
					if f, err = Open(Options{Path: path, NoSync: true, InitialMmapSize: 64 << 20}); err != nil {
						t.Fatal(err)
					}
					h.f = f
				}
			}
			// A build that reads the entry (here: the same log with the
			// entry a known one) applies the batch whole.
			batch[1] = entry(t, base+2, noopCmd(t0+2))
			out := f.ApplyBatch(batch)
			if r, ok := out[0].(*Result); !ok || r.Code != CodeOK || f.AppliedIndex() != base+3 {
				t.Fatalf("after the stop: %v, applied %d", out[0], f.AppliedIndex())
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestOneWinnerPerBatch: many consumes of one action in one batch (as from
// concurrent requests on several nodes) yield exactly one 200.
func TestOneWinnerPerBatch(t *testing.T) {
	h := newHarness(t)
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_1"}))
	var logs []*raft.Log
	for i := 0; i < 20; i++ {
		h.idx++
		logs = append(logs, entry(t, h.idx, withConsumer(consumeCmd(clA, t0+1, "act_1"), fmt.Sprintf(`{"n":%d}`, i))))
	}
	out := h.f.ApplyBatch(logs)
	for i, r := range out {
		code := r.(*Result).Code
		if (i == 0) != (code == CodeOK) || (i > 0 && code != CodeAlreadyUsed) {
			t.Fatalf("entry %d: %q", i, code)
		}
	}
	if a := h.action(clA, "act_1"); string(a.Consumer) != `{"n":0}` {
		t.Fatalf("winner %s", a.Consumer)
	}
}

// TestRevokeTakesEffectWithinABatch: a client revoked by one entry of a
// batch is refused by the next entries of the same batch, and a client
// created mid-batch is accepted by the entries after it (the per-batch
// memory of client checks must follow the batch's own writes).
func TestRevokeTakesEffectWithinABatch(t *testing.T) {
	h := newHarness(t)
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_1"}))
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_2"}))
	const clC = "cl_c"
	var logs []*raft.Log
	for _, cmd := range []*Command{
		consumeCmd(clA, t0+1, "act_1"),
		createCmd(clC, t0+1, CreateRow{ActionID: "act_c"}),
		revokeCmd(clA, t0+1),
		consumeCmd(clA, t0+1, "act_2"),
		clientCmd(clC, t0+1),
		createCmd(clC, t0+1, CreateRow{ActionID: "act_c"}),
	} {
		h.idx++
		logs = append(logs, entry(t, h.idx, cmd))
	}
	out := h.f.ApplyBatch(logs)
	want := []Code{CodeOK, CodeUnauthorized, CodeOK, CodeUnauthorized, CodeOK, CodeOK}
	for i, r := range out {
		if got := r.(*Result).Code; got != want[i] {
			t.Fatalf("entry %d: %q, want %q", i, got, want[i])
		}
	}
	if a := h.action(clA, "act_2"); a == nil || a.ConsumedAt != 0 {
		t.Fatalf("act_2 was consumed by a revoked client: %+v", a)
	}
}
