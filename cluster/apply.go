package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/exactonce/exactonce/fsm"
)

// applyHere stamps cmd.Time with this leader's clock (never going back),
// proposes it and waits for the FSM's result. It returns ErrNotLeader on a
// follower (Apply then forwards), ErrUnavailable when nothing was proposed,
// ErrRejected when Config.Vet refused the command and ErrOutcomeUnknown
// when the outcome cannot be known.
func (n *Node) applyHere(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	if err := n.waitTermReady(ctx); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		// Checked before proposing so that an expired request is never
		// proposed and then reported as unknown.
		return nil, fmt.Errorf("cluster: apply: %w (%w)", ErrUnavailable, err)
	}
	if n.cfg.Vet != nil {
		if err := n.cfg.Vet(cmd); err != nil {
			return nil, fmt.Errorf("cluster: apply: %w: %w", ErrRejected, err)
		}
	}
	f, err := n.propose(cmd)
	if err != nil {
		return nil, err
	}

	// Wait for the outcome in a goroutine: futures still queued when Raft
	// shuts down are never answered, and ctx must bound the wait.
	type outcome struct {
		err  error
		resp interface{}
	}
	ch := make(chan outcome, 1)
	go func() {
		err := f.Error()
		var resp interface{}
		if err == nil {
			resp = f.Response()
		}
		ch <- outcome{err: err, resp: resp}
	}()
	select {
	case o := <-ch:
		if o.err != nil {
			return nil, classifyApplyError(f, o.err)
		}
		switch r := o.resp.(type) {
		case *fsm.Result:
			if r == nil {
				return nil, errors.New("cluster: apply: state machine returned a nil result")
			}
			return r, nil
		case error:
			return nil, fmt.Errorf("cluster: apply: state machine: %w", r)
		default:
			return nil, fmt.Errorf("cluster: apply: unexpected state machine response %T", o.resp)
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("cluster: apply: %w (waiting for commit: %w)", ErrOutcomeUnknown, ctx.Err())
	case <-n.ctx.Done():
		return nil, fmt.Errorf("cluster: apply: %w (node closed while waiting for commit)", ErrOutcomeUnknown)
	}
}

// waitTermReady returns nil once this node is leader and its term barrier
// has applied, ErrNotLeader as soon as it is not the leader, and
// ErrUnavailable when ctx (or the node) ends first.
func (n *Node) waitTermReady(ctx context.Context) error {
	for {
		if n.closed.Load() {
			return fmt.Errorf("cluster: node closed: %w", ErrUnavailable)
		}
		if n.raft.State() != raft.Leader {
			return ErrNotLeader
		}
		ready, changed := n.readiness()
		if ready {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("cluster: leader not ready: %w (%w)", ErrUnavailable, ctx.Err())
		case <-n.ctx.Done():
			return fmt.Errorf("cluster: node closed: %w", ErrUnavailable)
		}
	}
}

// propose stamps and enqueues cmd. Stamping and enqueueing happen under
// one mutex so that the log order of this leader's entries is their stamp
// order; the enqueue is bounded by enqueueTimeout.
func (n *Node) propose(cmd *fsm.Command) (raft.ApplyFuture, error) {
	n.stampMu.Lock()
	defer n.stampMu.Unlock()
	// Never below a stamp this process handed out, the wall clock, or the
	// FSM clock (which carries earlier leaders' stamps across failover).
	t := max(n.lastStamp, n.now().UnixMilli(), n.sm.LastTime())
	cmd.Time = t
	data, err := fsm.EncodeCommand(cmd)
	if err != nil {
		return nil, fmt.Errorf("cluster: apply: encode command: %w", err)
	}
	n.lastStamp = t
	f := n.raft.Apply(data, enqueueTimeout)
	return f, nil
}

// classifyApplyError maps a failed apply future to the package errors.
// The rule, from hashicorp/raft v1.7.3's code:
//
//   - ErrEnqueueTimeout: the entry never reached Raft's apply channel.
//     Nothing was proposed: ErrUnavailable.
//   - ErrNotLeader: the entry was taken from the apply channel by a
//     follower loop or by a leader already stepping down, and answered
//     before being given an index. Nothing was proposed: ErrNotLeader.
//   - ErrLeadershipTransferInProgress: rejected before dispatch during a
//     leadership transfer. Nothing was proposed: ErrUnavailable.
//   - ErrRaftShutdown: either returned before enqueueing or, for an entry
//     dispatched and committed, when the FSM apply channel is abandoned at
//     shutdown. The future's Index tells which: 0 means it never got a log
//     index (ErrUnavailable); non-zero means it was written to the log
//     (ErrOutcomeUnknown).
//   - ErrLeadershipLost: the entry was dispatched (it is in the leader's
//     in-flight list) but the leader stepped down before it committed. It
//     may still commit under the next leader: ErrOutcomeUnknown.
//   - ErrAbortedByRestore: only with user snapshot restores, which this
//     service never performs; treated as ErrOutcomeUnknown to be safe.
//   - anything else: ErrOutcomeUnknown unless the future has no index.
func classifyApplyError(f raft.ApplyFuture, err error) error {
	proposed := f.Index() != 0
	switch {
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("cluster: apply: %w (%w)", ErrUnavailable, err)
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("cluster: apply: %w (%w)", ErrUnavailable, err)
	case !proposed:
		return fmt.Errorf("cluster: apply: %w (%w)", ErrUnavailable, err)
	default:
		return fmt.Errorf("cluster: apply: %w (%w)", ErrOutcomeUnknown, err)
	}
}
