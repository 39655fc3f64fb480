package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/exactonce/exactonce/client"
)

// EOCluster is a three-node (or n-node) ExactOnce cluster on loopback run by
// the harness with fresh data directories.
type EOCluster struct {
	Bin        string
	Dir        string
	AdminToken string
	ClusterKey string
	Nodes      []*EONode
	Log        *slog.Logger
}

// EONode is one exactonced process.
type EONode struct {
	Proc
	URL       string
	PprofAddr string
}

// EOClusterConfig says where to run the cluster.
type EOClusterConfig struct {
	Bin string
	// TempBase is the parent of the fresh data directory ("" for $TMPDIR).
	TempBase string
	Nodes    int
	// HTTPPort, RaftPort, GossipPort are the first node's ports; node i
	// adds i.
	HTTPPort, RaftPort, GossipPort int
	// PprofPort, when not 0, gives node i the profiling listener
	// --pprof-addr 127.0.0.1:PprofPort+i (as EXACTONCE_PPROF_ADDR).
	PprofPort int
	// Args are more arguments for every node.
	Args []string
	Log  *slog.Logger
}

func randToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// StartEOCluster starts the nodes and waits until every one is ready.
func StartEOCluster(ctx context.Context, cfg EOClusterConfig) (*EOCluster, error) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	dir, err := mkTemp(cfg.TempBase, "exactonce-bench-")
	if err != nil {
		return nil, err
	}
	c := &EOCluster{Bin: cfg.Bin, Dir: dir, AdminToken: randToken(32), ClusterKey: base64.StdEncoding.EncodeToString(key), Log: cfg.Log}
	for i := range cfg.Nodes {
		for _, port := range []int{cfg.HTTPPort + i, cfg.RaftPort + i, cfg.GossipPort + i} {
			if err := portFree("127.0.0.1:" + strconv.Itoa(port)); err != nil {
				return c, err
			}
		}
	}
	firstGossip := "127.0.0.1:" + strconv.Itoa(cfg.GossipPort)
	for i := range cfg.Nodes {
		name := "node" + strconv.Itoa(i+1)
		httpAddr := "127.0.0.1:" + strconv.Itoa(cfg.HTTPPort+i)
		args := []string{
			"--node-id", name,
			"--data-dir", filepath.Join(dir, name),
			"--http-addr", httpAddr,
			"--raft-addr", "127.0.0.1:" + strconv.Itoa(cfg.RaftPort+i),
			"--gossip-addr", "127.0.0.1:" + strconv.Itoa(cfg.GossipPort+i),
			"--bootstrap-expect", strconv.Itoa(cfg.Nodes),
		}
		if i > 0 {
			args = append(args, "--join", firstGossip)
		}
		args = append(args, cfg.Args...)
		n := &EONode{
			// The secrets go in the environment, never on argv: any local
			// user can read a command line, only the owner an environment.
			Proc: Proc{Name: name, Bin: cfg.Bin, Args: args, LogPath: filepath.Join(dir, name+".log"),
				Env: []string{"EXACTONCE_CLUSTER_KEY=" + c.ClusterKey, "EXACTONCE_ADMIN_TOKEN=" + c.AdminToken}},
			URL: "http://" + httpAddr,
		}
		if cfg.PprofPort != 0 {
			n.PprofAddr = "127.0.0.1:" + strconv.Itoa(cfg.PprofPort+i)
			n.Env = append(n.Env, "EXACTONCE_PPROF_ADDR="+n.PprofAddr)
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := n.Start(); err != nil {
			return c, err
		}
	}
	if err := c.WaitReady(ctx, 90*time.Second); err != nil {
		return c, err
	}
	return c, nil
}

// WaitReady waits for /readyz on every running node.
func (c *EOCluster) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, n := range c.Nodes {
		if err := waitHTTP(ctx, &n.Proc, n.URL+"/readyz"); err != nil {
			return fmt.Errorf("%w\n--- %s ---\n%s", err, n.LogPath, tailFile(n.LogPath, 20))
		}
	}
	return nil
}

// URLs lists the nodes' API base URLs.
func (c *EOCluster) URLs() []string {
	u := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		u[i] = n.URL
	}
	return u
}

// Procs lists the node processes.
func (c *EOCluster) Procs() []*Proc {
	p := make([]*Proc, len(c.Nodes))
	for i, n := range c.Nodes {
		p[i] = &n.Proc
	}
	return p
}

// CreateClient creates an API client through the admin API, retrying while
// the cluster settles.
func (c *EOCluster) CreateClient(ctx context.Context, name string) (id, secret string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	admin, err := client.New(c.Nodes[0].URL, client.WithAdminToken(c.AdminToken), client.WithUserAgent("exactonce-bench"))
	if err != nil {
		return "", "", fmt.Errorf("create client: %w", err)
	}
	var last string
	for {
		nc, err := admin.CreateClient(ctx, name)
		if err == nil {
			if nc.ClientID == "" {
				return "", "", errors.New("create client: the answer has no clientId")
			}
			return nc.ClientID, nc.ClientSecret, nil
		}
		last = err.Error()
		select {
		case <-ctx.Done():
			return "", "", fmt.Errorf("create client (last answer %s): %w", last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var leaderMetric = regexp.MustCompile(`(?i)^[a-z_:]*(is_leader|raft_leader|leader)[a-z_]*(\{[^}]*\})?\s+1(\.0+)?$`)

// Leader returns the index of the leader node: from the admin endpoint
// GET /v1/cluster, else from a Prometheus gauge whose name mentions
// "leader" with value 1, else from the node logs (the last node to log
// Raft's "entering leader state"), else -1.
func (c *EOCluster) Leader(ctx context.Context) int {
	if i := c.leaderFromStatus(ctx); i >= 0 {
		return i
	}
	for i, n := range c.Nodes {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL+"/metrics", nil)
		if err != nil {
			continue
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		found := false
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "#") && leaderMetric.MatchString(line) && !strings.Contains(line, "last_contact") {
				found = true
				break
			}
		}
		resp.Body.Close()
		if found {
			return i
		}
	}
	best, bestAt := -1, -1
	for i, n := range c.Nodes {
		b, err := os.ReadFile(n.LogPath)
		if err != nil {
			continue
		}
		li := bytes.LastIndex(b, []byte("entering leader state"))
		fi := bytes.LastIndex(b, []byte("entering follower state"))
		if li >= 0 && li > fi {
			// Several may claim it after failovers; prefer the most recent file write.
			if st, err := os.Stat(n.LogPath); err == nil && int(st.ModTime().UnixNano()/1e6) > bestAt {
				best, bestAt = i, int(st.ModTime().UnixNano()/1e6)
			}
		}
	}
	return best
}

// leaderFromStatus asks each node's GET /v1/cluster who leads.
func (c *EOCluster) leaderFromStatus(ctx context.Context) int {
	for i, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		admin, err := client.New(n.URL, client.WithAdminToken(c.AdminToken), client.WithUserAgent("exactonce-bench"))
		if err != nil {
			continue
		}
		st, err := admin.ClusterStatus(ctx)
		if err != nil {
			continue
		}
		if st.IsLeader {
			return i
		}
		for j, m := range c.Nodes {
			if st.LeaderHTTP != "" && strings.TrimRight(st.LeaderHTTP, "/") == m.URL {
				return j
			}
		}
	}
	return -1
}

// Restart stops node i, starts it again with the same data and returns
// how long it took from the new process's start until /readyz answered.
func (c *EOCluster) Restart(ctx context.Context, i int) (time.Duration, error) {
	n := c.Nodes[i]
	n.Stop(15 * time.Second)
	t0 := time.Now()
	if err := n.Start(); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	if err := waitHTTP(ctx, &n.Proc, n.URL+"/readyz"); err != nil {
		return 0, fmt.Errorf("restart %s: %w", n.Name, err)
	}
	return time.Since(t0), nil
}

// Stop stops every node.
func (c *EOCluster) Stop() {
	stopAll(c.Log, c.Procs(), 15*time.Second)
}

// EtcdCluster is an n-member etcd cluster on loopback with fresh data.
type EtcdCluster struct {
	Dir       string
	Endpoints []string
	Members   []*Proc
	Log       *slog.Logger
}

// EtcdClusterConfig says where to run etcd.
type EtcdClusterConfig struct {
	Bin                  string
	TempBase             string
	Members              int
	ClientPort, PeerPort int
	Log                  *slog.Logger
}

// StartEtcdCluster starts the members and waits until each is healthy.
func StartEtcdCluster(ctx context.Context, cfg EtcdClusterConfig) (*EtcdCluster, error) {
	dir, err := mkTemp(cfg.TempBase, "etcd-bench-")
	if err != nil {
		return nil, err
	}
	c := &EtcdCluster{Dir: dir, Log: cfg.Log}
	var initial []string
	for i := range cfg.Members {
		for _, port := range []int{cfg.ClientPort + i, cfg.PeerPort + i} {
			if err := portFree("127.0.0.1:" + strconv.Itoa(port)); err != nil {
				return c, err
			}
		}
		initial = append(initial, fmt.Sprintf("e%d=http://127.0.0.1:%d", i+1, cfg.PeerPort+i))
	}
	token := "bench-" + randToken(6)
	for i := range cfg.Members {
		name := "e" + strconv.Itoa(i+1)
		client := "http://127.0.0.1:" + strconv.Itoa(cfg.ClientPort+i)
		peer := "http://127.0.0.1:" + strconv.Itoa(cfg.PeerPort+i)
		p := &Proc{
			Name: name, Bin: cfg.Bin, LogPath: filepath.Join(dir, name+".log"),
			Args: []string{
				"--name", name,
				"--data-dir", filepath.Join(dir, name),
				"--listen-client-urls", client, "--advertise-client-urls", client,
				"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
				"--initial-cluster", strings.Join(initial, ","),
				"--initial-cluster-token", token,
				"--initial-cluster-state", "new",
				"--logger", "zap", "--log-level", "warn",
			},
		}
		c.Members = append(c.Members, p)
		c.Endpoints = append(c.Endpoints, client)
	}
	for _, p := range c.Members {
		if err := p.Start(); err != nil {
			return c, err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for i, p := range c.Members {
		if err := waitHTTP(wctx, p, c.Endpoints[i]+"/health"); err != nil {
			return c, fmt.Errorf("%w\n--- %s ---\n%s", err, p.LogPath, tailFile(p.LogPath, 20))
		}
	}
	return c, nil
}

// Leader returns the index of the leader member, -1 when unknown.
func (c *EtcdCluster) Leader(ctx context.Context) int {
	cl, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return -1
	}
	defer cl.Close()
	for i, ep := range c.Endpoints {
		st, err := cl.Status(ctx, ep)
		if err == nil && st.Leader == st.Header.MemberId {
			return i
		}
	}
	return -1
}

// Stop stops every member.
func (c *EtcdCluster) Stop() {
	stopAll(c.Log, c.Members, 5*time.Second)
}
