package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/exactonce/exactonce/client"
)

// TestRetentionEndToEnd runs the real binary with a short --retention and
// nobody else writing: a consumed action answers 404 on every call once
// its retention has passed (also a consume this node could answer from its
// settled-action cache), and stats count it as purged. The idle leader's
// clock ticks drive the sweep.
func TestRetentionEndToEnd(t *testing.T) {
	bin, _, httpAddr, args := devNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := start(t, bin, append(args, "--retention", "2s")...)
	defer p.stop(t, 30*time.Second)
	id, secret := p.devCredentials(t, 60*time.Second)
	c, err := client.New("http://"+httpAddr, client.WithCredentials(id, secret), client.WithHTTPClient(checkedHTTP(t)))
	if err != nil {
		t.Fatal(err)
	}
	waitHTTPReady(ctx, t, c)

	created, err := c.Create(ctx, client.CreateRequest{Payload: []byte(`{"reset":"42"}`)})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := c.Consume(ctx, created.ActionID, nil); err != nil {
		t.Fatalf("consume: %v", err)
	}
	if _, err := c.Consume(ctx, created.ActionID, nil); !errors.Is(err, client.ErrAlreadyUsed) {
		t.Fatalf("second consume: %v, want already_used", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := c.Get(ctx, created.ActionID)
		if errors.Is(err, client.ErrActionNotFound) {
			break
		}
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the consumed action is still stored a minute after its 2 s retention")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := c.Consume(ctx, created.ActionID, nil); !errors.Is(err, client.ErrActionNotFound) {
		t.Fatalf("consume after retention: %v, want action_not_found", err)
	}
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	if st.Total != 0 || st.Purged != 1 {
		t.Fatalf("stats after retention: total %d, purged %d; want 0, 1", st.Total, st.Purged)
	}
}
