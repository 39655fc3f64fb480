package main

import (
	"fmt"

	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/secure"
)

// payloadVetter returns the leader's check of a command before it is
// proposed (cluster.Config.Vet): a consume of an open action whose payload
// this node cannot open with keys is refused, so the leader never burns an
// action it could not hand over (with a wrong key the consume would commit
// and its answer would be a 500). The error wraps secure.ErrCannotOpen.
//
// It reads the action from the leader's local state. An action that does
// not exist there (or not yet: its create is committed but not applied), is
// consumed or canceled, expired with its payload erased, or belongs to
// another client passes: the FSM
// decides the consume from the log, and for a settled or absent action it
// cannot win. Commands other than a consume always pass. The cost is one
// read transaction and one AES-GCM open per consume on the leader.
func payloadVetter(state *fsm.FSM, keys *secure.Keys) func(*fsm.Command) error {
	return func(cmd *fsm.Command) error {
		if cmd == nil || cmd.Type != fsm.CmdConsume || cmd.Consume == nil {
			return nil
		}
		var a *fsm.Action
		if err := state.View(func(v *fsm.View) error {
			var err error
			a, err = v.Action(cmd.ClientID, cmd.Consume.ActionID)
			return err
		}); err != nil {
			return fmt.Errorf("vet consume of %s: %w", cmd.Consume.ActionID, err)
		}
		// An open action without a payload expired and had it erased
		// (retention): the FSM answers 410, nothing to hand over.
		if a == nil || a.ConsumedAt != 0 || a.CanceledAt != 0 || len(a.SealedPayload) == 0 {
			return nil
		}
		if _, err := keys.OpenPayload(a.ID, a.SealedPayload); err != nil {
			return fmt.Errorf("vet consume: this node's cluster key cannot open the payload, refusing to consume it: %w", err)
		}
		return nil
	}
}
