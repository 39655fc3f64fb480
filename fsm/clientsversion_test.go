package fsm

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"
)

// ClientsVersion moves when, and only when, the stored clients may have
// changed: caches of client records (authentication) rely on it to see a
// revocation at once.
func TestClientsVersion(t *testing.T) {
	h := newHarness(t)
	v := h.f.ClientsVersion()
	h.mustOK(createCmd(clA, t0+1, CreateRow{ActionID: "act_v1"}))
	h.mustOK(consumeCmd(clA, t0+2, "act_v1"))
	if h.f.ClientsVersion() != v {
		t.Fatal("action commands changed the clients version")
	}
	h.mustOK(revokeCmd(clB, t0+3))
	v2 := h.f.ClientsVersion()
	if v2 == v {
		t.Fatal("a revoke did not change the clients version")
	}
	h.mustOK(clientCmd("cl_new", t0+4))
	if h.f.ClientsVersion() == v2 {
		t.Fatal("a client create did not change the clients version")
	}

	// A restore replaces every client: the version moves too.
	data := snapshotBytes(t, h.f)
	other := openFSM(t, filepath.Join(t.TempDir(), "state.db"))
	before := other.ClientsVersion()
	if err := other.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if other.ClientsVersion() == before {
		t.Fatal("a restore did not change the clients version")
	}
}
