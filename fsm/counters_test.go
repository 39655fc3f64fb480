package fsm

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// bruteStats counts a client's actions at now by reading every action: the
// definition the counters must equal.
func bruteStats(t testing.TB, f *FSM, clientID string, now int64) Stats {
	t.Helper()
	st := Stats{ByState: map[State]int64{
		StatePending: 0, StateActive: 0, StateConsumed: 0, StateExpired: 0, StateCanceled: 0,
	}}
	since := now - dayMS
	if err := f.View(func(v *View) error {
		return v.tx.Bucket(bucketActions).ForEach(func(_, val []byte) error {
			a, err := decodeAction(val)
			if err != nil || a.ClientID != clientID {
				return err
			}
			st.Total++
			st.ByState[a.StateAt(now)]++
			if a.ConsumedReason == ReasonPINBurned {
				st.Burned++
			}
			if a.CreatedAt > since && a.CreatedAt <= now {
				st.CreatedLast24h++
			}
			if a.ConsumedReason == ReasonConsumed && a.ConsumedAt > since && a.ConsumedAt <= now {
				st.ConsumedLast24h++
			}
			return nil
		})
	}); err != nil {
		t.Fatalf("brute stats: %v", err)
	}
	return st
}

// statsOf reads Stats through a View.
func statsOf(t testing.TB, f *FSM, clientID string, now int64) Stats {
	t.Helper()
	var st Stats
	if err := f.View(func(v *View) error {
		var err error
		st, err = v.Stats(clientID, now)
		return err
	}); err != nil {
		t.Fatalf("stats: %v", err)
	}
	return st
}

// checkStats compares the counters with the brute-force count at now.
func checkStats(t testing.TB, f *FSM, clientID string, now int64) Stats {
	t.Helper()
	got, want := statsOf(t, f, clientID, now), bruteStats(t, f, clientID, now)
	// A scan cannot count what retention deleted: tests that purge assert
	// Purged themselves.
	want.Purged = got.Purged
	if got.Purged < 0 {
		t.Fatalf("stats of %s at %d: purged %d", clientID, now, got.Purged)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stats of %s at %d\n got %+v\nwant %+v", clientID, now, got, want)
	}
	return got
}

// TestChangeOf walks the counter changes of every write, row by row.
func TestChangeOf(t *testing.T) {
	open := &Action{ID: "a", CreatedAt: t0, ActiveAt: t0, ExpiresAt: t0 + hour}
	with := func(f func(*Action)) *Action { n := *open; f(&n); return &n }
	consumed := with(func(a *Action) { a.ConsumedAt, a.ConsumedReason = t0+1, ReasonConsumed })
	burned := with(func(a *Action) { a.ConsumedAt, a.ConsumedReason, a.FailedPINAttempts = t0+1, ReasonPINBurned, 3 })
	canceled := with(func(a *Action) { a.CanceledAt = t0 + 1 })
	wrongPIN := with(func(a *Action) { a.FailedPINAttempts = 1 })
	for _, tc := range []struct {
		name       string
		prev, next *Action
		want       countsChange
	}{
		{"create", nil, open, countsChange{total: 1, open: 1, created: 1}},
		{"consume", open, consumed, countsChange{consumed: 1, open: -1, consumedOK: 1}},
		{"burn", wrongPIN, burned, countsChange{consumed: 1, burned: 1, open: -1}},
		{"cancel", open, canceled, countsChange{canceled: 1, open: -1}},
		{"wrong PIN, not burned", open, wrongPIN, countsChange{}},
		{"expired payload erased", open, with(func(a *Action) { a.SealedPayload = nil }), countsChange{}},
		{"purge consumed", consumed, nil, countsChange{total: -1, created: -1, consumed: -1, consumedOK: -1, purged: 1}},
		{"purge burned", burned, nil, countsChange{total: -1, created: -1, consumed: -1, burned: -1, purged: 1}},
		{"purge canceled", canceled, nil, countsChange{total: -1, created: -1, canceled: -1, purged: 1}},
		{"purge expired", open, nil, countsChange{total: -1, created: -1, open: -1, purged: 1}},
	} {
		if got := changeOf(tc.prev, tc.next); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	// Changes add up: the journal folds each action's net change.
	add := func(a, b countsChange) countsChange {
		return countsChange{a.total + b.total, a.consumed + b.consumed, a.burned + b.burned, a.canceled + b.canceled,
			a.purged + b.purged, a.open + b.open, a.created + b.created, a.consumedOK + b.consumedOK}
	}
	for _, path := range [][]*Action{{nil, open, consumed}, {nil, wrongPIN, burned}, {open, wrongPIN, burned}, {nil, open, canceled}, {nil, consumed, nil}} {
		got := add(changeOf(path[0], path[1]), changeOf(path[1], path[2]))
		want := countsChange{purged: 1} // created and deleted: only the purge remains
		if path[0] != nil || path[2] != nil {
			want = changeOf(path[0], path[2])
		}
		if got != want {
			t.Errorf("%v -> %v -> %v: %+v, want %+v", path[0], path[1], path[2], got, want)
		}
	}
}

// TestStatsCounters applies each kind of write and checks the counters
// against the brute-force count after each, at several times including the
// edges of every window (expiry, activation, 24 h).
func TestStatsCounters(t *testing.T) {
	h := newHarness(t)
	now := t0 + 2*dayMS
	type step struct {
		name string
		cmd  *Command
		want func(Stats) bool
	}
	created := func(n int64) func(Stats) bool { return func(s Stats) bool { return s.Total == n } }
	steps := []step{
		{"create", createCmd(clA, now, CreateRow{ActionID: "a1", ExpiresAt: now + hour}), created(1)},
		{"create pending", createCmd(clA, now+1, CreateRow{ActionID: "a2", ActiveAt: now + hour, ExpiresAt: now + 2*hour}), created(2)},
		{"create PIN", createCmd(clA, now+2, CreateRow{ActionID: "a3", PINHash: pinHash("1")}), created(3)},
		{"create to cancel", createCmd(clA, now+3, CreateRow{ActionID: "a4"}), created(4)},
		{"create expiring", createCmd(clA, now+4, CreateRow{ActionID: "a5", ExpiresAt: now + 10}), created(5)},
		{"consume", consumeCmd(clA, now+5, "a1"), func(s Stats) bool { return s.ByState[StateConsumed] == 1 && s.ConsumedLast24h == 1 }},
		{"consume replay (idempotent)", withIdem(consumeCmd(clA, now+6, "a1"), "k1", "f"), nil},
		{"consume replay again", withIdem(consumeCmd(clA, now+7, "a1"), "k1", "f"), func(s Stats) bool { return s.ByState[StateConsumed] == 1 }},
		{"consume loser", consumeCmd(clA, now+8, "a1"), func(s Stats) bool { return s.ByState[StateConsumed] == 1 }},
		{"wrong PIN 1", consumePIN(clA, now+9, "a3", "2"), func(s Stats) bool { return s.Burned == 0 && s.ByState[StateActive] == 3 }},
		{"wrong PIN 2", consumePIN(clA, now+9, "a3", "2"), nil},
		{"burn", consumePIN(clA, now+9, "a3", "2"), func(s Stats) bool { return s.Burned == 1 && s.ConsumedLast24h == 1 }},
		{"cancel", cancelCmd(clA, now+9, "a4"), func(s Stats) bool { return s.ByState[StateCanceled] == 1 }},
		{"cancel again", cancelCmd(clA, now+9, "a4"), func(s Stats) bool { return s.ByState[StateCanceled] == 1 }},
		{"create replay (idempotent)", withIdem(createCmd(clA, now+9, CreateRow{ActionID: "a6"}), "k2", "f"), created(6)},
		{"create replay again", withIdem(createCmd(clA, now+9, CreateRow{ActionID: "a6"}), "k2", "f"), created(6)},
		{"create conflict", createCmd(clA, now+9, CreateRow{ActionID: "a6"}), created(6)},
		{"other client", createCmd(clB, now+9, CreateRow{ActionID: "b1"}), created(6)},
	}
	for _, s := range steps {
		h.apply(s.cmd)
		st := checkStats(t, h.f, clA, now+9)
		if s.want != nil && !s.want(st) {
			t.Fatalf("%s: %+v", s.name, st)
		}
	}
	// Expiry and activation need no entry: the same counters at later
	// times, on and around every edge.
	for _, at := range []int64{now - 1, now, now + 9, now + 10, now + 11, now + hour - 1, now + hour, now + hour + 1,
		now + 2*hour, now + dayMS - 1, now + dayMS, now + dayMS + 1, now + dayMS + 9, now + dayMS + 10, now + 3*dayMS} {
		checkStats(t, h.f, clA, at)
	}
	if st := checkStats(t, h.f, clA, now+11); st.ByState[StateExpired] != 1 || st.ByState[StatePending] != 1 {
		t.Fatalf("expired by time: %+v", st)
	}
	if st := checkStats(t, h.f, clA, now+dayMS+9); st.CreatedLast24h != 0 || st.ConsumedLast24h != 0 {
		t.Fatalf("24 h later: %+v", st)
	}
	checkStats(t, h.f, clB, now)
	checkStats(t, h.f, "cl_none", now)
}

// TestCountAtOrBefore checks the counting trie against a sorted list of
// times spread over every digit, negative and extreme times included.
func TestCountAtOrBefore(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 7))
	times := []int64{math.MinInt64, -1, 0, 1, math.MaxInt64, t0, t0, t0 + 255, t0 + 256}
	for range 2000 {
		switch rng.IntN(3) {
		case 0:
			times = append(times, t0+rng.Int64N(1000))
		case 1:
			times = append(times, t0+rng.Int64N(400*dayMS))
		default:
			times = append(times, int64(rng.Uint64()))
		}
	}
	db, err := bolt.Open(filepath.Join(t.TempDir(), "trie.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	prefix := clientPrefix(clA)
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketCounts)
		if err != nil {
			return err
		}
		c := newCounts()
		for _, tm := range times {
			c.addSeries(clA, seriesCreated, tm, 1)
		}
		c.addSeries(clB, seriesCreated, t0, 5) // another client's counts are not seen
		if err := c.flush(b); err != nil {
			return err
		}
		probes := append([]int64{math.MinInt64, math.MaxInt64, math.MaxInt64 - 1}, times...)
		for _, tm := range times {
			probes = append(probes, tm-1, tm+1)
		}
		for _, p := range probes {
			var want int64
			for _, tm := range times {
				if tm <= p {
					want++
				}
			}
			got, err := countAtOrBefore(b, prefix, seriesCreated, p)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("seed %d: count at or before %d = %d, want %d", seed, p, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStatsRandomLog checks the counters of every client against the
// brute-force count after a random log, at many times, and after a
// snapshot restore (the counters travel in the state file).
func TestStatsRandomLog(t *testing.T) {
	seed := testSeed(t)
	logs := randomLog(t, seed, 2000)
	f := openFSM(t, filepath.Join(t.TempDir(), "a"))
	applySplit(f, logs, rand.New(rand.NewPCG(seed, 3)), 64)
	g := openFSM(t, filepath.Join(t.TempDir(), "b"))
	if err := g.Restore(readCloser{bytes.NewReader(snapshotBytes(t, f))}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 4))
	last := f.LastTime()
	for _, c := range []string{"cl_0", "cl_1", "cl_2", DemoClientID} {
		for range 20 {
			at := t0 + rng.Int64N(last-t0+2*dayMS)
			checkStats(t, f, c, at)
			checkStats(t, g, c, at)
		}
		checkStats(t, f, c, last)
	}
}

// readCloser adds a no-op Close to a reader.
type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

// TestQuota: the decision row by row, then through the log for JSON and
// CSV creates (a CSV over the quota is refused whole).
func TestQuota(t *testing.T) {
	for _, tc := range []struct {
		client                string
		stored, adding, quota int64
		want                  Code
	}{
		{clA, 0, 1, 1, CodeOK},
		{clA, 1, 1, 1, CodeQuotaExceeded},
		{clA, 5, 5, 10, CodeOK},
		{clA, 5, 6, 10, CodeQuotaExceeded},
		{clA, 5, 0, 1, CodeOK}, // nothing to create
		{clA, DefaultMaxActions - 1, 1, 0, CodeOK},
		{clA, DefaultMaxActions, 1, 0, CodeQuotaExceeded}, // 0: the default
		{clA, DefaultMaxActions, 1, -1, CodeOK},           // negative: no quota
		{DemoClientID, 10, 1, 1, CodeOK},                  // the demo is exempt
	} {
		if got, msg := decideQuota(tc.client, tc.stored, tc.adding, tc.quota); got != tc.want {
			t.Errorf("%+v: %q (%s), want %q", tc, got, msg, tc.want)
		}
	}

	h := newHarness(t)
	withQuota := func(c *Command, q int64) *Command { c.Create.MaxActions = q; return c }
	csv := func(ts int64, q int64, ids ...string) *Command {
		c := &CreateActions{CSV: true, MaxActions: q}
		for i, id := range ids {
			c.Rows = append(c.Rows, CreateRow{Row: i + 2, ActionID: id, SealedPayload: []byte("x")})
		}
		c.Rows = append(c.Rows, CreateRow{Row: len(ids) + 2, Error: CodeInvalidRequest, Message: "bad"})
		return &Command{Type: CmdCreateActions, Time: ts, ClientID: clA, Create: c}
	}
	h.mustOK(withQuota(createCmd(clA, t0, CreateRow{ActionID: "q1"}), 3))
	if r := h.apply(csv(t0, 3, "q2", "q3", "q4")); r.Code != CodeQuotaExceeded || r.Rows != nil {
		t.Fatalf("CSV over the quota: %+v", r)
	}
	if h.action(clA, "q2") != nil {
		t.Fatal("a refused CSV created a row")
	}
	if r := h.mustOK(csv(t0, 3, "q2", "q3")); len(r.Rows) != 3 || r.Rows[2].Error != CodeInvalidRequest {
		t.Fatalf("CSV within the quota: %+v", r)
	}
	// Settled actions are still stored: they count.
	h.mustOK(cancelCmd(clA, t0, "q1"))
	if r := h.apply(withQuota(createCmd(clA, t0, CreateRow{ActionID: "q5"}), 3)); r.Code != CodeQuotaExceeded || r.Action != nil {
		t.Fatalf("JSON create over the quota: %+v", r)
	}
	// An invalid row is reported as such, not as over the quota.
	if r := h.apply(withQuota(createCmd(clA, t0, CreateRow{}), 3)); r.Code != CodeInvalidRequest {
		t.Fatalf("invalid row: %+v", r)
	}
	// The refusal is remembered like any outcome; a raised quota applies to
	// new requests; other clients have their own count.
	idem := withIdem(withQuota(createCmd(clA, t0, CreateRow{ActionID: "q5"}), 3), "k", "f")
	if r := h.apply(idem); r.Code != CodeQuotaExceeded {
		t.Fatalf("first: %+v", r)
	}
	if r := h.apply(withIdem(withQuota(createCmd(clA, t0, CreateRow{ActionID: "q5"}), 3), "k", "f")); r.Code != CodeQuotaExceeded || !r.Replayed {
		t.Fatalf("replay: %+v", r)
	}
	h.mustOK(withQuota(createCmd(clA, t0, CreateRow{ActionID: "q5"}), 4))
	h.mustOK(withQuota(createCmd(clB, t0, CreateRow{ActionID: "b1"}), 1))
	if st := checkStats(t, h.f, clA, t0); st.Total != 4 {
		t.Fatalf("stats: %+v", st)
	}
	// Within one batch, the second create sees the first one's count.
	h.idx += 2
	out := h.f.ApplyBatch([]*raft.Log{
		entry(t, h.idx-1, withQuota(createCmd(clB, t0, CreateRow{ActionID: "b2"}), 2)),
		entry(t, h.idx, withQuota(createCmd(clB, t0, CreateRow{ActionID: "b3"}), 2)),
	})
	if out[0].(*Result).Code != CodeOK || out[1].(*Result).Code != CodeQuotaExceeded {
		t.Fatalf("batch: %+v %+v", out[0], out[1])
	}
}
