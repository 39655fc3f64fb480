package fsm

import (
	"fmt"
	"testing"
)

// TestRecentlySettled: consumed, burned and canceled actions are hinted
// once their batch is committed; open, failed and unknown ones are not.
func TestRecentlySettled(t *testing.T) {
	h := newHarness(t)
	for _, id := range []string{"act_c", "act_x", "act_open"} {
		h.mustOK(createCmd(clA, t0, CreateRow{ActionID: id}))
	}
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_pin", PINHash: pinHash("1234")}))
	h.mustOK(consumeCmd(clA, t0+1, "act_c"))
	h.mustOK(cancelCmd(clA, t0+1, "act_x"))
	for i := range MaxPINAttempts {
		if r := h.apply(consumePIN(clA, t0+1, "act_pin", "0000")); r.Code != CodeInvalidPIN {
			t.Fatalf("wrong PIN %d: %q", i+1, r.Code)
		}
		if settled := h.f.RecentlySettled("act_pin"); settled != (i == MaxPINAttempts-1) {
			t.Fatalf("after wrong PIN %d: hinted %v", i+1, settled)
		}
	}
	if r := h.apply(consumeCmd(clB, t0+1, "act_open")); r.Code != CodeNotFound {
		t.Fatalf("other client's consume: %q", r.Code)
	}
	for id, want := range map[string]bool{"act_c": true, "act_x": true, "act_pin": true, "act_open": false, "act_none": false} {
		if got := h.f.RecentlySettled(id); got != want {
			t.Errorf("RecentlySettled(%s) = %v, want %v", id, got, want)
		}
	}
	if a := h.action(clA, "act_pin"); a == nil || a.ConsumedAt == 0 {
		t.Fatalf("the PIN action was not burned by its last attempt: %+v", a)
	}
}

// TestRecentSettledForgetsOldest: the set is bounded and forgets in order.
func TestRecentSettledForgetsOldest(t *testing.T) {
	r := &recentSettled{ids: map[string]struct{}{}, ring: make([]string, 3)}
	for i := range 5 {
		r.add([]string{fmt.Sprintf("a%d", i), fmt.Sprintf("a%d", i)})
	}
	for i := range 5 {
		if got, want := r.has(fmt.Sprintf("a%d", i)), i >= 2; got != want {
			t.Fatalf("has(a%d) = %v, want %v", i, got, want)
		}
	}
	if len(r.ids) != 3 {
		t.Fatalf("%d ids kept, want 3", len(r.ids))
	}
}
