package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/exactonce/exactonce/client"
	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/httpapi"
	"github.com/exactonce/exactonce/internal/secure"
)

// buildCLI compiles the exactonce CLI once per test binary run, beside the
// server binary.
var buildCLIOnce struct {
	sync.Once
	path string
	err  error
}

func buildCLI(t testing.TB) string {
	t.Helper()
	buildServer(t) // makes the directory
	buildCLIOnce.Do(func() {
		buildCLIOnce.path = filepath.Join(buildOnce.dir, "exactonce")
		out, err := exec.Command("go", "build", "-o", buildCLIOnce.path, "../exactonce").CombinedOutput()
		if err != nil {
			buildCLIOnce.err = fmt.Errorf("go build the CLI: %v\n%s", err, out)
		}
	})
	if buildCLIOnce.err != nil {
		t.Fatal(buildCLIOnce.err)
	}
	return buildCLIOnce.path
}

// runCLI runs the CLI and returns its stdout, stderr and exit status.
func runCLI(t testing.TB, cli string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(cli, args...)
	cmd.Env = []string{"HOME=" + t.TempDir()}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run the CLI: %v", err)
	}
	return out.String(), errb.String(), code
}

// testNode is one node of a test cluster.
type testNode struct {
	id, dir, http, raft, gossip string
	p                           *proc
}

// newNodes picks the addresses and data dirs of a three-node cluster.
func newNodes(t testing.TB, prefix string) []*testNode {
	nodes := make([]*testNode, 3)
	for i := range nodes {
		nodes[i] = &testNode{id: fmt.Sprintf("%s%d", prefix, i+1), dir: t.TempDir(),
			http: freePort(t), raft: freePort(t), gossip: freePort(t)}
	}
	return nodes
}

// args are n's usual flags in a cluster of nodes: bootstrap-expect 3,
// joining the others.
func (n *testNode) args(nodes []*testNode, keyFile, tokenFile string) []string {
	var join []string
	for _, o := range nodes {
		if o != n {
			join = append(join, o.gossip)
		}
	}
	args := []string{"--node-id", n.id, "--data-dir", n.dir, "--http-addr", n.http, "--raft-addr", n.raft,
		"--gossip-addr", n.gossip, "--cluster-key-file", keyFile, "--admin-token-file", tokenFile,
		"--bootstrap-expect", fmt.Sprint(len(nodes))}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	return args
}

// waitConverged waits until every node is ready, sees three voters and
// reports the same applied index and state hash; it returns the hash.
func waitConverged(ctx context.Context, t *testing.T, nodes []*testNode, token string) string {
	t.Helper()
	var last []client.ClusterStatus
	for {
		last = last[:0]
		ok := true
		for _, n := range nodes {
			c, err := client.New("http://"+n.http, client.WithAdminToken(token))
			if err != nil {
				t.Fatal(err)
			}
			var st client.ClusterStatus
			got, err := c.ClusterStatusWithHash(ctx)
			if err == nil {
				st = *got
			}
			voters := 0
			for _, m := range st.Members {
				if m.Suffrage == "voter" {
					voters++
				}
			}
			last = append(last, st)
			if err != nil || !st.Ready || voters != 3 || st.StateHash == "" ||
				st.AppliedIndex != last[0].AppliedIndex || st.StateHash != last[0].StateHash {
				ok = false
			}
		}
		if ok {
			return last[0].StateHash
		}
		select {
		case <-ctx.Done():
			var logs strings.Builder
			for _, n := range nodes {
				fmt.Fprintf(&logs, "--- %s:\n%s\n", n.id, n.p.stderr.String())
			}
			t.Fatalf("the cluster did not converge: %+v\n%s", last, logs.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// bgAction is an action of the writer that runs during the save, with
// when its create and its consume were acknowledged (zero: not yet).
type bgAction struct {
	id                    string
	created, consumed     time.Time
	payload               string
	createdBy, consumedBy int
}

// TestSnapshotSaveAndRestore runs the real binaries: a backup saved from a
// follower of a three-node cluster while a writer creates and consumes,
// restored into a fresh three-node cluster (one node with --restore, two
// joining with their usual flags): every action acknowledged before the
// save began has the same state there, the idempotency record replays,
// the nodes' state hashes agree. A flipped byte, a truncated file and
// another cluster key are refused with a clear error, and nothing is
// written to the data dir.
func TestSnapshotSaveAndRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server and CLI binaries")
	}
	bin, cli := buildServer(t), buildCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 16))

	secrets := t.TempDir()
	keyFile, otherKeyFile, tokenFile := filepath.Join(secrets, "cluster.key"), filepath.Join(secrets, "other.key"), filepath.Join(secrets, "admin.token")
	const token = "backup-test-admin-token-0123456789"
	for f, v := range map[string]string{keyFile: b64Key(3), otherKeyFile: b64Key(4), tokenFile: token} {
		if err := os.WriteFile(f, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	src := newNodes(t, "src")
	for _, n := range src {
		n.p = start(t, bin, n.args(src, keyFile, tokenFile)...)
	}
	waitConverged(ctx, t, src, token)
	admin, err := client.New("http://"+src[0].http, client.WithAdminToken(token))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := admin.CreateClient(ctx, "backup-test")
	if err != nil {
		t.Fatal(err)
	}
	// Writers on every node: followers forward to the leader.
	clients := make([]*client.Client, len(src))
	for i, n := range src {
		if clients[i], err = client.New("http://"+n.http, client.WithCredentials(nc.ClientID, nc.ClientSecret)); err != nil {
			t.Fatal(err)
		}
	}

	// Actions settled before the save, one of each end state.
	want := map[string]string{} // action id -> state
	for i := range 40 {
		c := clients[rng.IntN(len(clients))]
		req := client.CreateRequest{Payload: []byte(fmt.Sprintf(`{"i":%d}`, i))}
		if i%4 == 3 {
			req.PIN = "1234"
		}
		cr, err := c.Create(ctx, req)
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		switch i % 4 {
		case 0:
			want[cr.ActionID] = "active"
		case 1:
			if _, err := c.Consume(ctx, cr.ActionID, nil); err != nil {
				t.Fatalf("consume: %v", err)
			}
			want[cr.ActionID] = "consumed"
		case 2:
			if _, err := c.Cancel(ctx, cr.ActionID); err != nil {
				t.Fatalf("cancel: %v", err)
			}
			want[cr.ActionID] = "canceled"
		case 3:
			for range 3 {
				_, err := c.Consume(ctx, cr.ActionID, &client.ConsumeRequest{PIN: "0000"})
				var ae *client.APIError
				if !errors.As(err, &ae) || ae.Status != 401 {
					t.Fatalf("wrong PIN: %v", err)
				}
			}
			want[cr.ActionID] = "consumed" // burned
		}
	}
	idemAction, err := clients[0].Create(ctx, client.CreateRequest{Payload: []byte(`{"idem":true}`)})
	if err != nil {
		t.Fatal(err)
	}
	idemFirst, err := clients[1].Consume(ctx, idemAction.ActionID, nil, client.WithIdempotencyKey("backup-idem-1"))
	if err != nil {
		t.Fatal(err)
	}

	// A writer creates and consumes on every node while the save runs.
	var mu sync.Mutex
	var bg []*bgAction
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			a := &bgAction{payload: fmt.Sprintf(`{"bg":%d}`, i), createdBy: i % 3, consumedBy: (i + 1) % 3}
			cr, err := clients[a.createdBy].Create(ctx, client.CreateRequest{Payload: []byte(a.payload)})
			if err != nil {
				continue // no definite answer: not counted
			}
			mu.Lock()
			a.id, a.created = cr.ActionID, time.Now()
			bg = append(bg, a)
			mu.Unlock()
			if _, err := clients[a.consumedBy].Consume(ctx, cr.ActionID, nil); err == nil {
				mu.Lock()
				a.consumed = time.Now()
				mu.Unlock()
			}
		}
	}()
	waitFor(ctx, t, "the writer's first actions", func() bool { mu.Lock(); defer mu.Unlock(); return len(bg) >= 20 })

	backup := filepath.Join(t.TempDir(), "backup.snap")
	saveStart := time.Now()
	// Saved from a follower's API: the read barrier makes its copy hold
	// everything acknowledged before the call.
	out, errOut, code := runCLI(t, cli, "--addr", "http://"+src[2].http, "--admin-token", token, "snapshot", "save", backup)
	if code != 0 {
		t.Fatalf("snapshot save: exit %d: %s", code, errOut)
	}
	// The writer goes on a little after the save, then stops.
	mu.Lock()
	after := len(bg) + 10
	mu.Unlock()
	waitFor(ctx, t, "writes after the save", func() bool { mu.Lock(); defer mu.Unlock(); return len(bg) >= after })
	close(stop)
	<-writerDone

	var saved struct {
		File          string `json:"file"`
		FormatVersion int    `json:"formatVersion"`
		Index         uint64 `json:"index"`
		Term          uint64 `json:"term"`
		KeyCheck      string `json:"keyCheck"`
		FileSize      int64  `json:"fileSize"`
		SHA256        string `json:"sha256"`
		Checksum      string `json:"checksum"`
		FSMTime       string `json:"fsmTime"`
	}
	if err := json.Unmarshal([]byte(out), &saved); err != nil {
		t.Fatalf("save printed %q: %v", out, err)
	}
	st, err := os.Stat(backup)
	if err != nil {
		t.Fatal(err)
	}
	keyCheck := fmt.Sprintf("%x", testKeys(t, 3).CheckValue())
	if saved.FormatVersion != 1 || saved.Index == 0 || saved.Term == 0 || saved.KeyCheck != keyCheck || saved.Checksum != "ok" ||
		saved.FileSize != st.Size() || len(saved.SHA256) != 64 || saved.FSMTime == "" {
		t.Fatalf("save reported %+v (file %d bytes, key check %s)", saved, st.Size(), keyCheck)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("the backup has mode %04o, want 0600", st.Mode().Perm())
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(backup), ".*partial*")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
	// Without the admin token: refused, nothing written.
	noToken := filepath.Join(t.TempDir(), "no-token.snap")
	if _, errOut, code := runCLI(t, cli, "--addr", "http://"+src[0].http, "snapshot", "save", noToken); code == 0 || !strings.Contains(errOut, "unauthorized") {
		t.Errorf("save without the admin token: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(noToken); err == nil {
		t.Errorf("a refused save wrote %s", noToken)
	}
	out, errOut, code = runCLI(t, cli, "snapshot", "inspect", backup)
	if code != 0 || !strings.Contains(out, fmt.Sprintf(`"index": %d`, saved.Index)) || !strings.Contains(out, `"checksum": "ok"`) ||
		!strings.Contains(out, saved.SHA256) || !strings.Contains(out, `"formatVersion": 1`) {
		t.Fatalf("inspect: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, n := range src {
		n.p.stop(t, 30*time.Second)
	}

	// Damaged files and another key are refused, leaving the data dir as
	// it was.
	good, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[len(good)/2] ^= 0x10
	damaged := map[string][]byte{"checksum mismatch": flipped, "truncated": good[:len(good)/2]}
	for problem, content := range damaged {
		path := filepath.Join(t.TempDir(), "damaged.snap")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := runCLI(t, cli, "snapshot", "inspect", path)
		if code != 6 || !strings.Contains(errOut, problem) {
			t.Errorf("inspect of a file with a %s: exit %d, want 6 naming the problem:\n%s", problem, code, errOut)
		}
		fresh := newNodes(t, "bad")[0]
		p := start(t, bin, append(fresh.args([]*testNode{fresh}, keyFile, tokenFile), "--restore", path)...)
		if code := p.waitExit(t, 30*time.Second); code != 2 || !strings.Contains(p.stderr.String(), problem) {
			t.Errorf("--restore of a file with a %s: exit %d, want 2 naming the problem:\n%s", problem, code, p.stderr.String())
		}
		assertNoState(t, fresh.dir)
	}
	other := newNodes(t, "other")[0]
	p := start(t, bin, append(other.args([]*testNode{other}, otherKeyFile, tokenFile), "--restore", backup)...)
	if code := p.waitExit(t, 30*time.Second); code != exitKeyMismatch || !strings.Contains(p.stderr.String(), keyCheck) {
		t.Errorf("--restore under another key: exit %d, want %d naming the backup's key check value %s:\n%s", code, exitKeyMismatch, keyCheck, p.stderr.String())
	}
	assertNoState(t, other.dir)

	// A fresh three-node cluster: one node restores, the others join with
	// their usual flags and receive the state through Raft.
	dst := newNodes(t, "dst")
	dst[0].p = start(t, bin, append(dst[0].args(dst, keyFile, tokenFile), "--restore", backup)...)
	for _, n := range dst[1:] {
		n.p = start(t, bin, n.args(dst, keyFile, tokenFile)...)
	}
	hash := waitConverged(ctx, t, dst, token)
	t.Logf("restored cluster converged, state hash %s", hash)

	for i, n := range dst {
		c, err := client.New("http://"+n.http, client.WithCredentials(nc.ClientID, nc.ClientSecret))
		if err != nil {
			t.Fatal(err)
		}
		for id, state := range want {
			a, err := c.Get(ctx, id)
			if err != nil || a.State != state {
				t.Fatalf("node %d: action %s: %v, state %+v, want %s", i, id, err, a, state)
			}
		}
		mu.Lock()
		checked := 0
		for _, b := range bg {
			if !b.created.Before(saveStart) {
				continue
			}
			a, err := c.Get(ctx, b.id)
			if err != nil {
				t.Fatalf("node %d: action %s acknowledged before the save: %v", i, b.id, err)
			}
			if !b.consumed.IsZero() && b.consumed.Before(saveStart) && a.State != "consumed" {
				t.Fatalf("node %d: action %s consumed before the save is %s", i, b.id, a.State)
			}
			checked++
		}
		mu.Unlock()
		if checked < 20 {
			t.Fatalf("only %d of the writer's actions predate the save", checked)
		}
	}
	// The idempotency record came along: the same key replays the 200.
	c, err := client.New("http://"+dst[2].http, client.WithCredentials(nc.ClientID, nc.ClientSecret))
	if err != nil {
		t.Fatal(err)
	}
	replay, err := c.Consume(ctx, idemAction.ActionID, nil, client.WithIdempotencyKey("backup-idem-1"))
	if err != nil || string(replay.Payload) != string(idemFirst.Payload) || !replay.ConsumedAt.Equal(idemFirst.ConsumedAt) {
		t.Fatalf("idempotent replay after the restore: %v %+v, first %+v", err, replay, idemFirst)
	}
	// The restored cluster takes writes.
	if cr, err := c.Create(ctx, client.CreateRequest{Payload: []byte(`{"after":"restore"}`)}); err != nil {
		t.Fatalf("create after the restore: %v", err)
	} else if got, err := c.Consume(ctx, cr.ActionID, nil); err != nil || string(got.Payload) != `{"after":"restore"}` {
		t.Fatalf("consume after the restore: %v", err)
	}

	// --restore again on the node that restored: refused, the node's state
	// untouched.
	dst[0].p.stop(t, 30*time.Second)
	again := start(t, bin, append(dst[0].args(dst, keyFile, tokenFile), "--restore", backup)...)
	if code := again.waitExit(t, 30*time.Second); code != 2 || !strings.Contains(again.stderr.String(), "already holds state") {
		t.Errorf("--restore on a data dir with state: exit %d, want 2:\n%s", code, again.stderr.String())
	}
}

// assertNoState fails when dir holds a state file or Raft storage.
func assertNoState(t *testing.T, dir string) {
	t.Helper()
	for _, name := range restoreLeftovers {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("a refused restore left %s in the data dir", name)
		}
	}
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestSaveOutlivesTheWriteTimeout: a backup's answer may take far longer
// than the API server's WriteTimeout; deadlineWriter extends the deadline
// on each write, also through the API's middleware (its writers unwrap to
// the connection). A body written slowly over 1.2 s arrives whole from a
// server whose write timeout is 300 ms.
func TestSaveOutlivesTheWriteTimeout(t *testing.T) {
	keys := testKeys(t, 1)
	reg := prometheus.NewRegistry()
	slow := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		dw := &deadlineWriter{w: w, rc: http.NewResponseController(w), idle: 300 * time.Millisecond}
		for range 12 {
			if _, err := dw.Write(bytes.Repeat([]byte{'x'}, 1000)); err != nil {
				return
			}
			_ = http.NewResponseController(w).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	}
	api, err := httpapi.New(httpapi.Config{
		Keys: keys, AdminTokenHash: secure.HashSecret("admin-token-for-tests"),
		Logger: slog.New(slog.DiscardHandler), Registry: reg, Gatherer: reg,
		Extra: func(r *mux.Router) { r.HandleFunc("/slow", slow) },
	}, (*cluster.Node)(nil)) // never called: the route is the test's own
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: api, WriteTimeout: 300 * time.Millisecond, ReadHeaderTimeout: time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	res, err := http.Get("http://" + ln.Addr().String() + "/slow")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || len(body) != 12000 {
		t.Fatalf("got %d of 12000 bytes: %v", len(body), err)
	}
}
