package cluster

import (
	"time"
)

// workerIdleTimeout is how long an idle worker waits for more work before
// it exits.
const workerIdleTimeout = 10 * time.Second

// workers runs short tasks on reused goroutines.
//
// Why: the leader proposes each command of a forwarded batch on a goroutine
// of its own (they block in Raft concurrently). A fresh goroutine starts with
// a small stack, and proposing reaches deep enough to grow it two or three
// times, each growth copying the whole stack (measured at 5-6 % of the
// leader's CPU under consumes at 64 clients when the leader still ran a
// forwarded HTTP request per command). A worker keeps its grown stack.
//
// Make one with newWorkers (the zero value's nil channel never hands a task
// over, so every task would get a goroutine of its own). Idle workers exit
// after workerIdleTimeout, so a quiet server keeps none.
type workers struct {
	// tasks hands a task to an idle worker; unbuffered, so a send succeeds
	// only when a worker is waiting.
	tasks chan func()
}

func newWorkers() *workers { return &workers{tasks: make(chan func())} }

// Go runs task on an idle worker, or on a new one when none is idle. It
// never blocks on busy workers.
func (w *workers) Go(task func()) {
	select {
	case w.tasks <- task:
	default:
		go w.work(task)
	}
}

// work runs task, then further tasks until it has been idle for
// workerIdleTimeout.
func (w *workers) work(task func()) {
	idle := time.NewTimer(workerIdleTimeout)
	defer idle.Stop()
	for {
		task()
		idle.Reset(workerIdleTimeout)
		select {
		case task = <-w.tasks:
		case <-idle.C:
			return
		}
	}
}
