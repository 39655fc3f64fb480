package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
)

// A consume of an action already consumed or canceled is answered from the
// node's own state: the same status and body the replicated decision gives,
// with no log entry, on the leader and on a follower that cannot reach it.
func TestSettledConsumeAnsweredLocally(t *testing.T) {
	// A short request deadline, so the follower's wait for a leader ends soon.
	e := newEnv(t, func(c *Config) { c.RequestTimeout = 300 * time.Millisecond })
	consumed := e.create(`{"payload":{"a":1},"pin":"1234"}`)
	expect(t, e.consume(consumed, `{"pin":"1234"}`), http.StatusOK, "")
	canceled := e.create(`{"payload":{"a":2}}`)
	expect(t, e.do(req{method: "DELETE", path: "/v1/actions/" + canceled}), http.StatusOK, "")

	// The body the state machine renders, through the replicated path (an
	// Idempotency-Key always takes it).
	viaLog := e.do(req{method: "POST", path: "/v1/actions/" + consumed + "/consume", body: `{"pin":"9999"}`,
		ctype: "application/json", hdr: map[string]string{"Idempotency-Key": "k1"}})
	expect(t, viaLog, http.StatusConflict, "already_used")

	applies := e.b.applies.Load()
	local := e.consume(consumed, `{"pin":"9999"}`) // a wrong PIN changes nothing: already_used comes first
	expect(t, local, http.StatusConflict, "already_used")
	if !bytes.Equal(local.raw, viaLog.raw) {
		t.Errorf("local answer %s differs from the replicated one %s", local.raw, viaLog.raw)
	}
	// Again: now from the node's cache of settled answers, byte for byte.
	again := e.consume(consumed, "")
	if !bytes.Equal(again.raw, viaLog.raw) || again.status != http.StatusConflict {
		t.Errorf("cached answer %d %s differs from the replicated one %s", again.status, again.raw, viaLog.raw)
	}
	expect(t, e.consume(canceled, ""), http.StatusGone, "canceled")
	if got := e.b.applies.Load(); got != applies {
		t.Errorf("settled consumes wrote %d log entries, want 0", got-applies)
	}
	if got := testutil.ToFloat64(e.s.metrics.settled); got != 3 {
		t.Errorf("settled counter = %v, want 3", got)
	}

	// A follower whose leader is unreachable still answers settled consumes,
	// and only those: an open action needs the leader (503).
	open := e.create(`{"payload":{"a":3}}`)
	e.b.leader.Store(false)
	e.b.applyErr.Store(errBox{fmt.Errorf("no leader: %w", cluster.ErrUnavailable)})
	expect(t, e.consume(consumed, ""), http.StatusConflict, "already_used")
	expect(t, e.consume(canceled, ""), http.StatusGone, "canceled")
	r := e.do(req{method: "POST", path: "/v1/actions/" + open + "/consume"})
	expect(t, r, http.StatusServiceUnavailable, "unavailable")
	if got := e.b.applies.Load(); got != applies+1 { // the create of open
		t.Errorf("follower wrote %d log entries", got-applies-1)
	}
}

// Whatever the shortcut cannot answer exactly as the replicated path would,
// it leaves to that path: bad credentials, bad bodies, keyed requests.
func TestSettledConsumeFallsThrough(t *testing.T) {
	e := newEnv(t, nil)
	id := e.create(`{"payload":{"a":1}}`)
	expect(t, e.consume(id, ""), http.StatusOK, "")
	expect(t, e.consume(id, ""), http.StatusConflict, "already_used") // answered locally, and cached
	before := testutil.ToFloat64(e.s.metrics.settled)

	r := e.do(req{method: "POST", path: "/v1/actions/" + id + "/consume", client: [2]string{e.clientID, "wrong"}})
	expect(t, r, http.StatusUnauthorized, "unauthorized")
	expect(t, e.consume(id, `{"pin":`), http.StatusBadRequest, "invalid_request")
	expect(t, e.consume(id, `{"consumer":"not an object"}`), http.StatusBadRequest, "invalid_request")
	other, otherSecret := e.newClient("tenant-b")
	r = e.do(req{method: "POST", path: "/v1/actions/" + id + "/consume", client: [2]string{other, otherSecret}})
	expect(t, r, http.StatusNotFound, "action_not_found")
	// A revoked client is refused, cached answer or not.
	if _, err := e.b.Apply(context.Background(), &fsm.Command{Type: fsm.CmdRevokeClient,
		RevokeClient: &fsm.RevokeClient{ID: e.clientID}}); err != nil {
		t.Fatal(err)
	}
	expect(t, e.consume(id, ""), http.StatusUnauthorized, "unauthorized")
	if got := testutil.ToFloat64(e.s.metrics.settled); got != before {
		t.Errorf("shortcut answered %v requests it must leave to the replicated path", got-before)
	}
}

// TestConsumesWaitBehindTheOneInFlight: while one consume of an action is
// being proposed on the leader, the others of the same action wait for it
// and, once it has consumed the action, are answered already_used from
// state: the crowd costs one log entry, not one each. A consume with an
// Idempotency-Key still proposes its own entry (its outcome is stored).
func TestConsumesWaitBehindTheOneInFlight(t *testing.T) {
	e := newEnv(t, nil)
	id := e.create(`{"payload":{}}`)
	other := e.create(`{"payload":{}}`)
	applies := e.b.applies.Load()
	gate := make(chan struct{})
	e.b.gate.Store(&gate)

	first := make(chan resp, 1)
	go func() { first <- e.consume(id, "") }()
	waitFor(t, func() bool { return e.b.entered.Load() == 1 })
	const n = 10
	rest := make(chan resp, n+3)
	for range n {
		go func() { rest <- e.consume(id, "") }()
	}
	waitFor(t, func() bool { return e.s.consumes.waiting.Load() == n })
	// Another action and an idempotent request are not held back.
	go func() { rest <- e.consume(other, "") }()
	go func() {
		rest <- e.do(req{method: "POST", path: "/v1/actions/" + id + "/consume", hdr: map[string]string{"Idempotency-Key": "k1"}})
	}()
	waitFor(t, func() bool { return e.b.entered.Load() == 3 })
	e.b.gate.Store(nil)
	close(gate)

	rest <- <-first
	won, used := 0, 0
	for range n + 3 {
		r := <-rest
		switch {
		case r.status == 200:
			won++
		case r.status == 409 && r.str("error") == "already_used":
			used++
		default:
			t.Fatalf("consume: %d %s", r.status, r.raw)
		}
	}
	// One winner of id (the first or the idempotent one, whichever the
	// log orders first) and the other action's consume.
	if won != 2 || used != n+1 {
		t.Fatalf("won %d (want 2), already_used %d (want %d)", won, used, n+1)
	}
	if got := e.b.applies.Load() - applies; got != 3 {
		t.Fatalf("%d entries proposed, want 3 (the first, the other action, the idempotent one)", got)
	}
}

// followerCrowd sends first to a follower (it stops at the backend's
// gate, on its way to the leader), then n more consumes of the same
// action, waits until they all wait behind it, opens the gate and returns
// the first answer and the others.
func followerCrowd(t *testing.T, e *env, id, first, rest string, n int) (resp, []resp) {
	t.Helper()
	e.b.leader.Store(false)
	gate := make(chan struct{})
	e.b.gate.Store(&gate)
	firstAns := make(chan resp, 1)
	go func() { firstAns <- e.consume(id, first) }()
	waitFor(t, func() bool { return e.b.entered.Load() == 1 })
	answers := make(chan resp, n)
	for range n {
		go func() { answers <- e.consume(id, rest) }()
	}
	waitFor(t, func() bool { return e.s.consumes.waiting.Load() == int64(n) })
	e.b.gate.Store(nil)
	close(gate)
	out := make([]resp, n)
	for i := range out {
		out[i] = <-answers
	}
	return <-firstAns, out
}

// TestFollowerCrowdWaitsForForwardedConsume: consumes of one action reaching
// a follower while it forwards a consume of it wait for that answer; when it
// settled the action they are answered here (409 already_used) with nothing
// more sent to the leader.
func TestFollowerCrowdWaitsForForwardedConsume(t *testing.T) {
	e := newEnv(t, nil)
	id := e.create(`{"payload":{"n":1}}`)
	applies := e.b.applies.Load()
	first, rest := followerCrowd(t, e, id, "", "", 20)
	expect(t, first, 200, "")
	for _, r := range rest {
		expect(t, r, 409, "already_used")
	}
	if got := e.b.applies.Load() - applies; got != 1 {
		t.Fatalf("%d commands sent to the leader; want only the first", got)
	}
}

// TestFollowerCrowdForwardedWhenFirstDidNotSettle: when the forwarded
// consume did not settle the action (a wrong PIN), the waiting consumes are
// sent each on its own, and exactly one of them wins.
func TestFollowerCrowdForwardedWhenFirstDidNotSettle(t *testing.T) {
	e := newEnv(t, nil)
	id := e.create(`{"payload":{"n":1},"pin":"1234"}`)
	applies := e.b.applies.Load()
	first, rest := followerCrowd(t, e, id, `{"pin":"9999"}`, `{"pin":"1234"}`, 5)
	expect(t, first, 401, "invalid_pin")
	won := 0
	for _, r := range rest {
		if r.status == 200 {
			won++
			continue
		}
		expect(t, r, 409, "already_used")
	}
	if won != 1 {
		t.Fatalf("%d consumes won; want exactly one", won)
	}
	if got := e.b.applies.Load() - applies; got < 2 {
		t.Fatalf("the waiting consumes were not sent: %d commands", got)
	}
}

// TestLaggingFollowerCrowdAnsweredByTheLeader: a follower hears of the
// forwarded consume's commit only with the leader's next message (up to
// Raft's commit timeout later when nothing else is written), so when its
// state lags, the consumes waiting behind it are answered by the leader
// from its own state (which applied the winner before answering it): 409
// already_used each, with no command sent and no wait for this node.
func TestLaggingFollowerCrowdAnsweredByTheLeader(t *testing.T) {
	e := newEnv(t, nil)
	id := e.create(`{"payload":{"n":1}}`)
	applies := e.b.applies.Load()
	var asked atomic.Int64
	fn := func(ctx context.Context, q []byte) ([]byte, error) {
		asked.Add(1)
		return e.s.LeaderRead(ctx, q)
	}
	e.b.leaderRead.Store(&fn)
	e.b.lagging.Store(true)
	// This node's own barrier would fail: only the leader can answer.
	e.b.barrierErr.Store(errBox{fmt.Errorf("test: %w", cluster.ErrUnavailable)})
	const n = 12
	first, rest := followerCrowd(t, e, id, "", "", n)
	expect(t, first, 200, "")
	for _, r := range rest {
		expect(t, r, 409, "already_used")
	}
	if got := e.b.applies.Load() - applies; got != 1 {
		t.Fatalf("%d commands sent to the leader; want only the first", got)
	}
	if asked.Load() != n {
		t.Fatalf("the leader was asked %d times, want %d", asked.Load(), n)
	}
}

// TestLeaderReadOfAnOpenActionFallsThrough: the leader answers a settled
// consume query for an action it holds open with status 0, so the
// follower's consume takes the normal path.
func TestLeaderReadOfAnOpenActionFallsThrough(t *testing.T) {
	e := newEnv(t, nil)
	id := e.create(`{"payload":{"n":1}}`)
	q, _ := json.Marshal(leaderQuery{Kind: querySettledConsume, ClientID: e.clientID, ActionID: id})
	b, err := e.s.LeaderRead(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	var ans leaderAnswer
	if err := json.Unmarshal(b, &ans); err != nil || ans.Status != 0 {
		t.Fatalf("answer %s (%v), want status 0", b, err)
	}
}
