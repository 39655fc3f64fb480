package cluster

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/exactonce/exactonce/fsm"
)

func TestSingleNodeApplyReadAndReopen(t *testing.T) {
	tn := newTestNode(t, "n1")
	tn.mustOpen()
	n := tn.node
	if err := n.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader: %v", err)
	}
	if !n.IsLeader() || !n.Ready() {
		t.Fatalf("single node: IsLeader=%v Ready=%v, want both", n.IsLeader(), n.Ready())
	}
	if got := n.LeaderHTTP(); got != tn.cfg.HTTPAdvertise {
		t.Fatalf("LeaderHTTP = %q, want own %q", got, tn.cfg.HTTPAdvertise)
	}

	mustApply(t, n, clientCmd("cl_a"))
	created := mustApply(t, n, createCmd("cl_a", "act_1"))
	if created.Action == nil || created.Action.ID != "act_1" {
		t.Fatalf("create result: %+v", created)
	}
	consumed := mustApply(t, n, consumeCmd("cl_a", "act_1"))
	if consumed.Action.ConsumedAt == 0 {
		t.Fatalf("consume did not consume: %+v", consumed.Action)
	}
	again, err := n.Apply(ctxTimeout(t, 5*time.Second), consumeCmd("cl_a", "act_1"))
	if err != nil || again.Code != fsm.CodeAlreadyUsed {
		t.Fatalf("second consume: %v, %+v; want already_used", err, again)
	}
	if err := n.ReadBarrier(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatalf("read barrier: %v", err)
	}
	if a := action(t, tn.fsm, "cl_a", "act_1"); a == nil || a.ConsumedAt == 0 {
		t.Fatalf("after barrier, action = %+v; want consumed", a)
	}
	lastStamp := tn.fsm.LastTime()
	appliedBefore := tn.fsm.AppliedIndex()

	// Reopen on the same directory with a clock one hour in the past.
	tn.close()
	tn.cfg.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	tn.mustOpen()
	n = tn.node
	if err := n.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader after reopen: %v", err)
	}
	if a := action(t, tn.fsm, "cl_a", "act_1"); a == nil || a.ConsumedAt == 0 {
		t.Fatalf("after reopen, action = %+v; want kept and consumed", a)
	}
	st, err := n.Status(ctxTimeout(t, 5*time.Second), false)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if st.StateHash != "" || st.AppliedIndex != tn.fsm.AppliedIndex() {
		t.Fatalf("status without hash: hash %q, applied %d (fsm %d)", st.StateHash, st.AppliedIndex, tn.fsm.AppliedIndex())
	}
	hashed, err := n.Status(ctxTimeout(t, 5*time.Second), true)
	if err != nil {
		t.Fatalf("status with hash: %v", err)
	}
	want, _, err := tn.fsm.StateHashAt()
	if err != nil {
		t.Fatal(err)
	}
	if hashed.StateHash != hex.EncodeToString(want) {
		t.Fatalf("status state hash %q, want %x", hashed.StateHash, want)
	}
	if len(st.Members) != 1 || st.Members[0].ID != "n1" || st.Members[0].Suffrage != "voter" {
		t.Fatalf("members after reopen = %+v; want just n1 as voter (no second bootstrap)", st.Members)
	}
	res := mustApply(t, n, createCmd("cl_a", "act_2"))
	if res.Action.CreatedAt < lastStamp {
		t.Fatalf("stamp went backwards across restart: %d < %d", res.Action.CreatedAt, lastStamp)
	}
	if tn.fsm.AppliedIndex() <= appliedBefore {
		t.Fatalf("applied index %d did not advance past %d", tn.fsm.AppliedIndex(), appliedBefore)
	}
}

func TestStampsNeverGoBackwards(t *testing.T) {
	tn := newTestNode(t, "n1")
	var mu sync.Mutex
	clock := time.UnixMilli(1_800_000_000_000)
	tn.cfg.Now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return clock
	}
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader: %v", err)
	}
	var last int64
	for i := range 10 {
		mu.Lock()
		if i%2 == 0 {
			clock = clock.Add(-time.Minute) // the wall clock steps back
		} else {
			clock = clock.Add(10 * time.Second)
		}
		mu.Unlock()
		cmd := &fsm.Command{Type: fsm.CmdNoop}
		mustApply(t, tn.node, cmd)
		if cmd.Time < last {
			t.Fatalf("stamp %d went back from %d", cmd.Time, last)
		}
		last = cmd.Time
	}
}

// TestCloseLeaderMidApply: writes racing with Close either succeed or
// report an error; an error that says "not proposed" (ErrUnavailable,
// ErrNotLeader) must really mean the write is absent after reopening, and
// a success must be present.
func TestCloseLeaderMidApply(t *testing.T) {
	tn := newTestNode(t, "n1")
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader: %v", err)
	}
	mustApply(t, tn.node, clientCmd("cl_a"))

	const writers, perWriter = 8, 50
	type outcome struct {
		id  string
		err error
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		outcomes []outcome
		started  = make(chan struct{}, writers*perWriter)
	)
	n := tn.node
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				id := fmt.Sprintf("act_%d_%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, err := n.Apply(ctx, createCmd("cl_a", id))
				cancel()
				if err == nil && res.Code != fsm.CodeOK {
					err = fmt.Errorf("code %s", res.Code)
				}
				mu.Lock()
				outcomes = append(outcomes, outcome{id: id, err: err})
				mu.Unlock()
				select {
				case started <- struct{}{}:
				default:
				}
			}
		}()
	}
	// Close once some writes went through.
	for range 20 {
		<-started
	}
	tn.close()
	wg.Wait()

	tn.cfg.Now = nil
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader after reopen: %v", err)
	}
	var ok, unknown, notProposed int
	for _, o := range outcomes {
		present := action(t, tn.fsm, "cl_a", o.id) != nil
		switch {
		case o.err == nil:
			ok++
			if !present {
				t.Errorf("%s: Apply succeeded but the action is missing after restart", o.id)
			}
		case errors.Is(o.err, ErrOutcomeUnknown):
			unknown++
		case isOneOf(o.err, ErrUnavailable, ErrNotLeader):
			notProposed++
			if present {
				t.Errorf("%s: Apply said not proposed (%v) but the action exists: a false failure", o.id, o.err)
			}
		default:
			t.Errorf("%s: unexpected error %v", o.id, o.err)
		}
	}
	t.Logf("outcomes: %d ok, %d outcome unknown, %d not proposed", ok, unknown, notProposed)
	if ok < 20 {
		t.Fatalf("only %d successes before close", ok)
	}
}

func TestApplyCanceledContext(t *testing.T) {
	tn := newTestNode(t, "n1")
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// An expired request is never proposed: ErrUnavailable, and nothing
	// reaches the log.
	before := tn.node.raft.LastIndex()
	_, err := tn.node.Apply(ctx, createCmd("cl_a", "act_late"))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v; want ErrUnavailable", err)
	}
	if after := tn.node.raft.LastIndex(); after != before {
		t.Fatalf("log grew from %d to %d for a request that was already canceled", before, after)
	}
}

func TestConcurrentReadBarriersCoalesce(t *testing.T) {
	tn := newTestNode(t, "n1")
	tn.mustOpen()
	n := tn.node
	if err := n.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader: %v", err)
	}
	mustApply(t, n, clientCmd("cl_a"))
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- n.ReadBarrier(ctxTimeout(t, 5*time.Second))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("read barrier: %v", err)
		}
	}
	if r := n.verifier.rounds.Load(); r >= 200 {
		t.Fatalf("%d VerifyLeader rounds for 200 concurrent readers; want them coalesced", r)
	} else {
		t.Logf("200 readers shared %d rounds", r)
	}
}

// TestRestoreSnapshotWhenStateFileLost: with NoSnapshotRestoreOnStart,
// a state file behind the newest snapshot is restored from it at open.
func TestRestoreSnapshotWhenStateFileLost(t *testing.T) {
	tn := newTestNode(t, "n1")
	tn.cfg.SnapshotThreshold = 8
	tn.cfg.SnapshotInterval = 50 * time.Millisecond
	tn.cfg.TrailingLogs = 2
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader: %v", err)
	}
	mustApply(t, tn.node, clientCmd("cl_a"))
	for i := range 30 {
		mustApply(t, tn.node, createCmd("cl_a", fmt.Sprintf("act_%d", i)))
	}
	snapDir := filepath.Join(tn.cfg.DataDir, "raft")
	waitFor(t, "a snapshot", 10*time.Second, func() bool {
		list, err := tn.node.snaps.List()
		return err == nil && len(list) > 0 && list[0].Index >= 20
	})
	list, err := tn.node.snaps.List()
	if err != nil {
		t.Fatalf("list snapshots: %v", err)
	}
	snapIndex := list[0].Index
	tn.close()
	if err := os.Remove(filepath.Join(tn.cfg.DataDir, "state.db")); err != nil {
		t.Fatalf("remove state file: %v", err)
	}
	tn.mustOpen()
	// Restored before Raft started: the log entries it covers are gone.
	if got := tn.fsm.AppliedIndex(); got < snapIndex {
		t.Fatalf("after open, fsm applied index %d < snapshot index %d", got, snapIndex)
	}
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader after reopen: %v", err)
	}
	if err := tn.node.ReadBarrier(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatalf("read barrier: %v", err)
	}
	for i := range 30 {
		if action(t, tn.fsm, "cl_a", fmt.Sprintf("act_%d", i)) == nil {
			t.Fatalf("act_%d lost after restoring from snapshot in %s", i, snapDir)
		}
	}
	st, _ := tn.node.Status(ctxTimeout(t, 5*time.Second), false)
	if st.AppliedIndex < st.CommitIndex-1 {
		t.Fatalf("status: applied %d far below commit %d", st.AppliedIndex, st.CommitIndex)
	}
}

// TestIdleLeaderMovesTheClock: with nobody writing, the leader proposes a
// stamped no-op every ClockTick, so the state machine's time (and what it
// decides by time, such as retention) keeps up with the wall clock.
func TestIdleLeaderMovesTheClock(t *testing.T) {
	tn := newTestNode(t, "n1")
	tn.cfg.ClockTick = 20 * time.Millisecond
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("wait leader: %v", err)
	}
	waitFor(t, "the leader to be ready", 10*time.Second, tn.node.IsLeader)
	applied, clock := tn.fsm.AppliedIndex(), tn.fsm.LastTime()
	waitFor(t, "two clock ticks without writes", 10*time.Second, func() bool {
		return tn.fsm.AppliedIndex() >= applied+2 && tn.fsm.LastTime() > clock
	})
}
