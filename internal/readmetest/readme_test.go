package readmetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exactonce/exactonce/internal/testport"
)

// startCommands are the first block's commands: what a newcomer runs first.
var startCommands = []string{"go run ./cmd/exactonced --dev", "make test"}

// block is one ```sh block of the README.
type block struct {
	line int    // of the opening fence, 1-based
	skip string // the reason given by a readme-test: skip marker
	body []string
}

// step is one command of a block with the answer the README shows.
type step struct {
	line    int
	command string
	expect  []string // the answer comment lines, without "# "
}

var skipMarker = regexp.MustCompile(`^<!--\s*readme-test:\s*skip:\s*(.+?)\s*-->$`)

// parseBlocks returns the ```sh blocks of a Markdown text.
func parseBlocks(text string) ([]block, error) {
	var out []block
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```sh" {
			continue
		}
		b := block{line: i + 1}
		for j := i - 1; j >= 0 && strings.TrimSpace(lines[j]) != ""; j-- {
			if m := skipMarker.FindStringSubmatch(strings.TrimSpace(lines[j])); m != nil {
				b.skip = m[1]
			}
		}
		j := i + 1
		for ; j < len(lines) && strings.TrimSpace(lines[j]) != "```"; j++ {
			b.body = append(b.body, lines[j])
		}
		if j == len(lines) {
			return nil, fmt.Errorf("README.md:%d: unclosed ```sh block", i+1)
		}
		out = append(out, b)
		i = j
	}
	return out, nil
}

// isAnswer reports whether a comment line (without "# ") is an answer:
// a status and body, a JSON value, or a CLI error line.
var answerLine = regexp.MustCompile(`^([1-5][0-9][0-9]( .*)?|[{\[].*|error: .*)$`)

// steps splits a block into commands and their answers.
func (b block) steps() []step {
	var out []step
	for i := 0; i < len(b.body); i++ {
		l := b.body[i]
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		s := step{line: b.line + 1 + i, command: l}
		for strings.HasSuffix(strings.TrimRight(b.body[i], " "), `\`) && i+1 < len(b.body) {
			i++
			s.command += "\n" + b.body[i]
		}
		for i+1 < len(b.body) {
			c, ok := strings.CutPrefix(strings.TrimSpace(b.body[i+1]), "# ")
			if !ok || !answerLine.MatchString(c) {
				break
			}
			s.expect = append(s.expect, c)
			i++
		}
		out = append(out, s)
	}
	return out
}

// commandsOf returns a block's commands without their trailing comments.
func commandsOf(b block) []string {
	var out []string
	for _, s := range b.steps() {
		c, _, _ := strings.Cut(s.command, "#")
		out = append(out, strings.TrimSpace(c))
	}
	return out
}

// repoRoot is the module root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", root, err)
	}
	return root
}

// scratchDir makes a directory that holds the repository's files (as
// symlinks), without its build outputs and data, for the README's commands
// to run in: they build into bin/ and read examples/ there, leaving the
// repository as it was.
func scratchDir(t *testing.T, root string) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e.Name() {
		case ".git", "bin", "data", ".cluster", "chaos-out":
			continue
		}
		if err := os.Symlink(filepath.Join(root, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// buildServer builds exactonced into dir.
func buildServer(t *testing.T, root, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "exactonced")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/exactonced")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build exactonced: %v\n%s", err, out)
	}
	return bin
}

// devNode is a running dev node and the export lines it printed.
type devNode struct {
	cmd     *exec.Cmd
	exports map[string]string // NAME -> the whole printed line
	done    chan error
	stderr  bytes.Buffer
}

// startDevNode runs `exactonced --dev` in dir, as the README's first
// command does there, on free loopback ports, and reads the lines it prints
// for pasting.
func startDevNode(t *testing.T, bin, dir string) *devNode {
	t.Helper()
	cmd := exec.Command(bin, "--dev", "--http-addr", testport.Free(t), "--raft-addr", testport.Free(t), "--gossip-addr", testport.Free(t))
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), "EXACTONCE_LOG_LEVEL=warn")
	n := &devNode{cmd: cmd, exports: map[string]string{}, done: make(chan error, 1)}
	cmd.Stderr = &n.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		n.done <- cmd.Wait()
	}()
	t.Cleanup(func() { n.stop(t) })
	deadline := time.After(90 * time.Second)
	// The four lines come in one write, after the node is ready and its
	// client exists; the admin token's line is the last.
	for n.exports["EXACTONCE_ADMIN_TOKEN"] == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the dev node exited before printing its lines; stderr:\n%s", n.stderr.String())
			}
			if rest, ok := strings.CutPrefix(l, "export "); ok {
				name, _, _ := strings.Cut(rest, "=")
				n.exports[name] = l
			}
		case <-deadline:
			t.Fatalf("the dev node printed no export lines within 90 s; stderr:\n%s", n.stderr.String())
		}
	}
	go func() {
		for range lines { // keep draining stdout
		}
	}()
	return n
}

// stop ends the node with SIGTERM, as Ctrl-C would, and waits for it.
func (n *devNode) stop(t *testing.T) {
	if n.cmd.ProcessState != nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
		t.Errorf("the dev node did not stop within 30 s of SIGTERM")
	}
}

// cleanEnv is the test's environment without EXACTONCE_ settings, which
// would change what the README's commands do.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EXACTONCE_") {
			out = append(out, kv)
		}
	}
	return out
}

var exportLine = regexp.MustCompile(`^(\s*)export ([A-Za-z_][A-Za-z0-9_]*)=(\S*)(.*)$`)

// paste turns the export lines of a command into what the reader pastes:
// the dev node's printed line, or an id copied from the latest answer.
func paste(command string, printed map[string]string, answers []string) (string, error) {
	lines := strings.Split(command, "\n")
	for i, l := range lines {
		m := exportLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		if p, ok := printed[m[2]]; ok {
			lines[i] = m[1] + p
			continue
		}
		prefix, ok := strings.CutSuffix(m[3], "...")
		if !ok {
			continue
		}
		id := regexp.MustCompile(regexp.QuoteMeta(prefix) + `[-0-9A-Za-z_]+`)
		found := ""
		for j := len(answers) - 1; j >= 0 && found == ""; j-- {
			found = id.FindString(answers[j])
		}
		if found == "" {
			return "", fmt.Errorf("no answer so far holds a %s... value for %s", prefix, m[2])
		}
		lines[i] = m[1] + "export " + m[2] + "=" + found + m[4]
	}
	return strings.Join(lines, "\n"), nil
}

// pattern compiles an answer shown in the README: literal text in which
// "..." matches anything.
func pattern(shown string) *regexp.Regexp {
	parts := strings.Split(shown, "...")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile(`(?s)^` + strings.Join(parts, ".*") + `$`)
}

// compactValues returns the JSON values of out, each compacted, one a line.
func compactValues(out []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(out))
	var vals []string
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("not JSON: %w", err)
		}
		var b bytes.Buffer
		if err := json.Compact(&b, raw); err != nil {
			return "", err
		}
		vals = append(vals, b.String())
	}
	return strings.Join(vals, "\n"), nil
}

// result is what one command did.
type result struct {
	code           int
	stdout, stderr []byte
}

// check compares a command's result with the answer the README shows.
func check(s step, r result) error {
	if len(s.expect) == 0 {
		if r.code != 0 {
			return fmt.Errorf("exit %d, and the README shows no error", r.code)
		}
		return nil
	}
	first := s.expect[0]
	switch {
	case strings.HasPrefix(first, "error: "):
		if r.code == 0 {
			return fmt.Errorf("exit 0, the README shows %q", first)
		}
		got, _, _ := strings.Cut(string(r.stderr), "\n")
		if !pattern(first).MatchString(got) {
			return fmt.Errorf("stderr %q, the README shows %q", got, first)
		}
	case first[0] == '{' || first[0] == '[':
		if r.code != 0 {
			return fmt.Errorf("exit %d", r.code)
		}
		got, err := compactValues(r.stdout)
		if err != nil {
			return fmt.Errorf("stdout: %w", err)
		}
		want := strings.Join(s.expect, "\n")
		if !pattern(want).MatchString(got) {
			return fmt.Errorf("answer\n  %s\nthe README shows\n  %s", strings.ReplaceAll(got, "\n", "\n  "), strings.ReplaceAll(want, "\n", "\n  "))
		}
	default: // "201 {...}": curl -w '%{http_code}\n' prints the status last
		if r.code != 0 {
			return fmt.Errorf("exit %d", r.code)
		}
		status, body, _ := strings.Cut(first, " ")
		out := strings.TrimRight(string(r.stdout), "\n")
		gotBody, gotStatus := "", out
		if i := strings.LastIndexByte(out, '\n'); i >= 0 {
			gotBody, gotStatus = out[:i], out[i+1:]
		}
		if _, err := strconv.Atoi(gotStatus); err != nil {
			return fmt.Errorf("no status on the last line of %q (curl -w '%%{http_code}\\n')", out)
		}
		if gotStatus != status {
			return fmt.Errorf("status %s, the README shows %s; body %s", gotStatus, status, gotBody)
		}
		if !pattern(body).MatchString(strings.TrimSpace(gotBody)) {
			return fmt.Errorf("%s answer\n  %s\nthe README shows\n  %s", status, gotBody, body)
		}
	}
	return nil
}

// shell runs commands one at a time in one bash session, so that their
// variables carry over: each command's exports are saved after it runs and
// loaded before the next.
type shell struct {
	dir, state string
	env        []string
}

func (sh *shell) run(ctx context.Context, command string) (result, error) {
	tmp, err := os.MkdirTemp("", "readmetest-step")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(tmp)
	out, errf, rc := filepath.Join(tmp, "out"), filepath.Join(tmp, "err"), filepath.Join(tmp, "rc")
	script := fmt.Sprintf(". %q\ncd %q\n{\n%s\n} >%q 2>%q </dev/null\necho $? >%q\nexport -p >%q\n",
		sh.state, sh.dir, command, out, errf, rc, sh.state)
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Env = sh.env
	cmd.Dir = sh.dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return result{}, fmt.Errorf("bash: %v\n%s", err, b)
	}
	var r result
	if r.stdout, err = os.ReadFile(out); err != nil {
		return r, err
	}
	if r.stderr, err = os.ReadFile(errf); err != nil {
		return r, err
	}
	code, err := os.ReadFile(rc)
	if err != nil {
		return r, err
	}
	r.code, err = strconv.Atoi(strings.TrimSpace(string(code)))
	return r, err
}

// TestREADME runs README.md's shell blocks in order against a fresh dev
// node and fails at the first command whose answer differs from the one
// the README shows (doc.go has the conventions).
func TestREADME(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs a dev node")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatalf("the README's blocks run with bash: %v", err)
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("the README's examples use curl: %v", err)
	}
	root := repoRoot(t)
	text, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := parseBlocks(string(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) == 0 {
		t.Fatal("README.md has no ```sh block")
	}
	if got := commandsOf(blocks[0]); strings.Join(got, "\n") != strings.Join(startCommands, "\n") {
		t.Fatalf("README.md:%d: the first block is %q; the README must start with %q", blocks[0].line, got, startCommands)
	}
	if h := strings.Index(string(text), "\n## "); h >= 0 && h < strings.Index(string(text), "```sh") {
		t.Fatal("README.md must start with the first block, before any section")
	}

	dir := scratchDir(t, root)
	node := startDevNode(t, buildServer(t, root, t.TempDir()), dir)
	state := filepath.Join(t.TempDir(), "state.sh")
	if err := os.WriteFile(state, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// `make cluster` starts three more nodes: on free ports, not its
	// defaults (scripts/cluster.sh reads these).
	ports := func() string {
		return fmt.Sprintf("%s %s %s", portOf(t), portOf(t), portOf(t))
	}
	env := append(cleanEnv(), "CLUSTER_HTTP_PORTS="+ports(), "CLUSTER_RAFT_PORTS="+ports(), "CLUSTER_GOSSIP_PORTS="+ports())
	sh := &shell{dir: dir, state: state, env: env}
	t.Cleanup(func() {
		// A failure between `make cluster` and `make cluster-stop` must not
		// leave its three nodes running.
		stop := exec.Command("scripts/cluster.sh", "stop")
		stop.Dir, stop.Env = dir, env
		_ = stop.Run()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	var answers []string
	ran := 0
	for _, b := range blocks[1:] {
		if b.skip != "" {
			t.Logf("README.md:%d: not run: %s", b.line, b.skip)
			continue
		}
		for _, s := range b.steps() {
			command, err := paste(s.command, node.exports, answers)
			if err != nil {
				t.Fatalf("README.md:%d: %s: %v", s.line, s.command, err)
			}
			r, err := sh.run(ctx, command)
			if err != nil {
				t.Fatalf("README.md:%d: %s: %v", s.line, command, err)
			}
			ran++
			if err := check(s, r); err != nil {
				t.Fatalf("README.md:%d: %s\n%v\nstdout: %s\nstderr: %s", s.line, command, err, r.stdout, r.stderr)
			}
			answers = append(answers, string(r.stdout)+string(r.stderr))
		}
	}
	if ran == 0 {
		t.Fatal("no README command ran")
	}
	t.Logf("ran %d README commands", ran)
}

// portOf is the port of a free loopback address.
func portOf(t *testing.T) string {
	t.Helper()
	_, port, err := net.SplitHostPort(testport.Free(t))
	if err != nil {
		t.Fatal(err)
	}
	return port
}
