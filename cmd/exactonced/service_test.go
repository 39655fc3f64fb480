package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exactonce/exactonce/internal/sdnotify"
)

// fakeManager is a service manager's notification socket: every datagram
// the node sends arrives on msgs.
type fakeManager struct {
	path string
	msgs chan string
}

func newFakeManager(t *testing.T) *fakeManager {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeManager{path: path, msgs: make(chan string, 32)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(m.msgs)
				return
			}
			m.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return m
}

// await returns the first datagram holding the assignment want, failing
// the test after deadline; datagrams before it are returned as seen.
func (m *fakeManager) await(t *testing.T, p *proc, want string, deadline time.Duration) (msg string, seen []string) {
	t.Helper()
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for {
		select {
		case msg := <-m.msgs:
			for _, line := range strings.Split(strings.TrimSpace(msg), "\n") {
				if line == want {
					return msg, seen
				}
			}
			seen = append(seen, msg)
		case <-timer.C:
			t.Fatalf("no %s within %s (seen %q); stderr:\n%s", want, deadline, seen, p.stderr.String())
		}
	}
}

// TestServiceManagerReadiness runs the real binary as systemd would run a
// Type=notify unit: READY=1 arrives only once /readyz answers 200, STOPPING=1
// on SIGTERM; the opt-in pprof listener serves on loopback; the healthcheck
// subcommand answers 0 while the node is ready and 1 once it is gone.
func TestServiceManagerReadiness(t *testing.T) {
	bin, _, httpAddr, args := devNode(t)
	m := newFakeManager(t)
	pprofAddr := freePort(t)
	p := startEnv(t, bin, []string{sdnotify.EnvSocket + "=" + m.path}, append(args, "--pprof-addr", pprofAddr)...)

	ready, before := m.await(t, p, "READY=1", 60*time.Second)
	if !strings.Contains(ready, "STATUS=ready") {
		t.Errorf("READY=1 without a status line: %q", ready)
	}
	if len(before) == 0 || !strings.Contains(before[0], "waiting for a leader") {
		t.Errorf("no status while waiting for readiness; datagrams before READY=1: %q", before)
	}
	// Readiness was sent when the node was ready, not merely listening.
	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz after READY=1: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz after READY=1: %d, want 200", resp.StatusCode)
	}

	health := func() (int, string) {
		cmd := exec.Command(bin, "healthcheck", "--timeout", "3s")
		cmd.Env = []string{"EXACTONCE_HTTP_ADDR=" + httpAddr}
		out, err := cmd.CombinedOutput()
		if err == nil {
			return 0, string(out)
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatalf("healthcheck: %v", err)
		return -1, ""
	}
	if code, out := health(); code != 0 {
		t.Errorf("healthcheck on a ready node: exit %d: %s", code, out)
	}

	resp, err = http.Get("http://" + pprofAddr + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatalf("pprof listener: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("--pprof-addr")) {
		t.Errorf("GET /debug/pprof/cmdline: %d %q", resp.StatusCode, body)
	}
	// The API port does not serve the profiling endpoints.
	resp, err = http.Get("http://" + httpAddr + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/debug/pprof/ on the API port: %d, want 404", resp.StatusCode)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopping, _ := m.await(t, p, "STOPPING=1", 30*time.Second)
	if !strings.Contains(stopping, "STATUS=shutting down") {
		t.Errorf("STOPPING=1 without a status line: %q", stopping)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; stderr:\n%s", err, p.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit within 30s of SIGTERM")
	}
	if code, out := health(); code != 1 {
		t.Errorf("healthcheck on a stopped node: exit %d, want 1: %s", code, out)
	}
}

// TestPprofRefusedOffLoopback: --pprof-addr on a reachable address exits 2
// before anything starts, naming the flag.
func TestPprofRefusedOffLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:6060", ":6060", "192.0.2.1:6060", "localhost:6060"} {
		var errb bytes.Buffer
		dir := t.TempDir()
		code := run(context.Background(), []string{"--data-dir", dir, "--pprof-addr", addr}, func(string) string { return "" }, io.Discard, &errb)
		if code != 2 || !strings.Contains(errb.String(), "--pprof-addr") || !strings.Contains(errb.String(), "loopback") {
			t.Errorf("--pprof-addr %s: exit %d, stderr %q; want 2 naming --pprof-addr and loopback", addr, code, errb.String())
		}
	}
}

// TestMultiNodeWithoutAdminTokenExitsTwo: a node joining a cluster without
// the shared admin token is refused (each would otherwise make its own).
func TestMultiNodeWithoutAdminTokenExitsTwo(t *testing.T) {
	var errb bytes.Buffer
	env := map[string]string{"EXACTONCE_CLUSTER_KEY": b64Key(7), "EXACTONCE_JOIN": "127.0.0.1:1", "EXACTONCE_BOOTSTRAP_EXPECT": "3"}
	code := run(context.Background(), []string{"--data-dir", t.TempDir()}, func(k string) string { return env[k] }, io.Discard, &errb)
	if code != 2 || !strings.Contains(errb.String(), "admin token") {
		t.Errorf("exit %d, stderr %q; want 2 naming the admin token", code, errb.String())
	}
}
