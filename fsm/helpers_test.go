package fsm

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// Test fixtures: two clients and a base time.
const (
	clA   = "cl_a"
	clB   = "cl_b"
	t0    = int64(1_700_000_000_000) // Unix ms
	hour  = int64(60 * 60 * 1000)
	minMS = int64(60 * 1000)
)

// harness applies commands to one FSM through ApplyBatch, numbering entries.
type harness struct {
	t   testing.TB
	f   *FSM
	idx uint64
}

// newHarness opens an FSM in a temp dir with clients clA and clB created at t0.
func newHarness(t testing.TB) *harness {
	t.Helper()
	h := &harness{t: t, f: openFSM(t, filepath.Join(t.TempDir(), "state.db"))}
	h.mustOK(clientCmd(clA, t0))
	h.mustOK(clientCmd(clB, t0))
	return h
}

// openFSM opens an FSM and closes it when the test ends.
func openFSM(t testing.TB, path string) *FSM {
	t.Helper()
	f, err := Open(Options{Path: path, NoSync: true, InitialMmapSize: 64 << 20})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// entry encodes cmd as a raft log entry.
func entry(t testing.TB, idx uint64, cmd *Command) *raft.Log {
	t.Helper()
	b, err := EncodeCommand(cmd)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: b}
}

// apply applies one command as the next entry and returns its result.
func (h *harness) apply(cmd *Command) *Result {
	h.t.Helper()
	h.idx++
	out := h.f.ApplyBatch([]*raft.Log{entry(h.t, h.idx, cmd)})
	r, ok := out[0].(*Result)
	if !ok {
		h.t.Fatalf("entry %d: response %T %v, want *Result", h.idx, out[0], out[0])
	}
	return r
}

// mustOK applies cmd and fails the test unless it succeeds.
func (h *harness) mustOK(cmd *Command) *Result {
	h.t.Helper()
	r := h.apply(cmd)
	if r.Code != CodeOK {
		h.t.Fatalf("entry %d: code %q (%s), want OK", h.idx, r.Code, r.Message)
	}
	return r
}

// action reads an action through a View.
func (h *harness) action(clientID, id string) *Action {
	h.t.Helper()
	var a *Action
	if err := h.f.View(func(v *View) error {
		var err error
		a, err = v.Action(clientID, id)
		return err
	}); err != nil {
		h.t.Fatalf("view: %v", err)
	}
	return a
}

// hash returns the FSM's state hash.
func hashOf(t testing.TB, f *FSM) string {
	t.Helper()
	b, err := f.StateHash()
	if err != nil {
		t.Fatalf("state hash: %v", err)
	}
	return hex.EncodeToString(b)
}

func clientCmd(id string, ts int64) *Command {
	return &Command{Type: CmdCreateClient, Time: ts,
		CreateClient: &CreateClient{ID: id, Name: "name " + id, SecretHash: bytes.Repeat([]byte{1}, 32)}}
}

func revokeCmd(id string, ts int64) *Command {
	return &Command{Type: CmdRevokeClient, Time: ts, RevokeClient: &RevokeClient{ID: id}}
}

// createCmd is a JSON create of one row.
func createCmd(client string, ts int64, row CreateRow) *Command {
	if row.SealedPayload == nil {
		row.SealedPayload = []byte("sealed:" + row.ActionID)
	}
	return &Command{Type: CmdCreateActions, Time: ts, ClientID: client,
		Create: &CreateActions{Rows: []CreateRow{row}, DefaultTTLMS: DefaultTTLMS, MaxTTLMS: DefaultMaxTTLMS}}
}

func consumeCmd(client string, ts int64, id string) *Command {
	return &Command{Type: CmdConsume, Time: ts, ClientID: client, Consume: &Consume{ActionID: id}}
}

func consumePIN(client string, ts int64, id, pin string) *Command {
	c := consumeCmd(client, ts, id)
	c.Consume.PINGiven = true
	c.Consume.PINHash = pinHash(pin)
	return c
}

func cancelCmd(client string, ts int64, id string) *Command {
	return &Command{Type: CmdCancel, Time: ts, ClientID: client, Cancel: &Cancel{ActionID: id}}
}

func keyCheckCmd(ts int64, value string) *Command {
	return &Command{Type: CmdRecordKeyCheck, Time: ts, KeyCheck: &KeyCheck{Value: []byte(value)}}
}

func noopCmd(ts int64) *Command { return &Command{Type: CmdNoop, Time: ts} }

// withIdem sets an idempotency key and fingerprint on cmd.
func withIdem(cmd *Command, key, fp string) *Command {
	cmd.Idempotency = &Idempotency{Key: key, Fingerprint: []byte(fp)}
	return cmd
}

// pinHash stands in for the proposer's keyed PIN hash.
func pinHash(pin string) []byte { return []byte("h(" + pin + ")") }

// boltTx lets tests peek at buckets.
type boltTx = bolt.Tx

// testSeed returns the seed for a randomized test: FSM_TEST_SEED when set
// (to reproduce a failure), else the clock. It is always logged.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FSM_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FSM_TEST_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with FSM_TEST_SEED=%d)", seed, seed)
	return seed
}
