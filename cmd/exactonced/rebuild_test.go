package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/exactonce/exactonce/client"
)

// TestStateRebuiltAfterMachineCrash: the state file is not fsynced per
// batch (fsm.Options.DeferSync); after a machine crash the node must throw
// it away and rebuild every acknowledged write from its newest snapshot and
// the Raft log. The crash is the real SIGKILL of the process plus a marker
// that names another boot, which is what a reboot leaves behind.
func TestStateRebuiltAfterMachineCrash(t *testing.T) {
	bin, dataDir, httpAddr, args := devNode(t)
	// Small snapshot settings, so the rebuild needs a snapshot and the log after it.
	env := []string{"EXACTONCE_TEST_SNAPSHOT_THRESHOLD=32", "EXACTONCE_TEST_TRAILING_LOGS=8", "EXACTONCE_TEST_SNAPSHOT_INTERVAL=200ms"}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startEnv(t, bin, env, args...)
	id, secret := p.devCredentials(t, 60*time.Second)
	c, err := client.New("http://"+httpAddr, client.WithCredentials(id, secret), client.WithHTTPClient(checkedHTTP(t)))
	if err != nil {
		t.Fatal(err)
	}
	waitHTTPReady(ctx, t, c)

	// want is each action's state after the writes below.
	want := map[string]string{}
	var ids []string
	for i := 0; i < 150; i++ {
		req := client.CreateRequest{Payload: []byte(fmt.Sprintf(`{"n":%d}`, i))}
		if i%5 == 0 {
			req.PIN = "4821"
		}
		a, err := c.Create(ctx, req)
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		ids = append(ids, a.ActionID)
		want[a.ActionID] = "active"
	}
	for i, id := range ids {
		switch {
		case i%5 == 0: // three wrong PINs burn it
			for k := 0; k < 3; k++ {
				if _, err := c.Consume(ctx, id, &client.ConsumeRequest{PIN: "0000"}); !client.IsCode(err, "invalid_pin") {
					t.Fatalf("wrong pin on %s: %v", id, err)
				}
			}
			want[id] = "consumed"
		case i%3 == 0:
			if _, err := c.Consume(ctx, id, nil); err != nil {
				t.Fatalf("consume %s: %v", id, err)
			}
			want[id] = "consumed"
		case i%7 == 0:
			if _, err := c.Cancel(ctx, id); err != nil {
				t.Fatalf("cancel %s: %v", id, err)
			}
			want[id] = "canceled"
		}
	}
	// Wait (bounded) until Raft has taken a snapshot newer than the start.
	snapDir := filepath.Join(dataDir, "raft", "snapshots")
	deadline := time.Now().Add(30 * time.Second)
	for {
		entries, _ := os.ReadDir(snapDir)
		if len(entries) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no raft snapshot in %s within 30s", snapDir)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	marker := filepath.Join(dataDir, stateFile+".open")
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("no open marker after SIGKILL: %v", err)
	}
	// What a reboot leaves: the marker of a boot that is not this one.
	if err := os.WriteFile(marker, []byte("a-previous-boot\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	p2 := startEnv(t, bin, env, args...)
	p2.devCredentials(t, 60*time.Second)
	waitHTTPReady(ctx, t, c)
	if _, err := os.Stat(filepath.Join(dataDir, stateFile+".unclean")); err != nil {
		t.Fatalf("the untrusted state file was not moved aside: %v", err)
	}
	for _, id := range ids {
		a, err := c.Get(ctx, id)
		if err != nil {
			t.Fatalf("get %s after rebuild: %v", id, err)
		}
		if a.State != want[id] {
			t.Errorf("%s after rebuild: state %q, want %q", id, a.State, want[id])
		}
	}
	// The consumed ones stay consumed: no second winner after a rebuild.
	for i, id := range ids {
		if want[id] != "consumed" {
			continue
		}
		_, err := c.Consume(ctx, id, nil)
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Code != "already_used" {
			t.Fatalf("consume %d (%s) after rebuild: %v, want already_used", i, id, err)
		}
	}
	p2.stop(t, 30*time.Second)
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker left after a clean stop: %v", err)
	}
}
