package fsm

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestDecideKeyCheck: the first value is recorded, the same value again is
// accepted without a write, another value is refused with the first kept.
func TestDecideKeyCheck(t *testing.T) {
	tests := []struct {
		name     string
		stored   []byte
		value    []byte
		code     Code
		next     []byte
		recorded []byte
	}{
		{name: "first record", stored: nil, value: []byte("a"), code: CodeOK, next: []byte("a"), recorded: []byte("a")},
		{name: "same again", stored: []byte("a"), value: []byte("a"), code: CodeOK, recorded: []byte("a")},
		{name: "another value refused", stored: []byte("a"), value: []byte("b"), code: CodeKeyMismatch, recorded: []byte("a")},
		{name: "empty refused", stored: nil, value: nil, code: CodeInvalidRequest},
		{name: "empty refused after a record", stored: []byte("a"), value: []byte{}, code: CodeInvalidRequest, recorded: []byte("a")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next, res := decideKeyCheck(tt.stored, &KeyCheck{Value: tt.value}, t0)
			if res.Code != tt.code {
				t.Errorf("code %q, want %q", res.Code, tt.code)
			}
			if !bytes.Equal(next, tt.next) || (next == nil) != (tt.next == nil) {
				t.Errorf("next %q, want %q", next, tt.next)
			}
			if !bytes.Equal(res.KeyCheck, tt.recorded) {
				t.Errorf("result key check %q, want %q", res.KeyCheck, tt.recorded)
			}
			if res.Time != t0 {
				t.Errorf("time %d", res.Time)
			}
		})
	}
}

// TestKeyCheckThroughLog: the record is replicated state: readable from a
// View, kept by a later mismatching command, and back after a reopen.
func TestKeyCheckThroughLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	h := &harness{t: t, f: openFSM(t, path)}
	read := func(f *FSM) []byte {
		var v []byte
		if err := f.View(func(view *View) error { v = view.KeyCheck(); return nil }); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := read(h.f); v != nil {
		t.Fatalf("fresh state records %q", v)
	}
	h.mustOK(keyCheckCmd(t0, "first"))
	h.mustOK(keyCheckCmd(t0+1, "first"))
	if r := h.apply(keyCheckCmd(t0+2, "second")); r.Code != CodeKeyMismatch || string(r.KeyCheck) != "first" {
		t.Fatalf("mismatch: code %q key check %q", r.Code, r.KeyCheck)
	}
	if v := read(h.f); string(v) != "first" {
		t.Fatalf("recorded %q, want first", v)
	}
	if err := h.f.Close(); err != nil {
		t.Fatal(err)
	}
	f := openFSM(t, path)
	if v := read(f); string(v) != "first" {
		t.Fatalf("after reopen recorded %q, want first", v)
	}
}

// TestSampleActions returns stored actions of every client, at most n.
func TestSampleActions(t *testing.T) {
	h := newHarness(t)
	h.mustOK(createCmd(clA, t0, CreateRow{ActionID: "act_a", SealedPayload: []byte("pa")}))
	h.mustOK(createCmd(clB, t0, CreateRow{ActionID: "act_b", SealedPayload: []byte("pb")}))
	var got []*Action
	if err := h.f.View(func(v *View) error {
		var err error
		got, err = v.SampleActions(5)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "act_a" || got[1].ClientID != clB || string(got[1].SealedPayload) != "pb" {
		t.Fatalf("sample %+v", got)
	}
	if err := h.f.View(func(v *View) error {
		var err error
		got, err = v.SampleActions(1)
		return err
	}); err != nil || len(got) != 1 {
		t.Fatalf("sample of 1: %d %v", len(got), err)
	}
}
