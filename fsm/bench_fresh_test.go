package fsm

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
)

// BenchmarkApplyBatchConsumeFresh is the consume that make bench drives:
// every command consumes a distinct open action, taken in creation order
// from a pool made by CSV creates of 1,000 rows, in batches of 64, 8 and 1
// (a loaded cluster's Raft batches are small, so what a commit costs counts
// more than what a command costs). pages/batch is bbolt's page writes per
// commit.
func BenchmarkApplyBatchConsumeFresh(b *testing.B) {
	for _, tc := range []struct {
		sync  bool
		batch int
	}{{false, 64}, {false, 8}, {false, 1}, {true, 64}, {true, 8}} {
		sync, batch := tc.sync, tc.batch
		b.Run(fmt.Sprintf("fsync=%v/batch=%d", sync, batch), func(b *testing.B) {
			f, idx := benchFSM(b, sync)
			created := 0
			// grow adds 100,000 open actions to the pool (not timed).
			grow := func() {
				for end := created + 100000; created < end; created += 1000 {
					c := &CreateActions{CSV: true}
					for j := created; j < created+1000; j++ {
						c.Rows = append(c.Rows, CreateRow{Row: j, ActionID: fmt.Sprintf("act_%012d", j), SealedPayload: benchPayload})
					}
					idx++
					f.ApplyBatch([]*raft.Log{entry(b, idx, &Command{Type: CmdCreateActions, Time: t0 + int64(created/1000), ClientID: clA, Create: c})})
				}
			}
			grow()
			n := 0
			pages := func() int64 { st := f.db.Stats(); return st.TxStats.GetWrite() }
			w0 := pages()
			b.ReportAllocs()
			for b.Loop() {
				if n+batch > created {
					b.StopTimer()
					grow()
					b.StartTimer()
				}
				logs := make([]*raft.Log, batch)
				for i := range logs {
					idx++
					logs[i] = entry(b, idx, consumeCmd(clA, t0+1000+int64(n/10), fmt.Sprintf("act_%012d", n)))
					n++
				}
				f.ApplyBatch(logs)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "cmds/s")
			// Page writes of the pool's growth are counted too; they are few
			// next to the consumes'.
			b.ReportMetric(float64(pages()-w0)/float64(b.N), "pages/batch")
		})
	}
}
