//go:build container

package containertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const project = "exactoncetest"

// node is one container of the compose file.
type node struct {
	service   string // compose service name
	apiURL    string // reachable from the host over the api network
	clusterIP string // address on the cluster network
}

var nodes = []node{
	{"node1", "http://172.29.20.11:8080", "172.29.10.11"},
	{"node2", "http://172.29.20.12:8080", "172.29.10.12"},
	{"node3", "http://172.29.20.13:8080", "172.29.10.13"},
}

// cluster drives the compose project.
type cluster struct {
	t        *testing.T
	root     string
	env      []string
	admin    string
	clientID string
	secret   string
	http     *http.Client
}

func repoRoot(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func randomB64(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func (c *cluster) run(name string, args ...string) string {
	c.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = c.root
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (c *cluster) compose(args ...string) string {
	c.t.Helper()
	return c.run("docker-compose", append([]string{"-p", project, "-f", "deploy/docker-compose.yml"}, args...)...)
}

func container(service string) string { return project + "_" + service + "_1" }

// call sends one request and decodes the JSON answer. A transport error is
// returned as status 0.
func (c *cluster) call(ctx context.Context, method, url string, body any, admin bool) (int, map[string]any) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		c.t.Fatalf("request %s %s: %v", method, url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if admin {
		req.Header.Set("Authorization", "Bearer "+c.admin)
	} else {
		req.Header.Set("client-id", c.clientID)
		req.Header.Set("client-secret", c.secret)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, map[string]any{"transport": err.Error()}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	m := map[string]any{}
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", timeout, what)
	return 0
}

// ready reports whether n answers /readyz with 200. A container that has
// exited fails the test at once instead of waiting out the deadline.
func (c *cluster) ready(t *testing.T, n node) bool {
	out, err := exec.Command("docker", "inspect", "-f", "{{.State.Running}}", container(n.service)).Output()
	if err == nil && strings.TrimSpace(string(out)) == "false" {
		t.Fatalf("container %s is not running", container(n.service))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, _ := c.call(ctx, "GET", n.apiURL+"/readyz", nil, false)
	return st == 200
}

// nodeUID is the numeric user of deploy/Dockerfile (USER).
const nodeUID = 65532

// newShellEnv is the environment of a new shell: the test's own without
// any EXACTONCE_* variable.
func newShellEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EXACTONCE_") {
			env = append(env, kv)
		}
	}
	return env
}

// health is the container's health status as Docker's HEALTHCHECK last
// judged it ("starting", "healthy", "unhealthy").
func (c *cluster) health(t *testing.T, n node) string {
	out, err := exec.Command("docker", "inspect", "-f", "{{.State.Health.Status}}", container(n.service)).Output()
	if err != nil {
		t.Fatalf("docker inspect %s: %v", container(n.service), err)
	}
	return strings.TrimSpace(string(out))
}

// leader asks a node who leads and maps the answer to one of nodes.
func (c *cluster) leader(via node) (node, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, m := c.call(ctx, "GET", via.apiURL+"/v1/cluster", nil, true)
	if st != 200 {
		return node{}, false
	}
	id, _ := m["leaderId"].(string)
	if id == "" {
		if l, ok := m["leader"].(map[string]any); ok {
			id, _ = l["id"].(string)
		}
	}
	for _, n := range nodes {
		if n.service == id {
			return n, true
		}
	}
	return node{}, false
}

func (c *cluster) create(ctx context.Context, via node) (string, int) {
	st, m := c.call(ctx, "POST", via.apiURL+"/v1/actions", map[string]any{"payload": map[string]any{"via": via.service}}, false)
	id, _ := m["actionId"].(string)
	return id, st
}

func TestThreeNodeCluster(t *testing.T) {
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Fatalf("docker-compose is required for the container tests: %v", err)
	}
	c := &cluster{
		t:     t,
		root:  repoRoot(t),
		admin: randomB64(32),
		http:  &http.Client{Timeout: 20 * time.Second},
	}
	// CGO_ENABLED=0: the image is FROM scratch, so the binaries must be static.
	// The secrets are files (mode 0600) in the directory the compose file
	// mounts at /run/secrets, as docs/deploy.md sets them up.
	// The nodes run as the image's user (nodeUID), which must own them.
	secrets := filepath.Join(t.TempDir(), "secrets")
	if err := os.Mkdir(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"cluster.key": randomB64(32), "admin.token": c.admin} {
		if err := os.WriteFile(filepath.Join(secrets, name), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{secrets, filepath.Join(secrets, "cluster.key"), filepath.Join(secrets, "admin.token")} {
		if err := os.Chown(p, nodeUID, nodeUID); err != nil {
			t.Fatalf("give %s to the image's user %d (as docs/deploy.md does with sudo chown; run the container tests as root): %v", p, nodeUID, err)
		}
	}
	c.env = []string{"CGO_ENABLED=0", "EXACTONCE_SECRETS_DIR=" + secrets, "EXACTONCE_IMAGE=exactonce:test"}

	c.run("go", "build", "-o", "bin/exactonced", "./cmd/exactonced")
	c.run("go", "build", "-o", "bin/exactonce", "./cmd/exactonce")
	c.run("docker", "build", "-q", "-f", "deploy/Dockerfile", "-t", "exactonce:test", ".")

	downArgs := []string{"-p", project, "-f", "deploy/docker-compose.yml", "down", "-v", "--remove-orphans", "-t", "5"}
	down := exec.Command("docker-compose", downArgs...)
	// `down` as from a new shell: none of the variables `up` had.
	down.Dir, down.Env = c.root, newShellEnv()
	_ = down.Run() // leftovers of an earlier crashed run
	t.Cleanup(func() {
		if t.Failed() {
			logs := exec.Command("docker-compose", "-p", project, "-f", "deploy/docker-compose.yml", "logs", "--no-color", "--tail", "80")
			logs.Dir, logs.Env = c.root, append(os.Environ(), c.env...)
			out, _ := logs.CombinedOutput()
			t.Logf("container logs:\n%s", out)
		}
		down := exec.Command("docker-compose", downArgs...)
		down.Dir, down.Env = c.root, newShellEnv()
		if out, err := down.CombinedOutput(); err != nil {
			t.Errorf("compose down from a new shell (no EXACTONCE_* variable): %v\n%s", err, out)
		}
	})
	c.compose("up", "-d")
	for _, n := range nodes {
		waitFor(t, n.service+" ready", 90*time.Second, func() bool { return c.ready(t, n) })
	}
	// The image's HEALTHCHECK (the binary probing its own /readyz, as the
	// non-root user) turns every node healthy.
	for _, n := range nodes {
		user := strings.TrimSpace(c.run("docker", "inspect", "-f", "{{.Config.User}}", container(n.service)))
		if uid, _, _ := strings.Cut(user, ":"); uid != strconv.Itoa(nodeUID) {
			t.Errorf("%s runs as %q, want uid %d", n.service, user, nodeUID)
		}
		waitFor(t, n.service+" healthy", 60*time.Second, func() bool {
			return c.health(t, n) == "healthy"
		})
	}

	// A client for the traffic, created through any node (forwarded to the leader).
	ctx := context.Background()
	waitFor(t, "client created", 30*time.Second, func() bool {
		st, m := c.call(ctx, "POST", nodes[1].apiURL+"/v1/admin/clients", map[string]any{"name": "containertest"}, true)
		c.clientID, _ = m["clientId"].(string)
		c.secret, _ = m["clientSecret"].(string)
		return st == 201
	})

	// Traffic against all three nodes: every create acknowledged, every
	// other action consumed; a second consume anywhere is already_used.
	acked := map[string]bool{} // action id -> consumed
	for i := 0; i < 30; i++ {
		id, st := c.create(ctx, nodes[i%3])
		if st != 201 {
			t.Fatalf("create via %s: status %d", nodes[i%3].service, st)
		}
		acked[id] = false
		if i%2 == 0 {
			st, _ := c.call(ctx, "POST", nodes[(i+1)%3].apiURL+"/v1/actions/"+id+"/consume", nil, false)
			if st != 200 {
				t.Fatalf("consume %s: status %d", id, st)
			}
			acked[id] = true
			st, m := c.call(ctx, "POST", nodes[(i+2)%3].apiURL+"/v1/actions/"+id+"/consume", nil, false)
			if st != 409 || m["error"] != "already_used" {
				t.Fatalf("second consume %s: status %d %v", id, st, m)
			}
		}
	}
	checkAll := func(label string, via []node) {
		t.Helper()
		for _, n := range via {
			for id, consumed := range acked {
				st, m := c.call(ctx, "GET", n.apiURL+"/v1/actions/"+id, nil, false)
				want := "active"
				if consumed {
					want = "consumed"
				}
				if st != 200 || m["state"] != want {
					t.Fatalf("%s: %s on %s: status %d state %v, want 200 %s", label, id, n.service, st, m["state"], want)
				}
			}
		}
	}
	checkAll("after traffic", nodes)

	t.Run("kill leader", func(t *testing.T) {
		var lead node
		waitFor(t, "a leader", 10*time.Second, func() bool { var ok bool; lead, ok = c.leader(nodes[0]); return ok })
		var others []node
		for _, n := range nodes {
			if n != lead {
				others = append(others, n)
			}
		}
		c.run("docker", "kill", "-s", "KILL", container(lead.service))
		killed := time.Now()
		var id string
		i := 0
		for {
			if time.Since(killed) > 10*time.Second {
				t.Fatalf("no successful write within 10s of killing the leader %s", lead.service)
			}
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			var st int
			id, st = c.create(rctx, others[i%2])
			cancel()
			if st == 201 {
				break
			}
			i++
		}
		t.Logf("FIGURE leader kill -> first successful write on another node: %s", time.Since(killed).Round(time.Millisecond))
		acked[id] = false
		checkAll("after leader kill", others)
		c.run("docker", "start", container(lead.service))
		waitFor(t, lead.service+" ready after restart", 60*time.Second, func() bool { return c.ready(t, lead) })
		checkAll("restarted node caught up", []node{lead})
	})

	t.Run("partition follower", func(t *testing.T) {
		var lead node
		waitFor(t, "a leader", 10*time.Second, func() bool { var ok bool; lead, ok = c.leader(nodes[0]); return ok })
		var cut node
		for _, n := range nodes {
			if n != lead {
				cut = n
				break
			}
		}
		net := project + "_cluster"
		c.run("docker", "network", "disconnect", net, container(cut.service))
		reconnected := false
		defer func() {
			if !reconnected {
				_ = exec.Command("docker", "network", "connect", "--ip", cut.clusterIP, net, container(cut.service)).Run()
			}
		}()
		// The majority keeps serving.
		var during string
		waitFor(t, "majority write", 15*time.Second, func() bool {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			id, st := c.create(rctx, lead)
			during = id
			return st == 201
		})
		acked[during] = false
		// The cut-off node answers 503 for writes and linearizable reads, never stale data.
		st, m := c.call(ctx, "POST", cut.apiURL+"/v1/actions", map[string]any{"payload": map[string]any{"x": 1}}, false)
		if st != 503 {
			t.Fatalf("write on cut-off %s: status %d %v, want 503", cut.service, st, m)
		}
		st, m = c.call(ctx, "GET", cut.apiURL+"/v1/actions/"+during, nil, false)
		if st != 503 {
			t.Fatalf("linearizable read on cut-off %s: status %d %v, want 503", cut.service, st, m)
		}
		c.run("docker", "network", "connect", "--ip", cut.clusterIP, net, container(cut.service))
		reconnected = true
		waitFor(t, cut.service+" catches up", 60*time.Second, func() bool {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			st, m := c.call(rctx, "GET", cut.apiURL+"/v1/actions/"+during, nil, false)
			return st == 200 && m["state"] == "active"
		})
		checkAll("after reconnect", nodes)
	})

	t.Run("restart all", func(t *testing.T) {
		c.compose("stop", "-t", "20")
		c.compose("start")
		for _, n := range nodes {
			waitFor(t, n.service+" ready after full restart", 90*time.Second, func() bool { return c.ready(t, n) })
		}
		checkAll("after full restart", nodes)
		for id, consumed := range acked {
			if consumed {
				st, _ := c.call(ctx, "POST", nodes[2].apiURL+"/v1/actions/"+id+"/consume", nil, false)
				if st != 409 {
					t.Fatalf("consumed %s consumable again after restart: %d", id, st)
				}
			}
		}
		fmt.Fprintln(os.Stderr, "all", len(acked), "acknowledged actions present after full restart")
	})
}
