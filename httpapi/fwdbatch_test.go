package httpapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gatedLeader serves leader's API behind a gate: single forwards wait until
// the gate opens (so that a follower's two in-flight slots stay busy and its
// next writes queue into a batch), and batch requests go to onBatch when set.
type gatedLeader struct {
	t       *testing.T
	leader  *env
	gate    chan struct{}
	singles atomic.Int64 // single requests that reached the leader
	batches atomic.Int64 // batch requests that reached the leader
	calls   atomic.Int64 // requests carried by those batches
	onBatch func(w http.ResponseWriter, r *http.Request) bool
}

func (g *gatedLeader) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == forwardBatchPath {
		g.batches.Add(1)
		if g.onBatch != nil && g.onBatch(w, r) {
			return
		}
		rec := &bufferedResponse{header: http.Header{}}
		g.leader.s.ServeHTTP(rec, r)
		if rec.header.Get("Content-Type") != contentTypeBatch {
			g.t.Errorf("batch answered as %q, want the binary encoding it was sent in", rec.header.Get("Content-Type"))
		}
		if out, err := decodeBatchResponses(rec.body.Bytes(), maxBatchCalls); err == nil {
			g.calls.Add(int64(len(out)))
		}
		relay(w, rec.status, rec.header, rec.body.Bytes())
		return
	}
	g.singles.Add(1)
	<-g.gate
	g.leader.s.ServeHTTP(w, r)
}

// batchSetup is a leader behind a gate and a follower forwarding to it.
func batchSetup(t *testing.T, followerTimeout time.Duration) (*gatedLeader, *env, *env, string) {
	t.Helper()
	leader := newEnv(t, nil)
	g := &gatedLeader{t: t, leader: leader, gate: make(chan struct{})}
	lts := httptest.NewServer(g)
	t.Cleanup(lts.Close)
	follower := newEnv(t, func(c *Config) { c.RequestTimeout = followerTimeout })
	follower.b.leader.Store(false)
	follower.b.leaderHTTP.Store(lts.URL)
	fts := httptest.NewServer(follower.s)
	t.Cleanup(fts.Close)
	return g, leader, follower, fts.URL
}

// queued is the number of writes waiting in the follower's lanes.
func queued(follower *env) int {
	b := follower.s.batcher
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, l := range b.lanes {
		l.mu.Lock()
		n += len(l.queue)
		l.mu.Unlock()
	}
	return n
}

// fillSlots sends maxBatchesInFlight writes through the follower that stop
// at the gate, and waits until the leader holds them all. It returns a
// channel with their answers.
func fillSlots(t *testing.T, g *gatedLeader, leader *env, follower string) chan resp {
	t.Helper()
	out := make(chan resp, maxBatchesInFlight)
	for range maxBatchesInFlight {
		go func() { out <- sendAs(t, leader, follower, "POST", "/v1/actions", `{"payload":{"slot":true}}`, nil) }()
	}
	waitFor(t, func() bool { return g.singles.Load() == maxBatchesInFlight })
	return out
}

// queueBehindSlots holds the follower's in-flight slots at the gate, sends n
// creates through the follower, waits until all n are queued, opens the
// gate and returns their answers once the held writes have succeeded.
func queueBehindSlots(t *testing.T, g *gatedLeader, leader, follower *env, fURL string, n int) []resp {
	t.Helper()
	slots := fillSlots(t, g, leader, fURL)
	answers := make(chan resp, n)
	for range n {
		go func() { answers <- sendAs(t, leader, fURL, "POST", "/v1/actions", `{"payload":{}}`, nil) }()
	}
	waitFor(t, func() bool { return queued(follower) == n })
	close(g.gate)
	out := make([]resp, n)
	for i := range out {
		out[i] = <-answers
	}
	for range maxBatchesInFlight {
		expect(t, <-slots, 201, "")
	}
	return out
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBatchedForwarding: writes that queue behind busy forwards travel
// together in batches, and each client gets exactly the answer the leader
// would have given it alone (created ids, one winner per action, typed
// errors, its own request id).
func TestBatchedForwarding(t *testing.T) {
	g, leader, follower, fURL := batchSetup(t, 5*time.Second)
	slots := fillSlots(t, g, leader, fURL)

	const n = 24
	type answer struct {
		i int
		r resp
	}
	answers := make(chan answer, n)
	for i := range n {
		go func() {
			body := fmt.Sprintf(`{"payload":{"n":%d}}`, i)
			if i == n-1 {
				body = `{"payload":1}` // invalid: a typed error comes back through the batch
			}
			answers <- answer{i, sendAs(t, leader, fURL, "POST", "/v1/actions", body,
				map[string]string{"X-Request-Id": fmt.Sprintf("batch-%d", i)})}
		}()
	}
	// Every write is queued behind the two held forwards before they go.
	waitFor(t, func() bool { return queued(follower) == n })
	close(g.gate)
	ids := map[string]bool{}
	for range n {
		a := <-answers
		if a.r.header.Get("X-Request-Id") != fmt.Sprintf("batch-%d", a.i) {
			t.Fatalf("write %d: request id %q", a.i, a.r.header.Get("X-Request-Id"))
		}
		if a.i == n-1 {
			expect(t, a.r, 400, "invalid_request")
			continue
		}
		expect(t, a.r, 201, "")
		ids[a.r.str("actionId")] = true
	}
	for range maxBatchesInFlight {
		expect(t, <-slots, 201, "")
	}
	if len(ids) != n-1 {
		t.Fatalf("%d distinct ids for %d creates", len(ids), n-1)
	}
	if g.batches.Load() == 0 || g.calls.Load() <= g.batches.Load() {
		t.Fatalf("writes were not batched: %d batches carried %d writes (%d singles)",
			g.batches.Load(), g.calls.Load(), g.singles.Load())
	}

	// Racing consumes of one action through batches: exactly one wins.
	var id string
	for k := range ids {
		id = k
		break
	}
	var wg sync.WaitGroup
	var won, used atomic.Int64
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := sendAs(t, leader, fURL, "POST", "/v1/actions/"+id+"/consume", "", nil)
			switch {
			case r.status == 200:
				won.Add(1)
			case r.status == 409 && r.str("error") == "already_used":
				used.Add(1)
			default:
				t.Errorf("consume: %d %s", r.status, r.raw)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 || used.Load() != 15 {
		t.Fatalf("won %d, already_used %d; want 1 and 15", won.Load(), used.Load())
	}
}

// TestBatchLostAfterSendingIsOutcomeUnknown: when the leader received a
// batch and its answer is lost, every write in it is outcome_unknown, never
// a failure and never retried.
func TestBatchLostAfterSendingIsOutcomeUnknown(t *testing.T) {
	g, leader, follower, fURL := batchSetup(t, 5*time.Second)
	g.onBatch = func(w http.ResponseWriter, r *http.Request) bool {
		_, _ = io.ReadAll(r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
		return true
	}
	for _, r := range queueBehindSlots(t, g, leader, follower, fURL, 3) {
		expect(t, r, 503, CodeOutcomeUnknown)
	}
	if g.batches.Load() != 1 {
		t.Fatalf("%d batch requests; a lost batch must not be resent", g.batches.Load())
	}
}

// TestBatchToLeaderWithoutTheRoute: a leader that answers the batch route
// 404 (an older version during a rolling upgrade) did nothing; the writes
// are sent again one by one and succeed, and the follower stops batching
// to it.
func TestBatchToLeaderWithoutTheRoute(t *testing.T) {
	g, leader, follower, fURL := batchSetup(t, 5*time.Second)
	g.onBatch = func(w http.ResponseWriter, r *http.Request) bool {
		http.NotFound(w, r)
		return true
	}
	for _, r := range queueBehindSlots(t, g, leader, follower, fURL, 3) {
		expect(t, r, 201, "")
	}
	if b, s := g.batches.Load(), g.singles.Load(); b != 1 || s != maxBatchesInFlight+3 {
		t.Fatalf("%d batches and %d singles; want 1 refused batch, then singles", b, s)
	}
}

// TestBatchToLeaderThatReadsOnlyJSON: a leader of an earlier version reads
// batches only as JSON and refuses the binary one with 400, having run
// nothing; the writes are sent again one by one and succeed, and the
// follower stops batching to it.
func TestBatchToLeaderThatReadsOnlyJSON(t *testing.T) {
	g, leader, follower, fURL := batchSetup(t, 5*time.Second)
	g.onBatch = func(w http.ResponseWriter, r *http.Request) bool {
		var reqs []batchedRequest
		if err := json.NewDecoder(r.Body).Decode(&reqs); err == nil {
			t.Error("the binary batch decoded as JSON")
		}
		WriteError(w, "invalid_request", "malformed forward batch", nil)
		return true
	}
	for _, r := range queueBehindSlots(t, g, leader, follower, fURL, 3) {
		expect(t, r, 201, "")
	}
	if b, s := g.batches.Load(), g.singles.Load(); b != 1 || s != maxBatchesInFlight+3 {
		t.Fatalf("%d batches and %d singles; want 1 refused batch, then singles", b, s)
	}
}

// TestBatchNotLeader: a batch that reaches a node which is no longer the
// leader is refused whole, and its writes find the leader again.
func TestBatchNotLeader(t *testing.T) {
	g, leader, follower, fURL := batchSetup(t, 5*time.Second)
	var refused atomic.Bool
	g.onBatch = func(w http.ResponseWriter, r *http.Request) bool {
		if refused.CompareAndSwap(false, true) {
			leader.b.leader.Store(false)
			defer leader.b.leader.Store(true)
			leader.s.ServeHTTP(w, r)
			return true
		}
		return false
	}
	for _, r := range queueBehindSlots(t, g, leader, follower, fURL, 3) {
		expect(t, r, 201, "")
	}
	if !refused.Load() {
		t.Fatal("the not-leader answer was never given")
	}
}

// TestQueuedWriteWithdrawnAtDeadline: a write still queued when its
// client gives up was never sent, and is never sent afterwards.
func TestQueuedWriteWithdrawnAtDeadline(t *testing.T) {
	g, leader, follower, fURL := batchSetup(t, 5*time.Second)
	slots := fillSlots(t, g, leader, fURL)
	r, err := http.NewRequest("POST", fURL+"/v1/actions", strings.NewReader(`{"payload":{"late":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("client-id", leader.clientID)
	r.Header.Set("client-secret", leader.secret)
	done := make(chan error, 1)
	go func() {
		res, err := (&http.Client{Timeout: 200 * time.Millisecond}).Do(r)
		if err == nil {
			res.Body.Close()
			err = fmt.Errorf("answered %d", res.StatusCode)
		}
		done <- err
	}()
	waitFor(t, func() bool { return queued(follower) == 1 })
	if err := <-done; err == nil || !strings.Contains(err.Error(), "Timeout") {
		t.Fatalf("the client should have given up: %v", err)
	}
	waitFor(t, func() bool { return queued(follower) == 0 })
	close(g.gate)
	for range maxBatchesInFlight {
		expect(t, <-slots, 201, "")
	}
	if g.batches.Load() != 0 || g.singles.Load() != maxBatchesInFlight {
		t.Fatalf("%d batches and %d singles sent; the withdrawn write must not be", g.batches.Load(), g.singles.Load())
	}
}

// TestForwardBatchRouteRequiresClusterKey: the batch route answers only a
// node that proves it holds the cluster key.
func TestForwardBatchRouteRequiresClusterKey(t *testing.T) {
	e := newEnv(t, nil)
	body := `[{"method":"POST","uri":"/v1/actions","header":{},"timeoutMs":1000}]`
	for _, hdr := range []map[string]string{
		nil,
		{HeaderForwarded: "1"},
		{HeaderForwarded: "1", headerForwardAuth: "wrong"},
	} {
		r := e.do(req{method: "POST", path: forwardBatchPath, body: body, hdr: hdr, noAuth: true})
		expect(t, r, 404, CodeNotFound)
	}
	ok := e.do(req{method: "POST", path: forwardBatchPath, body: body, noAuth: true,
		hdr: map[string]string{HeaderForwarded: "1", headerForwardAuth: e.s.fwdAuth}})
	if ok.status != 200 || ok.header.Get(headerBatch) == "" {
		t.Fatalf("trusted batch: %d %s", ok.status, ok.raw)
	}
	if !strings.Contains(string(ok.raw), `"status":401`) {
		t.Fatalf("the batched create without credentials was not refused on its own: %s", ok.raw)
	}
	// The binary encoding: answered in kind; garbled, refused whole.
	bin := string(encodeBatchRequests([]*batchedRequest{{Method: "POST", URI: "/v1/actions", TimeoutMs: 1000}}))
	trusted := map[string]string{HeaderForwarded: "1", headerForwardAuth: e.s.fwdAuth, "Content-Type": contentTypeBatch}
	rb := e.do(req{method: "POST", path: forwardBatchPath, body: bin, noAuth: true, hdr: trusted})
	if rb.status != 200 || rb.header.Get(headerBatch) == "" || rb.header.Get("Content-Type") != contentTypeBatch {
		t.Fatalf("trusted binary batch: %d %v %q", rb.status, rb.header, rb.raw)
	}
	if out, err := decodeBatchResponses(rb.raw, 1); err != nil || len(out) != 1 || out[0].Status != 401 {
		t.Fatalf("binary answer: %+v, %v", out, err)
	}
	for _, bad := range []string{bin[:len(bin)-1], "\x02" + bin[1:], bin + "x", "\x01\x00"} {
		r := e.do(req{method: "POST", path: forwardBatchPath, body: bad, noAuth: true, hdr: trusted})
		expect(t, r, 400, "invalid_request")
		if r.header.Get(headerBatch) != "" {
			t.Fatalf("a refused batch carries the batch header: %v", r.header)
		}
	}
	for _, bad := range []string{`[]`, `{`, `[{"method":"GET","uri":"http://x/","timeoutMs":1}]`} {
		r := e.do(req{method: "POST", path: forwardBatchPath, body: bad, noAuth: true,
			hdr: map[string]string{HeaderForwarded: "1", headerForwardAuth: e.s.fwdAuth}})
		if bad == `[{"method":"GET","uri":"http://x/","timeoutMs":1}]` {
			if r.status != 200 || !strings.Contains(string(r.raw), `"status":400`) {
				t.Fatalf("absolute URI in a batch: %d %s", r.status, r.raw)
			}
			continue
		}
		expect(t, r, 400, "invalid_request")
	}
}

// TestRefusedBatchIsRetried: an answer without the batch header means the
// leader ran none of the batch (here a 413), so its writes are sent again;
// an answer with the header that is not a valid batch means they may have
// run, so they are outcome_unknown.
func TestRefusedBatchIsRetried(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter)
		status int
		code   string
	}{
		{"refused", func(w http.ResponseWriter) {
			WriteError(w, "payload_too_large", "too big", nil)
		}, 201, ""},
		{"garbled", func(w http.ResponseWriter) {
			w.Header().Set(headerBatch, "1")
			WriteError(w, "internal", "", nil)
		}, 503, CodeOutcomeUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, leader, follower, fURL := batchSetup(t, 5*time.Second)
			var answered atomic.Bool
			g.onBatch = func(w http.ResponseWriter, r *http.Request) bool {
				if answered.CompareAndSwap(false, true) {
					_, _ = io.ReadAll(r.Body)
					tc.answer(w)
					return true
				}
				return false
			}
			for _, r := range queueBehindSlots(t, g, leader, follower, fURL, 3) {
				expect(t, r, tc.status, tc.code)
			}
		})
	}
}
