package fsm

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// BenchmarkDiskPerAction reports the state file's size per action and how
// full the leaf pages of the largest buckets are (bbolt's
// LeafInuse/LeafAlloc) after two workloads. in-order: 200,000 create +
// consume cycles the way a loaded node sees them (Raft batches of 64
// entries: 32 single-row creates of two clients, with ids that sort by
// creation time as the server makes them, and 32 consumes of the previous
// batch's actions; nothing is purged). random-expiries: 200,000 actions
// created by CSV with expiries spread at random over 30 days, one in ten
// consumed (benchClientFSM), so the expiresAt-keyed buckets get their keys
// out of order. Run with -benchtime=1x:
//
//	go test -run '^$' -bench DiskPerAction -benchtime=1x ./fsm
func BenchmarkDiskPerAction(b *testing.B) {
	const n, half = 200000, benchBatch / 2
	b.Run("in-order", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			f, idx := benchFSM(b, false)
			now := t0
			id := func(i int) string { return fmt.Sprintf("act_%012d%016x", i, uint64(i)*0x9e3779b97f4a7c15) }
			client := func(i int) string { return []string{clA, clB}[i%2] }
			b.StartTimer()
			for i := 0; i < n; i += half {
				logs := make([]*raft.Log, 0, benchBatch)
				for j := i; j < i+half; j++ {
					idx++
					now++
					logs = append(logs, entry(b, idx, createCmd(client(j), now, CreateRow{ActionID: id(j), SealedPayload: benchPayload})))
				}
				for j := i - half; j < i; j++ {
					if j < 0 {
						continue
					}
					idx++
					now++
					logs = append(logs, entry(b, idx, consumeCmd(client(j), now, id(j))))
				}
				f.ApplyBatch(logs)
			}
			b.StopTimer()
			reportDisk(b, f, n)
			b.StartTimer()
		}
	})
	b.Run("random-expiries", func(b *testing.B) {
		for b.Loop() {
			f, _ := benchClientFSM(b, n)
			b.StopTimer()
			reportDisk(b, f, n)
			b.StartTimer()
		}
	})
}

// reportDisk reports the state file's size per action and the leaf fill
// of the largest buckets, then closes f.
func reportDisk(b *testing.B, f *FSM, n int) {
	st, err := os.Stat(f.opts.Path)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.Size())/float64(n), "file-B/action")
	err = f.db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketActions, bucketIxCreated, bucketIxState, bucketIxExpires, bucketDuePurge, bucketDueExpiry} {
			b.ReportMetric(fill(tx.Bucket(name).Stats()), string(name)+"-fill-%")
		}
		var all bolt.BucketStats
		_ = tx.ForEach(func(_ []byte, bk *bolt.Bucket) error { all.Add(bk.Stats()); return nil })
		b.ReportMetric(fill(all), "all-fill-%")
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// fill is the share of a bucket's leaf pages in use, in percent.
func fill(s bolt.BucketStats) float64 {
	if s.LeafAlloc == 0 {
		return 0
	}
	return 100 * float64(s.LeafInuse) / float64(s.LeafAlloc)
}

// fileSink is a raft.SnapshotSink into a file, fsynced on Close as
// hashicorp/raft's FileSnapshotStore does.
type fileSink struct {
	f *os.File
	w *bufio.Writer
}

func (s *fileSink) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *fileSink) ID() string                  { return s.f.Name() }
func (s *fileSink) Cancel() error               { return s.f.Close() }
func (s *fileSink) Close() error {
	if err := s.w.Flush(); err != nil {
		return err
	}
	if err := s.f.Sync(); err != nil {
		return err
	}
	return s.f.Close()
}

// BenchmarkSnapshot1M measures what a snapshot costs at one million
// actions (one client, one in ten consumed, 300 B payloads, the layout of
// benchClientFSM): persist is Snapshot + Persist into a file, fsynced, as
// Raft's snapshot store writes it while applies go on; restore is Restore
// of that file into another FSM, as a follower installs it. Building the
// state takes a few minutes and is not timed:
//
//	go test -run '^$' -bench Snapshot1M -benchtime 3x -timeout 40m ./fsm
func BenchmarkSnapshot1M(b *testing.B) {
	f, _ := benchClientFSM(b, 1_000_000)
	benchSnapshot(b, f)
}

// BenchmarkTenMillion measures, at ten million actions of one client (the
// layout of benchClientFSM), a stats call, lists that match nothing (each
// ends at the scan budget with a nextToken) and a snapshot's persist and
// restore. The state takes about 15 GB of disk in the temp dir and most
// of an hour to build on a small machine; it is not timed:
//
//	go test -run '^$' -bench TenMillion -benchtime 1x -timeout 3h ./fsm
func BenchmarkTenMillion(b *testing.B) { benchReadsAndSnapshot(b, 10_000_000) }

// benchReadsAndSnapshot runs BenchmarkTenMillion's sub-benchmarks over n
// actions.
func benchReadsAndSnapshot(b *testing.B, n int) {
	f, now := benchClientFSM(b, n)
	reads := []struct {
		name string
		read func(v *View) error
	}{
		{"stats", func(v *View) error { _, err := v.Stats(clA, now+hour); return err }},
		{"list/active_from", func(v *View) error {
			_, err := v.List(ListQuery{ClientID: clA, Now: now, ActiveFrom: now + 400*DefaultTTLMS})
			return err
		}},
		{"list/state=canceled", func(v *View) error {
			_, err := v.List(ListQuery{ClientID: clA, Now: now, State: StateCanceled})
			return err
		}},
	}
	for _, r := range reads {
		b.Run(r.name, func(b *testing.B) {
			// 20 calls per iteration: -benchtime 1x still averages a few.
			const calls = 20
			for b.Loop() {
				for range calls {
					if err := f.View(r.read); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*calls)/1000, "ms/call")
		})
	}
	benchSnapshot(b, f)
}

// benchSnapshot runs the persist and restore sub-benchmarks of f.
func benchSnapshot(b *testing.B, f *FSM) {
	snapPath := filepath.Join(b.TempDir(), "snapshot")
	persist := func(b *testing.B) {
		fh, err := os.Create(snapPath)
		if err != nil {
			b.Fatal(err)
		}
		s, err := f.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		defer s.Release()
		if err := s.Persist(&fileSink{f: fh, w: bufio.NewWriterSize(fh, 1<<20)}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("persist", func(b *testing.B) {
		for b.Loop() {
			persist(b)
		}
		st, err := os.Stat(snapPath)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(st.Size())/(1<<20), "MiB")
		// The snapshot copies the whole file, free pages included.
		b.ReportMetric(float64(f.db.Stats().FreeAlloc)/(1<<20), "free-MiB")
	})
	b.Run("restore", func(b *testing.B) {
		if _, err := os.Stat(snapPath); err != nil {
			persist(b)
		}
		to, err := Open(Options{Path: filepath.Join(b.TempDir(), "restored.db"), NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = to.Close() }()
		for b.Loop() {
			rc, err := os.Open(snapPath)
			if err != nil {
				b.Fatal(err)
			}
			if err := to.Restore(rc); err != nil {
				b.Fatal(err)
			}
		}
		if to.AppliedIndex() != f.AppliedIndex() {
			b.Fatalf("restored applied index %d, want %d", to.AppliedIndex(), f.AppliedIndex())
		}
	})
}
