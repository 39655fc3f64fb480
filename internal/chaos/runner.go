package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NodeRunner starts, stops and disturbs the nodes of one cluster (one
// scenario). Cluster delegates every process-level operation to it: local
// processes (the default) or containers (a Network that implements
// NodeBackend). Nodes are numbered from 1.
type NodeRunner interface {
	// Start starts node n on its data dir (fresh or existing).
	Start(ctx context.Context, n int) error
	// Running reports whether node n is up (possibly paused).
	Running(n int) bool
	// Paused reports whether node n is frozen by Pause.
	Paused(n int) bool
	// Pause freezes node n; Resume thaws it.
	Pause(ctx context.Context, n int) error
	// Resume thaws node n.
	Resume(ctx context.Context, n int) error
	// Kill stops node n at once (SIGKILL) and waits until it is gone.
	Kill(ctx context.Context, n int) error
	// Terminate stops node n gracefully, killing it after grace.
	Terminate(ctx context.Context, n int, grace time.Duration) error
	// Wipe deletes node n's data; the node must be stopped.
	Wipe(n int) error
	// SetNodeEnv sets extra environment for node n's next start.
	SetNodeEnv(n int, env []string)
	// LogPath is a file holding node n's log so far.
	LogPath(n int) string
	// DataDir is node n's data dir, readable from the harness.
	DataDir(n int) string
	// KillLeftovers removes nodes a previous (crashed) run left behind.
	KillLeftovers(ctx context.Context)
}

// NodeBackend is implemented by a Network that also runs the nodes itself
// (e.g. Containers); NewCluster then uses its runner instead of processes.
type NodeBackend interface {
	NewRunner(cfg ClusterConfig) (NodeRunner, error)
}

// procRunner runs every node as a local process, placed by cfg.Net.
type procRunner struct {
	cfg   ClusterConfig
	nodes []*proc
}

var _ NodeRunner = (*procRunner)(nil)

type proc struct {
	n       int
	dataDir string
	logPath string
	pidPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	paused bool
	// env is per-node extra environment for the next start (clock offset).
	env []string
	// binary, when set, is the executable of the next start instead of
	// the cluster's (a rolling upgrade).
	binary string
}

func newProcRunner(cfg ClusterConfig) *procRunner {
	r := &procRunner{cfg: cfg}
	for i := 1; i <= cfg.Nodes; i++ {
		r.nodes = append(r.nodes, &proc{
			n:       i,
			dataDir: filepath.Join(cfg.Dir, fmt.Sprintf("node%d", i)),
			logPath: filepath.Join(cfg.Dir, fmt.Sprintf("node%d.log", i)),
			pidPath: filepath.Join(cfg.Dir, fmt.Sprintf("node%d.pid", i)),
		})
	}
	return r
}

// LogPath implements NodeRunner.
func (r *procRunner) LogPath(n int) string { return r.nodes[n-1].logPath }

// DataDir implements NodeRunner.
func (r *procRunner) DataDir(n int) string { return r.nodes[n-1].dataDir }

func (r *procRunner) args(n int) []string {
	nt := r.cfg.Net
	hp := func(s string) string { return fmt.Sprintf("%s:%d", nt.Host(n), nt.Port(n, s)) }
	args := []string{
		"--node-id", fmt.Sprintf("node%d", n),
		"--data-dir", r.nodes[n-1].dataDir,
		"--http-addr", hp("http"),
		"--raft-addr", hp("raft"),
		"--gossip-addr", hp("gossip"),
		"--bootstrap-expect", strconv.Itoa(r.cfg.Nodes),
		"--log-format", "json",
	}
	var join []string
	for i := 1; i <= r.cfg.Nodes; i++ {
		if i != n {
			join = append(join, fmt.Sprintf("%s:%d", nt.Host(i), nt.Port(i, "gossip")))
		}
	}
	return append(args, "--join", strings.Join(join, ","))
}

// secretEnv passes the cluster key and the admin token to a node process.
func secretEnv(cfg ClusterConfig) []string {
	return []string{"EXACTONCE_CLUSTER_KEY=" + cfg.ClusterKey, "EXACTONCE_ADMIN_TOKEN=" + cfg.AdminToken}
}

// KillLeftovers implements NodeRunner: it kills node processes recorded in
// pid files of a previous run in the same directory, when they are still
// our exactonced.
func (r *procRunner) KillLeftovers(context.Context) {
	for _, p := range r.nodes {
		b, err := os.ReadFile(p.pidPath)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(string(cmdline), p.dataDir) {
			r.cfg.Log.Warn("killing leftover node", "node", p.n, "pid", pid)
			_ = syscall.Kill(pid, syscall.SIGCONT)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = os.Remove(p.pidPath)
	}
}

// Start implements NodeRunner.
func (r *procRunner) Start(_ context.Context, n int) error {
	p := r.nodes[n-1]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
			// It exited by itself (e.g. it stopped on a failed fsync).
			p.cmd, p.paused = nil, false
		default:
			return fmt.Errorf("node%d already running", n)
		}
	}
	if err := os.MkdirAll(p.dataDir, 0o700); err != nil {
		return fmt.Errorf("node%d data dir: %w", n, err)
	}
	lf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("node%d log: %w", n, err)
	}
	defer lf.Close()
	bin := r.cfg.Binary
	if p.binary != "" {
		bin = p.binary
	}
	// Not bound to a context: the harness kills nodes itself.
	cmd := r.cfg.Net.Command(context.Background(), n, bin, r.args(n)...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// The secrets go in the environment, never on argv: any local user can
	// read a process's command line, only its owner its environment.
	cmd.Env = append(append(append(os.Environ(), secretEnv(r.cfg)...), r.cfg.Env...), p.env...)
	// Own process group: a Ctrl-C to the harness does not reach the nodes
	// before the harness has recorded and cleaned up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start node%d: %w", n, err)
	}
	_ = os.WriteFile(p.pidPath, []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	done := make(chan struct{})
	p.cmd, p.done, p.paused = cmd, done, false
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	r.cfg.Log.Debug("node started", "node", n, "pid", cmd.Process.Pid)
	return nil
}

// Running implements NodeRunner.
func (r *procRunner) Running(n int) bool {
	p := r.nodes[n-1]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Paused implements NodeRunner: the node is stopped by SIGSTOP.
func (r *procRunner) Paused(n int) bool {
	p := r.nodes[n-1]
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

func (r *procRunner) signal(n int, sig syscall.Signal) error {
	p := r.nodes[n-1]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("node%d not running", n)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to node%d: %w", sig, n, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		p.paused = true
	case syscall.SIGCONT:
		p.paused = false
	}
	return nil
}

// Pause implements NodeRunner with SIGSTOP.
func (r *procRunner) Pause(_ context.Context, n int) error { return r.signal(n, syscall.SIGSTOP) }

// Resume implements NodeRunner with SIGCONT.
func (r *procRunner) Resume(_ context.Context, n int) error { return r.signal(n, syscall.SIGCONT) }

// Kill implements NodeRunner.
func (r *procRunner) Kill(ctx context.Context, n int) error {
	return r.stop(ctx, n, syscall.SIGKILL)
}

// Terminate implements NodeRunner with SIGTERM.
func (r *procRunner) Terminate(ctx context.Context, n int, grace time.Duration) error {
	tctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	if err := r.stop(tctx, n, syscall.SIGTERM); err != nil {
		r.cfg.Log.Warn("node did not stop gracefully; killing", "node", n, "err", err)
		return r.stop(ctx, n, syscall.SIGKILL)
	}
	return nil
}

func (r *procRunner) stop(ctx context.Context, n int, sig syscall.Signal) error {
	p := r.nodes[n-1]
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %v to node%d: %w", sig, n, err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("node%d did not exit after %v: %w", n, sig, ctx.Err())
	}
	p.mu.Lock()
	p.cmd, p.paused = nil, false
	p.mu.Unlock()
	_ = os.Remove(p.pidPath)
	return nil
}

// Wipe implements NodeRunner.
func (r *procRunner) Wipe(n int) error {
	if err := os.RemoveAll(r.nodes[n-1].dataDir); err != nil {
		return fmt.Errorf("wipe node%d: %w", n, err)
	}
	return nil
}

// SetNodeEnv implements NodeRunner.
func (r *procRunner) SetNodeEnv(n int, env []string) {
	p := r.nodes[n-1]
	p.mu.Lock()
	p.env = env
	p.mu.Unlock()
}

// SetNodeBinary makes node n's next start run binary (a rolling upgrade
// replaces one node's executable at a time).
func (r *procRunner) SetNodeBinary(n int, binary string) {
	p := r.nodes[n-1]
	p.mu.Lock()
	defer p.mu.Unlock()
	p.binary = binary
}
