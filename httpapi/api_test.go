package httpapi

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
)

const jsonCT = "application/json"

func TestHealthReadyMetrics(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do(req{method: "GET", path: "/healthz", noAuth: true})
	expect(t, r, 200, "")
	if r.str("status") != "ok" {
		t.Fatalf("healthz body %s", r.raw)
	}
	expect(t, e.do(req{method: "GET", path: "/readyz", noAuth: true}), 200, "")
	e.b.ready.Store(false)
	expect(t, e.do(req{method: "GET", path: "/readyz", noAuth: true}), 503, "unavailable")

	e.create(`{"payload":{"a":1}}`)
	r = e.do(req{method: "GET", path: "/metrics", noAuth: true})
	if r.status != 200 {
		t.Fatalf("metrics status %d", r.status)
	}
	for _, want := range []string{
		`exactonce_http_requests_total{code="201",method="POST",route="/v1/actions"} 1`,
		// By route, method and code, from a 100 µs bucket up.
		`exactonce_http_request_duration_seconds_bucket{code="201",method="POST",route="/v1/actions",le="0.0001"}`,
		`exactonce_http_request_duration_seconds_count{code="201",method="POST",route="/v1/actions"} 1`,
		`exactonce_actions_created_total 1`,
	} {
		if !strings.Contains(string(r.raw), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestUnknownRouteAndMethod(t *testing.T) {
	e := newEnv(t, nil)
	expect(t, e.do(req{method: "GET", path: "/v1/nope"}), 404, "not_found")
	expect(t, e.do(req{method: "PUT", path: "/v1/actions"}), 405, "method_not_allowed")
}

func TestRequestID(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do(req{method: "GET", path: "/healthz", noAuth: true, hdr: map[string]string{"X-Request-Id": "abc-123"}})
	if got := r.header.Get("X-Request-Id"); got != "abc-123" {
		t.Fatalf("request id %q, want the caller's", got)
	}
	r = e.do(req{method: "GET", path: "/healthz", noAuth: true})
	if r.header.Get("X-Request-Id") == "" {
		t.Fatal("no generated request id")
	}
	r = e.do(req{method: "GET", path: "/healthz", noAuth: true, hdr: map[string]string{"X-Request-Id": "bad id\x01"}})
	if got := r.header.Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
		t.Fatalf("invalid request id not replaced: %q", got)
	}
}

// Actions stored with ids of the earlier format ("act_" + 160 random bits in
// URL-safe base64, before ids carried a creation stamp) are still found,
// verified and consumed exactly once.
func TestEarlierActionIDFormatKeepsWorking(t *testing.T) {
	e := newEnv(t, nil)
	raw := make([]byte, 20)
	for i := range raw {
		raw[i] = byte(251 * (i + 1))
	}
	id := "act_" + base64.RawURLEncoding.EncodeToString(raw)
	res, err := e.b.Apply(context.Background(), &fsm.Command{Type: fsm.CmdCreateActions, ClientID: e.clientID,
		Create: &fsm.CreateActions{DefaultTTLMS: time.Hour.Milliseconds(), MaxTTLMS: 24 * time.Hour.Milliseconds(),
			Rows: []fsm.CreateRow{{ActionID: id, SealedPayload: e.keys.SealPayload(id, []byte(`{"old":true}`))}}}})
	if err != nil || res.Code != fsm.CodeOK {
		t.Fatalf("create with an earlier id: %v %+v", err, res)
	}
	newer := e.create(`{"payload":{}}`) // a current id beside it
	v := e.do(req{method: "GET", path: "/v1/actions/" + id})
	expect(t, v, 200, "")
	if v.str("state") != "active" {
		t.Fatalf("verify: %s", v.raw)
	}
	c := e.consume(id, "")
	expect(t, c, 200, "")
	if p, _ := c.body["payload"].(map[string]any); p["old"] != true {
		t.Fatalf("consume payload: %s", c.raw)
	}
	expect(t, e.consume(id, ""), 409, "already_used")
	expect(t, e.consume(newer, ""), 200, "")
}

func TestCreateAndVerify(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do(req{method: "POST", path: "/v1/actions", ctype: jsonCT, body: `{"payload":{"to":"x@y.z","n":1}}`})
	expect(t, r, 201, "")
	id := r.str("actionId")
	if !strings.HasPrefix(id, "act_") || len(id) < 4+22 {
		t.Fatalf("bad action id %q", id)
	}
	now := "2030-01-02T03:04:05.000Z"
	if r.str("createdAt") != now || r.str("activeAt") != now || r.str("expiresAt") != "2030-01-03T03:04:05.000Z" {
		t.Fatalf("times: %s", r.raw)
	}
	if r.body["pinRequired"] != false {
		t.Fatalf("pinRequired: %s", r.raw)
	}

	v := e.do(req{method: "GET", path: "/v1/actions/" + id})
	expect(t, v, 200, "")
	if v.str("state") != "active" || v.str("actionId") != id || v.body["failedPinAttempts"] != float64(0) {
		t.Fatalf("verify: %s", v.raw)
	}
	if _, ok := v.body["payload"]; ok {
		t.Fatalf("verify leaks the payload: %s", v.raw)
	}
	// Stale reads work without a barrier.
	e.b.barrierErr.Store(errBox{cluster.ErrUnavailable})
	expect(t, e.do(req{method: "GET", path: "/v1/actions/" + id}), 503, "unavailable")
	expect(t, e.do(req{method: "GET", path: "/v1/actions/" + id + "?consistency=stale"}), 200, "")
	e.b.barrierErr.Store(errBox{})

	// Given times are truncated to milliseconds and echoed in UTC.
	r = e.do(req{method: "POST", path: "/v1/actions", ctype: jsonCT,
		body: `{"payload":{},"active_at":"2030-01-05T00:00:00.123456+02:00","expires_at":"2030-01-06T00:00:00Z","pin":"1234"}`})
	expect(t, r, 201, "")
	if r.str("activeAt") != "2030-01-04T22:00:00.123Z" || r.str("expiresAt") != "2030-01-06T00:00:00.000Z" || r.body["pinRequired"] != true {
		t.Fatalf("given times: %s", r.raw)
	}
	v = e.do(req{method: "GET", path: "/v1/actions/" + r.str("actionId")})
	if v.str("state") != "pending" || v.body["pinRequired"] != true {
		t.Fatalf("verify pending: %s", v.raw)
	}
	// Default expiry counts from active_at when it is in the future.
	r = e.do(req{method: "POST", path: "/v1/actions", ctype: jsonCT, body: `{"payload":{},"active_at":"2030-02-01T00:00:00Z"}`})
	expect(t, r, 201, "")
	if r.str("expiresAt") != "2030-02-02T00:00:00.000Z" {
		t.Fatalf("default expiry from active_at: %s", r.raw)
	}
}

func TestCreateRejectsBadInput(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = 64 << 10 })
	revokedID, revokedSecret := e.newClient("revoked")
	if res, err := e.b.Apply(context.Background(), &fsm.Command{Type: fsm.CmdRevokeClient, RevokeClient: &fsm.RevokeClient{ID: revokedID}}); err != nil || res.Code != "" {
		t.Fatalf("revoke: %v %+v", err, res)
	}
	big := `{"payload":{"x":"` + strings.Repeat("a", 16<<10) + `"}}`
	huge := `{"payload":{"x":"` + strings.Repeat("a", 70<<10) + `"}}`
	cases := []struct {
		name, body string
		hdr        map[string]string
		noAuth     bool
		client     [2]string
		status     int
		code, msg  string
	}{
		{name: "malformed", body: `{"payload":`, status: 400, code: "invalid_request"},
		{name: "empty", body: ``, status: 400, code: "invalid_request"},
		{name: "not object", body: `[1]`, status: 400, code: "invalid_request"},
		{name: "unknown field", body: `{"payload":{},"colour":"red"}`, status: 400, code: "invalid_request", msg: "colour"},
		{name: "trailing data", body: `{"payload":{}} {}`, status: 400, code: "invalid_request"},
		{name: "missing payload", body: `{"pin":"1234"}`, status: 400, code: "invalid_request", msg: "payload"},
		{name: "null payload", body: `{"payload":null}`, status: 400, code: "invalid_request", msg: "payload"},
		{name: "array payload", body: `{"payload":[1,2]}`, status: 400, code: "invalid_request", msg: "payload"},
		{name: "string payload", body: `{"payload":"hi"}`, status: 400, code: "invalid_request", msg: "payload"},
		{name: "bad active_at", body: `{"payload":{},"active_at":"tomorrow"}`, status: 400, code: "invalid_request", msg: "active_at"},
		{name: "bad expires_at type", body: `{"payload":{},"expires_at":5}`, status: 400, code: "invalid_request", msg: "expires_at"},
		{name: "expires before active", body: `{"payload":{},"active_at":"2030-03-01T00:00:00Z","expires_at":"2030-02-01T00:00:00Z"}`, status: 400, code: "invalid_request", msg: "expires_at"},
		{name: "expires in past", body: `{"payload":{},"expires_at":"2030-01-01T00:00:00Z"}`, status: 400, code: "invalid_request", msg: "expires_at"},
		{name: "beyond max ttl", body: `{"payload":{},"expires_at":"2031-03-01T00:00:00Z"}`, status: 400, code: "invalid_request", msg: "expires_at"},
		{name: "pin short", body: `{"payload":{},"pin":"123"}`, status: 400, code: "invalid_request", msg: "pin"},
		{name: "pin long", body: `{"payload":{},"pin":"1234567890123"}`, status: 400, code: "invalid_request", msg: "pin"},
		{name: "pin empty", body: `{"payload":{},"pin":""}`, status: 400, code: "invalid_request", msg: "pin"},
		{name: "payload too large", body: big, status: 413, code: "payload_too_large"},
		{name: "body too large", body: huge, status: 413, code: "payload_too_large"},
		{name: "no auth", body: `{"payload":{}}`, noAuth: true, status: 401, code: "unauthorized"},
		{name: "wrong secret", body: `{"payload":{}}`, client: [2]string{e.clientID, "sec_wrong"}, status: 401, code: "unauthorized"},
		{name: "unknown client", body: `{"payload":{}}`, client: [2]string{"cl_nobody", e.secret}, status: 401, code: "unauthorized"},
		{name: "revoked client", body: `{"payload":{}}`, client: [2]string{revokedID, revokedSecret}, status: 401, code: "unauthorized"},
		{name: "demo client", body: `{"payload":{}}`, client: [2]string{fsm.DemoClientID, "x"}, status: 401, code: "unauthorized"},
		{name: "bad idempotency key", body: `{"payload":{}}`, hdr: map[string]string{"Idempotency-Key": "tab\there"}, status: 400, code: "invalid_request", msg: "Idempotency-Key"},
		{name: "long idempotency key", body: `{"payload":{}}`, hdr: map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}, status: 400, code: "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.stateHash()
			r := e.do(req{method: "POST", path: "/v1/actions", ctype: jsonCT, body: c.body, hdr: c.hdr, noAuth: c.noAuth, client: c.client})
			expect(t, r, c.status, c.code)
			if c.msg != "" && !strings.Contains(r.str("message"), c.msg) {
				t.Fatalf("message %q does not name %q", r.str("message"), c.msg)
			}
			if after := e.stateHash(); after != before {
				t.Fatal("a rejected request changed the stored state")
			}
		})
	}
}

func TestConsume(t *testing.T) {
	e := newEnv(t, nil)
	id := e.create(`{"payload":{"secret":"<b>&\u00e9","n":[1,2.5,null]}}`)
	e.clock.Advance(time.Second)
	r := e.consume(id, `{"consumer":{"ip":"10.0.0.1","ua":"test"}}`)
	expect(t, r, 200, "")
	want := fmt.Sprintf(`{"actionId":%q,"state":"consumed","payload":{"secret":"<b>&\u00e9","n":[1,2.5,null]},"consumedAt":"2030-01-02T03:04:06.000Z"}`+"\n", id)
	if string(r.raw) != want {
		t.Fatalf("consume body\n got %s\nwant %s", r.raw, want)
	}
	r = e.consume(id, "")
	expect(t, r, 409, "already_used")
	if r.str("consumedAt") != "2030-01-02T03:04:06.000Z" || r.str("consumedReason") != "consumed" {
		t.Fatalf("already_used extras: %s", r.raw)
	}
	v := e.do(req{method: "GET", path: "/v1/actions/" + id})
	if v.str("state") != "consumed" || v.str("consumedReason") != "consumed" || v.str("consumedAt") == "" {
		t.Fatalf("verify consumed: %s", v.raw)
	}
	if c, _ := v.body["consumer"].(map[string]any); c["ip"] != "10.0.0.1" {
		t.Fatalf("verify consumer: %s", v.raw)
	}
	if _, ok := v.body["payload"]; ok {
		t.Fatalf("verify leaks payload: %s", v.raw)
	}
}

func TestConsumeErrors(t *testing.T) {
	e := newEnv(t, nil)
	otherID, otherSecret := e.newClient("other")
	expect(t, e.consume("act_missing", ""), 404, "action_not_found")

	id := e.create(`{"payload":{}}`)
	// Another client's action is invisible.
	other := [2]string{otherID, otherSecret}
	expect(t, e.do(req{method: "GET", path: "/v1/actions/" + id, client: other}), 404, "action_not_found")
	expect(t, e.do(req{method: "POST", path: "/v1/actions/" + id + "/consume", client: other}), 404, "action_not_found")
	expect(t, e.do(req{method: "DELETE", path: "/v1/actions/" + id, client: other}), 404, "action_not_found")

	before := e.stateHash()
	expect(t, e.consume(id, `{"consumer":[1]}`), 400, "invalid_request")
	expect(t, e.consume(id, `{"consumer":{"x":"`+strings.Repeat("a", 1100)+`"}}`), 413, "payload_too_large")
	expect(t, e.consume(id, `{"pin":"1234","extra":1}`), 400, "invalid_request")
	expect(t, e.consume(id, `{"pin":`), 400, "invalid_request")
	if e.stateHash() != before {
		t.Fatal("rejected consumes changed state")
	}

	canceled := e.create(`{"payload":{}}`)
	expect(t, e.do(req{method: "DELETE", path: "/v1/actions/" + canceled}), 200, "")
	r := e.consume(canceled, "")
	expect(t, r, 410, "canceled")
	if r.str("canceledAt") != "2030-01-02T03:04:05.000Z" {
		t.Fatalf("canceled extras: %s", r.raw)
	}

	pending := e.create(`{"payload":{},"active_at":"2030-06-01T00:00:00Z"}`)
	r = e.consume(pending, "")
	expect(t, r, 409, "not_active")
	if r.str("activeAt") != "2030-06-01T00:00:00.000Z" {
		t.Fatalf("not_active extras: %s", r.raw)
	}

	short := e.create(`{"payload":{},"expires_at":"2030-01-02T03:05:00Z"}`)
	e.clock.Advance(time.Minute)
	r = e.consume(short, "")
	expect(t, r, 410, "expired")
	if r.str("expiresAt") != "2030-01-02T03:05:00.000Z" {
		t.Fatalf("expired extras: %s", r.raw)
	}
	if v := e.do(req{method: "GET", path: "/v1/actions/" + short}); v.str("state") != "expired" {
		t.Fatalf("verify expired: %s", v.raw)
	}
}

func TestPINFlow(t *testing.T) {
	e := newEnv(t, nil)
	id := e.create(`{"payload":{"k":"v"},"pin":"2468"}`)
	expect(t, e.consume(id, ""), 401, "pin_required")
	expect(t, e.consume(id, `{"pin":""}`), 401, "pin_required")
	if v := e.do(req{method: "GET", path: "/v1/actions/" + id}); v.body["failedPinAttempts"] != float64(0) {
		t.Fatalf("pin_required counted as an attempt: %s", v.raw)
	}
	for _, left := range []float64{2, 1, 0} {
		r := e.consume(id, `{"pin":"0000"}`)
		expect(t, r, 401, "invalid_pin")
		if r.body["attemptsRemaining"] != left {
			t.Fatalf("attemptsRemaining %v, want %v: %s", r.body["attemptsRemaining"], left, r.raw)
		}
	}
	r := e.consume(id, `{"pin":"2468"}`)
	expect(t, r, 409, "already_used")
	if r.str("consumedReason") != "invalid_pin_burned" {
		t.Fatalf("burned reason: %s", r.raw)
	}
	v := e.do(req{method: "GET", path: "/v1/actions/" + id})
	if v.str("state") != "consumed" || v.str("consumedReason") != "invalid_pin_burned" || v.body["failedPinAttempts"] != float64(3) {
		t.Fatalf("verify burned: %s", v.raw)
	}

	ok := e.create(`{"payload":{"k":"v"},"pin":"2468"}`)
	expect(t, e.consume(ok, `{"pin":"1111"}`), 401, "invalid_pin")
	r = e.consume(ok, `{"pin":"2468"}`)
	expect(t, r, 200, "")
	if p, _ := r.body["payload"].(map[string]any); p["k"] != "v" {
		t.Fatalf("payload: %s", r.raw)
	}
}

func TestCancel(t *testing.T) {
	e := newEnv(t, nil)
	id := e.create(`{"payload":{}}`)
	r := e.do(req{method: "DELETE", path: "/v1/actions/" + id})
	expect(t, r, 200, "")
	if r.str("state") != "canceled" || r.str("canceledAt") != "2030-01-02T03:04:05.000Z" || r.str("actionId") != id {
		t.Fatalf("cancel: %s", r.raw)
	}
	e.clock.Advance(time.Second)
	r2 := e.do(req{method: "DELETE", path: "/v1/actions/" + id})
	if r2.status != 200 || string(r2.raw) != string(r.raw) {
		t.Fatalf("cancel again: %d %s, want the same 200", r2.status, r2.raw)
	}
	if v := e.do(req{method: "GET", path: "/v1/actions/" + id}); v.str("state") != "canceled" || v.str("canceledAt") == "" {
		t.Fatalf("verify canceled: %s", v.raw)
	}
	used := e.create(`{"payload":{}}`)
	expect(t, e.consume(used, ""), 200, "")
	expect(t, e.do(req{method: "DELETE", path: "/v1/actions/" + used}), 409, "already_used")
	short := e.create(`{"payload":{},"expires_at":"2030-01-02T03:05:00Z"}`)
	e.clock.Advance(time.Hour)
	expect(t, e.do(req{method: "DELETE", path: "/v1/actions/" + short}), 410, "expired")
	expect(t, e.do(req{method: "DELETE", path: "/v1/actions/act_nope"}), 404, "action_not_found")
}

func TestIdempotency(t *testing.T) {
	e := newEnv(t, nil)
	key := map[string]string{"Idempotency-Key": "order-42"}
	body := `{"payload":{"x":1}}`
	r1 := e.do(req{method: "POST", path: "/v1/actions", ctype: jsonCT, body: body, hdr: key})
	expect(t, r1, 201, "")
	e.clock.Advance(time.Minute)
	r2 := e.do(req{method: "POST", path: "/v1/actions", ctype: jsonCT, body: body, hdr: key})
	if r2.status != 201 || string(r2.raw) != string(r1.raw) {
		t.Fatalf("replay: %d %s, want %d %s", r2.status, r2.raw, r1.status, r1.raw)
	}
	if r2.header.Get("Idempotent-Replayed") != "true" {
		t.Fatal("replay lacks Idempotent-Replayed")
	}
	before := e.stateHash()
	expect(t, e.do(req{method: "POST", path: "/v1/actions", ctype: jsonCT, body: `{"payload":{"x":2}}`, hdr: key}), 422, "idempotency_key_reused")
	if e.stateHash() != before {
		t.Fatal("422 changed state")
	}
	// The same key on another path is another request.
	id := r1.str("actionId")
	expect(t, e.do(req{method: "POST", path: "/v1/actions/" + id + "/consume", hdr: key}), 422, "idempotency_key_reused")

	// A consumer whose 200 was lost gets it again; everyone else gets 409.
	ck := map[string]string{"Idempotency-Key": "consume-1"}
	c1 := e.do(req{method: "POST", path: "/v1/actions/" + id + "/consume", body: `{"consumer":{"a":1}}`, hdr: ck})
	expect(t, c1, 200, "")
	expect(t, e.consume(id, ""), 409, "already_used")
	c2 := e.do(req{method: "POST", path: "/v1/actions/" + id + "/consume", body: `{"consumer":{"a":1}}`, hdr: ck})
	if c2.status != 200 || string(c2.raw) != string(c1.raw) {
		t.Fatalf("consume replay: %d %s, want %s", c2.status, c2.raw, c1.raw)
	}
	// Error outcomes replay too.
	ek := map[string]string{"Idempotency-Key": "consume-2"}
	e1 := e.do(req{method: "POST", path: "/v1/actions/" + id + "/consume", hdr: ek})
	expect(t, e1, 409, "already_used")
	e2 := e.do(req{method: "POST", path: "/v1/actions/" + id + "/consume", hdr: ek})
	if e2.status != 409 || string(e2.raw) != string(e1.raw) {
		t.Fatalf("error replay: %d %s", e2.status, e2.raw)
	}
	// Cancel replays.
	id2 := e.create(`{"payload":{}}`)
	xk := map[string]string{"Idempotency-Key": "cancel-1"}
	x1 := e.do(req{method: "DELETE", path: "/v1/actions/" + id2, hdr: xk})
	expect(t, x1, 200, "")
	x2 := e.do(req{method: "DELETE", path: "/v1/actions/" + id2, hdr: xk})
	if x2.status != 200 || string(x2.raw) != string(x1.raw) || x2.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("cancel replay: %d %s", x2.status, x2.raw)
	}
	// Keys are per client.
	oid, osec := e.newClient("other")
	o := e.do(req{method: "POST", path: "/v1/actions", ctype: jsonCT, body: body, hdr: key, client: [2]string{oid, osec}})
	expect(t, o, 201, "")
	if o.str("actionId") == r1.str("actionId") {
		t.Fatal("another client's key replayed this client's response")
	}
}

func TestStats(t *testing.T) {
	e := newEnv(t, nil)
	a := e.create(`{"payload":{}}`)
	e.create(`{"payload":{},"active_at":"2030-06-01T00:00:00Z"}`)
	c := e.create(`{"payload":{}}`)
	b := e.create(`{"payload":{},"pin":"1234"}`)
	short := e.create(`{"payload":{},"expires_at":"2030-01-02T03:05:00Z"}`)
	_ = short
	expect(t, e.consume(a, ""), 200, "")
	expect(t, e.do(req{method: "DELETE", path: "/v1/actions/" + c}), 200, "")
	for i := 0; i < 3; i++ {
		e.consume(b, `{"pin":"9999"}`)
	}
	e.clock.Advance(time.Minute)
	r := e.do(req{method: "GET", path: "/v1/stats"})
	expect(t, r, 200, "")
	want := `{"total":5,"byState":{"pending":1,"active":0,"consumed":2,"expired":1,"canceled":1},"burned":1,"createdLast24h":5,"consumedLast24h":1,"purged":0}` + "\n"
	if string(r.raw) != want {
		t.Fatalf("stats\n got %s\nwant %s", r.raw, want)
	}
	expect(t, e.do(req{method: "GET", path: "/v1/stats", noAuth: true}), 401, "unauthorized")
}

func TestApplyErrors(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RequestTimeout = 300 * time.Millisecond })
	id := e.create(`{"payload":{}}`)
	e.b.applyErr.Store(errBox{fmt.Errorf("propose: %w", cluster.ErrOutcomeUnknown)})
	expect(t, e.consume(id, ""), 503, "outcome_unknown")
	e.b.applyErr.Store(errBox{fmt.Errorf("propose: %w", cluster.ErrUnavailable)})
	expect(t, e.consume(id, ""), 503, "unavailable")
	// The leader refused to propose (a payload it cannot open): 500, and
	// nothing was written.
	e.b.applyErr.Store(errBox{fmt.Errorf("propose: %w: cannot open", cluster.ErrRejected)})
	expect(t, e.consume(id, ""), 500, "internal")
	e.b.applyErr.Store(errBox{})
	e.b.leader.Store(false)
	// Reads on a follower still work (the barrier comes from the leader).
	expect(t, e.do(req{method: "GET", path: "/v1/actions/" + id}), 200, "")
}
