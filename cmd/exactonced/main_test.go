package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/exactonce/exactonce/client"
	"github.com/exactonce/exactonce/internal/buildinfo"
	"github.com/exactonce/exactonce/internal/openapitest"
	"github.com/exactonce/exactonce/internal/testport"
)

// freePort returns a loopback address free for TCP and UDP (testport.Free).
func freePort(t testing.TB) string { return testport.Free(t) }

// buildServer compiles exactonced once per test binary run.
var buildOnce struct {
	sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildOnce.dir != "" {
		os.RemoveAll(buildOnce.dir)
	}
	os.Exit(code)
}

func buildServer(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "exactonced-test-bin")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.dir = dir
		buildOnce.path = filepath.Join(dir, "exactonced")
		out, err := exec.Command("go", "build", "-o", buildOnce.path, ".").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

// proc is a running exactonced.
type proc struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *syncBuffer
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t testing.TB, bin string, args ...string) *proc {
	t.Helper()
	return startEnv(t, bin, nil, args...)
}

// startEnv is start with extra environment variables.
func startEnv(t testing.TB, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "EXACTONCE_LOG_LEVEL=warn"), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 100), stderr: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// devCredentials reads stdout until both credentials are printed.
func (p *proc) devCredentials(t *testing.T, deadline time.Duration) (id, secret string) {
	t.Helper()
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for id == "" || secret == "" {
		select {
		case line, ok := <-p.lines:
			if !ok {
				// Wait for the exit, so that stderr is complete and the
				// exit status (a signal, a code) is known.
				var status any = "still running after its stdout closed"
				select {
				case err := <-p.done:
					status = err
					p.done <- err // for the cleanup
				case <-time.After(5 * time.Second):
				}
				t.Fatalf("exactonced exited before printing credentials (%v); stderr:\n%s", status, p.stderr.String())
			}
			if v, ok := strings.CutPrefix(line, "export ID="); ok {
				id = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "export SECRET="); ok {
				secret = strings.TrimSpace(v)
			}
		case <-timer.C:
			t.Fatalf("no dev credentials within %s; stderr:\n%s", deadline, p.stderr.String())
		}
	}
	return id, secret
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T, deadline time.Duration) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exactonced exited with %v after SIGTERM; stderr:\n%s", err, p.stderr.String())
		}
	case <-time.After(deadline):
		t.Fatalf("exactonced did not exit within %s of SIGTERM; stderr:\n%s", deadline, p.stderr.String())
	}
}

// checkedHTTP is an HTTP client that checks every exchange against the
// OpenAPI document (internal/openapitest), failing t on a mismatch.
func checkedHTTP(t *testing.T) *http.Client {
	return &http.Client{Transport: openapitest.New(t).Transport(t, client.NewTransport())}
}

func waitHTTPReady(ctx context.Context, t *testing.T, c *client.Client) {
	t.Helper()
	for {
		ok, _ := c.Ready(ctx)
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node not ready: %v", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// devNode builds the server and returns it with a fresh data dir, a free
// API address and the arguments of a single dev node using them. It skips
// the test in -short mode.
func devNode(t *testing.T) (bin, dataDir, httpAddr string, args []string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	bin, dataDir, httpAddr = buildServer(t), t.TempDir(), freePort(t)
	args = []string{"--dev", "--data-dir", dataDir, "--http-addr", httpAddr,
		"--raft-addr", freePort(t), "--gossip-addr", freePort(t)}
	return bin, dataDir, httpAddr, args
}

// TestDevServerEndToEnd runs the real binary: dev credentials, create,
// consume, second consume 409, graceful SIGTERM, restart on the same data
// dir with the same credentials and the action still consumed.
func TestDevServerEndToEnd(t *testing.T) {
	bin, dataDir, httpAddr, args := devNode(t)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	p := start(t, bin, args...)
	id, secret := p.devCredentials(t, 60*time.Second)
	hc := checkedHTTP(t)
	c, err := client.New("http://"+httpAddr, client.WithCredentials(id, secret), client.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	waitHTTPReady(ctx, t, c)

	created, err := c.Create(ctx, client.CreateRequest{Payload: []byte(`{"email":"a@example.com"}`)})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	consumed, err := c.Consume(ctx, created.ActionID, nil)
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	if string(consumed.Payload) != `{"email":"a@example.com"}` {
		t.Errorf("payload = %s", consumed.Payload)
	}
	_, err = c.Consume(ctx, created.ActionID, nil)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != 409 || ae.Code != "already_used" {
		t.Fatalf("second consume: %v, want 409 already_used", err)
	}
	token, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatalf("admin token file: %v", err)
	}
	for _, f := range []string{"admin.token", "dev-client.json", "cluster.key", "node-id"} {
		st, err := os.Stat(filepath.Join(dataDir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v mode %v, want 0600", f, err, st.Mode().Perm())
		}
	}
	if strings.Contains(p.stderr.String(), strings.TrimSpace(string(token))) {
		t.Errorf("the admin token appears in the logs")
	}
	p.stop(t, 30*time.Second)

	p2 := start(t, bin, args...)
	id2, secret2 := p2.devCredentials(t, 60*time.Second)
	if id2 != id || secret2 != secret {
		t.Errorf("restart printed other credentials: %s/%s vs %s/%s", id2, secret2, id, secret)
	}
	waitHTTPReady(ctx, t, c)
	a, err := c.Get(ctx, created.ActionID)
	if err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	if a.State != "consumed" || a.ConsumedAt == nil {
		t.Errorf("after restart state = %q consumedAt = %v, want consumed", a.State, a.ConsumedAt)
	}
	_, err = c.Consume(ctx, created.ActionID, nil)
	if !client.IsCode(err, "already_used") {
		t.Errorf("consume after restart: %v, want already_used", err)
	}
	admin, err := client.New("http://"+httpAddr, client.WithAdminToken(strings.TrimSpace(string(token))), client.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	var raw []byte
	if st, err := admin.ClusterStatus(ctx, client.CaptureBody(&raw)); err != nil {
		t.Errorf("cluster status with the generated admin token: %v", err)
	} else {
		if strings.Contains(string(raw), "stateHash") {
			t.Errorf("cluster status hashes the state without being asked: %s", raw)
		}
		if st.Version == "" || len(st.Members) != 1 || st.Members[0].Version != st.Version {
			t.Errorf("cluster status: version %q, members %+v: want the node's version on it and on its member", st.Version, st.Members)
		}
		if v, err := admin.ServerVersion(ctx); err != nil || v != st.Version {
			t.Errorf("ServerVersion with the admin token = %q, %v; want %q", v, err, st.Version)
		}
		if v, err := c.ServerVersion(ctx); err != nil || v != st.Version {
			t.Errorf("ServerVersion from /metrics = %q, %v; want %q", v, err, st.Version)
		}
	}
	if st, err := admin.ClusterStatusWithHash(ctx); err != nil || len(st.StateHash) != 64 {
		t.Errorf("cluster status ?stateHash=true: %v %+v", err, st)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/v1/cluster?hash=1", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("cluster status with an unknown parameter: %v %v, want 400", err, resp)
	} else {
		resp.Body.Close()
	}
	if _, err := c.ClusterStatus(ctx); !client.IsCode(err, "unauthorized") {
		t.Errorf("cluster status without the admin token: %v, want 401 unauthorized", err)
	}
	if _, err := admin.TransferLeadership(ctx, ""); !client.IsCode(err, "conflict") {
		t.Errorf("transfer on a single node: %v, want 409 conflict", err)
	}
	if _, err := admin.RemoveServer(ctx, "no-such-node"); !client.IsCode(err, "not_found") {
		t.Errorf("remove unknown server: %v, want 404 not_found", err)
	}
	// The API port serves no node-to-node call: the read index, node
	// status and forwarding routes that once lived there are 404, whatever
	// headers a caller forges.
	for _, rt := range []struct{ method, path string }{
		{"GET", "/internal/v1/read-index"}, {"GET", "/internal/v1/node-status"},
		{"POST", "/internal/v1/forward-batch"}, {"POST", "/rpc/v1/apply"}, {"GET", "/rpc/v1/read-index"},
	} {
		req, _ := http.NewRequestWithContext(ctx, rt.method, "http://"+httpAddr+rt.path, strings.NewReader(`[]`))
		req.Header.Set("X-ExactOnce-Forwarded", "1")
		req.Header.Set("X-ExactOnce-Forward-Auth", "forged")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", rt.method, rt.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s on the API port: %d, want 404", rt.method, rt.path, resp.StatusCode)
		}
	}
	p2.stop(t, 30*time.Second)
}

func TestBadFlagsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"--default-ttl", "forever"},
		{"--log-format", "xml"},
		{"--nope"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), args, func(string) string { return "" }, &out, &errb)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if errb.Len() == 0 {
			t.Errorf("%v: no error message", args)
		}
	}
	var errb bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, nil, io.Discard, &errb); code != 0 || !strings.Contains(errb.String(), "  --data-dir string\n") {
		t.Errorf("-h: exit %d, usage %q", code, errb.String())
	}
	errb.Reset()
	if code := run(context.Background(), []string{"--nope"}, nil, io.Discard, &errb); code != 2 ||
		!strings.Contains(errb.String(), "--nope") || strings.Contains(errb.String(), " -nope") {
		t.Errorf("--nope: exit %d, message %q: want 2 and the flag spelled --nope", code, errb.String())
	}
}

func TestVersionFlag(t *testing.T) {
	var out, errb bytes.Buffer
	// A contradicting setting in the environment does not stop --version.
	env := func(k string) string {
		if k == "EXACTONCE_LOG_FORMAT" {
			return "xml"
		}
		return ""
	}
	code := run(context.Background(), []string{"--version"}, env, &out, &errb)
	want := "exactonced " + buildinfo.Get().String() + "\n"
	if code != 0 || out.String() != want || errb.Len() != 0 {
		t.Errorf("--version: exit %d, stdout %q, stderr %q; want 0 and %q", code, out.String(), errb.String(), want)
	}
}

func TestNodeIDKeptAndMismatchRefused(t *testing.T) {
	dir := t.TempDir()
	id, err := loadNodeID(dir, "")
	if err != nil || id == "" {
		t.Fatalf("loadNodeID: %q %v", id, err)
	}
	again, err := loadNodeID(dir, "")
	if err != nil || again != id {
		t.Errorf("second load %q %v, want %q", again, err, id)
	}
	if same, err := loadNodeID(dir, id); err != nil || same != id {
		t.Errorf("same explicit id: %q %v", same, err)
	}
	if _, err := loadNodeID(dir, "other"); err == nil {
		t.Errorf("a different --node-id on an existing data dir was accepted")
	}
	dir2 := t.TempDir()
	if got, err := loadNodeID(dir2, "n1"); err != nil || got != "n1" {
		t.Errorf("explicit id on a fresh dir: %q %v", got, err)
	}
}

func TestAdminTokenGeneratedOnce(t *testing.T) {
	dir := t.TempDir()
	tok, path, err := loadAdminToken(dir, "")
	if err != nil || len(tok) < 32 || path == "" {
		t.Fatalf("loadAdminToken: %q %q %v", tok, path, err)
	}
	again, _, err := loadAdminToken(dir, "")
	if err != nil || again != tok {
		t.Errorf("token changed across loads")
	}
	given, path, err := loadAdminToken(dir, "explicit-token-123456")
	if err != nil || given != "explicit-token-123456" || path != "" {
		t.Errorf("explicit token: %q %q %v", given, path, err)
	}
}

func TestMissingTLSFilesExitTwo(t *testing.T) {
	dir := t.TempDir()
	var errb bytes.Buffer
	code := run(context.Background(), []string{"--data-dir", dir, "--http-addr", freePort(t),
		"--tls-cert", filepath.Join(dir, "none.pem"), "--tls-key", filepath.Join(dir, "none.key")},
		func(string) string { return "" }, io.Discard, &errb)
	if code != 2 || !strings.Contains(errb.String(), "--tls-cert") {
		t.Errorf("exit %d, stderr %q; want 2 naming --tls-cert", code, errb.String())
	}
}
