package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestLogLinesCarryRequestID(t *testing.T) {
	var sink syncBuffer
	e := newEnv(t, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&sink, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	e.create(`{"payload":{}}`)
	expect(t, e.do(req{method: "GET", path: "/v1/actions/act_x", hdr: map[string]string{"X-Request-Id": "trace-77"}}), 404, "action_not_found")
	sc := bufio.NewScanner(bytes.NewReader([]byte(sink.String())))
	lines, traced := 0, 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line not JSON: %s", sc.Text())
		}
		lines++
		if m["request_id"] == nil || m["request_id"] == "" {
			t.Fatalf("log line without request_id: %s", sc.Text())
		}
		if m["request_id"] == "trace-77" {
			traced++
		}
	}
	if lines < 2 || traced == 0 {
		t.Fatalf("%d lines, %d with the caller's id:\n%s", lines, traced, sink.String())
	}
}

func TestExtraRoutes(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Extra = func(r *mux.Router) {
			r.Handle("/v1/cluster", RequireAdmin(c.AdminTokenHash, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				WriteJSON(w, http.StatusOK, map[string]string{"leader": "n1", "rid": RequestIDFrom(r.Context())})
			}))).Methods(http.MethodGet)
		}
	})
	expect(t, e.do(req{method: "GET", path: "/v1/cluster", noAuth: true}), 401, "unauthorized")
	r := e.do(req{method: "GET", path: "/v1/cluster", noAuth: true, hdr: map[string]string{"Authorization": "bearer " + e.admin, "X-Request-Id": "r1"}})
	expect(t, r, 200, "")
	if r.str("leader") != "n1" || r.str("rid") != "r1" {
		t.Fatalf("extra route: %s", r.raw)
	}
}

func TestEmptyAdminTokenDisablesAdmin(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.AdminTokenHash = nil })
	expect(t, e.do(req{method: "GET", path: "/v1/admin/clients", noAuth: true, hdr: map[string]string{"Authorization": "Bearer "}}), 401, "unauthorized")
}

// TestAccessLogLevels: without Config.AccessLog, only failed requests log
// at Info; with it, every client request does, but a request forwarded by
// a follower (which logs it itself) stays at Debug unless it failed.
func TestAccessLogLevels(t *testing.T) {
	for _, access := range []bool{false, true} {
		var sink syncBuffer
		e := newEnv(t, func(c *Config) {
			c.AccessLog = access
			c.Logger = slog.New(slog.NewJSONHandler(&sink, &slog.HandlerOptions{Level: slog.LevelInfo}))
		})
		e.do(req{method: "GET", path: "/v1/actions/act_x", hdr: map[string]string{"X-Request-Id": "client-404"}})
		e.b.barrierErr.Store(errBox{errors.New("no quorum")})
		e.do(req{method: "GET", path: "/v1/actions/act_z", hdr: map[string]string{"X-Request-Id": "client-503"}})
		e.b.barrierErr.Store(errBox{})
		got := sink.String()
		for id, want := range map[string]bool{"client-404": access, "client-503": true} {
			if logged := strings.Contains(got, `"request_id":"`+id+`"`); logged != want {
				t.Errorf("access log %v: request %s logged at info = %v, want %v\n%s", access, id, logged, want, got)
			}
		}
	}
}

// TestActionPathMatcher: the string matcher of the two busiest routes
// accepts exactly what their templates' regular expressions accept, and
// requests through it are labelled with the template.
func TestActionPathMatcher(t *testing.T) {
	for _, tc := range []struct {
		method, path, suffix string
		id                   string // "" = no match
	}{
		{"POST", "/v1/actions/act_1/consume", "/consume", "act_1"},
		{"GET", "/v1/actions/act_1", "", "act_1"},
		{"GET", "/v1/actions/act_1/consume", "", ""},
		{"POST", "/v1/actions/act_1", "/consume", ""},
		{"POST", "/v1/actions//consume", "/consume", ""},
		{"POST", "/v1/actions/a/b/consume", "/consume", ""},
		{"GET", "/v1/actions/", "", ""},
		{"GET", "/v1/actions", "", ""},
		{"GET", "/v2/actions/act_1", "", ""},
		{"PUT", "/v1/actions/act_1", "", ""},
	} {
		method := "GET"
		if tc.suffix != "" {
			method = "POST"
		}
		r := httptest.NewRequest(tc.method, tc.path, nil)
		var m mux.RouteMatch
		got := actionPath(method, tc.suffix)(r, &m)
		if got != (tc.id != "") || got && m.Vars["id"] != tc.id {
			t.Errorf("%s %s (suffix %q): match %v vars %v, want id %q", tc.method, tc.path, tc.suffix, got, m.Vars, tc.id)
		}
	}

	e := newEnv(t, nil)
	id := e.create(`{"payload":{}}`)
	expect(t, e.do(req{method: "GET", path: "/v1/actions/" + id}), 200, "")
	expect(t, e.consume(id, ""), 200, "")
	expect(t, e.do(req{method: "PUT", path: "/v1/actions/" + id}), 405, CodeMethodNotAllowed)
	for _, route := range []string{routeAction, routeConsume} {
		if n := testutil.CollectAndCount(e.s.metrics.requests, "exactonce_http_requests_total"); n == 0 {
			t.Fatal("no request metrics")
		}
		if v := testutil.ToFloat64(e.s.metrics.requests.WithLabelValues(route, map[string]string{routeAction: "GET", routeConsume: "POST"}[route], "200")); v != 1 {
			t.Errorf("requests{route=%q} = %v, want 1", route, v)
		}
	}
}
