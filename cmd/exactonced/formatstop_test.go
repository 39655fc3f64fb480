package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/exactonce/exactonce/client"
	"github.com/exactonce/exactonce/fsm"
)

// appendToWAL appends one entry after the last of a stopped node's Raft
// log (raft/wal), in the last entry's term, and returns its index: what a
// leader of a newer build would have replicated to this node.
func appendToWAL(t *testing.T, dataDir string, data []byte) uint64 {
	t.Helper()
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(filepath.Join(dataDir, "raft", "wal"), wal.WithMetaStore(meta))
	if err != nil {
		t.Fatalf("open the node's wal: %v", err)
	}
	defer func() {
		if err := errors.Join(w.Close(), meta.Close()); err != nil {
			t.Fatalf("close the wal: %v", err)
		}
	}()
	last, err := w.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	var prev raft.Log
	if err := w.GetLog(last, &prev); err != nil {
		t.Fatalf("read entry %d: %v", last, err)
	}
	e := &raft.Log{Index: last + 1, Term: prev.Term, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}
	if err := w.StoreLogs([]*raft.Log{e}); err != nil {
		t.Fatalf("append entry %d: %v", e.Index, err)
	}
	return e.Index
}

// TestNodeStopsAtAnEntryOfANewerFormat: a committed entry of a format
// version this build does not know (as a newer leader would write) stops
// the real process with a message that names the entry and says to
// upgrade, exit status 2 (a panic); it stops at the same entry on the next
// start, and the state never moves past it (docs/upgrade.md).
func TestNodeStopsAtAnEntryOfANewerFormat(t *testing.T) {
	bin, dataDir, httpAddr, args := devNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := start(t, bin, args...)
	id, secret := p.devCredentials(t, 60*time.Second)
	c, err := client.New("http://"+httpAddr, client.WithCredentials(id, secret), client.WithHTTPClient(checkedHTTP(t)))
	if err != nil {
		t.Fatal(err)
	}
	waitHTTPReady(ctx, t, c)
	if _, err := c.Create(ctx, client.CreateRequest{Payload: []byte(`{"n":1}`)}); err != nil {
		t.Fatalf("create: %v", err)
	}
	p.stop(t, 30*time.Second)

	// A no-op in format version 2: the version byte, then what version 1
	// would hold.
	noop, err := fsm.EncodeCommand(&fsm.Command{Type: fsm.CmdNoop, Time: time.Now().UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	newer := append([]byte{fsm.CommandFormat + 1}, noop[1:]...)
	idx := appendToWAL(t, dataDir, newer)

	for run := 1; run <= 2; run++ {
		p := start(t, bin, args...)
		var err error
		select {
		case err = <-p.done:
		case <-time.After(60 * time.Second):
			t.Fatalf("run %d: the node still runs 60s after meeting entry %d; stderr:\n%s", run, idx, p.stderr.String())
		}
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Fatalf("run %d: exit %v, want status 2 (a panic); stderr:\n%s", run, err, p.stderr.String())
		}
		out := p.stderr.String()
		for _, want := range []string{
			fmt.Sprintf("cannot apply committed log entry %d ", idx),
			fmt.Sprintf("unknown format version %d (this build reads %d)", fsm.CommandFormat+1, fsm.CommandFormat),
			"upgrade this node", "never skips", "docs/upgrade.md",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("run %d: the output does not say %q:\n%s", run, want, out)
			}
		}
		p.done <- err // for the cleanup
	}

	// The state stopped before the entry.
	f, err := fsm.Open(fsm.Options{Path: filepath.Join(dataDir, "state.db"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.AppliedIndex() >= idx {
		t.Fatalf("applied index %d: the state moved past entry %d", f.AppliedIndex(), idx)
	}
}
