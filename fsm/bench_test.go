package fsm

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

const benchBatch = 64

// benchFSM opens an FSM with two clients. sync selects fsync per batch.
func benchFSM(b *testing.B, sync bool) (*FSM, uint64) {
	f, err := Open(Options{Path: filepath.Join(b.TempDir(), "bench.db"), NoSync: !sync, InitialMmapSize: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = f.Close() })
	f.ApplyBatch([]*raft.Log{entry(b, 1, clientCmd(clA, t0)), entry(b, 2, clientCmd(clB, t0))})
	return f, 2
}

// payload is a typical sealed payload size (a few hundred bytes).
var benchPayload = make([]byte, 300)

// BenchmarkApplyBatchCreate applies batches of 64 single-row creates.
func BenchmarkApplyBatchCreate(b *testing.B) {
	for _, sync := range []bool{false, true} {
		b.Run(fmt.Sprintf("fsync=%v", sync), func(b *testing.B) {
			f, idx := benchFSM(b, sync)
			n := 0
			b.ReportAllocs()
			for b.Loop() {
				logs := make([]*raft.Log, benchBatch)
				for i := range logs {
					idx++
					n++
					logs[i] = entry(b, idx, createCmd(clA, t0+int64(n), CreateRow{
						ActionID: fmt.Sprintf("act_%012d", n), SealedPayload: benchPayload}))
				}
				f.ApplyBatch(logs)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "cmds/s")
		})
	}
}

// BenchmarkApplyBatchConsume applies batches of 64 consumes of distinct,
// pre-created actions.
func BenchmarkApplyBatchConsume(b *testing.B) {
	for _, sync := range []bool{false, true} {
		b.Run(fmt.Sprintf("fsync=%v", sync), func(b *testing.B) {
			f, idx := benchFSM(b, sync)
			// Pre-create in CSV batches (not timed).
			const pool = 20000
			for i := 0; i < pool; i += 1000 {
				c := &CreateActions{CSV: true}
				for j := i; j < i+1000; j++ {
					c.Rows = append(c.Rows, CreateRow{Row: j, ActionID: fmt.Sprintf("act_%012d", j), SealedPayload: benchPayload})
				}
				idx++
				f.ApplyBatch([]*raft.Log{entry(b, idx, &Command{Type: CmdCreateActions, Time: t0, ClientID: clA, Create: c})})
			}
			n := 0
			b.ReportAllocs()
			for b.Loop() {
				logs := make([]*raft.Log, benchBatch)
				for i := range logs {
					idx++
					// Beyond the pool, consumes answer already_used: still a full decision.
					logs[i] = entry(b, idx, consumeCmd(clA, t0+1, fmt.Sprintf("act_%012d", n%pool)))
					n++
				}
				f.ApplyBatch(logs)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "cmds/s")
		})
	}
}

// BenchmarkViewAction reads random actions, as a verify does, from states
// of several sizes: the cost of a lookup grows with the state because each
// level of bbolt's B+tree is a cold page.
func BenchmarkViewAction(b *testing.B) {
	for _, n := range []int{1000, 200000} {
		b.Run(fmt.Sprintf("actions=%d", n), func(b *testing.B) {
			f, idx := benchFSM(b, false)
			for i := 0; i < n; i += 1000 {
				c := &CreateActions{CSV: true}
				for j := i; j < i+1000 && j < n; j++ {
					c.Rows = append(c.Rows, CreateRow{Row: j, ActionID: fmt.Sprintf("act_%012d", j), SealedPayload: benchPayload})
				}
				idx++
				f.ApplyBatch([]*raft.Log{entry(b, idx, &Command{Type: CmdCreateActions, Time: t0, ClientID: clA, Create: c})})
			}
			ids := make([]string, 1<<16)
			for i := range ids {
				ids[i] = fmt.Sprintf("act_%012d", (i*7919)%n)
			}
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				err := f.View(func(v *View) error {
					a, err := v.Action(clA, ids[i%len(ids)])
					if a == nil && err == nil {
						b.Fatal("action not found")
					}
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkApplyCSV10000 applies one 10,000-row CSV create (one Raft
// entry) to a state that already holds 100,000 actions, with ids that sort
// in creation order (as secure.ActionIDs makes them) and with random ids
// (as before): the cost of scattering a batch over the B+tree.
func BenchmarkApplyCSV10000(b *testing.B) {
	for _, order := range []string{"sorted", "random"} {
		b.Run("ids="+order, func(b *testing.B) {
			f, idx := benchFSM(b, false)
			r := rand.New(rand.NewPCG(1, 2))
			seq := 0
			id := func() string {
				seq++
				if order == "sorted" {
					return fmt.Sprintf("act_%012d%016x", seq, r.Uint64())
				}
				return fmt.Sprintf("act_%016x%012d", r.Uint64(), seq)
			}
			batch := func() *raft.Log {
				c := &CreateActions{CSV: true}
				for j := 0; j < 10000; j++ {
					c.Rows = append(c.Rows, CreateRow{Row: j + 2, ActionID: id(), SealedPayload: benchPayload})
				}
				idx++
				return entry(b, idx, &Command{Type: CmdCreateActions, Time: t0, ClientID: clA, Create: c})
			}
			for i := 0; i < 10; i++ {
				f.ApplyBatch([]*raft.Log{batch()})
			}
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				e := batch()
				b.StartTimer()
				f.ApplyBatch([]*raft.Log{e})
			}
		})
	}
}

// benchClientFSM opens an FSM in which clA stores n actions, created in
// CSV batches of 10,000 a minute apart, with expiries spread over 30 days,
// one in eight activating later, and one in ten consumed.
func benchClientFSM(b *testing.B, n int) (*FSM, int64) {
	b.Helper()
	f, idx := benchFSM(b, false)
	rng := rand.New(rand.NewPCG(1, 2))
	now := t0
	for i := 0; i < n; i += 10000 {
		now += minMS
		c := &CreateActions{CSV: true, MaxActions: -1}
		for j := i; j < min(i+10000, n); j++ {
			row := CreateRow{Row: j - i + 2, ActionID: fmt.Sprintf("act_%09d", j), SealedPayload: benchPayload,
				ExpiresAt: now + 1 + rng.Int64N(30*DefaultTTLMS)}
			if j%8 == 0 {
				row.ActiveAt = now + rng.Int64N(row.ExpiresAt-now)
			}
			c.Rows = append(c.Rows, row)
		}
		idx++
		f.ApplyBatch([]*raft.Log{entry(b, idx, &Command{Type: CmdCreateActions, Time: now, ClientID: clA, Create: c})})
	}
	var logs []*raft.Log
	for j := 0; j < n; j += 10 {
		idx++
		now += 7
		logs = append(logs, entry(b, idx, consumeCmd(clA, now, fmt.Sprintf("act_%09d", j))))
		if len(logs) == 1000 {
			f.ApplyBatch(logs)
			logs = nil
		}
	}
	f.ApplyBatch(logs)
	return f, now
}

// BenchmarkStats reads one client's stats over 200,000 actions from the
// counters, and (scan) by reading every action as a stats call did before
// the counters, for comparison.
func BenchmarkStats(b *testing.B) {
	f, now := benchClientFSM(b, 200000)
	b.Run("counters", func(b *testing.B) {
		for b.Loop() {
			statsOf(b, f, clA, now+hour)
		}
	})
	b.Run("scan", func(b *testing.B) {
		for b.Loop() {
			bruteStats(b, f, clA, now+hour)
		}
	})
}

// BenchmarkListNoMatch lists 200,000 actions of one client with filters
// that match nothing: each call stops at the scan budget with a nextToken.
// unbounded is the same walk without a budget (the whole range), for
// comparison.
func BenchmarkListNoMatch(b *testing.B) {
	f, now := benchClientFSM(b, 200000)
	for _, tc := range []struct {
		name string
		q    ListQuery
	}{
		{"active_from", ListQuery{ActiveFrom: now + 400*DefaultTTLMS}},
		{"state=canceled", ListQuery{State: StateCanceled}},
		{"reason=invalid_pin_burned", ListQuery{ConsumedReason: ReasonPINBurned}},
		{"active_from/unbounded", ListQuery{ActiveFrom: now + 400*DefaultTTLMS, ScanBudget: 1 << 30}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			q := tc.q
			q.ClientID, q.Now = clA, now
			var p ListPage
			for b.Loop() {
				if err := f.View(func(v *View) error {
					var err error
					p, err = v.List(q)
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(p.Scanned), "scanned/op")
		})
	}
}
