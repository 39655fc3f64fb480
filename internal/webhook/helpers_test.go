package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mathrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock that moves only when the test says so.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c    *fakeClock
	at   time.Time
	ch   chan time.Time
	done bool
}

func newFakeClock(start time.Time) *fakeClock { return &fakeClock{now: start} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.done = true
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.done {
		return false
	}
	t.done = true
	t.c.timers = slices.DeleteFunc(t.c.timers, func(x *fakeTimer) bool { return x == t })
	return true
}

// pending returns the number of timers not fired nor stopped.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// advanceToNext moves the clock to the earliest pending timer and fires it
// (and any other due by then); false when there is none.
func (c *fakeClock) advanceToNext() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return false
	}
	sort.Slice(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
	if c.timers[0].at.After(c.now) {
		c.now = c.timers[0].at
	}
	for len(c.timers) > 0 && !c.timers[0].at.After(c.now) {
		t := c.timers[0]
		c.timers = c.timers[1:]
		t.done = true
		t.ch <- c.now
	}
	return true
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// seededRand returns a seeded random source and logs its seed; the seed
// can be fixed with WEBHOOK_TEST_SEED to replay a run.
func seededRand(t *testing.T) *mathrand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("WEBHOOK_TEST_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (WEBHOOK_TEST_SEED=%d replays it)", seed, seed)
	return mathrand.New(mathrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// testLogger logs to the test at warning level and above.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// delivery is one request a receiver got.
type delivery struct {
	id     string
	body   []byte
	status int // what the receiver answered; 0 when it answered nothing
	at     time.Time
}

// receiver is a webhook endpoint on loopback. Every request is checked
// with the spec verifier (a failure fails the test) and recorded; answer
// decides what it does with the n-th request (0-based).
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret Secret
	now    func() time.Time
	answer func(n int, w http.ResponseWriter, r *http.Request) int

	mu   sync.Mutex
	got  []delivery
	bad  []string
	done chan struct{} // closed when the test ends: releases hanging handlers
}

func newReceiver(t *testing.T, now func() time.Time, answer func(n int, w http.ResponseWriter, r *http.Request) int) *receiver {
	secret, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	rc := &receiver{t: t, secret: secret, now: now, answer: answer, done: make(chan struct{})}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(func() {
		close(rc.done)
		rc.srv.CloseClientConnections()
		rc.srv.Close()
		rc.mu.Lock()
		defer rc.mu.Unlock()
		for _, b := range rc.bad {
			t.Error(b)
		}
	})
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		rc.t.Errorf("%s: read body: %v", rc.srv.URL, err)
	}
	r.Body = io.NopCloser(bytes.NewReader(body)) // for answer to read again
	var problems []string
	rc.mu.Lock()
	secret := rc.secret
	rc.mu.Unlock()
	if err := specVerify(secret.Encode(), r.Header, body, rc.now(), DefaultTolerance); err != nil {
		problems = append(problems, fmt.Sprintf("%s: delivery does not verify: %v", rc.srv.URL, err))
	}
	var ev struct{ ID string }
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID != r.Header.Get(HeaderID) {
		problems = append(problems, fmt.Sprintf("%s: webhook-id %q is not the body's id %q (%v)", rc.srv.URL, r.Header.Get(HeaderID), ev.ID, err))
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		problems = append(problems, fmt.Sprintf("%s: %s with Content-Type %q", rc.srv.URL, r.Method, r.Header.Get("Content-Type")))
	}
	rc.mu.Lock()
	n := len(rc.got)
	rc.got = append(rc.got, delivery{id: r.Header.Get(HeaderID), body: body, at: time.Now()})
	rc.bad = append(rc.bad, problems...)
	rc.mu.Unlock()
	status := rc.answer(n, w, r)
	rc.mu.Lock()
	rc.got[n].status = status
	rc.mu.Unlock()
}

// deliveries returns what the receiver got so far.
func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got)
}

// accepted returns the ids the receiver answered 2xx, in order.
func (rc *receiver) accepted() []string {
	var ids []string
	for _, d := range rc.deliveries() {
		if d.status >= 200 && d.status < 300 {
			ids = append(ids, d.id)
		}
	}
	return ids
}

// status answers with a fixed status.
func status(code int) func(int, http.ResponseWriter, *http.Request) int {
	return func(_ int, w http.ResponseWriter, _ *http.Request) int {
		w.WriteHeader(code)
		return code
	}
}

// makeEvents returns n events with ids evt_<prefix><i>.
func makeEvents(prefix string, n int, at time.Time) []Event {
	evs := make([]Event, n)
	for i := range evs {
		id := fmt.Sprintf("evt_%s%03d", prefix, i)
		evs[i] = Event{
			ID:        id,
			Type:      "action.consumed",
			CreatedAt: at,
			Body:      fmt.Appendf(nil, `{"id":%q,"type":"action.consumed","data":{"actionId":"act_%d"}}`, id, i),
		}
	}
	return evs
}

// eventIDs returns the ids of evs.
func eventIDs(evs []Event) []string {
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	return ids
}

// loopbackPolicy allows the loopback receivers of the tests explicitly.
func loopbackPolicy(t *testing.T) *Policy {
	p, err := NewPolicy([]string{"127.0.0.1/32"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runEngine runs e until the test ends (or the returned cancel is called)
// and waits for it to stop.
func runEngine(t *testing.T, e *Engine) (cancel func()) {
	ctx, cancelCtx := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := e.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	stop := func() {
		cancelCtx()
		<-done
	}
	t.Cleanup(stop)
	return stop
}
