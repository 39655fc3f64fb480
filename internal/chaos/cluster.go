package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/exactonce/exactonce/internal/client"
)

// ClusterConfig describes the cluster the harness runs.
type ClusterConfig struct {
	// Binary is the exactonced executable.
	Binary string
	// Dir holds the nodes' data dirs, logs and pid files.
	Dir   string
	Net   Network
	Nodes int
	// AdminToken and ClusterKey are shared by every node.
	AdminToken string
	ClusterKey string
	// Env is extra environment for every node (e.g. test hooks).
	Env []string
	Log *slog.Logger
}

// Cluster runs and disturbs the node processes.
type Cluster struct {
	cfg   ClusterConfig
	nodes []*proc
	admin []*client.Client
	hc    *http.Client // plain requests (test clock)
}

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
}

// NodeStatus is the part of GET /v1/cluster the harness uses.
type NodeStatus struct {
	NodeID       string `json:"nodeId"`
	State        string `json:"state"`
	Ready        bool   `json:"ready"`
	IsLeader     bool   `json:"isLeader"`
	LeaderID     string `json:"leaderId"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commitIndex"`
	AppliedIndex uint64 `json:"appliedIndex"`
	// StateHash is the FSM state hash, when the server exposes one.
	StateHash string `json:"stateHash"`
	Members   []struct {
		ID       string `json:"id"`
		Suffrage string `json:"suffrage"`
	} `json:"members"`
}

// Voters counts the voters in the node's view of the Raft configuration.
func (s *NodeStatus) Voters() int {
	v := 0
	for _, m := range s.Members {
		if m.Suffrage == "voter" {
			v++
		}
	}
	return v
}

// NewCluster prepares (but does not start) a cluster.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	c := &Cluster{cfg: cfg, hc: &http.Client{Transport: client.NewTransport()}}
	for i := 1; i <= cfg.Nodes; i++ {
		p := &proc{
			n:       i,
			dataDir: filepath.Join(cfg.Dir, fmt.Sprintf("node%d", i)),
			logPath: filepath.Join(cfg.Dir, fmt.Sprintf("node%d.log", i)),
			pidPath: filepath.Join(cfg.Dir, fmt.Sprintf("node%d.pid", i)),
		}
		c.nodes = append(c.nodes, p)
		ac, err := client.New(c.URL(i), client.WithAdminToken(cfg.AdminToken),
			client.WithHTTPClient(&http.Client{Timeout: 3 * time.Second, Transport: client.NewTransport()}))
		if err != nil {
			return nil, fmt.Errorf("admin client for node%d: %w", i, err)
		}
		c.admin = append(c.admin, ac)
	}
	return c, nil
}

// Nodes returns the node count.
func (c *Cluster) Nodes() int { return c.cfg.Nodes }

// URL is node n's API base URL.
func (c *Cluster) URL(n int) string {
	return fmt.Sprintf("http://%s:%d", c.cfg.Net.Host(n), c.cfg.Net.Port(n, "http"))
}

// LogPath is node n's log file.
func (c *Cluster) LogPath(n int) string { return c.nodes[n-1].logPath }

// DataDir is node n's data dir.
func (c *Cluster) DataDir(n int) string { return c.nodes[n-1].dataDir }

// Admin is an admin API client bound to node n.
func (c *Cluster) Admin(n int) *client.Client { return c.admin[n-1] }

func (c *Cluster) args(n int) []string {
	nt := c.cfg.Net
	hp := func(s string) string { return fmt.Sprintf("%s:%d", nt.Host(n), nt.Port(n, s)) }
	args := []string{
		"--node-id", fmt.Sprintf("node%d", n),
		"--data-dir", c.nodes[n-1].dataDir,
		"--http-addr", hp("http"),
		"--raft-addr", hp("raft"),
		"--gossip-addr", hp("gossip"),
		"--bootstrap-expect", strconv.Itoa(c.cfg.Nodes),
		"--cluster-key", c.cfg.ClusterKey,
		"--admin-token", c.cfg.AdminToken,
		"--log-format", "json",
	}
	var join []string
	for i := 1; i <= c.cfg.Nodes; i++ {
		if i != n {
			join = append(join, fmt.Sprintf("%s:%d", nt.Host(i), nt.Port(i, "gossip")))
		}
	}
	return append(args, "--join", strings.Join(join, ","))
}

// KillLeftovers kills node processes recorded in pid files of a previous
// run in the same directory, when they are still our exactonced.
func (c *Cluster) KillLeftovers() {
	for _, p := range c.nodes {
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
			c.cfg.Log.Warn("killing leftover node", "node", p.n, "pid", pid)
			_ = syscall.Kill(pid, syscall.SIGCONT)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = os.Remove(p.pidPath)
	}
}

// Start starts node n on its data dir (fresh or existing).
func (c *Cluster) Start(n int) error {
	p := c.nodes[n-1]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("node%d already running", n)
	}
	if err := os.MkdirAll(p.dataDir, 0o700); err != nil {
		return fmt.Errorf("node%d data dir: %w", n, err)
	}
	lf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("node%d log: %w", n, err)
	}
	defer lf.Close()
	// Not bound to a context: the harness kills nodes itself.
	cmd := c.cfg.Net.Command(context.Background(), n, c.cfg.Binary, c.args(n)...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(append(os.Environ(), c.cfg.Env...), p.env...)
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
	c.cfg.Log.Debug("node started", "node", n, "pid", cmd.Process.Pid)
	return nil
}

// Running reports whether node n's process is alive (possibly paused).
func (c *Cluster) Running(n int) bool {
	p := c.nodes[n-1]
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

// Paused reports whether node n is stopped by SIGSTOP.
func (c *Cluster) Paused(n int) bool {
	p := c.nodes[n-1]
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

func (c *Cluster) signal(n int, sig syscall.Signal) error {
	p := c.nodes[n-1]
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

// Pause sends SIGSTOP to node n.
func (c *Cluster) Pause(n int) error { return c.signal(n, syscall.SIGSTOP) }

// Resume sends SIGCONT to node n.
func (c *Cluster) Resume(n int) error { return c.signal(n, syscall.SIGCONT) }

// Kill sends SIGKILL to node n and waits for it to exit.
func (c *Cluster) Kill(ctx context.Context, n int) error {
	return c.stop(ctx, n, syscall.SIGKILL)
}

// Terminate stops node n gracefully (SIGTERM), killing it after grace.
func (c *Cluster) Terminate(ctx context.Context, n int, grace time.Duration) error {
	tctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	if err := c.stop(tctx, n, syscall.SIGTERM); err != nil {
		c.cfg.Log.Warn("node did not stop gracefully; killing", "node", n, "err", err)
		return c.stop(ctx, n, syscall.SIGKILL)
	}
	return nil
}

func (c *Cluster) stop(ctx context.Context, n int, sig syscall.Signal) error {
	p := c.nodes[n-1]
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

// StopAll stops every node (SIGTERM, then SIGKILL after grace).
func (c *Cluster) StopAll(ctx context.Context, grace time.Duration) {
	var wg sync.WaitGroup
	for i := 1; i <= c.cfg.Nodes; i++ {
		wg.Go(func() { _ = c.Terminate(ctx, i, grace) })
	}
	wg.Wait()
}

// Wipe deletes node n's data dir; the node must be stopped.
func (c *Cluster) Wipe(n int) error {
	if c.Running(n) {
		return fmt.Errorf("wipe node%d: still running", n)
	}
	if err := os.RemoveAll(c.nodes[n-1].dataDir); err != nil {
		return fmt.Errorf("wipe node%d: %w", n, err)
	}
	return nil
}

// SetNodeEnv sets extra environment for node n's next start.
func (c *Cluster) SetNodeEnv(n int, env []string) {
	p := c.nodes[n-1]
	p.mu.Lock()
	p.env = env
	p.mu.Unlock()
}

// testClockPath is the chaostest-only endpoint that shifts a node's clock
// at runtime (cmd/exactonced, build tag chaostest).
const testClockPath = "/internal/v1/test/clock"

// SetClock makes node n's clock jump to the real time shifted by offset
// (POST /internal/v1/test/clock, only in a server built with -tags
// chaostest).
func (c *Cluster) SetClock(ctx context.Context, n int, offset time.Duration) error {
	body, err := json.Marshal(map[string]string{"offset": offset.String()})
	if err != nil {
		return fmt.Errorf("node%d clock: %w", n, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, c.URL(n)+testClockPath, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("node%d clock: %w", n, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("node%d clock: %w", n, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("node%d clock: %d %s (is the server built with -tags chaostest?)", n, resp.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

// Status fetches GET /v1/cluster from node n.
func (c *Cluster) Status(ctx context.Context, n int) (*NodeStatus, error) {
	raw, err := c.admin[n-1].ClusterStatus(ctx)
	if err != nil {
		return nil, fmt.Errorf("node%d status: %w", n, err)
	}
	var st NodeStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("node%d status: %w", n, err)
	}
	return &st, nil
}

// Ready reports whether node n answers /readyz with 200.
func (c *Cluster) Ready(ctx context.Context, n int) bool {
	ok, err := c.admin[n-1].Ready(ctx)
	return err == nil && ok
}

// WaitReady waits until every listed node is ready.
func (c *Cluster) WaitReady(ctx context.Context, nodes ...int) error {
	for _, n := range nodes {
		for !c.Ready(ctx, n) {
			if !c.Running(n) {
				return fmt.Errorf("node%d exited; see %s", n, c.LogPath(n))
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("node%d not ready: %w", n, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// Leader returns the node that claims leadership with the highest term
// among the running, unpaused nodes, or 0 when none does.
func (c *Cluster) Leader(ctx context.Context) int {
	best, term := 0, uint64(0)
	for n := 1; n <= c.cfg.Nodes; n++ {
		if !c.Running(n) || c.Paused(n) {
			continue
		}
		st, err := c.Status(ctx, n)
		if err != nil {
			continue
		}
		if st.IsLeader && st.Term >= term {
			best, term = n, st.Term
		}
	}
	return best
}

// WaitLeader polls until some node is leader or ctx ends (then 0).
func (c *Cluster) WaitLeader(ctx context.Context) int {
	for {
		if l := c.Leader(ctx); l != 0 {
			return l
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(200 * time.Millisecond):
		}
	}
}
