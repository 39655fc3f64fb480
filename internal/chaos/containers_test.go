package chaos

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestNewlyIsolated(t *testing.T) {
	cuts := map[[2]int]bool{}
	cut := func(a, b int) { cuts[[2]int{a, b}] = true }
	// A one-way cut (the leader's packets out) isolates nobody.
	cut(1, 2)
	cut(1, 3)
	if got := newlyIsolated(cuts, nil, 3); got != nil {
		t.Fatalf("one-way cuts isolated %v", got)
	}
	// Both directions to one peer only: still not isolated.
	cut(2, 1)
	if got := newlyIsolated(cuts, nil, 3); got != nil {
		t.Fatalf("half an isolation isolated %v", got)
	}
	cut(3, 1)
	if got := newlyIsolated(cuts, nil, 3); !slices.Equal(got, []int{1}) {
		t.Fatalf("isolating node1: got %v", got)
	}
	if got := newlyIsolated(cuts, map[int]bool{1: true}, 3); got != nil {
		t.Fatalf("already isolated node reported again: %v", got)
	}
}

func TestCanCutOneWay(t *testing.T) {
	if !canCutOneWay(&NetNS{}) {
		t.Error("netns can cut one way")
	}
	if canCutOneWay(&Loopback{}) {
		t.Error("loopback cannot cut at all")
	}
	if canCutOneWay(&Containers{}) {
		t.Error("containers disconnect whole nodes only")
	}
}

func TestContainersComposeFile(t *testing.T) {
	c := &Containers{Project: "eoctest", Subnet: "172.31", Nodes: 3, compose: []string{"docker-compose"}, Log: slog.Default()}
	dir := t.TempDir()
	nr, err := c.NewRunner(ClusterConfig{Dir: dir, Nodes: 3, AdminToken: "tok-secret-1", ClusterKey: "key-secret-2",
		Env: []string{"EXACTONCE_TEST_TRAILING_LOGS=128"}, Log: slog.Default()})
	if err != nil {
		t.Fatal(err)
	}
	r := nr.(*containerRunner)
	r.SetNodeEnv(2, []string{"EXACTONCE_TEST_CLOCK_OFFSET=30s"})
	b, err := r.composeFile()
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			ContainerName string            `json:"container_name"`
			Command       []string          `json:"command"`
			Environment   map[string]string `json:"environment"`
			Volumes       []string          `json:"volumes"`
			Networks      map[string]struct {
				IP string `json:"ipv4_address"`
			} `json:"networks"`
		} `json:"services"`
		Networks map[string]struct {
			Name string `json:"name"`
		} `json:"networks"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	n2 := f.Services["node2"]
	if n2.ContainerName != "eoctest-node2" || n2.Networks["cluster"].IP != "172.31.10.12" || n2.Networks["api"].IP != "172.31.20.12" {
		t.Errorf("node2: %+v", n2)
	}
	if want := []string{filepath.Join(dir, "node2") + ":/data", filepath.Join(dir, "secrets") + ":/run/secrets:ro"}; !slices.Equal(n2.Volumes, want) {
		t.Errorf("node2 volumes %v, want %v", n2.Volumes, want)
	}
	if n2.Environment["EXACTONCE_TEST_CLOCK_OFFSET"] != "30s" || n2.Environment["EXACTONCE_TEST_TRAILING_LOGS"] != "128" {
		t.Errorf("node2 env %v", n2.Environment)
	}
	if _, ok := f.Services["node1"].Environment["EXACTONCE_TEST_CLOCK_OFFSET"]; ok {
		t.Error("node1 got node2's clock offset")
	}
	cmd := strings.Join(n2.Command, " ")
	for _, want := range []string{"--raft-advertise 172.31.10.12:8300", "--http-advertise http://172.31.10.12:8080",
		"--join 172.31.10.11:8400,172.31.10.12:8400,172.31.10.13:8400", "--data-dir /data",
		"--cluster-key-file /run/secrets/cluster.key", "--admin-token-file /run/secrets/admin.token"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("node2 command %q lacks %q", cmd, want)
		}
	}
	if strings.Contains(string(b), "secret-") {
		t.Errorf("a secret is in the compose file:\n%s", b)
	}
	if err := r.writeSecrets(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"cluster.key": "key-secret-2\n", "admin.token": "tok-secret-1\n"} {
		p := filepath.Join(dir, "secrets", name)
		got, err := os.ReadFile(p)
		st, _ := os.Stat(p)
		if err != nil || string(got) != want || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %q %v mode %v", name, got, err, st.Mode())
		}
	}
	if f.Networks["cluster"].Name != "eoctest_cluster" || c.Host(3) != "172.31.20.13" {
		t.Errorf("networks %+v, host(3) %s", f.Networks, c.Host(3))
	}
}
