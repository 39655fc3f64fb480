package cluster

import (
	"sync"
	"testing"
	"time"
)

// Go never waits for a busy worker: tasks that each block until all of
// them have started must all run at once, on reused and new workers alike.
func TestWorkersRunTasksConcurrently(t *testing.T) {
	w := newWorkers()
	for round := 0; round < 3; round++ { // later rounds reuse idle workers
		const n = 50
		var started, done sync.WaitGroup
		started.Add(n)
		done.Add(n)
		release := make(chan struct{})
		for i := 0; i < n; i++ {
			w.Go(func() {
				defer done.Done()
				started.Done()
				<-release
			})
		}
		all := make(chan struct{})
		go func() { started.Wait(); close(all) }()
		select {
		case <-all:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: not all %d tasks started together", round, n)
		}
		close(release)
		done.Wait()
	}
}
