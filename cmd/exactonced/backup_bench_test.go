package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/exactonce/exactonce/client"
	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/secure"
	"github.com/exactonce/exactonce/internal/snapfile"
)

// benchSnapshotActionsEnv overrides how many actions BenchmarkSnapshot
// stores (default one million).
const benchSnapshotActionsEnv = "EXACTONCE_BENCH_SNAPSHOT_ACTIONS"

// BenchmarkSnapshot measures a backup's restore and save with the real
// binaries at one million stored actions (docs/performance.md, "Backup and
// restore"): a state of that many actions (one client, 300-byte sealed
// payloads, ids as the API makes them) is built in-process and written as
// a backup file; each iteration then starts a fresh node with --restore
// (timed until it is ready, restore_s) and saves it again with `exactonce
// snapshot save` (save_s). Run it alone:
//
//	nice -n 19 go test ./cmd/exactonced -run '^$' -bench Snapshot -benchtime 1x -timeout 30m
func BenchmarkSnapshot(b *testing.B) {
	n := 1_000_000
	if v := os.Getenv(benchSnapshotActionsEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("%s=%q: want a positive number", benchSnapshotActionsEnv, v)
		}
	}
	bin, cli := buildServer(b), buildCLI(b)
	dir := b.TempDir()
	keyFile, tokenFile := filepath.Join(dir, "cluster.key"), filepath.Join(dir, "admin.token")
	const token = "bench-admin-token-0123456789abcdef"
	key := b64Key(9)
	for f, v := range map[string]string{keyFile: key, tokenFile: token} {
		if err := os.WriteFile(f, []byte(v+"\n"), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	raw, err := secure.ParseKey(key)
	if err != nil {
		b.Fatal(err)
	}
	keys, err := secure.NewKeys(raw)
	if err != nil {
		b.Fatal(err)
	}
	backup := filepath.Join(dir, "million.snap")
	buildStart := time.Now()
	size := writeBenchBackup(b, filepath.Join(dir, "build.db"), backup, n, keys.CheckValue())
	b.Logf("built a backup of %d actions (%d MiB) in %s", n, size>>20, time.Since(buildStart).Round(time.Second))

	ctx := context.Background()
	var restoreTotal, saveTotal time.Duration
	iters := 0
	for b.Loop() {
		iters++
		node := newNodes(b, fmt.Sprintf("bench%d-", iters))[0]
		args := append(node.args([]*testNode{node}, keyFile, tokenFile), "--restore", backup)
		t0 := time.Now()
		// At info the node logs the restore's steps, shown below.
		p := startEnv(b, bin, []string{"EXACTONCE_LOG_LEVEL=info"}, args...)
		c, err := client.New("http://" + node.http)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if ok, _ := c.Ready(ctx); ok {
				break
			}
			select {
			case err := <-p.done:
				b.Fatalf("the node exited: %v\n%s", err, p.stderr.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		restoreTotal += time.Since(t0)

		saved := filepath.Join(node.dir, "..", fmt.Sprintf("saved-%d.snap", iters))
		t1 := time.Now()
		if _, errOut, code := runCLI(b, cli, "--addr", "http://"+node.http, "--admin-token", token, "--timeout", "5m", "snapshot", "save", saved); code != 0 {
			b.Fatalf("save: exit %d: %s", code, errOut)
		}
		saveTotal += time.Since(t1)
		_ = os.Remove(saved)
		_ = p.cmd.Process.Kill()
		<-p.done
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			if strings.Contains(line, "backup") || strings.Contains(line, "restored snapshot") || strings.Contains(line, "msg=ready") {
				b.Log(line)
			}
		}
	}
	b.ReportMetric(restoreTotal.Seconds()/float64(iters), "restore_s")
	b.ReportMetric(saveTotal.Seconds()/float64(iters), "save_s")
	b.ReportMetric(float64(size)/(1<<20), "file_MiB")
}

// writeBenchBackup builds a state of n actions in dbPath and writes it as a
// backup file; it returns the file's size.
func writeBenchBackup(b *testing.B, dbPath, out string, n int, keyCheck []byte) int64 {
	f, err := fsm.Open(fsm.Options{Path: dbPath, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	const clientID = "cl_bench"
	now := time.Now()
	idx := uint64(0)
	apply := func(cmd *fsm.Command) {
		idx++
		data, err := fsm.EncodeCommand(cmd)
		if err != nil {
			b.Fatal(err)
		}
		f.ApplyBatch([]*raft.Log{{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}})
	}
	apply(&fsm.Command{Type: fsm.CmdCreateClient, Time: now.UnixMilli(),
		CreateClient: &fsm.CreateClient{ID: clientID, Name: "bench", SecretHash: secure.HashSecret("bench-secret")}})
	apply(&fsm.Command{Type: fsm.CmdRecordKeyCheck, Time: now.UnixMilli(), KeyCheck: &fsm.KeyCheck{Value: keyCheck}})
	var ids secure.ActionIDs
	payload := make([]byte, 300)
	_, _ = rand.Read(payload)
	const batch = 10_000
	for done := 0; done < n; done += batch {
		c := &fsm.CreateActions{CSV: true, MaxActions: -1, DefaultTTLMS: fsm.DefaultTTLMS, MaxTTLMS: fsm.DefaultMaxTTLMS}
		for i := done; i < min(done+batch, n); i++ {
			c.Rows = append(c.Rows, fsm.CreateRow{Row: i - done, ActionID: ids.New(now), SealedPayload: payload})
		}
		apply(&fsm.Command{Type: fsm.CmdCreateActions, Time: now.UnixMilli(), ClientID: clientID, Create: c})
	}
	cp, err := f.BeginCopy()
	if err != nil {
		b.Fatal(err)
	}
	defer cp.Close()
	w, err := snapfile.NewWriter(snapfile.Header{Index: cp.AppliedIndex, Term: 1, Time: cp.LastTime, KeyCheck: cp.KeyCheck,
		StateSize: cp.Size, CreatedAt: time.Now().UTC(), NodeID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	fh, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	bw := bufio.NewWriterSize(fh, 1<<20)
	if _, err := w.WriteTo(bw, cp); err != nil {
		b.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		b.Fatal(err)
	}
	return w.Size()
}
