package main

import (
	"context"
	"fmt"
	"time"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
)

// syncRetention makes the cluster's retention (replicated state, read by
// the state machine's sweeps) this node's --retention: it proposes
// fsm.CmdSetRetention when they differ, and logs the change. The cluster
// keeps one value, so nodes started with different settings overwrite
// each other as they start (docs/operations.md, "Retention"). It retries
// while no leader can take the write, and gives up when ctx ends.
func (s *server) syncRetention(ctx context.Context, node *cluster.Node, state *fsm.FSM) error {
	want := s.cfg.Retention.Milliseconds()
	t := time.NewTicker(keyCheckRetry)
	defer t.Stop()
	for {
		var current int64
		if err := state.View(func(v *fsm.View) error {
			var err error
			current, err = v.Retention()
			return err
		}); err != nil {
			return fmt.Errorf("read the cluster's retention: %w", err)
		}
		if current == want {
			return nil
		}
		res, err := node.Apply(ctx, &fsm.Command{Type: fsm.CmdSetRetention, SetRetention: &fsm.SetRetention{RetentionMS: want}})
		switch {
		case err == nil && res.Code == fsm.CodeOK:
			s.log.Info("set the cluster's retention", "retention", s.cfg.Retention.String(),
				"was", (time.Duration(current) * time.Millisecond).String())
			return nil
		case err == nil:
			return fmt.Errorf("set the retention: %s %s", res.Code, res.Message)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("set the retention: %w", ctx.Err())
		case <-t.C:
		}
	}
}
