package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/testport"
)

// testTiming is the Raft tuning used by tests: small timeouts for speed.
const (
	testHeartbeat = 400 * time.Millisecond
	testElection  = 400 * time.Millisecond
)

// freePort returns a loopback address free for TCP and UDP (testport.Free).
func freePort(t testing.TB) string { return testport.Free(t) }

// testLogger writes to the test log at warn level (debug with -v and
// CLUSTER_DEBUG=1).
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("CLUSTER_DEBUG") != "" {
		level = slog.LevelDebug
	}
	w := &tWriter{t: t}
	// Registered first, so it runs after every node's cleanup: background
	// goroutines (memberlist probes) may still log after their node closed.
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// tWriter forwards log lines to the test log until the test ends.
type tWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(p))
	}
	return len(p), nil
}

// testClusterKey is the cluster key of test nodes.
var testClusterKey = []byte("exactonce-cluster-test-key-32byt")

// testNode is one node under test with its data dir and FSM.
type testNode struct {
	t    testing.TB
	cfg  Config
	fsm  *fsm.FSM
	node *Node
	// statePath, when set, is the FSM's state file (else
	// <DataDir>/state.db).
	statePath string
	cur       atomic.Pointer[Node]
}

// newTestNode prepares (but does not open) a node in a fresh data dir.
func newTestNode(t testing.TB, id string) *testNode {
	t.Helper()
	tn := &testNode{t: t}
	tn.cfg = Config{
		NodeID:           id,
		DataDir:          t.TempDir(),
		RaftAddr:         freePort(t),
		HTTPAdvertise:    "http://" + id + ".test",
		Identity:         PeerIdentity{ClusterKey: testClusterKey},
		Logger:           testLogger(t).With("test_node", id),
		HeartbeatTimeout: testHeartbeat,
		ElectionTimeout:  testElection,
		NoSync:           true,
		// No clock ticks unless a test asks: tests count entries.
		ClockTick: time.Hour,
	}
	return tn
}

// open opens the FSM and the node.
func (tn *testNode) open() error {
	tn.t.Helper()
	path := tn.statePath
	if path == "" {
		path = filepath.Join(tn.cfg.DataDir, "state.db")
	}
	f, err := fsm.Open(fsm.Options{Path: path, NoSync: true, InitialMmapSize: 16 << 20})
	if err != nil {
		return fmt.Errorf("open fsm: %w", err)
	}
	cfg := tn.cfg
	cfg.FSM = f
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := Open(ctx, cfg)
	if err != nil {
		_ = f.Close()
		return err
	}
	tn.fsm, tn.node = f, n
	tn.cur.Store(n)
	tn.t.Cleanup(func() { tn.close() })
	return nil
}

func (tn *testNode) mustOpen() {
	tn.t.Helper()
	if err := tn.open(); err != nil {
		tn.t.Fatalf("open %s: %v", tn.cfg.NodeID, err)
	}
}

// close closes the node and its FSM; safe to call twice.
func (tn *testNode) close() {
	if tn.node == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tn.node.Close(ctx); err != nil {
		tn.t.Errorf("close %s: %v", tn.cfg.NodeID, err)
	}
	tn.cur.Store(nil)
	if err := tn.fsm.Close(); err != nil {
		tn.t.Errorf("close fsm %s: %v", tn.cfg.NodeID, err)
	}
	tn.node, tn.fsm = nil, nil
}

// waitFor polls cond until it is true or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Commands used by tests.

func clientCmd(id string) *fsm.Command {
	return &fsm.Command{Type: fsm.CmdCreateClient, CreateClient: &fsm.CreateClient{ID: id, Name: id, SecretHash: make([]byte, 32)}}
}

func createCmd(client, actionID string) *fsm.Command {
	return &fsm.Command{Type: fsm.CmdCreateActions, ClientID: client, Create: &fsm.CreateActions{
		Rows:         []fsm.CreateRow{{ActionID: actionID, SealedPayload: []byte("sealed:" + actionID)}},
		DefaultTTLMS: 24 * 60 * 60 * 1000,
		MaxTTLMS:     366 * 24 * 60 * 60 * 1000,
	}}
}

func consumeCmd(client, actionID string) *fsm.Command {
	return &fsm.Command{Type: fsm.CmdConsume, ClientID: client, Consume: &fsm.Consume{ActionID: actionID}}
}

// mustApply applies cmd and requires CodeOK.
func mustApply(t testing.TB, n *Node, cmd *fsm.Command) *fsm.Result {
	t.Helper()
	res, err := n.Apply(ctxTimeout(t, 5*time.Second), cmd)
	if err != nil {
		t.Fatalf("apply %v: %v", cmd.Type, err)
	}
	if res.Code != fsm.CodeOK {
		t.Fatalf("apply %v: code %q (%s)", cmd.Type, res.Code, res.Message)
	}
	return res
}

// action reads an action from an FSM (nil when absent).
func action(t testing.TB, f *fsm.FSM, client, id string) *fsm.Action {
	t.Helper()
	var a *fsm.Action
	if err := f.View(func(v *fsm.View) error {
		var err error
		a, err = v.Action(client, id)
		return err
	}); err != nil {
		t.Fatalf("view: %v", err)
	}
	return a
}

func stateHash(t testing.TB, f *fsm.FSM) string {
	t.Helper()
	h, err := f.StateHash()
	if err != nil {
		t.Fatalf("state hash: %v", err)
	}
	return fmt.Sprintf("%x", h)
}

// isOneOf reports whether err is one of targets.
func isOneOf(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// kill stops the node like a crash would (no leadership transfer, no
// graceful gossip leave is awaited by peers) and closes its FSM.
func (tn *testNode) kill() {
	if tn.node == nil {
		return
	}
	n := tn.node
	n.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.closeErr = n.shutdown(ctx, false)
	})
	tn.close()
}

// applyOnLeader applies cmd on whichever node is the ready leader,
// retrying across leader changes (the loaded test machine can cause
// spurious elections). After an attempt with an unknown outcome, a
// CodeConflict (create) or CodeAlreadyUsed (consume) answer means an
// earlier attempt committed: that counts as success.
func applyOnLeader(t testing.TB, nodes []*testNode, cmd *fsm.Command) *fsm.Result {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	uncertain := false
	for {
		for _, tn := range nodes {
			if tn.node == nil || !tn.node.IsLeader() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			res, err := tn.node.Apply(ctx, cmd)
			cancel()
			switch {
			case err == nil && res.Code == fsm.CodeOK:
				return res
			case err == nil && uncertain && (res.Code == fsm.CodeConflict || res.Code == fsm.CodeAlreadyUsed):
				return res
			case err == nil:
				t.Fatalf("apply %v: code %q (%s)", cmd.Type, res.Code, res.Message)
			case errors.Is(err, ErrOutcomeUnknown):
				uncertain = true
			case !isOneOf(err, ErrNotLeader, ErrUnavailable):
				t.Fatalf("apply %v: %v", cmd.Type, err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("apply %v: no leader accepted it within 20s", cmd.Type)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
