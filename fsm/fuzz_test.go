package fsm

import (
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

// FuzzApplyEntry: entry data that decodes is applied (its response is a
// *Result and the applied index advances); any other stops the FSM with an
// *UnreadableEntryError and applies nothing, never another panic.
func FuzzApplyEntry(f *testing.F) {
	for _, c := range []*Command{
		clientCmd(clA, t0),
		createCmd(clA, t0, CreateRow{ActionID: "act_1", PINHash: pinHash("1")}),
		withIdem(consumePIN(clA, t0, "act_1", "2"), "k", "fp"),
		cancelCmd(clA, t0, "act_1"),
		revokeCmd(clA, t0),
		noopCmd(t0),
	} {
		b, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{1, 'n', 'u', 'l', 'l'})
	f.Add([]byte{2, 6, 0, 0, 0})
	f.Add([]byte{1, 99, 0, 0, 0})
	fsm, err := Open(Options{Path: filepath.Join(f.TempDir(), "fuzz.db"), NoSync: true, InitialMmapSize: 64 << 20})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = fsm.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		_, decodeErr := DecodeCommand(data)
		next := fsm.AppliedIndex() + 1
		var out []interface{}
		p := func() (p any) {
			defer func() { p = recover() }()
			out = fsm.ApplyBatch([]*raft.Log{{Index: next, Term: 1, Type: raft.LogCommand, Data: data}})
			return nil
		}()
		if decodeErr != nil {
			if ue, ok := p.(*UnreadableEntryError); !ok || ue.Index != next {
				t.Fatalf("undecodable entry: panic %T %v, want *UnreadableEntryError", p, p)
			}
			if fsm.AppliedIndex() != next-1 {
				t.Fatalf("applied %d after a stop at %d", fsm.AppliedIndex(), next)
			}
			return
		}
		if p != nil {
			t.Fatalf("entry that decodes panicked: %v", p)
		}
		if _, ok := out[0].(*Result); !ok {
			t.Fatalf("response %T", out[0])
		}
		if fsm.AppliedIndex() != next {
			t.Fatalf("applied %d, want %d", fsm.AppliedIndex(), next)
		}
	})
}
