package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/secure"
)

// TestConcurrentConsume sends 1,000 concurrent consumes of one action
// through a real HTTP server: exactly one 200, every other 409.
func TestConcurrentConsume(t *testing.T) {
	e := newEnv(t, nil)
	id := e.create(`{"payload":{"prize":1}}`)
	ts := httptest.NewServer(e.h)
	defer ts.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
	const n = 1000
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := http.NewRequest("POST", ts.URL+"/v1/actions/"+id+"/consume", nil)
			if err != nil {
				t.Error(err)
				return
			}
			r.Header.Set("client-id", e.clientID)
			r.Header.Set("client-secret", e.secret)
			resp, err := client.Do(r)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			counts[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counts[200] != 1 || counts[409] != n-1 {
		t.Fatalf("statuses %v, want one 200 and %d 409", counts, n-1)
	}
}

func TestDemo(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DemoRatePerMinute = 2; c.PublicURL = "https://node1.example.net:8443/" })
	// The reveal URL is on the advertised address, whatever the request says.
	r := e.do(req{method: "POST", path: "/v1/demo", noAuth: true,
		hdr: map[string]string{"Host": "evil.example", "X-Forwarded-Proto": "http"}})
	expect(t, r, 201, "")
	id := r.str("actionId")
	if r.str("expiresAt") != "2030-01-02T03:09:05.000Z" {
		t.Fatalf("demo TTL: %s", r.raw)
	}
	wantURL := "https://node1.example.net:8443/v1/demo/" + id + "/reveal"
	if r.str("revealUrl") != wantURL {
		t.Fatalf("revealUrl %q, want %q", r.str("revealUrl"), wantURL)
	}
	path := "/v1/demo/" + id + "/reveal"
	v := e.do(req{method: "GET", path: path, noAuth: true})
	expect(t, v, 200, "")
	if p, _ := v.body["payload"].(map[string]any); p["message"] != "Hello from ExactOnce" {
		t.Fatalf("reveal: %s", v.raw)
	}
	expect(t, e.do(req{method: "GET", path: path, noAuth: true}), 409, "already_used")
	expect(t, e.do(req{method: "GET", path: "/v1/demo/act_nope/reveal", noAuth: true}), 404, "action_not_found")

	// A demo action is invisible to clients.
	expect(t, e.do(req{method: "GET", path: "/v1/actions/" + id}), 404, "action_not_found")

	// Custom payload; bad bodies.
	r = e.do(req{method: "POST", path: "/v1/demo", noAuth: true, body: `{"payload":{"hi":"there"}}`})
	if r.status == http.StatusTooManyRequests {
		t.Fatalf("rate limited too early: %s", r.raw)
	}
	expect(t, r, 201, "")
	v = e.do(req{method: "GET", path: "/v1/demo/" + r.str("actionId") + "/reveal", noAuth: true})
	if p, _ := v.body["payload"].(map[string]any); p["hi"] != "there" {
		t.Fatalf("custom demo payload: %s", v.raw)
	}
	// Burst of 2 spent: the next is limited with Retry-After.
	r = e.do(req{method: "POST", path: "/v1/demo", noAuth: true})
	expect(t, r, 429, "rate_limited")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	// Headers that once marked a node's forward do not skip the limit.
	expect(t, e.do(req{method: "POST", path: "/v1/demo", noAuth: true,
		hdr: map[string]string{"X-ExactOnce-Forwarded": "1", "X-ExactOnce-Forward-Auth": "forged"}}), 429, "rate_limited")
	// Another address has its own bucket.
	expect(t, e.do(req{method: "POST", path: "/v1/demo", noAuth: true, remote: "198.51.100.7:5555"}), 201, "")
}

func TestDemoExpires(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do(req{method: "POST", path: "/v1/demo", noAuth: true})
	expect(t, r, 201, "")
	e.clock.Advance(5 * time.Minute)
	expect(t, e.do(req{method: "GET", path: "/v1/demo/" + r.str("actionId") + "/reveal", noAuth: true}), 410, "expired")
	expect(t, e.do(req{method: "POST", path: "/v1/demo", noAuth: true, body: `{"payload":"x"}`}), 400, "invalid_request")
	expect(t, e.do(req{method: "POST", path: "/v1/demo", noAuth: true, body: `{"other":1}`}), 400, "invalid_request")
}

func TestAdminClients(t *testing.T) {
	e := newEnv(t, nil)
	bearer := map[string]string{"Authorization": "Bearer " + e.admin}
	for _, h := range []map[string]string{nil, {"Authorization": "Bearer wrong"}, {"Authorization": e.admin}} {
		expect(t, e.do(req{method: "POST", path: "/v1/admin/clients", noAuth: true, body: `{"name":"x"}`, hdr: h}), 401, "unauthorized")
		expect(t, e.do(req{method: "GET", path: "/v1/admin/clients", noAuth: true, hdr: h}), 401, "unauthorized")
		expect(t, e.do(req{method: "DELETE", path: "/v1/admin/clients/" + e.clientID, noAuth: true, hdr: h}), 401, "unauthorized")
	}
	expect(t, e.do(req{method: "POST", path: "/v1/admin/clients", noAuth: true, body: `{}`, hdr: bearer}), 400, "invalid_request")
	expect(t, e.do(req{method: "POST", path: "/v1/admin/clients", noAuth: true, body: `{"name":"x","y":1}`, hdr: bearer}), 400, "invalid_request")

	r := e.do(req{method: "POST", path: "/v1/admin/clients", noAuth: true, body: `{"name":"Shop"}`, hdr: bearer})
	expect(t, r, 201, "")
	id, secret := r.str("clientId"), r.str("clientSecret")
	if !strings.HasPrefix(id, "cl_") || !strings.HasPrefix(secret, "sec_") || r.str("name") != "Shop" || r.str("createdAt") == "" {
		t.Fatalf("create client: %s", r.raw)
	}
	cl := [2]string{id, secret}
	expect(t, e.do(req{method: "POST", path: "/v1/actions", ctype: jsonCT, body: `{"payload":{}}`, client: cl}), 201, "")

	l := e.do(req{method: "GET", path: "/v1/admin/clients", noAuth: true, hdr: bearer})
	expect(t, l, 200, "")
	if strings.Contains(string(l.raw), "ecret") {
		t.Fatalf("client list leaks secrets: %s", l.raw)
	}
	var list struct {
		Clients []clientView `json:"clients"`
	}
	_ = json.Unmarshal(l.raw, &list)
	if len(list.Clients) != 2 {
		t.Fatalf("clients: %s", l.raw)
	}

	e.clock.Advance(time.Second)
	d := e.do(req{method: "DELETE", path: "/v1/admin/clients/" + id, noAuth: true, hdr: bearer})
	expect(t, d, 200, "")
	if d.str("clientId") != id || d.str("revokedAt") != "2030-01-02T03:04:06.000Z" {
		t.Fatalf("revoke: %s", d.raw)
	}
	expect(t, e.do(req{method: "GET", path: "/v1/actions", client: cl}), 401, "unauthorized")
	expect(t, e.do(req{method: "POST", path: "/v1/actions", ctype: jsonCT, body: `{"payload":{}}`, client: cl}), 401, "unauthorized")
	expect(t, e.do(req{method: "DELETE", path: "/v1/admin/clients/cl_nobody", noAuth: true, hdr: bearer}), 404, "client_not_found")
	l = e.do(req{method: "GET", path: "/v1/admin/clients", noAuth: true, hdr: bearer})
	if !strings.Contains(string(l.raw), `"revokedAt":"2030-01-02T03:04:06.000Z"`) {
		t.Fatalf("list after revoke: %s", l.raw)
	}
}

// TestLaggingFollowerReadGoesToLeader: a verify on a follower that has not
// applied the read index yet is answered by the leader's LeaderRead.
func TestLaggingFollowerReadGoesToLeader(t *testing.T) {
	leader := newEnv(t, nil)
	// The follower shares nothing but the cluster key with the leader: an
	// action created on the leader is not in its state. The client is
	// created on both (the follower checks credentials itself).
	follower := newEnv(t, func(c *Config) { c.RequestTimeout = 2 * time.Second })
	follower.clientID, follower.secret = leader.clientID, leader.secret
	if res, err := follower.b.Apply(context.Background(), &fsm.Command{Type: fsm.CmdCreateClient,
		CreateClient: &fsm.CreateClient{ID: leader.clientID, Name: "a", SecretHash: secure.HashSecret(leader.secret)}}); err != nil || res.Code != fsm.CodeOK {
		t.Fatalf("client on the follower: %v %+v", err, res)
	}
	follower.b.leader.Store(false)
	follower.b.lagging.Store(true)
	var calls atomic.Int64
	read := func(ctx context.Context, q []byte) ([]byte, error) {
		calls.Add(1)
		return leader.s.LeaderRead(ctx, q)
	}
	follower.b.leaderRead.Store(&read)

	id := leader.create(`{"payload":{"k":1}}`)
	got := follower.do(req{method: "GET", path: "/v1/actions/" + id})
	expect(t, got, 200, "")
	if got.str("actionId") != id || calls.Load() != 1 {
		t.Fatalf("lagging read answered %s after %d leader reads", got.raw, calls.Load())
	}
	expect(t, follower.do(req{method: "GET", path: "/v1/actions/act_nope"}), 404, "action_not_found")
	// Caught up: answered here (the follower's state has no such action).
	follower.b.lagging.Store(false)
	expect(t, follower.do(req{method: "GET", path: "/v1/actions/" + id}), 404, "action_not_found")
	// Lagging, and the leader unreachable: answered here after waiting.
	follower.b.lagging.Store(true)
	follower.b.leaderRead.Store(nil)
	expect(t, follower.do(req{method: "GET", path: "/v1/actions/" + id}), 404, "action_not_found")
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d leader reads, want 2", n)
	}
}

func benchEnv(b *testing.B) *env {
	e := newEnv(b, nil)
	return e
}

// serveAsClient serves one request with the env's client credentials,
// straight through the handler (benchmarks: no httptest server).
func (e *env) serveAsClient(method, path string, body io.Reader) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, body)
	r.Header.Set("client-id", e.clientID)
	r.Header.Set("client-secret", e.secret)
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

func BenchmarkCreate(b *testing.B) {
	e := benchEnv(b)
	body := []byte(`{"payload":{"email":"someone@example.com","amount":1200},"pin":"123456"}`)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := e.serveAsClient("POST", "/v1/actions", bytes.NewReader(body))
		if w.Code != http.StatusCreated {
			b.Fatalf("create: %d %s", w.Code, w.Body)
		}
	}
}

func BenchmarkConsume(b *testing.B) {
	e := benchEnv(b)
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = e.create(`{"payload":{"n":1}}`)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := e.serveAsClient("POST", "/v1/actions/"+ids[i]+"/consume", strings.NewReader(`{"consumer":{"ip":"10.1.2.3"}}`))
		if w.Code != http.StatusOK {
			b.Fatalf("consume: %d %s", w.Code, w.Body)
		}
	}
}

// TestChunkedBodyLimit: a body without Content-Length is cut at the limit.
func TestChunkedBodyLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = 1024 })
	before := e.stateHash()
	body := `{"payload":{"x":"` + strings.Repeat("a", 2000) + `"}}`
	r := httptest.NewRequest("POST", "/v1/actions", io.MultiReader(strings.NewReader(body)))
	r.ContentLength = -1
	r.Header.Set("client-id", e.clientID)
	r.Header.Set("client-secret", e.secret)
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	res := decodeResp(t, w.Code, w.Header(), w.Body.Bytes())
	expect(t, res, 413, "payload_too_large")
	if e.stateHash() != before {
		t.Fatal("state changed")
	}
}

// BenchmarkConsumeSettled is a loser of a hot race: a consume of an action
// already consumed, answered 409 from local state (the settled shortcut).
func BenchmarkConsumeSettled(b *testing.B) {
	e := benchEnv(b)
	id := e.create(`{"payload":{"n":1}}`)
	consume := func() *httptest.ResponseRecorder {
		return e.serveAsClient("POST", "/v1/actions/"+id+"/consume", nil)
	}
	if w := consume(); w.Code != http.StatusOK {
		b.Fatalf("first consume: %d %s", w.Code, w.Body)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if w := consume(); w.Code != http.StatusConflict {
			b.Fatalf("settled consume: %d %s", w.Code, w.Body)
		}
	}
}

// BenchmarkVerify is a linearizable verify of one of 10,000 actions
// (the test backend's read barrier is immediate).
func BenchmarkVerify(b *testing.B) {
	e := benchEnv(b)
	r := e.do(req{method: "POST", path: "/v1/actions", ctype: csvCT, body: csvRowsBody(10000)})
	expect(b, r, 200, "")
	var out csvResponse
	if err := json.Unmarshal(r.raw, &out); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := out.Results[(i*7919)%len(out.Results)].ActionID
		w := e.serveAsClient("GET", "/v1/actions/"+id, nil)
		if w.Code != http.StatusOK {
			b.Fatalf("verify: %d %s", w.Code, w.Body)
		}
	}
}
