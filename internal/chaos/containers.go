package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exactonce/exactonce/internal/secure"
)

// Containers runs the three nodes as containers of a FROM-scratch image
// under docker-compose (or `docker compose`). It is both the Network and,
// through NodeBackend, the node runner: kill is `docker kill -s KILL` and
// `docker start`, pause is `docker pause`/`unpause`, and a partition
// disconnects a node from the cluster network (`docker network
// disconnect`), reconnecting it with its fixed address to heal.
//
// Each node sits on two networks: cluster (Raft, gossip, forwarding
// between nodes) and api (the workload, from the host). Only whole-node
// isolation can be expressed that way: one-way cuts are not supported
// (CanCutOneWay) and are skipped. Every container, network and the image
// carry Project in their names (and compose's project label), so that they
// never collide with `make test-cluster` and leftovers can be found.
type Containers struct {
	// Project is the compose project name and the prefix of the container,
	// network and image names (e.g. "exactoncechaos").
	Project string
	// Subnet is the first two octets of the private networks: cluster is
	// <Subnet>.10.0/24 and api <Subnet>.20.0/24; node n is .1n on both.
	Subnet string
	Nodes  int
	// Binary is the static exactonced the image is built from.
	Binary string
	// Dir holds the image's build context and the compose files.
	Dir string
	Log *slog.Logger

	compose []string // "docker-compose" or "docker compose"

	mu       sync.Mutex
	cuts     map[[2]int]bool
	isolated map[int]bool
}

var (
	_ Network     = (*Containers)(nil)
	_ NodeBackend = (*Containers)(nil)
)

// OneWayCutter is implemented by a Network that can cut links but maybe
// not a single direction of one.
type OneWayCutter interface {
	// CanCutOneWay reports whether Cut(a, b) without Cut(b, a) works.
	CanCutOneWay() bool
}

// canCutOneWay reports whether net can drop one direction of a link only.
func canCutOneWay(net Network) bool {
	if o, ok := net.(OneWayCutter); ok {
		return o.CanCutOneWay()
	}
	return net.CanPartition()
}

func (c *Containers) image() string           { return c.Project + ":node" }
func (c *Containers) network(s string) string { return c.Project + "_" + s }
func (c *Containers) container(n int) string {
	return fmt.Sprintf("%s-node%d", c.Project, n)
}

// ClusterIP is node n's address on the cluster network.
func (c *Containers) ClusterIP(n int) string { return fmt.Sprintf("%s.10.%d", c.Subnet, 10+n) }

// Host implements Network: node n's address on the api network.
func (c *Containers) Host(n int) string { return fmt.Sprintf("%s.20.%d", c.Subnet, 10+n) }

// Port implements Network: every container uses the same ports.
func (c *Containers) Port(_ int, service string) int { return fixedPort(service) }

// Command implements Network: the command runs inside node n's container
// (docker exec; the image holds nothing but exactonced).
func (c *Containers) Command(ctx context.Context, n int, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "docker", append([]string{"exec", c.container(n), name}, args...)...)
}

// CanPartition implements Network.
func (c *Containers) CanPartition() bool { return true }

// CanCutOneWay implements OneWayCutter: a disconnect cuts both ways.
func (c *Containers) CanCutOneWay() bool { return false }

// Setup implements Network: it finds docker-compose, removes leftovers of
// a crashed run and builds the image from Binary.
func (c *Containers) Setup(ctx context.Context) error {
	switch {
	case exec.CommandContext(ctx, "docker", "compose", "version").Run() == nil:
		c.compose = []string{"docker", "compose"}
	default:
		if _, err := exec.LookPath("docker-compose"); err != nil {
			return errors.New("containers: neither `docker compose` nor docker-compose is available")
		}
		c.compose = []string{"docker-compose"}
	}
	if err := c.Teardown(ctx); err != nil {
		return err
	}
	bctx := filepath.Join(c.Dir, "image")
	if err := os.MkdirAll(bctx, 0o755); err != nil {
		return fmt.Errorf("containers: image context: %w", err)
	}
	if err := copyFile(c.Binary, filepath.Join(bctx, "exactonced"), 0o755); err != nil {
		return fmt.Errorf("containers: %w", err)
	}
	const dockerfile = "# Written by exactonce-chaos: the static exactonced only.\n" +
		"FROM scratch\nCOPY exactonced /exactonced\nENTRYPOINT [\"/exactonced\"]\n"
	if err := os.WriteFile(filepath.Join(bctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return fmt.Errorf("containers: Dockerfile: %w", err)
	}
	if err := run(ctx, "docker", "build", "-q", "-t", c.image(), bctx); err != nil {
		return fmt.Errorf("containers: build image: %w", err)
	}
	c.Log.Info("built node image", "image", c.image(), "compose", strings.Join(c.compose, " "))
	return nil
}

// removeProject removes every container and network of the project
// (found by compose's project label, so only ours).
func (c *Containers) removeProject(ctx context.Context) error {
	label := "label=com.docker.compose.project=" + c.Project
	var errs []error
	ids, err := output(ctx, "docker", "ps", "-aq", "--filter", label)
	if err != nil {
		return fmt.Errorf("containers: list: %w", err)
	}
	if f := strings.Fields(ids); len(f) > 0 {
		if err := run(ctx, "docker", append([]string{"rm", "-f", "-v"}, f...)...); err != nil {
			errs = append(errs, err)
		}
	}
	nets, err := output(ctx, "docker", "network", "ls", "-q", "--filter", label)
	if err != nil {
		errs = append(errs, err)
	} else if f := strings.Fields(nets); len(f) > 0 {
		if err := run(ctx, "docker", append([]string{"network", "rm"}, f...)...); err != nil {
			errs = append(errs, err)
		}
	}
	c.mu.Lock()
	c.cuts, c.isolated = nil, nil
	c.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("containers: remove project %s: %w", c.Project, err)
	}
	return nil
}

// Teardown implements Network: it removes the project's containers,
// networks and the image.
func (c *Containers) Teardown(ctx context.Context) error {
	// Keep the last containers' logs (e.g. of a cluster that did not start).
	names, _ := output(ctx, "docker", "ps", "-a", "--filter", "label=com.docker.compose.project="+c.Project, "--format", "{{.Names}}")
	for _, name := range strings.Fields(names) {
		if err := dockerLogs(ctx, name, filepath.Join(c.Dir, name+".log")); err != nil {
			c.Log.Warn("saving container log", "err", err)
		}
	}
	err := c.removeProject(ctx)
	if out, _ := output(ctx, "docker", "images", "-q", c.image()); strings.TrimSpace(out) != "" {
		if rerr := run(ctx, "docker", "rmi", "-f", c.image()); rerr != nil {
			err = errors.Join(err, fmt.Errorf("containers: remove image: %w", rerr))
		}
	}
	return err
}

// Cut implements Network. Cuts are collected until they isolate a node
// from every other in both directions; that node is then disconnected
// from the cluster network. A cut that isolates no node has no effect
// (one-way cuts are skipped by the nemesis: CanCutOneWay).
func (c *Containers) Cut(ctx context.Context, from, to int) error {
	c.mu.Lock()
	if c.cuts == nil {
		c.cuts, c.isolated = map[[2]int]bool{}, map[int]bool{}
	}
	c.cuts[[2]int{from, to}] = true
	isolate := newlyIsolated(c.cuts, c.isolated, c.Nodes)
	c.mu.Unlock()
	for _, x := range isolate {
		if err := run(ctx, "docker", "network", "disconnect", c.network("cluster"), c.container(x)); err != nil {
			return fmt.Errorf("isolate node%d: %w", x, err)
		}
		c.mu.Lock()
		c.isolated[x] = true
		c.mu.Unlock()
	}
	return nil
}

// Heal implements Network: every disconnected node is reconnected with
// its fixed cluster address.
func (c *Containers) Heal(ctx context.Context) error {
	c.mu.Lock()
	var nodes []int
	for x := range c.isolated {
		nodes = append(nodes, x)
	}
	c.mu.Unlock()
	slices.Sort(nodes)
	var errs []error
	for _, x := range nodes {
		if err := run(ctx, "docker", "network", "connect", "--ip", c.ClusterIP(x), c.network("cluster"), c.container(x)); err != nil {
			errs = append(errs, fmt.Errorf("reconnect node%d: %w", x, err))
			continue
		}
		c.mu.Lock()
		delete(c.isolated, x)
		c.mu.Unlock()
	}
	c.mu.Lock()
	if len(c.isolated) == 0 {
		c.cuts = nil
	}
	c.mu.Unlock()
	return errors.Join(errs...)
}

// newlyIsolated lists the nodes (not yet in isolated) that cuts separate
// from every other node in both directions.
func newlyIsolated(cuts map[[2]int]bool, isolated map[int]bool, nodes int) []int {
	var out []int
	for x := 1; x <= nodes; x++ {
		all := !isolated[x]
		for y := 1; y <= nodes && all; y++ {
			if y != x && (!cuts[[2]int{x, y}] || !cuts[[2]int{y, x}]) {
				all = false
			}
		}
		if all {
			out = append(out, x)
		}
	}
	return out
}

// NewRunner implements NodeBackend: a runner for one scenario's cluster,
// its data dirs bind-mounted from cfg.Dir.
func (c *Containers) NewRunner(cfg ClusterConfig) (NodeRunner, error) {
	if c.compose == nil {
		return nil, errors.New("containers: Setup has not run")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("containers: %w", err)
	}
	r := &containerRunner{c: c, cfg: cfg, file: filepath.Join(dir, "compose.json")}
	for i := 1; i <= cfg.Nodes; i++ {
		r.nodes = append(r.nodes, &cnode{
			dataDir: filepath.Join(dir, fmt.Sprintf("node%d", i)),
			logPath: filepath.Join(dir, fmt.Sprintf("node%d.log", i)),
		})
	}
	return r, nil
}

// containerRunner is the NodeRunner of one scenario's containers.
type containerRunner struct {
	c    *Containers
	cfg  ClusterConfig
	file string

	mu    sync.Mutex // serialises compose calls
	nodes []*cnode
}

var _ NodeRunner = (*containerRunner)(nil)

type cnode struct {
	dataDir, logPath string

	mu      sync.Mutex
	running bool
	paused  bool
	env     []string  // for the next start
	created *[]string // env the container was created with; nil: none yet
	checked time.Time
}

// composeFile renders the compose file (JSON, which compose reads as YAML).
func (r *containerRunner) composeFile() ([]byte, error) {
	c := r.c
	var join []string
	for i := 1; i <= r.cfg.Nodes; i++ {
		join = append(join, fmt.Sprintf("%s:%d", c.ClusterIP(i), c.Port(i, "gossip")))
	}
	services := map[string]any{}
	for i := 1; i <= r.cfg.Nodes; i++ {
		p := r.nodes[i-1]
		env := map[string]string{}
		p.mu.Lock()
		for _, kv := range append(slices.Clone(r.cfg.Env), p.env...) {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		p.mu.Unlock()
		ip := c.ClusterIP(i)
		services[fmt.Sprintf("node%d", i)] = map[string]any{
			"image":          c.image(),
			"container_name": c.container(i),
			"hostname":       fmt.Sprintf("node%d", i),
			// The harness's own uid: the data dirs stay readable (and
			// removable) from the host.
			"user":    fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()),
			"restart": "no",
			"command": []string{
				"--node-id", fmt.Sprintf("node%d", i),
				"--data-dir", "/data",
				"--http-addr", "0.0.0.0:8080",
				"--http-advertise", "http://" + ip + ":8080",
				"--raft-addr", "0.0.0.0:8300",
				"--raft-advertise", ip + ":8300",
				"--gossip-addr", "0.0.0.0:8400",
				"--gossip-advertise", ip + ":8400",
				"--bootstrap-expect", strconv.Itoa(r.cfg.Nodes),
				"--cluster-key-file", containerSecrets + "/cluster.key",
				"--admin-token-file", containerSecrets + "/admin.token",
				"--log-format", "json",
				"--join", strings.Join(join, ","),
			},
			"environment": env,
			"volumes":     []string{p.dataDir + ":/data", r.secretsDir() + ":" + containerSecrets + ":ro"},
			"networks": map[string]any{
				"cluster": map[string]string{"ipv4_address": ip},
				"api":     map[string]string{"ipv4_address": c.Host(i)},
			},
		}
	}
	nw := func(name, third string) map[string]any {
		return map[string]any{"name": c.network(name),
			"ipam": map[string]any{"config": []map[string]string{{"subnet": fmt.Sprintf("%s.%s.0/24", c.Subnet, third)}}}}
	}
	b, err := json.MarshalIndent(map[string]any{
		"version":  "2.4",
		"services": services,
		"networks": map[string]any{"cluster": nw("cluster", "10"), "api": nw("api", "20")},
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("compose file: %w", err)
	}
	return b, nil
}

// containerSecrets is where a node container finds its secret files, as
// Docker mounts its secrets.
const containerSecrets = "/run/secrets"

// secretsDir holds the cluster key and the admin token, mode 0600, mounted
// read-only into every container: no secret on a command line or in the
// compose file.
func (r *containerRunner) secretsDir() string { return filepath.Join(filepath.Dir(r.file), "secrets") }

// writeSecrets writes the files of secretsDir.
func (r *containerRunner) writeSecrets() error {
	dir := r.secretsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("secrets dir: %w", err)
	}
	for name, v := range map[string]string{"cluster.key": r.cfg.ClusterKey, "admin.token": r.cfg.AdminToken} {
		if err := secure.WriteSecretFile(filepath.Join(dir, name), v+"\n"); err != nil {
			return fmt.Errorf("secrets: %w", err)
		}
	}
	return nil
}

// up writes the compose file and (re)creates and starts node n's
// container. Compose attaches both networks when it starts the container;
// later `docker start`s keep them.
func (r *containerRunner) up(ctx context.Context, n int) error {
	b, err := r.composeFile()
	if err != nil {
		return err
	}
	if err := r.writeSecrets(); err != nil {
		return err
	}
	if err := os.WriteFile(r.file, b, 0o600); err != nil {
		return fmt.Errorf("compose file: %w", err)
	}
	args := append(slices.Clone(r.c.compose[1:]), "-p", r.c.Project, "-f", r.file,
		"up", "-d", "--no-deps", "--force-recreate", fmt.Sprintf("node%d", n))
	if err := run(ctx, r.c.compose[0], args...); err != nil {
		return fmt.Errorf("compose up: %w", err)
	}
	return nil
}

// Start implements NodeRunner: compose up for a container that does not
// exist yet or whose environment changed (clock offset; the data dir is
// bind-mounted, so the node keeps its state), docker start otherwise.
func (r *containerRunner) Start(ctx context.Context, n int) error {
	p := r.nodes[n-1]
	if err := os.MkdirAll(p.dataDir, 0o700); err != nil {
		return fmt.Errorf("node%d data dir: %w", n, err)
	}
	p.mu.Lock()
	recreate := p.created == nil || !slices.Equal(p.env, *p.created)
	env := slices.Clone(p.env)
	p.mu.Unlock()
	if recreate {
		// One compose call at a time: they share the compose file.
		r.mu.Lock()
		err := r.up(ctx, n)
		r.mu.Unlock()
		if err != nil {
			return fmt.Errorf("start node%d: %w", n, err)
		}
		p.mu.Lock()
		p.created = &env
		p.mu.Unlock()
	} else if err := run(ctx, "docker", "start", r.c.container(n)); err != nil {
		return fmt.Errorf("start node%d: %w", n, err)
	}
	p.mu.Lock()
	p.running, p.paused, p.checked = true, false, time.Now()
	p.mu.Unlock()
	r.cfg.Log.Debug("container started", "node", n, "container", r.c.container(n), "recreated", recreate)
	return nil
}

// Running implements NodeRunner. It trusts what the runner did, checking
// with docker inspect at most once a second whether the container exited
// on its own.
func (r *containerRunner) Running(n int) bool {
	p := r.nodes[n-1]
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running || time.Since(p.checked) < time.Second {
		return p.running
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := output(ctx, "docker", "inspect", "-f", "{{.State.Running}}", r.c.container(n))
	p.checked = time.Now()
	if err == nil && strings.TrimSpace(out) == "false" {
		p.running, p.paused = false, false
	}
	return p.running
}

// Paused implements NodeRunner.
func (r *containerRunner) Paused(n int) bool {
	p := r.nodes[n-1]
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// Pause implements NodeRunner with docker pause (cgroup freezer).
func (r *containerRunner) Pause(ctx context.Context, n int) error {
	return r.setPaused(ctx, n, "pause", true)
}

// Resume implements NodeRunner with docker unpause.
func (r *containerRunner) Resume(ctx context.Context, n int) error {
	return r.setPaused(ctx, n, "unpause", false)
}

// setPaused runs docker pause or unpause on node n and records the state.
func (r *containerRunner) setPaused(ctx context.Context, n int, verb string, paused bool) error {
	if err := run(ctx, "docker", verb, r.c.container(n)); err != nil {
		return fmt.Errorf("%s node%d: %w", verb, n, err)
	}
	p := r.nodes[n-1]
	p.mu.Lock()
	p.paused = paused
	p.mu.Unlock()
	return nil
}

// Kill implements NodeRunner: docker kill -s KILL, then docker wait until
// the container has stopped.
func (r *containerRunner) Kill(ctx context.Context, n int) error {
	return r.stop(ctx, n, []string{"kill", "-s", "KILL"})
}

// Terminate implements NodeRunner with docker stop (SIGTERM, SIGKILL
// after grace).
func (r *containerRunner) Terminate(ctx context.Context, n int, grace time.Duration) error {
	return r.stop(ctx, n, []string{"stop", "-t", strconv.Itoa(int(grace.Seconds()))})
}

func (r *containerRunner) stop(ctx context.Context, n int, how []string) error {
	p := r.nodes[n-1]
	p.mu.Lock()
	running, paused := p.running, p.paused
	p.mu.Unlock()
	if !running {
		return nil
	}
	name := r.c.container(n)
	if paused {
		// As SIGCONT before SIGKILL for a process.
		_ = run(ctx, "docker", "unpause", name)
	}
	if err := run(ctx, "docker", append(how, name)...); err != nil && !strings.Contains(err.Error(), "is not running") {
		return fmt.Errorf("stop node%d: %w", n, err)
	}
	if err := run(ctx, "docker", "wait", name); err != nil {
		return fmt.Errorf("node%d did not stop: %w", n, err)
	}
	p.mu.Lock()
	p.running, p.paused = false, false
	p.mu.Unlock()
	return nil
}

// Wipe implements NodeRunner: it empties the bind-mounted data dir.
func (r *containerRunner) Wipe(n int) error {
	d := r.nodes[n-1].dataDir
	if err := os.RemoveAll(d); err != nil {
		return fmt.Errorf("wipe node%d: %w", n, err)
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("wipe node%d: %w", n, err)
	}
	return nil
}

// SetNodeEnv implements NodeRunner: the container is recreated with env
// on its next start.
func (r *containerRunner) SetNodeEnv(n int, env []string) {
	p := r.nodes[n-1]
	p.mu.Lock()
	p.env = slices.Clone(env)
	p.mu.Unlock()
}

// LogPath implements NodeRunner: it refreshes the file from docker logs
// (every start of the container so far) and returns its path.
func (r *containerRunner) LogPath(n int) string {
	p := r.nodes[n-1]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := dockerLogs(ctx, r.c.container(n), p.logPath); err != nil {
		r.cfg.Log.Debug("docker logs", "node", n, "err", err)
	}
	return p.logPath
}

// DataDir implements NodeRunner: the host side of the bind mount.
func (r *containerRunner) DataDir(n int) string { return r.nodes[n-1].dataDir }

// KillLeftovers implements NodeRunner: it removes the project's containers
// and networks (a previous scenario's, or a crashed run's).
func (r *containerRunner) KillLeftovers(ctx context.Context) {
	if err := r.c.removeProject(ctx); err != nil {
		r.cfg.Log.Warn("removing leftover containers", "err", err)
	}
	for _, p := range r.nodes {
		p.mu.Lock()
		p.created, p.running, p.paused = nil, false, false
		p.mu.Unlock()
	}
}

// dockerLogs writes a container's whole log (stdout and stderr) to path,
// through a temporary file so that readers never see a partial log.
func dockerLogs(ctx context.Context, container, path string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("docker logs: %w", err)
	}
	cmd := exec.CommandContext(ctx, "docker", "logs", container)
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("docker logs %s: %w", container, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("docker logs: %w", err)
	}
	return nil
}

// copyFile copies src to dst with mode perm.
func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	return nil
}
