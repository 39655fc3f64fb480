package httpapi

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"
)

// TestDemoRevealFloodAddsNoEntries: reveals of ids nobody created, and of
// demo actions already used or expired, are answered from state: the
// FSM's applied index does not move. Answers are JSON with nosniff.
func TestDemoRevealFloodAddsNoEntries(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	e := newEnv(t, func(c *Config) { c.DemoRatePerMinute = 1 << 20 })
	const alphabet = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
	randomID := func() string {
		b := make([]byte, 32)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return "act_" + string(b)
	}
	reveal := func(id string) resp {
		return e.do(req{method: "GET", path: "/v1/demo/" + id + "/reveal", noAuth: true})
	}
	applied, applies := e.b.f.AppliedIndex(), e.b.applies.Load()
	for range 2000 {
		r := reveal(randomID())
		expect(t, r, http.StatusNotFound, "action_not_found")
		if r.header.Get("Content-Type") != "application/json" || r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("reveal answer headers %v", r.header)
		}
	}
	if got := e.b.f.AppliedIndex(); got != applied || e.b.applies.Load() != applies {
		t.Fatalf("2000 reveals of unknown ids moved the applied index %d -> %d", applied, got)
	}

	// A used demo: one entry for the create, one for the reveal, none after.
	c := e.do(req{method: "POST", path: "/v1/demo", noAuth: true})
	expect(t, c, http.StatusCreated, "")
	id := c.str("actionId")
	first := reveal(id)
	expect(t, first, http.StatusOK, "")
	if first.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("reveal of the payload without nosniff: %v", first.header)
	}
	applied = e.b.f.AppliedIndex()
	var used resp
	for range 100 {
		used = reveal(id)
		expect(t, used, http.StatusConflict, "already_used")
	}
	if used.str("consumedAt") == "" || used.str("consumedReason") != "consumed" {
		t.Fatalf("already_used from state lacks the decision's fields: %s", used.raw)
	}
	if got := e.b.f.AppliedIndex(); got != applied {
		t.Fatalf("reveals of a used demo moved the applied index %d -> %d", applied, got)
	}
	// An expired demo is answered so from state too.
	c = e.do(req{method: "POST", path: "/v1/demo", noAuth: true})
	expect(t, c, http.StatusCreated, "")
	applied = e.b.f.AppliedIndex()
	e.clock.Advance(DemoTTL)
	for range 100 {
		expect(t, reveal(c.str("actionId")), http.StatusGone, "expired")
	}
	if got := e.b.f.AppliedIndex(); got != applied {
		t.Fatalf("reveals of an expired demo moved the applied index %d -> %d", applied, got)
	}
}

// TestDemoRevealOnFollowerAddsNoEntries: on a follower, a reveal of an
// unknown id is answered from state after a read barrier, with nothing
// sent to the leader.
func TestDemoRevealOnFollowerAddsNoEntries(t *testing.T) {
	e := newEnv(t, nil)
	e.b.leader.Store(false)
	applies := e.b.applies.Load()
	for i := range 20 {
		r := e.do(req{method: "GET", path: fmt.Sprintf("/v1/demo/act_unknown%d/reveal", i), noAuth: true})
		expect(t, r, http.StatusNotFound, "action_not_found")
	}
	if got := e.b.applies.Load(); got != applies {
		t.Fatalf("reveals of unknown ids on a follower sent %d commands to the leader", got-applies)
	}
}

// TestDemoRevealRateLimit: reveals are limited per remote address
// (demoRevealsPerCreate times the demo create rate), and disabled with
// the demo.
func TestDemoRevealRateLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DemoRatePerMinute = 1 })
	path := "/v1/demo/act_nope/reveal"
	for range demoRevealsPerCreate {
		expect(t, e.do(req{method: "GET", path: path, noAuth: true}), http.StatusNotFound, "action_not_found")
	}
	r := e.do(req{method: "GET", path: path, noAuth: true})
	expect(t, r, http.StatusTooManyRequests, "rate_limited")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	expect(t, e.do(req{method: "GET", path: path, noAuth: true, remote: "198.51.100.7:5555"}), http.StatusNotFound, "action_not_found")

	off := newEnv(t, func(c *Config) { c.DemoRatePerMinute = -1 })
	expect(t, off.do(req{method: "GET", path: path, noAuth: true}), http.StatusNotFound, "not_found")
}
