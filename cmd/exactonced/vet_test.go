package main

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/secure"
)

// applyAll applies cmds to f as consecutive log entries, failing on any
// result that is not OK.
func applyAll(t *testing.T, f *fsm.FSM, cmds ...*fsm.Command) {
	t.Helper()
	for _, c := range cmds {
		b, err := fsm.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		idx := f.AppliedIndex() + 1
		out := f.ApplyBatch([]*raft.Log{{Index: idx, Term: 1, Type: raft.LogCommand, Data: b}})
		if r, ok := out[0].(*fsm.Result); !ok || r.Code != fsm.CodeOK {
			t.Fatalf("apply %d: %v", c.Type, out[0])
		}
	}
}

func TestPayloadVetter(t *testing.T) {
	const now = int64(1_700_000_000_000)
	f, err := fsm.Open(fsm.Options{Path: filepath.Join(t.TempDir(), "state.db"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	right, wrong := testKeys(t, 1), testKeys(t, 2)
	create := func(id string) *fsm.Command {
		return &fsm.Command{Type: fsm.CmdCreateActions, Time: now, ClientID: fsm.DemoClientID, Create: &fsm.CreateActions{
			Rows: []fsm.CreateRow{{ActionID: id, SealedPayload: right.SealPayload(id, []byte(`{"a":1}`)), ExpiresAt: now + 3_600_000}}}}
	}
	consume := func(client, id string) *fsm.Command {
		return &fsm.Command{Type: fsm.CmdConsume, Time: now + 1, ClientID: client, Consume: &fsm.Consume{ActionID: id}}
	}
	expiring := create("act_expired")
	expiring.Create.Rows[0].ExpiresAt = now + 10
	applyAll(t, f,
		create("act_open"), create("act_consumed"), create("act_canceled"), expiring,
		consume(fsm.DemoClientID, "act_consumed"),
		&fsm.Command{Type: fsm.CmdCancel, Time: now + 1, ClientID: fsm.DemoClientID, Cancel: &fsm.Cancel{ActionID: "act_canceled"}},
		// Past the expiry and the journal's age: the sweep erases the
		// expired payload.
		&fsm.Command{Type: fsm.CmdNoop, Time: now + 5000},
		&fsm.Command{Type: fsm.CmdNoop, Time: now + 5001},
	)
	var erased *fsm.Action
	_ = f.View(func(v *fsm.View) error { erased, _ = v.Action(fsm.DemoClientID, "act_expired"); return nil })
	if erased == nil || len(erased.SealedPayload) != 0 {
		t.Fatalf("the expired action kept its payload: %+v", erased)
	}

	tests := []struct {
		name    string
		keys    *secure.Keys
		cmd     *fsm.Command
		refused bool
	}{
		{"open action, right key", right, consume(fsm.DemoClientID, "act_open"), false},
		{"open action, wrong key", wrong, consume(fsm.DemoClientID, "act_open"), true},
		{"no such action", wrong, consume(fsm.DemoClientID, "act_none"), false},
		{"another client's action", wrong, consume("cl_other", "act_open"), false},
		{"consumed action", wrong, consume(fsm.DemoClientID, "act_consumed"), false},
		{"canceled action", wrong, consume(fsm.DemoClientID, "act_canceled"), false},
		{"expired action, payload erased", right, consume(fsm.DemoClientID, "act_expired"), false},
		{"not a consume", wrong, &fsm.Command{Type: fsm.CmdCancel, ClientID: fsm.DemoClientID, Cancel: &fsm.Cancel{ActionID: "act_open"}}, false},
		{"create", wrong, create("act_new"), false},
		{"noop", wrong, &fsm.Command{Type: fsm.CmdNoop}, false},
		{"nil command", wrong, nil, false},
		{"consume without body", wrong, &fsm.Command{Type: fsm.CmdConsume}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := payloadVetter(f, tt.keys)(tt.cmd)
			if tt.refused {
				if !errors.Is(err, secure.ErrCannotOpen) {
					t.Fatalf("err = %v, want a refusal wrapping secure.ErrCannotOpen", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v, want nil", err)
			}
		})
	}
	// A refused consume changes nothing: the action is still open.
	if err := f.View(func(v *fsm.View) error {
		a, err := v.Action(fsm.DemoClientID, "act_open")
		if err == nil && (a == nil || a.ConsumedAt != 0) {
			t.Errorf("act_open after vetting: %+v", a)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
