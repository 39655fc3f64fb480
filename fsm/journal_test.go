package fsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// clientActions reads every stored action of clientID.
func clientActions(t testing.TB, f *FSM, clientID string) []*Action {
	t.Helper()
	var out []*Action
	if err := f.View(func(v *View) error {
		return v.tx.Bucket(bucketActions).ForEach(func(_, val []byte) error {
			a, err := decodeAction(val)
			if err == nil && a.ClientID == clientID {
				out = append(out, a)
			}
			return err
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// journalLen is how many entries the journal bucket holds.
func journalLen(t testing.TB, f *FSM) int {
	t.Helper()
	n := 0
	if err := f.View(func(v *View) error {
		n = v.tx.Bucket(bucketJournal).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// checkReads compares Stats and every state-filtered List (both orders,
// small pages) with a brute-force answer over the stored actions.
func checkReads(t *testing.T, f *FSM, clientID string, now int64) {
	t.Helper()
	checkStats(t, f, clientID, now)
	all := clientActions(t, f, clientID)
	for _, st := range []State{StatePending, StateActive, StateConsumed, StateExpired, StateCanceled} {
		for _, desc := range []bool{false, true} {
			q := ListQuery{ClientID: clientID, State: st, Desc: desc, Now: now, Limit: 7}
			got := idsOf(listAll(t, f, q))
			if want := expectList(all, q); !slices.Equal(got, want) {
				t.Fatalf("state %s desc %v at %d: got %d actions, want %d\n got %v\nwant %v",
					st, desc, now, len(got), len(want), got, want)
			}
		}
	}
	q := ListQuery{ClientID: clientID, ConsumedReason: ReasonPINBurned, Now: now}
	if got, want := idsOf(listAll(t, f, q)), expectList(all, q); !slices.Equal(got, want) {
		t.Fatalf("burned at %d: got %v, want %v", now, got, want)
	}
}

// TestJournalIsInvisibleToReaders: the counters and the state index lag
// the actions by up to a journal's worth of entries, and Stats and List add
// the journal back. After every batch of a random log, with the journal
// anywhere between empty and full, every read matches a brute-force scan;
// the same holds after a restart and after a restore taken with a
// non-empty journal, and the writer's account of the journal (the quota)
// survives both.
func TestJournalIsInvisibleToReaders(t *testing.T) {
	seed := testSeed(t)
	logs := randomLog(t, seed, 1200)
	rng := rand.New(rand.NewPCG(seed, 9))
	path := filepath.Join(t.TempDir(), "a")
	f := openFSM(t, path)
	clients := []string{"cl_0", "cl_1", "cl_2", DemoClientID}
	sawPartial, sawFold := false, false
	prevLen := 0
	for i := 0; i < len(logs); {
		n := min(1+rng.IntN(12), len(logs)-i)
		f.ApplyBatch(logs[i : i+n])
		i += n
		jl := journalLen(t, f)
		sawPartial = sawPartial || (jl > 0 && jl < journalMaxEntries)
		sawFold = sawFold || jl < prevLen
		prevLen = jl
		if i%5 == 0 || i == len(logs) {
			now := f.LastTime() + rng.Int64N(2*dayMS) - dayMS/2
			checkReads(t, f, clients[rng.IntN(len(clients))], now)
		}
	}
	if !sawPartial || !sawFold {
		t.Fatalf("seed %d: the log never left the journal partly full (%v) or never folded it (%v)", seed, sawPartial, sawFold)
	}
	if journalLen(t, f) == 0 {
		// Leave entries in the journal for the restart and restore below.
		f.ApplyBatch([]*raft.Log{entry(t, f.AppliedIndex()+1, createCmd("cl_0", f.LastTime(), CreateRow{ActionID: "act_journal_tail"}))})
	}
	snap := snapshotBytes(t, f)
	g := openFSM(t, filepath.Join(t.TempDir(), "b"))
	if err := g.Restore(readCloser{bytes.NewReader(snap)}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = openFSM(t, path)
	for _, h := range []*FSM{f, g} {
		if journalLen(t, h) == 0 {
			t.Fatal("the journal is empty: the restart and restore cases are not exercised")
		}
		for _, c := range clients {
			checkReads(t, h, c, h.LastTime())
		}
		// The quota counts the journal's creates after a restart too.
		stored := statsOf(t, h, "cl_0", h.LastTime()).Total
		row := CreateRow{ActionID: "act_over_quota"}
		cmd := createCmd("cl_0", h.LastTime(), row)
		cmd.Create.MaxActions = stored
		res := h.ApplyBatch([]*raft.Log{entry(t, h.AppliedIndex()+1, cmd)})[0].(*Result)
		if res.Code != CodeQuotaExceeded {
			t.Fatalf("create over a quota of %d stored: %s, want %s", stored, res.Code, CodeQuotaExceeded)
		}
	}
	if hashOf(t, f) != hashOf(t, g) {
		t.Fatal("restarted and restored replicas differ")
	}
}

// TestJournalEntryThatDoesNotDecodeStopsTheBatch: a journal record this
// version cannot read is never skipped: folding it fails the batch.
func TestJournalEntryThatDoesNotDecodeStopsTheBatch(t *testing.T) {
	h := newHarness(t)
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_1"}))
	if err := h.f.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJournal).Put(journalKey(1), []byte{99, 1, 2})
	}); err != nil {
		t.Fatal(err)
	}
	h.f.journal = nil // as after a restart
	defer func() {
		if recover() == nil {
			t.Fatal("a batch over an unreadable journal entry did not fail")
		}
	}()
	h.apply(createCmd(clA, t0, CreateRow{ActionID: "act_2"}))
}

// TestJournalFitsOnePage: a journal one entry short of a fold, every entry
// a consume, is one bbolt leaf: an entry's record costs its commit one
// page, not a leaf and a branch (DESIGN.md, "Net changes").
func TestJournalFitsOnePage(t *testing.T) {
	h := newHarness(t)
	c := &CreateActions{CSV: true}
	for i := range journalMaxEntries {
		c.Rows = append(c.Rows, CreateRow{Row: i, ActionID: fmt.Sprintf("act_%032d", i), SealedPayload: benchPayload})
	}
	h.mustOK(&Command{Type: CmdCreateActions, Time: t0, ClientID: clA, Create: c})
	for h.f.journal.entries != 0 { // an empty journal to start from
		h.mustOK(createCmd(clA, t0, CreateRow{ActionID: fmt.Sprintf("act_pad_%d", h.f.AppliedIndex())}))
	}
	for i := range journalMaxEntries - 1 {
		h.mustOK(consumeCmd(clA, t0+1, fmt.Sprintf("act_%032d", i)))
	}
	if n := journalLen(t, h.f); n != journalMaxEntries-1 {
		t.Fatalf("journal holds %d entries, want %d", n, journalMaxEntries-1)
	}
	if err := h.f.View(func(v *View) error {
		st := v.tx.Bucket(bucketJournal).Stats()
		if st.BranchPageN != 0 || st.LeafPageN > 1 {
			t.Fatalf("a journal of %d consumes spans %d leaves and %d branches, want one leaf", st.KeyN, st.LeafPageN, st.BranchPageN)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
