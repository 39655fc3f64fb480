package webhook

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestDeliveryToLoopbackReceivers runs four real receivers side by side:
// one answering 200, one answering 500 for its first requests, one that
// hangs and one that closes the connection. Every event reaches the two
// healthy ones in order, the flaky one after it recovers, repeats carry the
// same webhook-id (the receivers check it against the body), and the
// hanging one delays nobody.
func TestDeliveryToLoopbackReceivers(t *testing.T) {
	now := time.Now
	ok := newReceiver(t, now, status(http.StatusOK))
	const flakyFailures = 4
	flaky := newReceiver(t, now, func(n int, w http.ResponseWriter, r *http.Request) int {
		if n < flakyFailures {
			w.WriteHeader(http.StatusInternalServerError)
			return http.StatusInternalServerError
		}
		w.WriteHeader(http.StatusNoContent)
		return http.StatusNoContent
	})
	var hang *receiver
	hang = newReceiver(t, now, func(int, http.ResponseWriter, *http.Request) int {
		<-hang.done // until the test ends; the engine gives up first
		return 0
	})
	closer := newReceiver(t, now, func(_ int, w http.ResponseWriter, _ *http.Request) int {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return 0
	})

	src, progress := NewMemorySource(), NewMemoryProgress()
	events := makeEvents("", 25, time.Now())
	src.Append(events...)
	const attemptTimeout = 5 * time.Second
	e, err := New(Config{
		Source: src, Progress: progress, Policy: loopbackPolicy(t), Logger: testLogger(t),
		Rand: seededRand(t), AttemptTimeout: attemptTimeout,
		RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, ReadAhead: 7,
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := e.Register(reg); err != nil {
		t.Fatal(err)
	}
	var eps []Endpoint
	for _, rc := range []*receiver{ok, flaky, hang, closer} {
		eps = append(eps, Endpoint{ID: "wh_" + strings.TrimPrefix(rc.srv.URL, "http://127.0.0.1:"), URL: rc.srv.URL + "/hook", Secrets: []Secret{rc.secret}})
	}
	okID, hangID, closerID := eps[0].ID, eps[2].ID, eps[3].ID
	e.SetEndpoints(eps)
	start := time.Now()
	runEngine(t, e)

	want := eventIDs(events)
	waitFor(t, 20*time.Second, "the healthy receivers got every event", func() bool {
		return len(ok.accepted()) >= len(want) && len(flaky.accepted()) >= len(want)
	})
	okDone := time.Now()
	for name, rc := range map[string]*receiver{"ok": ok, "flaky": flaky} {
		if got := rc.accepted(); !slices.Equal(got, want) {
			t.Errorf("%s receiver accepted %v, want every event once in order %v", name, got, want)
		}
	}
	// The flaky receiver's failed requests were all of the first event,
	// repeated with the same id until it recovered.
	for i, d := range flaky.deliveries()[:flakyFailures] {
		if d.id != want[0] || d.status != http.StatusInternalServerError {
			t.Errorf("flaky request %d: %s answered %d, want %s answered 500", i, d.id, d.status, want[0])
		}
	}
	// Nobody waited for the hanging endpoint: both healthy receivers were
	// done before its first attempt could even time out.
	if okDone.Sub(start) >= attemptTimeout {
		t.Errorf("healthy receivers took %s, not less than one attempt timeout (%s): something waited for the hanging endpoint", okDone.Sub(start), attemptTimeout)
	}
	waitFor(t, 2*attemptTimeout+5*time.Second, "the hanging endpoint's attempt timed out and was recorded", func() bool {
		return len(progress.Attempts(hangID)) > 0
	})
	for _, a := range progress.Attempts(hangID) {
		if a.Result != ResultTimeout || a.EventID != want[0] || a.Duration < attemptTimeout {
			t.Errorf("hanging endpoint attempt %+v, want a timeout of %s after %s", a, want[0], attemptTimeout)
		}
	}
	waitFor(t, 10*time.Second, "the closing endpoint's attempts were recorded", func() bool {
		return len(progress.Attempts(closerID)) >= 3
	})
	for _, a := range progress.Attempts(closerID) {
		if a.Result != ResultNetwork || a.EventID != want[0] || a.Status != 0 {
			t.Errorf("closing endpoint attempt %+v, want a network failure of %s", a, want[0])
		}
	}
	for _, d := range append(hang.deliveries(), closer.deliveries()...) {
		if d.id != want[0] {
			t.Errorf("a failing endpoint got %s before %s was delivered", d.id, want[0])
		}
	}
	// The recorded progress is what a new leader would resume from.
	if s := progress.State(okID); s.Cursor != want[len(want)-1] || s.Failures != 0 {
		t.Errorf("ok endpoint state %+v, want cursor %s and no failures", s, want[len(want)-1])
	}
	if s := progress.State(closerID); s.Cursor != "" || s.Failures < 3 || s.FailingSince.IsZero() || s.Disabled {
		t.Errorf("closing endpoint state %+v, want failing since its first attempt, not disabled", s)
	}
	if got := testutil.ToFloat64(e.metrics.attempts.WithLabelValues(string(ResultDelivered))); got != float64(2*len(want)) {
		t.Errorf("delivered attempts metric = %v, want %d", got, 2*len(want))
	}
	if got := testutil.ToFloat64(e.metrics.attempts.WithLabelValues(string(ResultHTTPError))); got != flakyFailures {
		t.Errorf("http_error attempts metric = %v, want %d", got, flakyFailures)
	}
	if n, err := testutil.GatherAndCount(reg, "exactonce_webhook_backlog_events", "exactonce_webhook_endpoints",
		"exactonce_webhook_delivery_latency_seconds"); err != nil || n != 5 {
		t.Errorf("gathered %d series (%v), want 5", n, err)
	}
	// The two failing endpoints each hold 7 events read ahead.
	if got := gaugeValue(t, reg, "exactonce_webhook_backlog_events"); got != 14 {
		t.Errorf("backlog = %v, want 14 (two failing endpoints, 7 read ahead each)", got)
	}
}

// gaugeValue returns the value of the unlabelled gauge name in reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestFailingEndpointDisabledAfterWindow walks three days of retries on a
// fake clock against a receiver that always answers 500: the endpoint is
// disabled by the first failure at or after 72 h of failing, not before,
// the backoff never exceeds its ceiling, and nothing is sent after.
func TestFailingEndpointDisabledAfterWindow(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	rc := newReceiver(t, clock.Now, status(http.StatusInternalServerError))
	src, progress := NewMemorySource(), NewMemoryProgress()
	src.Append(makeEvents("", 3, clock.Now())...)
	e, err := New(Config{Source: src, Progress: progress, Policy: loopbackPolicy(t), Logger: testLogger(t),
		Clock: clock, Rand: seededRand(t)})
	if err != nil {
		t.Fatal(err)
	}
	e.SetEndpoints([]Endpoint{{ID: "wh_dead", URL: rc.srv.URL, Secrets: []Secret{rc.secret}}})
	runEngine(t, e)

	waitFor(t, 30*time.Second, "the endpoint was disabled", func() bool {
		if progress.State("wh_dead").Disabled {
			return true
		}
		if clock.pending() > 0 {
			clock.advanceToNext()
		}
		return false
	})
	waitFor(t, 5*time.Second, "the disabled endpoint's worker stopped", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.workers["wh_dead"] == nil
	})
	attempts := progress.Attempts("wh_dead")
	s := progress.State("wh_dead")
	last := attempts[len(attempts)-1]
	if since := last.Time.Sub(s.FailingSince); since < DefaultDisableAfter {
		t.Fatalf("disabled after failing for %s, before the %s window", since, DefaultDisableAfter)
	}
	if prev := attempts[len(attempts)-2]; prev.Time.Sub(s.FailingSince) >= DefaultDisableAfter {
		t.Fatalf("the attempt before the disabling one was already %s into the window", prev.Time.Sub(s.FailingSince))
	}
	if !s.FailingSince.Equal(attempts[0].Time) || s.Failures != len(attempts) || s.Cursor != "" {
		t.Fatalf("state %+v after %d attempts from %s", s, len(attempts), attempts[0].Time)
	}
	for i := 1; i < len(attempts); i++ {
		gap := attempts[i].Time.Sub(attempts[i-1].Time)
		ceiling := min(DefaultRetryBase<<min(i-1, 30), DefaultRetryMax)
		if gap >= ceiling || attempts[i].EventID != attempts[0].EventID || attempts[i].Status != http.StatusInternalServerError {
			t.Fatalf("attempt %d: %+v, %s after the previous (ceiling %s)", i, attempts[i], gap, ceiling)
		}
	}
	t.Logf("%d attempts over %s", len(attempts), last.Time.Sub(attempts[0].Time))
	if got := len(rc.deliveries()); got != len(attempts) {
		t.Fatalf("receiver got %d requests, %d attempts recorded", got, len(attempts))
	}
	// Retried for at least 24 h: the window is longer, and the endpoint
	// was still being retried a day in.
	if !slices.ContainsFunc(attempts, func(a Attempt) bool { return a.Time.Sub(s.FailingSince) > 24*time.Hour }) {
		t.Fatal("no retry after 24 h")
	}
	if got := testutil.ToFloat64(e.metrics.disabled); got != 1 {
		t.Fatalf("disabled metric = %v, want 1", got)
	}
}

// TestGoneDisablesAtOnce: a 410 answer disables the endpoint at once.
func TestGoneDisablesAtOnce(t *testing.T) {
	rc := newReceiver(t, time.Now, status(http.StatusGone))
	src, progress := NewMemorySource(), NewMemoryProgress()
	src.Append(makeEvents("", 2, time.Now())...)
	e, err := New(Config{Source: src, Progress: progress, Policy: loopbackPolicy(t), Logger: testLogger(t), Rand: seededRand(t)})
	if err != nil {
		t.Fatal(err)
	}
	e.SetEndpoints([]Endpoint{{ID: "wh_gone", URL: rc.srv.URL, Secrets: []Secret{rc.secret}}})
	runEngine(t, e)
	waitFor(t, 10*time.Second, "the endpoint was disabled", func() bool { return progress.State("wh_gone").Disabled })
	if n := len(rc.deliveries()); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

// TestNewLeaderResumesFromRecordedState: the first engine (a leader) loses
// its leadership while recording the delivery of the fifth event, after the
// receiver answered 200. A second engine, started from the recorded state,
// delivers that event again with the same webhook-id and then the rest:
// nothing is lost and the only repeat is the unrecorded event.
func TestNewLeaderResumesFromRecordedState(t *testing.T) {
	rc := newReceiver(t, time.Now, status(http.StatusOK))
	src, progress := NewMemorySource(), NewMemoryProgress()
	events := makeEvents("", 12, time.Now())
	src.Append(events...)
	want := eventIDs(events)
	ep := Endpoint{ID: "wh_1", URL: rc.srv.URL, Secrets: []Secret{rc.secret}}

	ctx, loseLeadership := context.WithCancel(context.Background())
	progress.Fail = func(_ string, a Attempt) error {
		if a.EventID == want[4] {
			loseLeadership()
			return errors.New("not the leader")
		}
		return nil
	}
	first, err := New(Config{Source: src, Progress: progress, Policy: loopbackPolicy(t), Logger: testLogger(t), Rand: seededRand(t)})
	if err != nil {
		t.Fatal(err)
	}
	first.SetEndpoints([]Endpoint{ep})
	if err := first.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := progress.State("wh_1").Cursor; got != want[3] {
		t.Fatalf("recorded cursor %q, want %q", got, want[3])
	}
	if got := rc.accepted(); !slices.Equal(got, want[:5]) {
		t.Fatalf("before the leader change the receiver accepted %v, want %v", got, want[:5])
	}

	progress.Fail = nil
	second, err := New(Config{Source: src, Progress: progress, Policy: loopbackPolicy(t), Logger: testLogger(t), Rand: seededRand(t)})
	if err != nil {
		t.Fatal(err)
	}
	ep.State = progress.State("wh_1")
	second.SetEndpoints([]Endpoint{ep})
	runEngine(t, second)
	waitFor(t, 10*time.Second, "every event was delivered", func() bool { return progress.State("wh_1").Cursor == want[len(want)-1] })
	wantSeen := append(slices.Clone(want[:5]), want[4:]...)
	if got := rc.accepted(); !slices.Equal(got, wantSeen) {
		t.Fatalf("receiver accepted %v, want %v (the unrecorded event once more, same id)", got, wantSeen)
	}
}

// TestRecordRetriedBeforeNextEvent: while recording a delivery fails, the
// engine retries the record, does not deliver that event again, and does
// not go on to the next event.
func TestRecordRetriedBeforeNextEvent(t *testing.T) {
	rc := newReceiver(t, time.Now, status(http.StatusOK))
	src, progress := NewMemorySource(), NewMemoryProgress()
	events := makeEvents("", 3, time.Now())
	src.Append(events...)
	var failures atomic.Int32
	progress.Fail = func(_ string, a Attempt) error {
		if a.EventID == events[0].ID && failures.Add(1) <= 3 {
			if n := len(rc.deliveries()); n != 1 {
				t.Errorf("%d requests while the first delivery is unrecorded, want 1", n)
			}
			return errors.New("replication failed")
		}
		return nil
	}
	e, err := New(Config{Source: src, Progress: progress, Policy: loopbackPolicy(t), Logger: testLogger(t),
		Rand: seededRand(t), RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.SetEndpoints([]Endpoint{{ID: "wh_1", URL: rc.srv.URL, Secrets: []Secret{rc.secret}}})
	runEngine(t, e)
	waitFor(t, 10*time.Second, "every event was delivered", func() bool { return progress.State("wh_1").Cursor == events[2].ID })
	if got := rc.accepted(); !slices.Equal(got, eventIDs(events)) {
		t.Fatalf("receiver accepted %v, want %v", got, eventIDs(events))
	}
}

// TestNotifyWakesIdleWorkers: an event appended after the worker caught up
// is delivered on Notify, long before the poll interval.
func TestNotifyWakesIdleWorkers(t *testing.T) {
	rc := newReceiver(t, time.Now, status(http.StatusOK))
	src, progress := NewMemorySource(), NewMemoryProgress()
	e, err := New(Config{Source: src, Progress: progress, Policy: loopbackPolicy(t), Logger: testLogger(t),
		Rand: seededRand(t), PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e.SetEndpoints([]Endpoint{{ID: "wh_1", URL: rc.srv.URL, Secrets: []Secret{rc.secret}}})
	runEngine(t, e)
	events := makeEvents("", 2, time.Now())
	src.Append(events[0])
	e.Notify()
	waitFor(t, 10*time.Second, "the first event was delivered", func() bool { return len(rc.accepted()) == 1 })
	src.Append(events[1])
	e.Notify()
	waitFor(t, 10*time.Second, "the second event was delivered", func() bool { return len(rc.accepted()) == 2 })
}

// TestSetEndpointsStopsAndUpdates: a rotated secret signs the next attempt
// of a running worker (beside the old one, so that a receiver on either
// secret verifies it); removing an endpoint stops its worker.
func TestSetEndpointsStopsAndUpdates(t *testing.T) {
	next, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	// The receiver verifies every request with the old secret (newReceiver)
	// and accepts only one that the new secret verifies as well.
	rc := newReceiver(t, time.Now, func(n int, w http.ResponseWriter, r *http.Request) int {
		if n == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return http.StatusServiceUnavailable
		}
		body, _ := io.ReadAll(r.Body)
		if specVerify(next.Encode(), r.Header, body, time.Now(), DefaultTolerance) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return http.StatusBadRequest
		}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	})
	src, progress := NewMemorySource(), NewMemoryProgress()
	src.Append(makeEvents("", 1, time.Now())...)
	e, err := New(Config{Source: src, Progress: progress, Policy: loopbackPolicy(t), Logger: testLogger(t),
		Rand: seededRand(t), RetryBase: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ep := Endpoint{ID: "wh_1", URL: rc.srv.URL, Secrets: []Secret{rc.secret}}
	e.SetEndpoints([]Endpoint{ep})
	runEngine(t, e)
	waitFor(t, 10*time.Second, "the first attempt failed", func() bool { return len(progress.Attempts("wh_1")) >= 1 })
	ep.Secrets = []Secret{next, rc.secret}
	e.SetEndpoints([]Endpoint{ep})
	waitFor(t, 10*time.Second, "delivered with the rotated secret", func() bool { return progress.State("wh_1").Cursor != "" })

	e.SetEndpoints(nil)
	waitFor(t, 5*time.Second, "the removed endpoint's worker stopped", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.workers) == 0
	})
}

// TestRedirectNotFollowed: a 3xx is a failed attempt; its target gets
// nothing.
func TestRedirectNotFollowed(t *testing.T) {
	target := newReceiver(t, time.Now, status(http.StatusOK))
	redirect := newReceiver(t, time.Now, func(_ int, w http.ResponseWriter, r *http.Request) int {
		http.Redirect(w, r, target.srv.URL, http.StatusTemporaryRedirect)
		return http.StatusTemporaryRedirect
	})
	src, progress := NewMemorySource(), NewMemoryProgress()
	src.Append(makeEvents("", 1, time.Now())...)
	e, err := New(Config{Source: src, Progress: progress, Policy: loopbackPolicy(t), Logger: testLogger(t), Rand: seededRand(t)})
	if err != nil {
		t.Fatal(err)
	}
	e.SetEndpoints([]Endpoint{{ID: "wh_1", URL: redirect.srv.URL, Secrets: []Secret{redirect.secret}}})
	runEngine(t, e)
	waitFor(t, 10*time.Second, "an attempt was recorded", func() bool { return len(progress.Attempts("wh_1")) > 0 })
	if a := progress.Attempts("wh_1")[0]; a.Result != ResultHTTPError || a.Status != http.StatusTemporaryRedirect {
		t.Fatalf("attempt %+v, want an http_error with status 307", a)
	}
	if n := len(target.deliveries()); n != 0 {
		t.Fatalf("the redirect target got %d requests", n)
	}
}

// TestLoopbackRefusedAtDialTime: with an allow-list naming "localhost" as a
// host name but no network entry, the URL passes its check and the
// connection to 127.0.0.1 is refused when dialed: the receiver never hears
// of the event.
func TestLoopbackRefusedAtDialTime(t *testing.T) {
	rc := newReceiver(t, time.Now, status(http.StatusOK))
	policy, err := NewPolicy([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	url := strings.Replace(rc.srv.URL, "127.0.0.1", "localhost", 1)
	if _, err := policy.CheckURL(url); err != nil {
		t.Fatalf("CheckURL(%s) = %v: the test needs it to pass the URL check", url, err)
	}
	src, progress := NewMemorySource(), NewMemoryProgress()
	src.Append(makeEvents("", 1, time.Now())...)
	e, err := New(Config{Source: src, Progress: progress, Policy: policy, Logger: testLogger(t), Rand: seededRand(t)})
	if err != nil {
		t.Fatal(err)
	}
	e.SetEndpoints([]Endpoint{{ID: "wh_1", URL: url, Secrets: []Secret{rc.secret}}})
	runEngine(t, e)
	waitFor(t, 10*time.Second, "an attempt was recorded", func() bool { return len(progress.Attempts("wh_1")) > 0 })
	a := progress.Attempts("wh_1")[0]
	if a.Result != ResultRefused || !strings.Contains(a.Error, "non-public") {
		t.Fatalf("attempt %+v, want refused for a non-public address", a)
	}
	if n := len(rc.deliveries()); n != 0 {
		t.Fatalf("the loopback receiver got %d requests", n)
	}
}

func TestBackoffFullJitter(t *testing.T) {
	r := seededRand(t)
	base, maxDelay := 5*time.Second, time.Hour
	for failures := 1; failures <= 40; failures++ {
		ceiling := min(base<<min(failures-1, 30), maxDelay)
		var lo, hi time.Duration = ceiling, 0
		for range 200 {
			d := backoffDelay(base, maxDelay, failures, r.Float64())
			if d < 0 || d >= ceiling {
				t.Fatalf("failures %d: delay %s outside [0, %s)", failures, d, ceiling)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		// Full jitter spreads over the whole range.
		if lo > ceiling/10 || hi < ceiling*9/10 {
			t.Fatalf("failures %d: 200 delays in [%s, %s], want spread over [0, %s)", failures, lo, hi, ceiling)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"120":                           2 * time.Minute,
		"-1":                            0,
		"soon":                          0,
		"99999999999999999999":          0,
		"99999999999999999":             7 * 24 * time.Hour,
		"9999999":                       7 * 24 * time.Hour,
		"Mon, 07 Dec 2026 10:05:00 GMT": 5 * time.Minute,
		"Mon, 07 Dec 2026 09:00:00 GMT": 0,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", v, got, want)
		}
	}
}

// TestAnswerBodyReadBounded: a receiver that answers 200 and then streams a
// body without end is delivered once the first MaxResponseBytes are read,
// well before the attempt timeout.
func TestAnswerBodyReadBounded(t *testing.T) {
	var rc *receiver
	rc = newReceiver(t, time.Now, func(_ int, w http.ResponseWriter, r *http.Request) int {
		w.WriteHeader(http.StatusOK)
		chunk := make([]byte, 32<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				return http.StatusOK
			}
			select {
			case <-r.Context().Done():
				return http.StatusOK
			case <-rc.done:
				return http.StatusOK
			default:
			}
		}
	})
	src, progress := NewMemorySource(), NewMemoryProgress()
	src.Append(makeEvents("", 1, time.Now())...)
	const attemptTimeout = 20 * time.Second
	e, err := New(Config{Source: src, Progress: progress, Policy: loopbackPolicy(t), Logger: testLogger(t),
		Rand: seededRand(t), AttemptTimeout: attemptTimeout, MaxResponseBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	e.SetEndpoints([]Endpoint{{ID: "wh_1", URL: rc.srv.URL, Secrets: []Secret{rc.secret}}})
	runEngine(t, e)
	waitFor(t, attemptTimeout/2, "delivered before the attempt timeout", func() bool { return progress.State("wh_1").Cursor != "" })
	if a := progress.Attempts("wh_1")[0]; a.Result != ResultDelivered {
		t.Fatalf("attempt %+v, want delivered", a)
	}
}
