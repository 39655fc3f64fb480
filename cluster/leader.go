package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/exactonce/exactonce/fsm"
)

// unsetReady clears leader readiness and wakes waiters.
func (n *Node) unsetReady() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.readyTerm = 0
	close(n.changed)
	n.changed = make(chan struct{})
}

// readiness reports whether this node is the leader of the term in which
// its barrier applied, and returns the channel closed at the next change.
//
// The term check matters when notifications lag: a node that lost
// leadership in term T and won term T+1 is Raft leader again before the
// observer has processed "lost"; the readiness of term T must not count
// for term T+1, whose commit index may still lag entries committed by an
// intermediate leader.
func (n *Node) readiness() (bool, <-chan struct{}) {
	n.mu.Lock()
	term, changed := n.readyTerm, n.changed
	n.mu.Unlock()
	return term != 0 && n.isLeaderOfTerm(term), changed
}

// isLeaderOfTerm reports whether Raft is leader in exactly term. The term
// is read before and after the state so that a concurrent election cannot
// pair a new term's state with an old term.
func (n *Node) isLeaderOfTerm(term uint64) bool {
	before := n.raft.CurrentTerm()
	leader := n.raft.State() == raft.Leader
	return leader && before == term && n.raft.CurrentTerm() == term
}

// observeLeadership is the single goroutine that follows Raft's leadership
// notifications. It drains NotifyCh at once (Raft blocks on it), unmarks
// readiness immediately on any transition and runs at most one leader loop
// at a time: the previous one is cancelled and awaited before the next
// starts.
func (n *Node) observeLeadership() {
	defer n.wg.Done()
	// run is the current leader loop, nil when there is none.
	type loopRun struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	var run *loopRun
	stop := func() {
		if run != nil {
			run.cancel()
			<-run.done
			run = nil
		}
	}
	defer stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case leader := <-n.notifyCh:
			// Any transition ends the previous term's readiness.
			n.unsetReady()
			stop()
			if !leader {
				n.log.Info("lost leadership")
				continue
			}
			n.log.Info("became leader; waiting for term barrier", "term", n.raft.CurrentTerm())
			ctx, cancel := context.WithCancel(n.ctx)
			run = &loopRun{cancel: cancel, done: make(chan struct{})}
			go func(ctx context.Context, done chan struct{}) {
				defer close(done)
				n.leaderLoop(ctx)
			}(ctx, run.done)
		}
	}
}

// leaderLoop runs while this node leads one term: it commits a term
// barrier so that every entry of earlier terms is committed and applied
// locally, and only then marks the node ready (IsLeader). It then
// reconciles gossip membership into the Raft configuration until the term
// ends.
//
// The term barrier is an fsm CmdNoop command, not raft.Barrier: Raft never
// hands LogBarrier (nor its own election LogNoop) entries to the FSM, so
// after a raft.Barrier the commit index would point at an entry the FSM
// never records, and a read barrier waiting for the FSM to reach the
// commit index would wait for the next write. After the noop command,
// every entry this term commits is a command or a configuration change,
// both of which advance the FSM's applied index, so "FSM applied index >=
// commit index" is reachable at every moment of the term.
func (n *Node) leaderLoop(ctx context.Context) {
	backoff := 50 * time.Millisecond
	var term uint64
	for {
		// The barrier counts for term only if this node led term from
		// before proposing it until after it applied: a node leads at most
		// one continuous stretch of a term.
		term = n.raft.CurrentTerm()
		if !n.isLeaderOfTerm(term) {
			return
		}
		err := n.termBarrier(ctx)
		if err == nil && n.isLeaderOfTerm(term) {
			break
		}
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("term barrier failed", "term", term, "err", err)
		if n.raft.State() != raft.Leader {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
	n.mu.Lock()
	if ctx.Err() == nil {
		n.readyTerm = term
		close(n.changed)
		n.changed = make(chan struct{})
	}
	n.mu.Unlock()
	n.hasState.Store(true)
	n.log.Info("leader ready", "term", term, "commitIndex", n.raft.CommitIndex())
	n.wg.Add(1)
	go n.clockLoop(ctx)

	if n.ml == nil {
		<-ctx.Done()
		return
	}
	n.reconcileLoop(ctx)
}

// termBarrier proposes a stamped CmdNoop and waits until it is applied.
func (n *Node) termBarrier(ctx context.Context) error {
	f, err := n.propose(&fsm.Command{Type: fsm.CmdNoop})
	if err != nil {
		return err
	}
	if err := waitFuture(ctx, f); err != nil {
		return fmt.Errorf("term barrier: %w", err)
	}
	if rerr, ok := f.Response().(error); ok {
		return fmt.Errorf("term barrier: state machine: %w", rerr)
	}
	return nil
}

// DefaultClockTick is Config.ClockTick's default.
const DefaultClockTick = 5 * time.Second

// clockLoop runs beside leaderLoop for the term: whenever a ClockTick
// passes without a newly applied entry, it proposes a stamped CmdNoop.
// The state machine never reads a clock, so without it an idle cluster's
// time would stand still: an action past its expiry would keep its
// payload, and one past its retention would stay stored, until the next
// client write. A busy cluster proposes nothing extra.
func (n *Node) clockLoop(ctx context.Context) {
	defer n.wg.Done()
	tick := n.cfg.ClockTick
	if tick <= 0 {
		tick = DefaultClockTick
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	last := n.fsm.AppliedIndex()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if cur := n.fsm.AppliedIndex(); cur != last {
			last = cur
			continue
		}
		f, err := n.propose(&fsm.Command{Type: fsm.CmdNoop})
		if err == nil {
			err = waitFuture(ctx, f)
		}
		if err != nil && ctx.Err() == nil {
			n.log.Debug("clock tick", "err", err)
		}
		last = n.fsm.AppliedIndex()
	}
}
