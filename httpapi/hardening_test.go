package httpapi

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/mux"
)

// TestSingleHeader: absent, once, twice.
func TestSingleHeader(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	if v, ok := singleHeader(r, "client-id"); v != "" || !ok {
		t.Fatalf("absent: %q %v", v, ok)
	}
	r.Header.Add("client-id", "a")
	if v, ok := singleHeader(r, "Client-Id"); v != "a" || !ok {
		t.Fatalf("once: %q %v", v, ok)
	}
	r.Header.Add("CLIENT-ID", "b")
	if _, ok := singleHeader(r, "client-id"); ok {
		t.Fatal("twice: ok")
	}
}

// TestRepeatedAuthorizationIs400: an admin call with two Authorization
// headers is refused, even when the first holds the right token.
func TestRepeatedAuthorizationIs400(t *testing.T) {
	e := newEnv(t, nil)
	for _, q := range []struct{ method, path, body string }{
		{"GET", "/v1/admin/clients", ""},
		{"POST", "/v1/admin/clients", `{"name":"x"}`},
	} {
		r := httptest.NewRequest(q.method, q.path, strings.NewReader(q.body))
		r.Header.Add("Authorization", "Bearer "+e.admin)
		r.Header.Add("Authorization", "Bearer other")
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, r)
		got := decodeResp(t, w.Code, w.Header(), w.Body.Bytes())
		expect(t, got, http.StatusBadRequest, "invalid_request")
		if !strings.Contains(got.str("message"), "Authorization") {
			t.Fatalf("message does not name the header: %s", got.raw)
		}
	}
	if AdminAuthorized(func() *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Add("Authorization", "Bearer "+e.admin)
		r.Header.Add("Authorization", "Bearer "+e.admin)
		return r
	}(), e.s.cfg.AdminTokenHash) {
		t.Fatal("AdminAuthorized takes a repeated header")
	}
}

// TestEveryAnswerIsJSON: unknown paths and methods, unclean paths (no
// redirect), paths under an Extra http.ServeMux and oversized headers are
// answered with JSON errors, and every answer carries nosniff.
func TestEveryAnswerIsJSON(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Extra = func(r *mux.Router) {
			sm := http.NewServeMux()
			sm.HandleFunc("GET /internal/v1/known", func(w http.ResponseWriter, _ *http.Request) {
				WriteJSON(w, http.StatusOK, map[string]bool{"ok": true})
			})
			r.PathPrefix("/internal/v1/").Handler(sm)
		}
	})
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/nope", 404, "not_found"},
		{"GET", "//v1/actions", 404, "not_found"},
		{"GET", "/v1/actions/../stats", 404, "not_found"},
		{"GET", "/v1/./stats", 404, "not_found"},
		{"PUT", "/v1/stats", 405, "method_not_allowed"},
		{"GET", "/internal/v1/nope", 404, "not_found"},
		{"POST", "/internal/v1/known", 405, "method_not_allowed"},
		{"GET", "/internal/v1//known", 404, "not_found"},
		{"GET", "/internal/v1/known", 200, ""},
		{"GET", "/healthz", 200, ""},
	} {
		r := e.do(req{method: tc.method, path: tc.path})
		if r.status != tc.status || (tc.code != "" && r.str("error") != tc.code) || r.body == nil {
			t.Errorf("%s %s: %d %q, want %d %s as JSON", tc.method, tc.path, r.status, r.raw, tc.status, tc.code)
		}
		if !isJSONType(r.header.Get("Content-Type")) || r.header.Get("X-Content-Type-Options") != "nosniff" || r.header.Get("Location") != "" {
			t.Errorf("%s %s: headers %v", tc.method, tc.path, r.header)
		}
	}
	if r := e.do(req{method: "GET", path: "/metrics"}); r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("/metrics without nosniff: %v", r.header)
	}
	big := e.do(req{method: "GET", path: "/v1/stats", hdr: map[string]string{"X-Big": strings.Repeat("x", DefaultMaxHeaderBytes)}})
	expect(t, big, http.StatusRequestHeaderFieldsTooLarge, CodeHeadersTooLarge)
}

// TestJSONOverTheWire: with the http.Server settings exactonced uses
// (MaxHeaderBytes well above Config.MaxHeaderBytes, no general OPTIONS
// handler), an oversized header and "OPTIONS *" get JSON answers too.
func TestJSONOverTheWire(t *testing.T) {
	e := newEnv(t, nil)
	ts := httptest.NewUnstartedServer(e.s)
	ts.Config.MaxHeaderBytes = http.DefaultMaxHeaderBytes
	ts.Config.DisableGeneralOptionsHandler = true
	ts.Start()
	t.Cleanup(ts.Close) // after rawRoundTrip's connections close
	for name, head := range map[string]string{
		"oversized header": "GET /v1/stats HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("y", 100<<10) + "\r\n\r\n",
		"OPTIONS *":        "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		resp := rawRoundTrip(t, ts.Listener.Addr().String(), head, nil)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var v struct{ Error string }
		if err := json.Unmarshal(body, &v); err != nil || v.Error == "" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d %q, want a JSON error with nosniff", name, resp.StatusCode, body)
		}
	}
}

// rawRoundTrip writes head on a new connection to addr, then the bytes
// sent on more (if not nil) until it is closed, and reads the response.
func rawRoundTrip(t *testing.T, addr, head string, more <-chan byte) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	if more != nil {
		go func() {
			for b := range more {
				if _, err := conn.Write([]byte{b}); err != nil {
					return
				}
			}
		}()
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return resp
}

// readTracker records whether a body was read.
type readTracker struct {
	r    io.Reader
	read atomic.Bool
}

func (b *readTracker) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.r.Read(p)
}

// TestConcurrencyCap: with MaxConcurrentRequests requests in flight, the
// next is answered 503 overloaded with Retry-After before its body is
// read, while health, readiness and metrics still answer; once one
// finishes, requests are served again.
func TestConcurrencyCap(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxConcurrentRequests = 2 })
	gate := make(chan struct{})
	e.b.gate.Store(&gate)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.do(req{method: "POST", path: "/v1/actions", body: `{"payload":{}}`, ctype: "application/json"})
			if r.status != http.StatusCreated {
				t.Errorf("held create: %d %s", r.status, r.raw)
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.b.entered.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the two creates never reached Apply")
		}
		time.Sleep(time.Millisecond)
	}
	body := &readTracker{r: strings.NewReader(`{"payload":{}}`)}
	hr := httptest.NewRequest("POST", "/v1/actions", body)
	hr.Header.Set("client-id", e.clientID)
	hr.Header.Set("client-secret", e.secret)
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, hr)
	r := decodeResp(t, w.Code, w.Header(), w.Body.Bytes())
	expect(t, r, http.StatusServiceUnavailable, CodeOverloaded)
	if r.header.Get("Retry-After") != "1" || body.read.Load() {
		t.Fatalf("overloaded: Retry-After %q, body read %v", r.header.Get("Retry-After"), body.read.Load())
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if r := e.do(req{method: "GET", path: p}); r.status != http.StatusOK {
			t.Fatalf("%s under the cap: %d", p, r.status)
		}
	}
	e.b.gate.Store(nil)
	close(gate)
	wg.Wait()
	expect(t, e.do(req{method: "POST", path: "/v1/actions", body: `{"payload":{}}`, ctype: "application/json"}), http.StatusCreated, "")
	if n := e.s.inflight.n.Load(); n != 0 {
		t.Fatalf("%d slots still taken", n)
	}
}

// TestBodyDeadline: a body trickled a byte at a time is cut off at the
// deadline with 408 request_timeout, through the middleware's writers; a
// body read in time lifts the deadline, so the request's context lives on.
func TestBodyDeadline(t *testing.T) {
	e := newEnv(t, nil)
	const d = 300 * time.Millisecond
	survived := make(chan bool, 1)
	h := e.s.middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		done := bodyDeadline(w, r, d)
		body, err := io.ReadAll(r.Body)
		done(err)
		if bodyTimedOut(err) {
			writeBodyTimeout(w, d)
			return
		}
		if err != nil {
			WriteError(w, errInvalid, err.Error(), nil)
			return
		}
		// As a write waiting in Raft: the context must outlive the deadline.
		select {
		case <-r.Context().Done():
			survived <- false
		case <-time.After(3 * d):
			survived <- true
		}
		WriteJSON(w, http.StatusOK, map[string]int{"bytes": len(body)})
	}))
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close) // after rawRoundTrip's connections close

	trickle := make(chan byte)
	stopTrickle := make(chan struct{})
	go func() {
		defer close(trickle)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopTrickle:
				return
			case <-tick.C:
				select {
				case trickle <- 'x':
				case <-stopTrickle:
					return
				}
			}
		}
	}()
	start := time.Now()
	resp := rawRoundTrip(t, ts.Listener.Addr().String(), "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", trickle)
	close(stopTrickle)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := decodeResp(t, resp.StatusCode, resp.Header, raw)
	expect(t, got, http.StatusRequestTimeout, CodeRequestTimeout)
	if el := time.Since(start); el > 5*d {
		t.Fatalf("trickled body held the request %v, deadline %v", el, d)
	}

	resp = rawRoundTrip(t, ts.Listener.Addr().String(), "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", nil)
	raw, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !<-survived {
		t.Fatalf("a body read in time: %d %s, context survived the deadline: false", resp.StatusCode, raw)
	}
}

// countingReader counts the bytes read from it.
type countingReader struct {
	n    atomic.Int64
	left int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.EOF
	}
	n := int64(len(p))
	if n > c.left {
		n = c.left
	}
	for i := range p[:n] {
		p[i] = 'a'
	}
	c.left -= n
	c.n.Add(n)
	return int(n), nil
}

// TestAnonymousBodyIsNotRead: a write without valid credentials is
// answered 401 before a byte of its body is read, so anonymous 16 MiB CSV
// bodies cost a node nothing (they were buffered, and forwarded, before).
func TestAnonymousBodyIsNotRead(t *testing.T) {
	e := newEnv(t, nil)
	for _, hdr := range []map[string]string{
		{},
		{"client-id": e.clientID, "client-secret": "sec_wrong"},
		{"client-id": "cl_nobody", "client-secret": "sec_x"},
	} {
		body := &countingReader{left: 16 << 20}
		r := httptest.NewRequest("POST", "/v1/actions", body)
		r.Header.Set("Content-Type", "text/csv")
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, r)
		if w.Code != http.StatusUnauthorized {
			t.Fatalf("%v: status %d %s, want 401", hdr, w.Code, w.Body)
		}
		if got := body.n.Load(); got != 0 {
			t.Fatalf("%v: %d bytes of the body were read before the 401", hdr, got)
		}
	}
}
