package fsm

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// listAll pages through a query to its end.
func listAll(t testing.TB, f *FSM, q ListQuery) []*Action {
	t.Helper()
	var all []*Action
	for pages := 0; ; pages++ {
		if pages > 100000 {
			t.Fatalf("pagination does not end")
		}
		var p ListPage
		if err := f.View(func(v *View) error {
			var err error
			p, err = v.List(q)
			return err
		}); err != nil {
			t.Fatalf("list: %v", err)
		}
		all = append(all, p.Actions...)
		if p.Next == nil {
			return all
		}
		if len(p.Actions) == 0 && p.Scanned < cmp.Or(q.ScanBudget, DefaultListScanBudget) {
			t.Fatalf("empty page with a next before the scan budget ran out")
		}
		q.After = p.Next
	}
}

// fieldOf returns the ordering field's time.
func fieldOf(a *Action, ob OrderBy) int64 {
	switch ob {
	case OrderActiveAt:
		return a.ActiveAt
	case OrderExpiresAt:
		return a.ExpiresAt
	}
	return a.CreatedAt
}

// expectList is the brute-force answer to q over all.
func expectList(all []*Action, q ListQuery) []string {
	var m []*Action
	for _, a := range all {
		if q.matches(a) {
			m = append(m, a)
		}
	}
	ob := cmp.Or(q.OrderBy, OrderCreatedAt)
	slices.SortFunc(m, func(x, y *Action) int {
		c := cmp.Or(cmp.Compare(fieldOf(x, ob), fieldOf(y, ob)), cmp.Compare(x.ID, y.ID))
		if q.Desc {
			return -c
		}
		return c
	})
	return idsOf(m)
}

func idsOf(as []*Action) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.ID
	}
	return out
}

// listFixture creates actions of clA in every state, interleaved with clB's.
func listFixture(t *testing.T, seed uint64) (*harness, []*Action, int64) {
	h := newHarness(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	now := t0
	var ids []string
	for i := 0; i < 300; i++ {
		now += rng.Int64N(3) * minMS // equal createdAt happen: ties by id
		client := clA
		if i%4 == 3 {
			client = clB
		}
		row := CreateRow{ActionID: fmt.Sprintf("act_%03d", rng.IntN(1000000))}
		if rng.IntN(2) == 0 {
			row.ActiveAt = now + rng.Int64N(4*hour) - 2*hour
		}
		if rng.IntN(2) == 0 {
			row.ExpiresAt = max(row.ActiveAt, now) + 1 + rng.Int64N(3*hour)
		}
		if rng.IntN(4) == 0 {
			row.PINHash = pinHash("1")
		}
		if r := h.apply(createCmd(client, now, row)); r.Code != CodeOK {
			continue
		}
		if client == clA {
			ids = append(ids, row.ActionID)
		}
		switch rng.IntN(6) {
		case 0:
			h.apply(consumeCmd(clA, now, row.ActionID))
		case 1:
			h.apply(cancelCmd(clA, now, row.ActionID))
		case 2:
			for k := 0; k < 3; k++ {
				h.apply(consumePIN(clA, now, row.ActionID, "2"))
			}
		}
	}
	var all []*Action
	for _, id := range ids {
		all = append(all, h.action(clA, id))
	}
	return h, all, now
}

// TestListFilters compares every filter, order and direction, paged with
// several limits, against a brute-force answer.
func TestListFilters(t *testing.T) {
	seed := testSeed(t)
	h, all, now := listFixture(t, seed)
	mid := all[len(all)/2]
	queries := []ListQuery{
		{},
		{State: StatePending}, {State: StateActive}, {State: StateConsumed}, {State: StateExpired}, {State: StateCanceled},
		{ConsumedReason: ReasonConsumed}, {ConsumedReason: ReasonPINBurned},
		{CreatedFrom: mid.CreatedAt}, {CreatedTo: mid.CreatedAt}, {CreatedFrom: t0 + 10*minMS, CreatedTo: mid.CreatedAt + 1},
		{ActiveFrom: mid.ActiveAt}, {ActiveTo: mid.ActiveAt}, {ActiveFrom: t0, ActiveTo: t0 + 3*hour},
		{State: StateActive, CreatedFrom: t0 + 30*minMS, ActiveTo: now},
	}
	for _, base := range queries {
		for _, ob := range []OrderBy{"", OrderCreatedAt, OrderActiveAt, OrderExpiresAt} {
			for _, desc := range []bool{false, true} {
				for _, limit := range []int{0, 1, 7} {
					q := base
					q.ClientID, q.OrderBy, q.Desc, q.Limit, q.Now = clA, ob, desc, limit, now
					want := expectList(all, q)
					got := idsOf(listAll(t, h.f, q))
					if !slices.Equal(got, want) {
						t.Fatalf("seed %d query %+v:\n got %v\nwant %v", seed, q, got, want)
					}
				}
			}
		}
	}
	// A page never holds more than the limit; a default page holds 100.
	err := h.f.View(func(v *View) error {
		p, err := v.List(ListQuery{ClientID: clA, Limit: 7})
		if err != nil || len(p.Actions) != 7 || p.Next == nil {
			return fmt.Errorf("limit 7: %d %v", len(p.Actions), err)
		}
		if _, err := v.List(ListQuery{ClientID: clA, After: p.Next, OrderBy: OrderActiveAt}); !errors.Is(err, ErrBadCursor) {
			return fmt.Errorf("cursor of another order: %v", err)
		}
		if _, err := v.List(ListQuery{ClientID: clA, After: p.Next, Desc: true}); !errors.Is(err, ErrBadCursor) {
			return fmt.Errorf("cursor of another direction: %v", err)
		}
		if _, err := v.List(ListQuery{ClientID: clA, After: []byte{1}}); !errors.Is(err, ErrBadCursor) {
			return fmt.Errorf("short cursor: %v", err)
		}
		if _, err := v.List(ListQuery{ClientID: clA, OrderBy: "nope"}); err == nil {
			return fmt.Errorf("unknown order accepted")
		}
		p, err = v.List(ListQuery{ClientID: "cl_none"})
		if err != nil || len(p.Actions) != 0 || p.Next != nil {
			return fmt.Errorf("unknown client: %v %v", p, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestListLimitClamp: the default page is 100 and the maximum 1000.
func TestListLimitClamp(t *testing.T) {
	h := newHarness(t)
	c := &CreateActions{CSV: true}
	for i := 0; i < 1100; i++ {
		c.Rows = append(c.Rows, CreateRow{Row: i + 2, ActionID: fmt.Sprintf("act_%04d", i)})
	}
	h.mustOK(&Command{Type: CmdCreateActions, Time: t0, ClientID: clA, Create: c})
	err := h.f.View(func(v *View) error {
		for limit, want := range map[int]int{0: 100, -3: 100, 5000: 1000, 1000: 1000} {
			p, err := v.List(ListQuery{ClientID: clA, Limit: limit})
			if err != nil || len(p.Actions) != want || p.Next == nil {
				return fmt.Errorf("limit %d: %d actions, %v", limit, len(p.Actions), err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestListPagingWhileCreating: paging returns every action that existed at
// the start exactly once, in order, while new actions are created between
// pages; in ascending createdAt order the new ones are returned too.
func TestListPagingWhileCreating(t *testing.T) {
	for _, desc := range []bool{false, true} {
		for _, ob := range []OrderBy{OrderCreatedAt, OrderActiveAt, OrderExpiresAt} {
			t.Run(fmt.Sprintf("%s desc=%v", ob, desc), func(t *testing.T) {
				h := newHarness(t)
				now := t0
				var before []string
				for i := 0; i < 50; i++ {
					id := fmt.Sprintf("act_b%02d", i)
					h.mustOK(createCmd(clA, now+int64(i%5), CreateRow{ActionID: id}))
					before = append(before, id)
				}
				now += 10
				seen := map[string]int{}
				q := ListQuery{ClientID: clA, OrderBy: ob, Desc: desc, Limit: 6, Now: now}
				created := 0
				var prev *Action
				for {
					var p ListPage
					if err := h.f.View(func(v *View) error {
						var err error
						p, err = v.List(q)
						return err
					}); err != nil {
						t.Fatal(err)
					}
					for _, a := range p.Actions {
						seen[a.ID]++
						if prev != nil {
							c := cmp.Or(cmp.Compare(fieldOf(prev, ob), fieldOf(a, ob)), cmp.Compare(prev.ID, a.ID))
							if (c >= 0) != desc || c == 0 {
								t.Fatalf("out of order: %s then %s", prev.ID, a.ID)
							}
						}
						prev = a
					}
					// New actions arrive between pages.
					for i := 0; i < 3; i++ {
						now++
						h.mustOK(createCmd(clA, now, CreateRow{ActionID: fmt.Sprintf("act_n%03d", created)}))
						created++
					}
					if p.Next == nil {
						break
					}
					q.After = p.Next
				}
				for id, n := range seen {
					if n != 1 {
						t.Fatalf("%s returned %d times", id, n)
					}
				}
				for _, id := range before {
					if seen[id] != 1 {
						t.Fatalf("%s missing", id)
					}
				}
				if !desc && ob == OrderCreatedAt && len(seen) <= len(before) {
					t.Fatalf("ascending createdAt paging did not reach new actions")
				}
			})
		}
	}
}

// TestStats counts states, burns and the 24 h windows.
func TestStats(t *testing.T) {
	h := newHarness(t)
	day := int64(DefaultTTLMS)
	now := t0 + 2*day
	// Created two days ago, consumed then: outside both windows.
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "old", ExpiresAt: t0 + 3*day}))
	h.mustOK(consumeCmd(clA, t0+1, "old"))
	// Created exactly 24 h before now: outside (window is (now-24h, now]).
	h.mustOK(createCmd(clA, now-day, CreateRow{ActionID: "edge", ExpiresAt: now + 1}))
	h.mustOK(createCmd(clA, now-day+1, CreateRow{ActionID: "pend", ActiveAt: now + hour}))
	h.mustOK(createCmd(clA, now-10, CreateRow{ActionID: "cons"}))
	h.mustOK(consumeCmd(clA, now-9, "cons"))
	h.mustOK(createCmd(clA, now-8, CreateRow{ActionID: "burn", PINHash: pinHash("1")}))
	for i := 0; i < 3; i++ {
		h.apply(consumePIN(clA, now-7, "burn", "2"))
	}
	h.mustOK(createCmd(clA, now-6, CreateRow{ActionID: "canc"}))
	h.mustOK(cancelCmd(clA, now-5, "canc"))
	h.mustOK(createCmd(clA, now-4, CreateRow{ActionID: "exp", ExpiresAt: now - 1}))
	h.mustOK(createCmd(clB, now-4, CreateRow{ActionID: "other"}))

	var st Stats
	if err := h.f.View(func(v *View) error {
		var err error
		st, err = v.Stats(clA, now)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want := Stats{Total: 7, Burned: 1, CreatedLast24h: 5, ConsumedLast24h: 1, ByState: map[State]int64{
		StatePending: 1, StateActive: 1, StateConsumed: 3, StateExpired: 1, StateCanceled: 1}}
	if fmt.Sprint(st) != fmt.Sprint(want) {
		t.Fatalf("stats\n got %+v\nwant %+v", st, want)
	}
	if err := h.f.View(func(v *View) error {
		var err error
		st, err = v.Stats("cl_none", now)
		return err
	}); err != nil || st.Total != 0 || len(st.ByState) != 5 {
		t.Fatalf("empty stats %+v %v", st, err)
	}
}

// TestListScanBudget: with many actions and a filter that matches few or
// none, every call examines at most the budget and ends early with a next;
// paging still returns every match once, in order, for every state, order
// and direction, and a state filter walks only its state group.
func TestListScanBudget(t *testing.T) {
	h := newHarness(t)
	const n, budget = 3000, 100
	c := &CreateActions{CSV: true}
	for i := range n {
		row := CreateRow{Row: i + 2, ActionID: fmt.Sprintf("act_%05d", i), SealedPayload: []byte("x")}
		if i%500 == 7 {
			row.ActiveAt = t0 + hour // pending at t0
		}
		c.Rows = append(c.Rows, row)
	}
	h.mustOK(&Command{Type: CmdCreateActions, Time: t0, ClientID: clA, Create: c})
	for i := 3; i < n; i += 700 {
		h.mustOK(cancelCmd(clA, t0, fmt.Sprintf("act_%05d", i)))
	}
	all := make([]*Action, n)
	for i := range all {
		all[i] = h.action(clA, fmt.Sprintf("act_%05d", i))
	}
	read := func(q ListQuery) ListPage {
		var p ListPage
		if err := h.f.View(func(v *View) error {
			var err error
			p, err = v.List(q)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Nothing matches: one call examines exactly the budget, then resumes.
	q := ListQuery{ClientID: clA, ConsumedReason: ReasonConsumed, ScanBudget: budget, Now: t0}
	if p := read(q); len(p.Actions) != 0 || p.Next != nil || p.Scanned != 0 {
		t.Fatalf("consumed group is empty, yet %d scanned, next %x", p.Scanned, p.Next)
	}
	q = ListQuery{ClientID: clA, CreatedFrom: t0 + 1, CreatedTo: t0 + 2, ScanBudget: budget, Now: t0}
	if p := read(q); p.Scanned != 0 || p.Next != nil {
		t.Fatalf("time range narrowing: %+v", p)
	}
	q = ListQuery{ClientID: clA, ActiveFrom: t0 + 1, ScanBudget: budget, Now: t0} // matches 6, ordered by createdAt
	p := read(q)
	if p.Scanned != budget || p.Next == nil {
		t.Fatalf("scanned %d, next %x: want the budget and a next", p.Scanned, p.Next)
	}
	for _, st := range []State{"", StatePending, StateActive, StateCanceled, StateExpired} {
		for _, ob := range []OrderBy{OrderCreatedAt, OrderActiveAt, OrderExpiresAt} {
			for _, desc := range []bool{false, true} {
				for _, sel := range []ListQuery{{State: st}, {State: st, ActiveFrom: t0 + 1}} {
					q := sel
					q.ClientID, q.OrderBy, q.Desc, q.ScanBudget, q.Now, q.Limit = clA, ob, desc, budget, t0, 7
					want := expectList(all, q)
					got := idsOf(listAll(t, h.f, q))
					if fmt.Sprint(got) != fmt.Sprint(want) {
						t.Fatalf("%+v: got %d, want %d actions\n got %v\nwant %v", q, len(got), len(want), got, want)
					}
				}
			}
		}
	}
	// A state filter walks only its group: 5 canceled actions, one call.
	if p := read(ListQuery{ClientID: clA, State: StateCanceled, ScanBudget: budget, Now: t0}); p.Scanned != 5 || len(p.Actions) != 5 || p.Next != nil {
		t.Fatalf("canceled: scanned %d, %d actions, next %x", p.Scanned, len(p.Actions), p.Next)
	}
	// Pending ordered by activeAt starts at now: only the pending entries.
	if p := read(ListQuery{ClientID: clA, State: StatePending, OrderBy: OrderActiveAt, ScanBudget: budget, Now: t0}); p.Scanned != 6 || len(p.Actions) != 6 {
		t.Fatalf("pending by activeAt: scanned %d, %d actions", p.Scanned, len(p.Actions))
	}
}
