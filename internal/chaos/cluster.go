package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/exactonce/exactonce/client"
	"github.com/exactonce/exactonce/internal/faultfs"
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

// Cluster runs and disturbs the nodes. Process-level operations go to its
// NodeRunner (local processes, or the Network's own when it is a
// NodeBackend such as Containers).
type Cluster struct {
	cfg    ClusterConfig
	runner NodeRunner
	admin  []*client.Client
	hc     *http.Client // plain requests (test clock)
	// disks are the nodes' fault filesystems (MountDisks), or none.
	disks []*faultfs.FS
}

// opTimeout bounds the node operations whose methods take no context
// (start, pause, resume: a docker command for containers).
const opTimeout = 2 * time.Minute

// NodeStatus is a node's GET /v1/cluster, with the harness's helpers.
type NodeStatus struct {
	client.ClusterStatus
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
	if b, ok := cfg.Net.(NodeBackend); ok {
		r, err := b.NewRunner(cfg)
		if err != nil {
			return nil, fmt.Errorf("node runner: %w", err)
		}
		c.runner = r
	} else {
		c.runner = newProcRunner(cfg)
	}
	for i := 1; i <= cfg.Nodes; i++ {
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

// LogPath is a file holding node n's log so far.
func (c *Cluster) LogPath(n int) string { return c.runner.LogPath(n) }

// DataDir is node n's data dir.
func (c *Cluster) DataDir(n int) string { return c.runner.DataDir(n) }

// StoppedDataDir is where the harness reads node n's files once the node
// is stopped: its data dir, or, on a fault filesystem, the directory
// behind it. The harness must not map files of its own FUSE server into
// memory (bbolt does): a page fault served by the same process can stall
// it for good (the garbage collector waits for the faulting thread, which
// waits for the server).
func (c *Cluster) StoppedDataDir(n int) string {
	if d := c.Disk(n); d != nil {
		return d.LiveDir()
	}
	return c.DataDir(n)
}

// Admin is an admin API client bound to node n.
func (c *Cluster) Admin(n int) *client.Client { return c.admin[n-1] }

// KillLeftovers removes nodes of a previous run in the same place.
func (c *Cluster) KillLeftovers() {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	c.runner.KillLeftovers(ctx)
}

// Start starts node n on its data dir (fresh or existing).
func (c *Cluster) Start(n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return c.runner.Start(ctx, n)
}

// Running reports whether node n is alive (possibly paused).
func (c *Cluster) Running(n int) bool { return c.runner.Running(n) }

// Paused reports whether node n is paused.
func (c *Cluster) Paused(n int) bool { return c.runner.Paused(n) }

// Pause freezes node n (SIGSTOP, or docker pause).
func (c *Cluster) Pause(n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return c.runner.Pause(ctx, n)
}

// Resume thaws node n (SIGCONT, or docker unpause).
func (c *Cluster) Resume(n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return c.runner.Resume(ctx, n)
}

// Kill stops node n with SIGKILL and waits for it to exit.
func (c *Cluster) Kill(ctx context.Context, n int) error { return c.runner.Kill(ctx, n) }

// Terminate stops node n gracefully (SIGTERM), killing it after grace.
func (c *Cluster) Terminate(ctx context.Context, n int, grace time.Duration) error {
	return c.runner.Terminate(ctx, n, grace)
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
	if c.Disk(n) != nil {
		return c.wipeDisk(n)
	}
	return c.runner.Wipe(n)
}

// SetNodeEnv sets extra environment for node n's next start.
func (c *Cluster) SetNodeEnv(n int, env []string) { c.runner.SetNodeEnv(n, env) }

// SetNodeBinary makes node n's next start run another exactonced
// executable on the same data dir (a rolling upgrade). Only local
// processes support it.
func (c *Cluster) SetNodeBinary(n int, binary string) error {
	r, ok := c.runner.(interface{ SetNodeBinary(n int, binary string) })
	if !ok {
		return fmt.Errorf("node%d: this backend cannot run another binary per node", n)
	}
	r.SetNodeBinary(n, binary)
	return nil
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
	return c.status(ctx, n, false)
}

// StatusWithHash is Status with the node's state hash.
func (c *Cluster) StatusWithHash(ctx context.Context, n int) (*NodeStatus, error) {
	return c.status(ctx, n, true)
}

func (c *Cluster) status(ctx context.Context, n int, withHash bool) (*NodeStatus, error) {
	get := c.admin[n-1].ClusterStatus
	if withHash {
		get = c.admin[n-1].ClusterStatusWithHash
	}
	st, err := get(ctx)
	if err != nil {
		return nil, fmt.Errorf("node%d status: %w", n, err)
	}
	return &NodeStatus{ClusterStatus: *st}, nil
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
