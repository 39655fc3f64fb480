package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exactonce/exactonce/fsm"
)

// TestCompactCommand: `exactonced compact` compacts a stopped node's
// state file (data dir from the flag or the environment), refuses while
// the node holds it (exit 1, saying why) and rejects stray arguments
// (exit 2).
func TestCompactCommand(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, stateFile)
	f, err := fsm.Open(fsm.Options{Path: path, NoSync: true, InitialMmapSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	compactRun := func(args []string, env map[string]string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"compact"}, args...), func(k string) string { return env[k] }, &out, &errb)
		return code, out.String(), errb.String()
	}
	code, _, stderr := compactRun([]string{"--data-dir", dir}, nil)
	if code != 1 || !strings.Contains(stderr, "is the node running?") {
		t.Errorf("compact while the node runs: exit %d, stderr %q; want 1 and a message", code, stderr)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := compactRun(nil, map[string]string{"EXACTONCE_DATA_DIR": dir})
	if code != 0 || !strings.Contains(stdout, "compacted "+path) {
		t.Errorf("compact of a stopped node: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if code, _, _ := compactRun([]string{"--data-dir", dir, "now"}, nil); code != 2 {
		t.Errorf("compact with a stray argument: exit %d, want 2", code)
	}
}
