package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exactonce/exactonce/client"
	"github.com/exactonce/exactonce/internal/config"
	"github.com/exactonce/exactonce/internal/secure"
)

// b64Key is the base64 of a cluster key of 32 bytes of fill.
func b64Key(fill byte) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{fill}, secure.KeySize))
}

func TestLoadClusterKey(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	parse := func(t *testing.T, dir string, args ...string) *config.Config {
		t.Helper()
		cfg, err := config.Parse(append([]string{"--data-dir", dir}, args...), func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	t.Run("single node generates, then keeps, its key", func(t *testing.T) {
		dir := t.TempDir()
		k1, _, err := loadClusterKey(parse(t, dir), log)
		if err != nil {
			t.Fatal(err)
		}
		k2, _, err := loadClusterKey(parse(t, dir), log)
		if err != nil || !bytes.Equal(k1, k2) {
			t.Fatalf("second load: %v, same key %v", err, bytes.Equal(k1, k2))
		}
	})
	t.Run("explicit key equal to the data dir's key file", func(t *testing.T) {
		dir := t.TempDir()
		if err := secure.WriteSecretFile(filepath.Join(dir, secure.KeyFileName), b64Key(1)+"\n"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := loadClusterKey(parse(t, dir, "--cluster-key", b64Key(1)), log); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("explicit key differing from the data dir's key file", func(t *testing.T) {
		dir := t.TempDir()
		if err := secure.WriteSecretFile(filepath.Join(dir, secure.KeyFileName), b64Key(1)+"\n"); err != nil {
			t.Fatal(err)
		}
		_, _, err := loadClusterKey(parse(t, dir, "--cluster-key", b64Key(2)), log)
		var km *keyMismatchError
		if !errors.As(err, &km) || !strings.Contains(err.Error(), filepath.Join(dir, secure.KeyFileName)) || !strings.Contains(err.Error(), "--cluster-key") {
			t.Fatalf("err = %v, want a key mismatch naming the key file and --cluster-key", err)
		}
	})
	t.Run("data dir check value", func(t *testing.T) {
		dir := t.TempDir()
		if err := writeKeyCheckFile(dir, testKeys(t, 1)); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(filepath.Join(dir, keyCheckFile))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("check file: %v %v", err, st.Mode())
		}
		if _, _, err := loadClusterKey(parse(t, dir, "--cluster-key", b64Key(1)), log); err != nil {
			t.Fatalf("right key: %v", err)
		}
		_, _, err = loadClusterKey(parse(t, dir, "--cluster-key", b64Key(2)), log)
		var km *keyMismatchError
		if !errors.As(err, &km) || !strings.Contains(err.Error(), filepath.Join(dir, keyCheckFile)) || !strings.Contains(err.Error(), "the cluster's key") {
			t.Fatalf("err = %v, want a key mismatch naming the check file and the fix", err)
		}
		if err := os.WriteFile(filepath.Join(dir, keyCheckFile), []byte("not hex\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := loadClusterKey(parse(t, dir, "--cluster-key", b64Key(1)), log); err == nil || !strings.Contains(err.Error(), "damaged") {
			t.Fatalf("damaged check file: %v", err)
		}
	})
}

// waitExit waits for p to exit and returns its exit code.
func (p *proc) waitExit(t *testing.T, deadline time.Duration) int {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
		return 0
	case <-time.After(deadline):
		t.Fatalf("exactonced still running after %s; stderr:\n%s", deadline, p.stderr.String())
		return -1
	}
}

// TestWrongClusterKeyRefused runs the real binary: a node started with
// another cluster key than its data dir's exits 3 before opening Raft and
// burns nothing; with the right key the action is still consumable. With
// the data dir's record removed, the replicated record stops it once
// ready. Every file the node wrote is private to its user.
func TestWrongClusterKeyRefused(t *testing.T) {
	bin, _, httpAddr, args := devNode(t)
	// A data dir the node creates itself, to check its mode too.
	dataDir := filepath.Join(t.TempDir(), "data")
	args = append(args, "--data-dir", dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	keyDir := t.TempDir()
	rightFile, wrongFile := filepath.Join(keyDir, "right.key"), filepath.Join(keyDir, "wrong.key")
	for f, k := range map[string]string{rightFile: b64Key(7), wrongFile: b64Key(8)} {
		if err := os.WriteFile(f, []byte(k+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	right := append(append([]string{}, args...), "--cluster-key-file", rightFile)
	wrong := append(append([]string{}, args...), "--cluster-key-file", wrongFile)

	p := start(t, bin, right...)
	id, secret := p.devCredentials(t, 60*time.Second)
	c, err := client.New("http://"+httpAddr, client.WithCredentials(id, secret), client.WithHTTPClient(checkedHTTP(t)))
	if err != nil {
		t.Fatal(err)
	}
	waitHTTPReady(ctx, t, c)
	created, err := c.Create(ctx, client.CreateRequest{Payload: []byte(`{"n":1}`)})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	checkFile := filepath.Join(dataDir, keyCheckFile)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(checkFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written; stderr:\n%s", checkFile, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.stop(t, 30*time.Second)
	raftBefore := treeSizes(t, filepath.Join(dataDir, "raft"))

	w := start(t, bin, wrong...)
	if code := w.waitExit(t, 30*time.Second); code != exitKeyMismatch {
		t.Fatalf("wrong key: exit %d, want %d; stderr:\n%s", code, exitKeyMismatch, w.stderr.String())
	}
	if msg := w.stderr.String(); !strings.Contains(msg, checkFile) || !strings.Contains(msg, wrongFile) || !strings.Contains(msg, "the cluster's key") {
		t.Errorf("the refusal names neither the check file, the key's source nor the fix:\n%s", msg)
	}
	if after := treeSizes(t, filepath.Join(dataDir, "raft")); !equalSizes(raftBefore, after) {
		t.Errorf("the refused start changed the Raft storage: %v -> %v", raftBefore, after)
	}

	p2 := start(t, bin, right...)
	p2.devCredentials(t, 60*time.Second)
	waitHTTPReady(ctx, t, c)
	got, err := c.Consume(ctx, created.ActionID, nil)
	if err != nil || string(got.Payload) != `{"n":1}` {
		t.Fatalf("consume with the right key after the refused start: %v %s", err, got.Payload)
	}
	p2.stop(t, 30*time.Second)

	// Without the data dir's record, the replicated one stops the node.
	if err := os.Remove(checkFile); err != nil {
		t.Fatal(err)
	}
	w2 := start(t, bin, wrong...)
	if code := w2.waitExit(t, 60*time.Second); code != exitKeyMismatch {
		t.Fatalf("wrong key without the data dir record: exit %d, want %d; stderr:\n%s", code, exitKeyMismatch, w2.stderr.String())
	}
	if msg := w2.stderr.String(); !strings.Contains(msg, "replicated state records") {
		t.Errorf("the refusal does not name the replicated record:\n%s", msg)
	}
	if _, err := os.Stat(checkFile); err == nil {
		t.Errorf("the wrong key's check value was kept in the data dir")
	}

	// Everything a node wrote (state.db, raft/, snapshots, keys) is private.
	if err := filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %04o: group or others can access it", path, info.Mode().Perm())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"state.db", "raft", "raft/snapshots"} {
		if _, err := os.Stat(filepath.Join(dataDir, want)); err != nil {
			t.Errorf("expected %s in the data dir: %v", want, err)
		}
	}
}

// treeSizes maps every file under dir to its size.
func treeSizes(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	m := map[string]int64{}
	if err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		m[path] = info.Size()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

func equalSizes(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// testKeys derives keys from a key of 32 bytes of fill.
func testKeys(t *testing.T, fill byte) *secure.Keys {
	t.Helper()
	k, err := secure.NewKeys(bytes.Repeat([]byte{fill}, secure.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}
