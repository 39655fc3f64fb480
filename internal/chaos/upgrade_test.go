//go:build upgrade

package chaos

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The rolling-upgrade test (make upgrade-test, docs/upgrade.md): a
// three-node cluster of an earlier build of this repository, built from its
// own git history, is upgraded one node at a time to the build of this
// tree, under the chaos workload, and the history is checked like any
// chaos scenario's.

// upgradeBaseFile is the file whose first commit is the default base: the
// commit that declared format version 1, the oldest build whose formats
// this build reads (docs/upgrade.md, "Format versions").
const upgradeBaseFile = "fsm/version.go"

// upgradeDuration is the workload time; the three upgrades take the first
// half, the rest runs on the new build.
const upgradeDuration = 60 * time.Second

// TestRollingUpgrade builds the base commit (UPGRADE_BASE, default: the
// commit that added fsm/version.go) and this tree, runs three nodes of the
// base under the chaos workload, replaces them one at a time (followers
// first) with this tree's build on the same data dirs, and requires no
// anomaly: linearizable, exactly once, converged state, every log replayed
// to the live state. SEED replays a run.
func TestRollingUpgrade(t *testing.T) {
	for _, tool := range []string{"git", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not on PATH: the rolling-upgrade test builds an earlier commit of this repository from its git history", tool)
		}
	}
	root, err := gitOutput("", "rev-parse", "--show-toplevel")
	if err != nil {
		t.Skipf("not in a git checkout (%v): the rolling-upgrade test needs the repository's history", err)
	}
	if shallow, _ := gitOutput(root, "rev-parse", "--is-shallow-repository"); shallow == "true" {
		t.Skip("shallow clone: the rolling-upgrade test needs the commit that declared format version 1 (git fetch --unshallow)")
	}
	base := os.Getenv("UPGRADE_BASE")
	if base == "" {
		added, err := gitOutput(root, "log", "--diff-filter=A", "--format=%H", "--", upgradeBaseFile)
		if err != nil || added == "" {
			t.Skipf("no commit in this history adds %s (%v): nothing to upgrade from", upgradeBaseFile, err)
		}
		lines := strings.Fields(added)
		base = lines[len(lines)-1] // the oldest, should the file ever be re-added
	}
	commit, err := gitOutput(root, "rev-parse", "--verify", base+"^{commit}")
	if err != nil {
		t.Fatalf("UPGRADE_BASE %q is not a commit of this repository: %v", base, err)
	}
	short := commit[:12]
	seed := upgradeSeed(t)
	t.Logf("seed %d (SEED=%d replays the schedule); upgrading from %s to this tree", seed, seed, short)

	tmp := t.TempDir()
	baseSrc := filepath.Join(tmp, "base-src")
	if err := extractCommit(root, commit, baseSrc); err != nil {
		t.Fatalf("extract %s: %v", short, err)
	}
	oldBin := filepath.Join(tmp, "exactonced-base")
	newBin := filepath.Join(tmp, "exactonced-new")
	oldVersion, newVersion := "upgrade-base-"+short, "upgrade-new"
	began := time.Now()
	if err := buildNode(baseSrc, oldBin, oldVersion); err != nil {
		t.Fatalf("build the base %s: %v", short, err)
	}
	if err := buildNode(root, newBin, newVersion); err != nil {
		t.Fatalf("build this tree: %v", err)
	}
	t.Logf("built both in %v", time.Since(began).Round(time.Second))

	var out bytes.Buffer
	defer func() { t.Logf("harness output:\n%s", out.String()) }()
	o := Options{
		Seed: seed, Scenarios: []string{"upgrade"}, Duration: upgradeDuration,
		Binary: oldBin, UpgradeBinary: newBin,
		WorkDir: filepath.Join(tmp, "work"), OutDir: upgradeOut(root),
		Net:            &Loopback{BasePort: freeLoopbackBase(t)},
		DefaultNodeEnv: FrequentSnapshotEnv(),
		Workload: WorkloadConfig{WorkersPerNode: 2, Racers: 5, RequestTimeout: 12 * time.Second,
			Attempts: 6, Think: 20 * time.Millisecond, Seed: seed},
		CheckTimeout: 2 * time.Minute,
		Log:          slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Out:          &out,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	res, err := RunScenario(ctx, o, "upgrade")
	if err != nil {
		t.Fatalf("harness: %v", err)
	}

	// Each node was upgraded once, followers first, from the base's
	// version to this tree's, and came back ready.
	seen := map[int]bool{}
	for i, ev := range res.Faults {
		t.Logf("%s: nodes %v: %s", ev.Fault, ev.Nodes, ev.Note)
		if ev.Err != "" || len(ev.Nodes) != 1 {
			t.Errorf("upgrade %d failed: %s (nodes %v)", i+1, ev.Err, ev.Nodes)
			continue
		}
		seen[ev.Nodes[0]] = true
		if want := fmt.Sprintf("version %q -> %q, ready", oldVersion, newVersion); !strings.Contains(ev.Note, want) {
			t.Errorf("upgrade %d: %q, want it to say %s", i+1, ev.Note, want)
		}
	}
	if n := len(res.Faults); n > 0 {
		if want := fmt.Sprintf("every member reports %q", newVersion); !strings.Contains(res.Faults[n-1].Note, want) {
			t.Errorf("after the last upgrade: %q, want GET /v1/cluster to say %s", res.Faults[n-1].Note, want)
		}
	}
	if len(res.Faults) != upgradeSteps || len(seen) != upgradeSteps {
		t.Errorf("%d upgrades over nodes %v; want each of the %d nodes once", len(res.Faults), seen, upgradeSteps)
	}
	r := res.Report
	t.Logf("%d ops on %d actions (%d unknown); linearizable: %s; converged: %s; replay: %s",
		r.Ops, r.Actions, r.Unknown, r.Linearizable, res.Converged, res.Replay)
	if r.Ops < 100 {
		t.Errorf("only %d operations: the workload did not run through the upgrade", r.Ops)
	}
	for _, a := range r.Anomalies {
		t.Errorf("anomaly: %s", a)
	}
}

// upgradeOut is where the run's history, results and node logs are kept
// (as make chaos keeps them in chaos-out/): UPGRADE_OUT, or upgrade-out/
// at the top of the checkout.
func upgradeOut(root string) string {
	if d := os.Getenv("UPGRADE_OUT"); d != "" {
		return d
	}
	return filepath.Join(root, "upgrade-out")
}

// upgradeSeed is SEED, or a random seed.
func upgradeSeed(t *testing.T) uint64 {
	if s := os.Getenv("SEED"); s != "" && s != "0" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SEED=%q: %v", s, err)
		}
		return v
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) >> 1
}

// gitOutput runs git in dir and returns its trimmed output.
func gitOutput(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return strings.TrimSpace(string(b)), nil
}

// extractCommit writes the tree of commit into dst (git archive): the
// repository itself is not touched, so an interrupted test leaves nothing
// behind in it.
func extractCommit(root, commit, dst string) error {
	cmd := exec.Command("git", "archive", "--format=tar", commit)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	rc, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("git archive: %w", err)
	}
	terr := untar(rc, dst)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git archive: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return terr
}

// untar extracts the regular files and directories of a tar stream.
func untar(r io.Reader, dst string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		path := filepath.Join(dst, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(path, filepath.Clean(dst)+string(filepath.Separator)) {
			return fmt.Errorf("archive entry %q leaves the directory", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, os.FileMode(h.Mode)&0o755|0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("extract %s: %w", h.Name, err)
			}
		}
	}
}

// buildNode builds exactonced from the module at dir, with the chaos
// harness's test hooks (-tags chaostest) and version stamped like `make
// build` stamps it, so GET /v1/cluster tells the builds apart.
func buildNode(dir, out, version string) error {
	cmd := exec.Command("go", "build", "-tags", "chaostest",
		"-ldflags", "-X github.com/exactonce/exactonce/internal/buildinfo.version="+version,
		"-o", out, "./cmd/exactonced")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build in %s: %w\n%s", dir, err, b)
	}
	return nil
}

// freeLoopbackBase finds a Loopback.BasePort whose nine ports (HTTP, Raft
// and gossip of three nodes) are free for TCP and UDP, in 25000-32767:
// below the kernel's ephemeral range and above the 18000-24999 that make
// bench and make chaos use.
func freeLoopbackBase(t *testing.T) int {
	t.Helper()
	free := func(port int) bool {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		_ = l.Close()
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		_ = u.Close()
		return true
	}
	start := 25000 + (os.Getpid()*131)%7000
	for i := range 7000 / 300 {
		base := 25000 + (start-25000+i*300)%7400
		ok := true
		for _, off := range []int{1, 2, 3, 101, 102, 103, 201, 202, 203} {
			if !free(base + off) {
				ok = false
				break
			}
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free loopback ports for three nodes in 25000-32767")
	return 0
}
