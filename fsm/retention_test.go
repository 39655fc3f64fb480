package fsm

import (
	"bytes"
	"fmt"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func retentionCmd(ts, ms int64) *Command {
	return &Command{Type: CmdSetRetention, Time: ts, SetRetention: &SetRetention{RetentionMS: ms}}
}

// checkNoDanglingKeys: every key of every index names a stored action, so
// a purge leaves nothing behind.
func checkNoDanglingKeys(t testing.TB, f *FSM) {
	t.Helper()
	if err := f.View(func(v *View) error {
		actions := v.tx.Bucket(bucketActions)
		// The ordered indexes end with the action id after a time8; ids
		// start with "act_".
		for _, name := range [][]byte{bucketIxCreated, bucketIxActive, bucketIxExpires, bucketIxState, bucketDueExpiry, bucketDuePurge} {
			err := v.tx.Bucket(name).ForEach(func(k, _ []byte) error {
				i := bytes.LastIndex(k, []byte("act_"))
				if i < 0 {
					return fmt.Errorf("%s key %q names no action", name, k)
				}
				if actions.Get(k[i:]) == nil {
					return fmt.Errorf("%s key %q names %s, which is not stored", name, k, k[i:])
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestRetention walks an action of every terminal kind through retention:
// the payload goes when the action becomes terminal (at once for a
// consume, burn or cancel, at the next sweep for an expiry), the action is
// deleted Retention after that, and then it is not found; stats count what
// is stored plus purged; nothing of a purged action stays in any index.
func TestRetention(t *testing.T) {
	h := newHarness(t)
	h.mustOK(retentionCmd(t0, hour))
	payload := []byte("sealed")
	rows := map[string]CreateRow{
		"act_used":    {ActionID: "act_used", SealedPayload: payload},
		"act_burned":  {ActionID: "act_burned", SealedPayload: payload, PINHash: pinHash("1")},
		"act_cancel":  {ActionID: "act_cancel", SealedPayload: payload},
		"act_expires": {ActionID: "act_expires", SealedPayload: payload, ExpiresAt: t0 + 10*minMS},
		"act_open":    {ActionID: "act_open", SealedPayload: payload, ExpiresAt: t0 + 10*dayMS},
	}
	for _, id := range []string{"act_used", "act_burned", "act_cancel", "act_expires", "act_open"} {
		h.mustOK(createCmd(clA, t0, rows[id]))
	}
	res := h.mustOK(consumeCmd(clA, t0+minMS, "act_used"))
	if !bytes.Equal(res.Action.SealedPayload, payload) {
		t.Fatal("the winner's answer lost the payload")
	}
	for range MaxPINAttempts {
		h.apply(consumePIN(clA, t0+minMS, "act_burned", "2"))
	}
	h.mustOK(cancelCmd(clA, t0+minMS, "act_cancel"))
	for _, id := range []string{"act_used", "act_burned", "act_cancel"} {
		a := h.action(clA, id)
		if a == nil || a.StateAt(t0+minMS) == StateActive || a.SealedPayload != nil {
			t.Fatalf("%s after it became terminal: %+v, want settled without its payload", id, a)
		}
	}
	if a := h.action(clA, "act_expires"); !bytes.Equal(a.SealedPayload, payload) {
		t.Fatal("an action lost its payload before it expired")
	}
	h.mustOK(noopCmd(t0 + 10*minMS)) // at expiresAt: expired, swept
	if a := h.action(clA, "act_expires"); a == nil || a.SealedPayload != nil {
		t.Fatalf("expired action after the sweep: %+v, want stored without its payload", a)
	}
	if a := h.action(clA, "act_open"); !bytes.Equal(a.SealedPayload, payload) {
		t.Fatal("an open action lost its payload")
	}
	checkNoDanglingKeys(t, h.f)

	// One ms before the settled ones' retention ends, nothing is deleted.
	h.mustOK(noopCmd(t0 + minMS + hour - 1))
	if st := checkStats(t, h.f, clA, t0+minMS+hour-1); st.Total != 5 || st.Purged != 0 {
		t.Fatalf("before retention: %+v", st)
	}
	h.mustOK(noopCmd(t0 + minMS + hour))
	for _, id := range []string{"act_used", "act_burned", "act_cancel"} {
		if a := h.action(clA, id); a != nil {
			t.Fatalf("%s is still stored after retention: %+v", id, a)
		}
		if r := h.apply(consumeCmd(clA, t0+minMS+hour, id)); r.Code != CodeNotFound {
			t.Fatalf("consume of purged %s: %s, want %s", id, r.Code, CodeNotFound)
		}
	}
	if st := checkStats(t, h.f, clA, t0+minMS+hour); st.Total != 2 || st.Purged != 3 {
		t.Fatalf("after the settled ones' retention: %+v, want total 2, purged 3", st)
	}
	h.mustOK(noopCmd(t0 + 10*minMS + hour))
	if a := h.action(clA, "act_expires"); a != nil {
		t.Fatalf("the expired action is still stored after retention: %+v", a)
	}
	st := checkStats(t, h.f, clA, t0+10*minMS+hour)
	if st.Total != 1 || st.Purged != 4 || st.ByState[StateActive] != 1 {
		t.Fatalf("after every retention: %+v, want the open action and 4 purged", st)
	}
	checkReads(t, h.f, clA, t0+10*minMS+hour)
	checkNoDanglingKeys(t, h.f)
}

// TestRetentionSweepIsBounded: however many actions expire at once, one
// entry erases at most sweepBudget payloads and deletes at most
// sweepBudget actions; the following entries drain the rest.
func TestRetentionSweepIsBounded(t *testing.T) {
	h := newHarness(t)
	h.mustOK(retentionCmd(t0, MinRetentionMS))
	const n = 3*sweepBudget + 5
	c := &CreateActions{CSV: true}
	for i := range n {
		c.Rows = append(c.Rows, CreateRow{Row: i, ActionID: fmt.Sprintf("act_%04d", i), SealedPayload: []byte("p"), ExpiresAt: t0 + minMS})
	}
	h.mustOK(&Command{Type: CmdCreateActions, Time: t0, ClientID: clA, Create: c})
	erased := func() (withPayload, stored int) {
		if err := h.f.View(func(v *View) error {
			return v.tx.Bucket(bucketActions).ForEach(func(_, val []byte) error {
				a, err := decodeAction(val)
				if err == nil {
					stored++
					if a.SealedPayload != nil {
						withPayload++
					}
				}
				return err
			})
		}); err != nil {
			t.Fatal(err)
		}
		return withPayload, stored
	}
	now := t0 + minMS
	h.mustOK(noopCmd(now))
	if w, s := erased(); w != n-sweepBudget || s != n {
		t.Fatalf("one entry after the expiry: %d with payload, %d stored; want %d, %d", w, s, n-sweepBudget, n)
	}
	for i := 0; i < 3; i++ {
		h.mustOK(noopCmd(now))
	}
	if w, _ := erased(); w != 0 {
		t.Fatalf("%d payloads left after four entries", w)
	}
	now += MinRetentionMS
	h.mustOK(noopCmd(now))
	if _, s := erased(); s != n-sweepBudget {
		t.Fatalf("one entry after retention: %d stored, want %d", s, n-sweepBudget)
	}
	for i := 0; i < 3; i++ {
		h.mustOK(noopCmd(now))
	}
	if _, s := erased(); s != 0 {
		t.Fatalf("%d actions left after four entries", s)
	}
	if st := checkStats(t, h.f, clA, now); st.Purged != n || st.Total != 0 {
		t.Fatalf("stats: %+v, want %d purged", st, n)
	}
	checkNoDanglingKeys(t, h.f)
}

// TestSetRetention walks CmdSetRetention's rules.
func TestSetRetention(t *testing.T) {
	h := newHarness(t)
	get := func() int64 {
		var ms int64
		if err := h.f.View(func(v *View) error {
			var err error
			ms, err = v.Retention()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return ms
	}
	if got := get(); got != DefaultRetentionMS {
		t.Fatalf("retention of a new state: %d, want %d", got, DefaultRetentionMS)
	}
	for _, bad := range []int64{0, -1, MinRetentionMS - 1, MaxRetentionMS + 1} {
		if r := h.apply(retentionCmd(t0, bad)); r.Code != CodeInvalidRequest {
			t.Fatalf("retention %d: %s, want %s", bad, r.Code, CodeInvalidRequest)
		}
	}
	h.mustOK(retentionCmd(t0, 2*hour))
	h.mustOK(retentionCmd(t0, 2*hour))
	if got := get(); got != 2*hour {
		t.Fatalf("retention %d, want %d", got, 2*hour)
	}
	// It survives a snapshot and restore.
	g := openFSM(t, t.TempDir()+"/b")
	if err := g.Restore(readCloser{bytes.NewReader(snapshotBytes(t, h.f))}); err != nil {
		t.Fatal(err)
	}
	var ms int64
	_ = g.View(func(v *View) error { ms, _ = v.Retention(); return nil })
	if ms != 2*hour {
		t.Fatalf("restored retention %d, want %d", ms, 2*hour)
	}
}

// TestPurgeOfAnActionStillInTheJournal: a retention short enough to purge
// an action settled within the journal's window folds the journal first,
// so the counters and the state index never hold a deleted action.
func TestPurgeOfAnActionStillInTheJournal(t *testing.T) {
	h := newHarness(t)
	h.mustOK(retentionCmd(t0, MinRetentionMS))
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_1", SealedPayload: []byte("p")}))
	h.mustOK(consumeCmd(clA, t0+1, "act_1"))
	// Move the action into due_purge without a fold, as the expiry sweep
	// would for an action settled in the window.
	if err := h.f.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDuePurge).Put(dueKey(t0+1, "act_1"), nil)
	}); err != nil {
		t.Fatal(err)
	}
	if h.f.journal.entries == 0 {
		t.Fatal("the journal is empty: the case is not exercised")
	}
	h.mustOK(noopCmd(t0 + 1 + MinRetentionMS))
	if a := h.action(clA, "act_1"); a != nil {
		t.Fatal("not purged")
	}
	if st := checkStats(t, h.f, clA, t0+1+MinRetentionMS); st.Total != 0 || st.Purged != 1 {
		t.Fatalf("stats %+v", st)
	}
	checkReads(t, h.f, clA, t0+1+MinRetentionMS)
	checkNoDanglingKeys(t, h.f)
}
