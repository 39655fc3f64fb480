package fsm

import (
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

// FuzzApplyEntry: no entry data, however malformed, panics the FSM; every
// response is a *Result or an error, and the applied index advances.
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
	f.Add([]byte{1, '{', '"', 't', '"', ':', '1', ',', '"', 'c', 'r', 'e', 'a', 't', 'e', '"', ':', '{', '}', '}'})
	fsm, err := Open(Options{Path: filepath.Join(f.TempDir(), "fuzz.db"), NoSync: true, InitialMmapSize: 64 << 20})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = fsm.Close() })
	idx := uint64(0)
	f.Fuzz(func(t *testing.T, data []byte) {
		idx++
		out := fsm.ApplyBatch([]*raft.Log{{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}})
		switch out[0].(type) {
		case *Result, error:
		default:
			t.Fatalf("response %T", out[0])
		}
		if fsm.AppliedIndex() != idx {
			t.Fatalf("applied %d, want %d", fsm.AppliedIndex(), idx)
		}
	})
}
