package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestConcurrentConsume sends 1,000 concurrent consumes of one action
// through a real HTTP server: exactly one 200, every other 409.
func TestConcurrentConsume(t *testing.T) {
	e := newEnv(t, nil)
	id := e.create(`{"payload":{"prize":1}}`)
	ts := httptest.NewServer(e.s)
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
	// A forged forwarding header does not skip the limit.
	expect(t, e.do(req{method: "POST", path: "/v1/demo", noAuth: true,
		hdr: map[string]string{HeaderForwarded: "1", headerForwardAuth: "forged"}}), 429, "rate_limited")
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

// sendAs sends a request to a server at base with e's client credentials.
func sendAs(t *testing.T, e *env, base, method, path, body string, hdr map[string]string) resp {
	t.Helper()
	r, err := http.NewRequest(method, base+path, bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("client-id", e.clientID)
	r.Header.Set("client-secret", e.secret)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return decodeResp(t, res.StatusCode, res.Header, raw)
}

// TestForwarding: a write on a follower is answered by the leader exactly;
// a forwarded request is never forwarded a second time.
func TestForwarding(t *testing.T) {
	// The leader's own demo limit is 1/min: forwarded demo creates must not hit it.
	leader := newEnv(t, func(c *Config) { c.DemoRatePerMinute = 1 })
	lts := httptest.NewServer(leader.s)
	defer lts.Close()
	leader.s.cfg.PublicURL = lts.URL

	// The follower shares nothing but the cluster key with the leader.
	follower := newEnv(t, func(c *Config) { c.RequestTimeout = 500 * time.Millisecond })
	follower.b.leader.Store(false)
	follower.b.leaderHTTP.Store(lts.URL)
	fts := httptest.NewServer(follower.s)
	defer fts.Close()

	send := func(base, method, path, body string, hdr map[string]string) resp {
		t.Helper()
		return sendAs(t, leader, base, method, path, body, hdr)
	}
	key := map[string]string{"Idempotency-Key": "fwd-1", "X-Request-Id": "rid-fwd"}
	r := send(fts.URL, "POST", "/v1/actions", `{"payload":{"via":"follower"}}`, key)
	expect(t, r, 201, "")
	if r.header.Get("X-Request-Id") != "rid-fwd" {
		t.Fatalf("request id not kept across the hop: %q", r.header.Get("X-Request-Id"))
	}
	// The same request sent to the leader directly replays the identical body.
	r2 := send(lts.URL, "POST", "/v1/actions", `{"payload":{"via":"follower"}}`, key)
	if r2.status != r.status || string(r2.raw) != string(r.raw) {
		t.Fatalf("leader answer %d %s differs from the relayed %d %s", r2.status, r2.raw, r.status, r.raw)
	}
	id := r.str("actionId")
	c := send(fts.URL, "POST", "/v1/actions/"+id+"/consume", "", nil)
	expect(t, c, 200, "")
	c = send(fts.URL, "POST", "/v1/actions/"+id+"/consume", "", nil)
	expect(t, c, 409, "already_used")
	// Errors from the leader are relayed as they are.
	expect(t, send(fts.URL, "POST", "/v1/actions", `{"payload":1}`, nil), 400, "invalid_request")

	// Demo creates forwarded by a trusted follower skip the leader's limit.
	for i := 0; i < DefaultDemoRatePerMinute+2; i++ {
		d := send(fts.URL, "POST", "/v1/demo", "", map[string]string{"X-Forwarded-For": "1.2.3.4"})
		if i < DefaultDemoRatePerMinute {
			expect(t, d, 201, "")
			if !strings.HasPrefix(d.str("revealUrl"), lts.URL+"/v1/demo/") {
				t.Fatalf("revealUrl should be on the advertised address of the leader that made it: %s", d.raw)
			}
		} else {
			expect(t, d, 429, "rate_limited")
		}
	}

	// Two followers pointing at each other: no second hop, 503 at the deadline.
	other := newEnv(t, nil)
	other.b.leader.Store(false)
	ots := httptest.NewServer(other.s)
	defer ots.Close()
	other.b.leaderHTTP.Store(fts.URL)
	follower.b.leaderHTTP.Store(ots.URL)
	start := time.Now()
	expect(t, send(fts.URL, "POST", "/v1/actions", `{"payload":{}}`, nil), 503, "unavailable")
	if time.Since(start) > 3*time.Second {
		t.Fatal("the loop was not cut")
	}
	// Landing directly with the forwarded header: 503, not forwarded.
	expect(t, send(ots.URL, "POST", "/v1/actions", `{"payload":{}}`, map[string]string{HeaderForwarded: "1"}), 503, "unavailable")

	// A leader that dies after receiving the request: outcome unknown.
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		hj, ok := w.(http.Hijacker)
		if !ok {
			t.Error("no hijacker")
			return
		}
		conn, _, err := hj.Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer hang.Close()
	follower.b.leaderHTTP.Store(hang.URL)
	expect(t, send(fts.URL, "POST", "/v1/actions", `{"payload":{}}`, nil), 503, "outcome_unknown")

	// Nothing listening (dial error): retried until the deadline, then unavailable.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	follower.b.leaderHTTP.Store(deadURL)
	expect(t, send(fts.URL, "POST", "/v1/actions", `{"payload":{}}`, nil), 503, "unavailable")
	// When the leader comes back within the deadline, the retry succeeds.
	follower.b.leaderHTTP.Store(lts.URL)
	expect(t, send(fts.URL, "POST", "/v1/actions", `{"payload":{}}`, nil), 201, "")
}

// TestLaggingFollowerReadGoesToLeader: a linearizable read on a follower
// that has not applied the read index in time is answered by the leader
// (read-your-writes through another node without waiting for the next
// AppendEntries); if the leader cannot be reached, the follower waits and
// answers itself; a read that was forwarded already is never sent on.
func TestLaggingFollowerReadGoesToLeader(t *testing.T) {
	leader := newEnv(t, nil)
	lts := httptest.NewServer(leader.s)
	defer lts.Close()
	// The follower shares nothing but the cluster key with the leader: an
	// action created on the leader is not in its state.
	follower := newEnv(t, func(c *Config) { c.RequestTimeout = 2 * time.Second })
	follower.b.leader.Store(false)
	follower.b.leaderHTTP.Store(lts.URL)
	follower.b.lagging.Store(true)
	fts := httptest.NewServer(follower.s)
	defer fts.Close()

	get := func(base, path string, hdr map[string]string) resp {
		t.Helper()
		return sendAs(t, leader, base, "GET", path, "", hdr)
	}
	created := leader.do(req{method: "POST", path: "/v1/actions", body: `{"payload":{"k":1}}`})
	expect(t, created, 201, "")
	id := created.str("actionId")

	got := get(fts.URL, "/v1/actions/"+id, nil)
	expect(t, got, 200, "")
	if got.str("actionId") != id {
		t.Fatalf("forwarded read answered %s", got.raw)
	}
	// The follower's own state has not even the client, so below 401
	// shows that it answered itself.
	// Already forwarded once: answered here.
	expect(t, get(fts.URL, "/v1/actions/"+id, map[string]string{HeaderForwarded: "1"}), 401, "unauthorized")
	// Caught up: answered here.
	follower.b.lagging.Store(false)
	expect(t, get(fts.URL, "/v1/actions/"+id, nil), 401, "unauthorized")
	// Lagging, and the leader unreachable: answered here after waiting.
	follower.b.lagging.Store(true)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	follower.b.leaderHTTP.Store(deadURL)
	expect(t, get(fts.URL, "/v1/actions/"+id, nil), 401, "unauthorized")
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
	e.s.ServeHTTP(w, r)
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
	e.s.ServeHTTP(w, r)
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
