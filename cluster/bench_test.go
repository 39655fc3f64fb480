package cluster

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkSingleNodeApply times sequential applies (one create each) on
// a single in-process node with a real fsync of the Raft log (raft-wal).
// The state machine does not sync, so the cost is mostly the log store's.
//
//	go test -run XXX -bench SingleNodeApply -benchtime 2000x ./cluster/
func BenchmarkSingleNodeApply(b *testing.B) {
	tn := newTestNode(b, "n1")
	tn.cfg.NoSync = false
	tn.mustOpen()
	if err := tn.node.WaitLeader(ctxTimeout(b, 10*time.Second)); err != nil {
		b.Fatalf("wait leader: %v", err)
	}
	mustApply(b, tn.node, clientCmd("cl_a"))
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		mustApply(b, tn.node, createCmd("cl_a", fmt.Sprintf("act_%d", i)))
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "applies/s")
}
