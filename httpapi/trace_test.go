package httpapi

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for the server's concurrent logging.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A valid W3C traceparent is logged with the request's access log line and
// handed to the backend with the write (which carries it to the leader);
// an invalid one is ignored, never an error.
func TestTraceparentLoggedAndCarried(t *testing.T) {
	var logs lockedBuffer
	e := newEnv(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		c.AccessLog = true
	})
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r := e.do(req{method: "POST", path: "/v1/actions", body: `{"payload":{"a":1}}`, ctype: jsonCT,
		hdr: map[string]string{"Traceparent": tp, "X-Request-Id": "traced-1"}})
	expect(t, r, 201, "")
	if got, _ := e.b.traceparent.Load().(string); got != tp {
		t.Errorf("traceparent handed to the backend = %q, want %q", got, tp)
	}
	line := logLine(t, logs.String(), "request_id=traced-1")
	if !strings.Contains(line, "traceparent="+tp) {
		t.Errorf("access log line lacks the traceparent: %s", line)
	}

	for i, bad := range []string{"garbage", strings.ToUpper(tp), "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
		rid := "untraced-" + string(rune('a'+i))
		r := e.do(req{method: "POST", path: "/v1/actions", body: `{"payload":{"a":1}}`, ctype: jsonCT,
			hdr: map[string]string{"Traceparent": bad, "X-Request-Id": rid}})
		expect(t, r, 201, "")
		if got, _ := e.b.traceparent.Load().(string); got != "" {
			t.Errorf("invalid traceparent %q handed to the backend as %q", bad, got)
		}
		if line := logLine(t, logs.String(), "request_id="+rid); strings.Contains(line, "traceparent") {
			t.Errorf("invalid traceparent %q logged: %s", bad, line)
		}
	}
}

// logLine returns the one access log line holding marker.
func logLine(t *testing.T, logs, marker string) string {
	t.Helper()
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, marker) && strings.Contains(l, `msg="http request"`) {
			return l
		}
	}
	t.Fatalf("no access log line with %s in:\n%s", marker, logs)
	return ""
}

// A made-up method is counted as "other": one series per method a client
// invents would grow the node's memory and every scrape without bound.
func TestMetricsMethodLabelBounded(t *testing.T) {
	e := newEnv(t, nil)
	for _, m := range []string{"FOO", "BAR1", "PURGE"} {
		expect(t, e.do(req{method: m, path: "/v1/actions", noAuth: true}), 405, "method_not_allowed")
	}
	r := e.do(req{method: "GET", path: "/metrics", noAuth: true})
	for _, want := range []string{
		`exactonce_http_requests_total{code="405",method="other",route="unmatched"} 3`,
		`exactonce_http_request_duration_seconds_count{code="405",method="other",route="unmatched"} 3`,
	} {
		if !strings.Contains(string(r.raw), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, m := range []string{"FOO", "BAR1", "PURGE"} {
		if strings.Contains(string(r.raw), `method="`+m+`"`) {
			t.Errorf("metrics have a series for method %s", m)
		}
	}
}

// Writes are counted by the node that answered them: each create once,
// a cancel once however often it is repeated, replays never.
func TestWriteCounters(t *testing.T) {
	e := newEnv(t, nil)
	id := e.create(`{"payload":{"a":1}}`)
	idem := map[string]string{"Idempotency-Key": "create-once"}
	for range 2 { // the second is a replay
		expect(t, e.do(req{method: "POST", path: "/v1/actions", body: `{"payload":{"b":2}}`, ctype: jsonCT, hdr: idem}), 201, "")
	}
	for range 2 { // canceling again answers 200 and changes nothing
		expect(t, e.do(req{method: "DELETE", path: "/v1/actions/" + id}), 200, "")
		e.clock.Advance(time.Second)
	}
	r := e.do(req{method: "GET", path: "/metrics", noAuth: true})
	for _, want := range []string{
		"exactonce_actions_created_total 2\n",
		"exactonce_actions_canceled_total 1\n",
	} {
		if !strings.Contains(string(r.raw), want) {
			t.Errorf("metrics lack %q", strings.TrimSpace(want))
		}
	}
}
