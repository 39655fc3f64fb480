package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/openapitest"
	"github.com/exactonce/exactonce/internal/secure"
	"github.com/exactonce/exactonce/internal/traceparent"
)

// t0 is the fake clock's start.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeClock is a settable clock shared by the backend (leader stamps) and
// the server (read "now").
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testBackend is a single-node "cluster": a real FSM applied under a mutex.
type testBackend struct {
	mu      sync.Mutex
	f       *fsm.FSM
	clock   *fakeClock
	index   uint64
	applies atomic.Int64

	leader atomic.Bool
	// leaderRead serves ReadOnLeader (nil: unavailable).
	leaderRead atomic.Pointer[func(context.Context, []byte) ([]byte, error)]
	// applyErr, when set, is returned by Apply instead of applying.
	applyErr atomic.Value // error wrapper
	// barrierErr, when set, is returned by ReadBarrier.
	barrierErr atomic.Value
	ready      atomic.Bool
	// lagging makes ReadBarrierWithin answer cluster.ErrLagging.
	lagging atomic.Bool
	// gate, when set, holds every Apply until it is closed; entered
	// counts the Applies that reached it.
	gate    atomic.Pointer[chan struct{}]
	entered atomic.Int64
	// traceparent is the traceparent the last Apply's context carried.
	traceparent atomic.Value // string
}

type errBox struct{ err error }

func newTestBackend(t testing.TB, clock *fakeClock) *testBackend {
	t.Helper()
	f, err := fsm.Open(fsm.Options{Path: filepath.Join(t.TempDir(), "state.db"), NoSync: true})
	if err != nil {
		t.Fatalf("open fsm: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	b := &testBackend{f: f, clock: clock}
	b.leader.Store(true)
	b.ready.Store(true)
	return b
}

func (b *testBackend) Apply(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	b.traceparent.Store(traceparent.FromContext(ctx))
	if e, ok := b.applyErr.Load().(errBox); ok && e.err != nil {
		return nil, e.err
	}
	if g := b.gate.Load(); g != nil {
		b.entered.Add(1)
		<-*g
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	cmd.Time = b.clock.Now().UnixMilli()
	data, err := fsm.EncodeCommand(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	b.index++
	b.applies.Add(1)
	out := b.f.ApplyBatch([]*raft.Log{{Index: b.index, Term: 1, Type: raft.LogCommand, Data: data}})
	res, ok := out[0].(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("apply: %v", out[0])
	}
	return res, nil
}

func (b *testBackend) ReadBarrier(ctx context.Context) error {
	if e, ok := b.barrierErr.Load().(errBox); ok && e.err != nil {
		return e.err
	}
	return nil
}
func (b *testBackend) ReadBarrierWithin(ctx context.Context, _ time.Duration) error {
	if b.lagging.Load() {
		return fmt.Errorf("test: %w", cluster.ErrLagging)
	}
	return b.ReadBarrier(ctx)
}
func (b *testBackend) FSM() *fsm.FSM  { return b.f }
func (b *testBackend) IsLeader() bool { return b.leader.Load() }
func (b *testBackend) ReadOnLeader(ctx context.Context, q []byte) ([]byte, error) {
	fn := b.leaderRead.Load()
	if fn == nil {
		return nil, fmt.Errorf("test: no leader: %w", cluster.ErrUnavailable)
	}
	return (*fn)(ctx, q)
}
func (b *testBackend) Ready() bool { return b.ready.Load() }

// env is a server over a test backend with one client and an admin token.
type env struct {
	t     testing.TB
	clock *fakeClock
	b     *testBackend
	s     *Server
	// h serves through s, checking every exchange against the OpenAPI
	// document (internal/openapitest): tests send requests to h.
	h        http.Handler
	keys     *secure.Keys
	reg      *prometheus.Registry
	clientID string
	secret   string
	admin    string
}

// testKey is a fixed cluster key (tests only).
var testKey = bytes.Repeat([]byte{7}, 32)

func newEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	clock := &fakeClock{now: t0}
	b := newTestBackend(t, clock)
	keys, err := secure.NewKeys(testKey)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, clock: clock, b: b, keys: keys, reg: prometheus.NewRegistry(), admin: "admin-token-for-tests"}
	cfg := Config{
		Keys:           keys,
		AdminTokenHash: secure.HashSecret(e.admin),
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry:       e.reg,
		Gatherer:       e.reg,
		Now:            clock.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg, b)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	e.serve(s, cfg.Extra == nil)
	e.clientID, e.secret = e.newClient("tenant-a")
	return e
}

// serve makes s the env's server. With check, requests go through the
// OpenAPI checker; a test that mounts extra routes mounts fakes of its own,
// which the document does not describe, and is not checked.
func (e *env) serve(s *Server, check bool) {
	e.s, e.h = s, s
	if check {
		e.h = openapitest.New(e.t).Handler(e.t, s)
	}
}

// newClient creates a client directly through the backend.
func (e *env) newClient(name string) (string, string) {
	e.t.Helper()
	id, secret := secure.NewClientID(), secure.NewSecret()
	res, err := e.b.Apply(context.Background(), &fsm.Command{Type: fsm.CmdCreateClient,
		CreateClient: &fsm.CreateClient{ID: id, Name: name, SecretHash: secure.HashSecret(secret)}})
	if err != nil || res.Code != fsm.CodeOK {
		e.t.Fatalf("create client: %v %+v", err, res)
	}
	return id, secret
}

// resp is a recorded response.
type resp struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (r resp) str(k string) string {
	s, _ := r.body[k].(string)
	return s
}

// req describes a request; auth adds the env's client credentials.
type req struct {
	method, path string
	body         string
	ctype        string
	hdr          map[string]string
	noAuth       bool
	remote       string    // RemoteAddr, default httptest's
	client       [2]string // overrides the env's client when set
}

func (e *env) do(q req) resp {
	e.t.Helper()
	return doHandler(e.t, e.h, q, e.clientID, e.secret)
}

func doHandler(t testing.TB, h http.Handler, q req, clientID, secret string) resp {
	t.Helper()
	var body io.Reader
	if q.body != "" {
		body = bytes.NewReader([]byte(q.body))
	}
	r := httptest.NewRequest(q.method, q.path, body)
	if q.remote != "" {
		r.RemoteAddr = q.remote
	}
	if q.ctype != "" {
		r.Header.Set("Content-Type", q.ctype)
	}
	if !q.noAuth {
		id, sec := clientID, secret
		if q.client[0] != "" {
			id, sec = q.client[0], q.client[1]
		}
		r.Header.Set("client-id", id)
		r.Header.Set("client-secret", sec)
	}
	for k, v := range q.hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return decodeResp(t, w.Code, w.Header(), w.Body.Bytes())
}

func decodeResp(t testing.TB, status int, h http.Header, raw []byte) resp {
	t.Helper()
	out := resp{status: status, header: h, raw: raw}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			t.Fatalf("response is not JSON (%d): %q", status, raw)
		}
	}
	return out
}

// expect fails unless the response has the status and (if code != "") error code.
func expect(t testing.TB, r resp, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.raw)
	}
	if code != "" && r.str("error") != code {
		t.Fatalf("error %q, want %q; body %s", r.str("error"), code, r.raw)
	}
	if code != "" && r.str("message") == "" {
		t.Fatalf("error body without message: %s", r.raw)
	}
}

// stateHash is the FSM's state hash.
func (e *env) stateHash() string {
	e.t.Helper()
	h, err := e.b.f.StateHash()
	if err != nil {
		e.t.Fatalf("state hash: %v", err)
	}
	return fmt.Sprintf("%x", h)
}

// create makes an action through the API and returns its id.
func (e *env) create(body string) string {
	e.t.Helper()
	r := e.do(req{method: "POST", path: "/v1/actions", body: body, ctype: "application/json"})
	expect(e.t, r, http.StatusCreated, "")
	return r.str("actionId")
}

func (e *env) consume(id, body string) resp {
	e.t.Helper()
	return e.do(req{method: "POST", path: "/v1/actions/" + id + "/consume", body: body, ctype: "application/json"})
}

// waitFor polls cond every millisecond until it holds, failing the test
// after 5 s.
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
