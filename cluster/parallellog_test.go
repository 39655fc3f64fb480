package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/exactonce/exactonce/fsm"
)

// heldLog is a raft.LogStore whose writes can be held (they block until
// released) or failed, to look at parallelLog while a write is in flight.
type heldLog struct {
	raft.LogStore
	held   atomic.Bool
	fail   atomic.Bool
	mu     sync.Mutex
	ch     chan struct{} // closed to release the held writes
	writes atomic.Int64  // StoreLogs calls that reached the inner store
}

func newHeldLog(inner raft.LogStore) *heldLog {
	return &heldLog{LogStore: inner, ch: make(chan struct{})}
}

func (h *heldLog) hold() {
	h.mu.Lock()
	h.ch = make(chan struct{})
	h.mu.Unlock()
	h.held.Store(true)
}

func (h *heldLog) release() {
	h.held.Store(false)
	h.mu.Lock()
	close(h.ch)
	h.mu.Unlock()
}

func (h *heldLog) StoreLogs(logs []*raft.Log) error {
	if h.held.Load() {
		h.mu.Lock()
		ch := h.ch
		h.mu.Unlock()
		<-ch
	}
	if h.fail.Load() {
		return errors.New("disk full")
	}
	h.writes.Add(1)
	return h.LogStore.StoreLogs(logs)
}

func (h *heldLog) StoreLog(l *raft.Log) error { return h.StoreLogs([]*raft.Log{l}) }

func entries(from, to uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte(fmt.Sprint(i))})
	}
	return out
}

// returnsWithin runs f and reports whether it returned within d.
func returnsWithin(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// newTestParallelLog is a parallelLog over a held in-memory store, in
// leader mode (early writes) until leader is set false; closed at the end
// of the test.
func newTestParallelLog(t *testing.T) (*heldLog, *atomic.Bool, *parallelLog) {
	t.Helper()
	held := newHeldLog(raft.NewInmemStore())
	leader := &atomic.Bool{}
	leader.Store(true)
	p, err := newParallelLog(held, leader.Load, func(err error) { t.Errorf("fatal: %v", err) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return held, leader, p
}

func TestParallelLogLeaderWriteReturnsEarlyAndIsReadable(t *testing.T) {
	held, _, p := newTestParallelLog(t)
	if err := p.StoreLogs(entries(1, 2)); err != nil {
		t.Fatal(err)
	}
	p.WaitDurable(2)

	held.hold()
	// The leader's write returns while the disk write is held.
	if !returnsWithin(5*time.Second, func() {
		if err := p.StoreLogs(entries(3, 4)); err != nil {
			t.Error(err)
		}
	}) {
		t.Fatal("leader StoreLogs blocked on the disk write")
	}
	if got := p.Durable(); got != 2 {
		t.Fatalf("durable = %d while entries 3-4 are held, want 2", got)
	}
	// Replication reads what it sends while it is being written.
	var l raft.Log
	if err := p.GetLog(4, &l); err != nil || string(l.Data) != "4" {
		t.Fatalf("GetLog(4) of a pending entry = %v, %q", err, l.Data)
	}
	if last, _ := p.LastIndex(); last != 4 {
		t.Fatalf("LastIndex = %d, want 4 (pending counts)", last)
	}
	// The FSM gate waits for the disk.
	if returnsWithin(100*time.Millisecond, func() { p.WaitDurable(3) }) {
		t.Fatal("WaitDurable(3) returned before entry 3 was written")
	}
	held.release()
	if !returnsWithin(5*time.Second, func() { p.WaitDurable(4) }) {
		t.Fatal("WaitDurable(4) did not return after the write")
	}
	if got := p.Durable(); got != 4 {
		t.Fatalf("durable = %d, want 4", got)
	}
	if err := held.LogStore.GetLog(4, &l); err != nil {
		t.Fatalf("entry 4 not in the inner store: %v", err)
	}
}

func TestParallelLogFollowerWriteIsDurableOnReturnAndOrdered(t *testing.T) {
	held, leader, p := newTestParallelLog(t)
	held.hold()
	if err := p.StoreLogs(entries(1, 3)); err != nil { // early: held
		t.Fatal(err)
	}
	leader.Store(false) // stepped down
	followerDone := make(chan error, 1)
	go func() { followerDone <- p.StoreLogs(entries(4, 5)) }()
	select {
	case err := <-followerDone:
		t.Fatalf("follower StoreLogs returned (%v) before the pending leader write was durable", err)
	case <-time.After(100 * time.Millisecond):
	}
	held.release()
	if err := <-followerDone; err != nil {
		t.Fatal(err)
	}
	if got := p.Durable(); got != 5 {
		t.Fatalf("durable = %d after the follower write returned, want 5", got)
	}
	for i := uint64(1); i <= 5; i++ {
		var l raft.Log
		if err := held.LogStore.GetLog(i, &l); err != nil {
			t.Fatalf("entry %d missing from the inner store: %v", i, err)
		}
	}
}

func TestParallelLogTailTruncationWaitsAndLowersDurable(t *testing.T) {
	held, leader, p := newTestParallelLog(t)
	if err := p.StoreLogs(entries(1, 5)); err != nil {
		t.Fatal(err)
	}
	p.WaitDurable(5)
	held.hold()
	if err := p.StoreLogs(entries(6, 8)); err != nil {
		t.Fatal(err)
	}
	// A head compaction below the pending entries does not wait.
	if !returnsWithin(5*time.Second, func() {
		if err := p.DeleteRange(1, 2); err != nil {
			t.Error(err)
		}
	}) {
		t.Fatal("head compaction waited for the pending write")
	}
	// A tail truncation (a new leader overwrote us) waits, then lowers durable.
	leader.Store(false)
	done := make(chan error, 1)
	go func() { done <- p.DeleteRange(4, 8) }()
	select {
	case err := <-done:
		t.Fatalf("tail truncation returned (%v) while entries 6-8 were pending", err)
	case <-time.After(100 * time.Millisecond):
	}
	held.release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := p.Durable(); got != 3 {
		t.Fatalf("durable after truncating 4-8 = %d, want 3", got)
	}
	var l raft.Log
	if err := p.GetLog(6, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(6) after truncation = %v, want ErrLogNotFound", err)
	}
}

func TestParallelLogFailedEarlyWriteIsFatal(t *testing.T) {
	held := newHeldLog(raft.NewInmemStore())
	fatal := make(chan error, 1)
	p, err := newParallelLog(held, func() bool { return true }, func(err error) { fatal <- err })
	if err != nil {
		t.Fatal(err)
	}
	held.fail.Store(true)
	if err := p.StoreLogs(entries(1, 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-fatal:
		if !bytes.Contains([]byte(err.Error()), []byte("disk full")) {
			t.Fatalf("fatal error %v does not carry the cause", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a failed early write was not reported as fatal")
	}
	if got := p.Durable(); got != 0 {
		t.Fatalf("durable = %d after a failed write, want 0", got)
	}
}

// TestRecentLogCachesLargeEntriesApart: small entries are read back from
// the LogCache; the last batch holding a large entry is read back from
// memory too (up to largeBatchMax), an older one is not; DeleteRange
// forgets both.
func TestRecentLogCachesLargeEntriesApart(t *testing.T) {
	inner := raft.NewInmemStore()
	c, err := newRecentLog(inner)
	if err != nil {
		t.Fatal(err)
	}
	c.large.max = 3 * cacheEntryMax
	bigData := func(n int) []byte { return bytes.Repeat([]byte{byte(n)}, cacheEntryMax+1) }
	steps := [][]*raft.Log{
		{{Index: 1, Term: 1, Data: []byte("small")}},
		{{Index: 2, Term: 1, Data: bigData(2)}},
		{{Index: 3, Term: 2, Data: bigData(3)}, {Index: 4, Term: 2, Data: []byte("after")}},
		{{Index: 5, Term: 2, Data: []byte("small too")}},
	}
	for _, logs := range steps {
		if err := c.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
	}
	// Remove everything from the inner store behind the cache's back: what
	// can still be read comes from memory.
	if err := inner.DeleteRange(1, 5); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	for idx, want := range map[uint64]string{1: "small", 3: string(bigData(3)), 4: "after", 5: "small too"} {
		if err := c.GetLog(idx, &l); err != nil || string(l.Data) != want || l.Index != idx {
			t.Fatalf("entry %d not kept in memory: %v", idx, err)
		}
	}
	if err := c.GetLog(2, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("an older large batch was kept (GetLog = %v)", err)
	}
	// A large batch over the bound is not kept.
	huge := []*raft.Log{{Index: 6, Term: 2, Data: bigData(6)}, {Index: 7, Term: 2, Data: bigData(7)},
		{Index: 8, Term: 2, Data: bigData(8)}}
	if err := c.StoreLogs(huge); err != nil {
		t.Fatal(err)
	}
	if err := inner.DeleteRange(6, 8); err != nil {
		t.Fatal(err)
	}
	for _, idx := range []uint64{3, 6} {
		if err := c.GetLog(idx, &l); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog(%d) after a batch over the bound = %v, want ErrLogNotFound", idx, err)
		}
	}
	// A DeleteRange through the cache empties it and the large batch.
	if err := c.StoreLogs(steps[2]); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteRange(1, 5); err != nil {
		t.Fatal(err)
	}
	for _, idx := range []uint64{1, 3, 4} {
		if err := c.GetLog(idx, &l); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog(%d) after DeleteRange = %v, want ErrLogNotFound", idx, err)
		}
	}
}

func TestCappedPipelineCapsCommitIndex(t *testing.T) {
	rec := &recordingPipeline{}
	c := cappedPipeline{AppendPipeline: rec, durable: func() uint64 { return 7 }}
	for _, tc := range []struct{ commit, want uint64 }{{5, 5}, {7, 7}, {9, 7}} {
		if _, err := c.AppendEntries(&raft.AppendEntriesRequest{LeaderCommitIndex: tc.commit}, &raft.AppendEntriesResponse{}); err != nil {
			t.Fatal(err)
		}
		if rec.last != tc.want {
			t.Fatalf("commit %d sent as %d, want %d", tc.commit, rec.last, tc.want)
		}
	}
}

type recordingPipeline struct {
	raft.AppendPipeline
	last uint64
}

func (r *recordingPipeline) AppendEntries(args *raft.AppendEntriesRequest, _ *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	r.last = args.LeaderCommitIndex
	return nil, nil
}

// heldLogs are the held log stores of a test cluster's nodes, by node id.
type heldLogs struct {
	mu sync.Mutex
	m  map[string]*heldLog
}

func (h *heldLogs) of(tn *testNode) *heldLog {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[tn.cfg.NodeID]
}

// newHeldCluster opens a three-node cluster whose log stores can be held.
func newHeldCluster(t *testing.T) ([]*testNode, *heldLogs) {
	helds := &heldLogs{m: map[string]*heldLog{}}
	nodes := newGossipCluster(t, 3, func(c *Config) {
		id := c.NodeID
		c.wrapLog = func(s raft.LogStore) raft.LogStore {
			h := newHeldLog(s)
			helds.mu.Lock()
			helds.m[id] = h
			helds.mu.Unlock()
			return h
		}
	})
	for _, tn := range nodes {
		tn.mustOpen()
	}
	return nodes, helds
}

// TestNothingObservedBeforeTheLeaderLogIsDurable is the safety property of
// parallelLog on a real three-node cluster: while the leader's own log
// write is held, a command reaches the followers' logs and Raft's commit
// index on the leader (its early write counts), yet no node applies it,
// no follower learns it is committed, and the client gets no answer. Once
// the write lands, the command commits everywhere.
func TestNothingObservedBeforeTheLeaderLogIsDurable(t *testing.T) {
	nodes, helds := newHeldCluster(t)
	leader := waitOneLeader(t, nodes, 30*time.Second)
	applyOnLeader(t, nodes, clientCmd("c1"))

	held := helds.of(leader)
	held.hold()
	released := false
	defer func() {
		if !released {
			held.release()
		}
	}()

	before := leader.node.raft.LastIndex()
	idx := before + 1
	type result struct {
		res *fsm.Result
		err error
	}
	answered := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res, err := leader.node.Apply(ctx, createCmd("c1", "a1"))
		answered <- result{res, err}
	}()

	waitFor(t, "the entry in both followers' logs and committed in the leader's Raft", 10*time.Second, func() bool {
		for _, f := range followers(nodes, leader) {
			if f.node.raft.LastIndex() < idx {
				return false
			}
		}
		return leader.node.raft.CommitIndex() >= idx
	})
	// Watch for a while: nothing may observe the entry.
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		select {
		case r := <-answered:
			t.Fatalf("client answered (%v, %v) before the leader's log write was durable", r.res, r.err)
		default:
		}
		for _, tn := range nodes {
			if got := tn.fsm.AppliedIndex(); got >= idx {
				t.Fatalf("%s applied index %d >= %d before the leader's log write was durable", tn.cfg.NodeID, got, idx)
			}
			if tn != leader {
				if got := tn.node.raft.CommitIndex(); got >= idx {
					t.Fatalf("follower %s learned commit index %d >= %d before the leader's log write was durable", tn.cfg.NodeID, got, idx)
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}

	released = true
	held.release()
	select {
	case r := <-answered:
		if r.err != nil || r.res == nil || r.res.Code != fsm.CodeOK {
			t.Fatalf("create after release: %v / %+v", r.err, r.res)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no answer after the leader's write landed")
	}
	waitFor(t, "every node applies the entry", 10*time.Second, func() bool {
		for _, tn := range nodes {
			if tn.fsm.AppliedIndex() < idx {
				return false
			}
		}
		return true
	})
	assertSameState(t, nodes)
}

// TestReadBarrierWithinOnLaggingFollower: a follower that has not applied
// the read index (here: its log writes are held, so it lacks the entry)
// gives up after the lag with ErrLagging instead of waiting; the leader
// never does; once the follower catches up the barrier passes there too.
func TestReadBarrierWithinOnLaggingFollower(t *testing.T) {
	nodes, helds := newHeldCluster(t)
	leader := waitOneLeader(t, nodes, 30*time.Second)
	slow := followers(nodes, leader)[0]
	held := helds.of(slow)
	held.hold()
	released := false
	defer func() {
		if !released {
			held.release()
		}
	}()
	applyOnLeader(t, nodes, clientCmd("c1")) // commits with the other follower
	want := leader.fsm.AppliedIndex()

	err := slow.node.ReadBarrierWithin(ctxTimeout(t, 10*time.Second), 50*time.Millisecond)
	if !errors.Is(err, ErrLagging) {
		t.Fatalf("lagging follower: ReadBarrierWithin = %v, want ErrLagging", err)
	}
	if err := leader.node.ReadBarrierWithin(ctxTimeout(t, 10*time.Second), time.Nanosecond); err != nil {
		t.Fatalf("leader: ReadBarrierWithin = %v", err)
	}
	released = true
	held.release()
	if err := slow.node.ReadBarrierWithin(ctxTimeout(t, 10*time.Second), 5*time.Second); err != nil {
		t.Fatalf("caught-up follower: ReadBarrierWithin = %v", err)
	}
	if got := slow.fsm.AppliedIndex(); got < want {
		t.Fatalf("follower passed the barrier at applied index %d < %d", got, want)
	}
}
