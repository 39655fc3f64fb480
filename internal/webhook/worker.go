package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// worker delivers one endpoint's events, one attempt at a time, in order.
type worker struct {
	e      *Engine
	id     string
	ctx    context.Context
	cancel context.CancelFunc
	// wake is signalled by Notify (buffer of one: a pending wake is enough).
	wake chan struct{}
	// endpoint holds the URL and secrets of the next attempt.
	endpoint atomic.Pointer[Endpoint]

	// mu guards state, queue and the fields metrics read from another
	// goroutine.
	mu    sync.Mutex
	state State
	// queue holds events read from the Source and not yet delivered.
	queue []Event
}

func newWorker(e *Engine, ep Endpoint) *worker {
	ctx, cancel := context.WithCancel(e.runCtx)
	w := &worker{e: e, id: ep.ID, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), state: ep.State}
	w.endpoint.Store(&ep)
	return w
}

// setEndpoint hands a new URL or secrets to the next attempt.
func (w *worker) setEndpoint(ep Endpoint) { w.endpoint.Store(&ep) }

// stateSnapshot returns the worker's current State.
func (w *worker) stateSnapshot() State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state
}

// backlog returns the events read and not delivered, and the oldest one's
// creation time (zero when there is none).
func (w *worker) backlog() (int, time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return 0, time.Time{}, w.state.Failures > 0
	}
	return len(w.queue), w.queue[0].CreatedAt, w.state.Failures > 0
}

// run is the worker's loop: read events, deliver the first when it is due,
// record the outcome, and stop when the context ends or the endpoint is
// disabled.
func (w *worker) run() {
	defer w.cancel()
	log := w.e.log.With("webhook", w.id)
	for w.ctx.Err() == nil {
		w.mu.Lock()
		empty := len(w.queue) == 0
		cursor := w.state.Cursor
		w.mu.Unlock()
		if empty {
			evs, err := w.e.cfg.Source.EventsAfter(w.ctx, w.id, cursor, w.e.cfg.ReadAhead)
			if err != nil {
				if w.ctx.Err() == nil {
					log.Warn("webhook: read events", "err", err)
				}
				w.sleep(w.e.cfg.PollInterval, true)
				continue
			}
			if len(evs) == 0 {
				w.sleep(w.e.cfg.PollInterval, true)
				continue
			}
			w.mu.Lock()
			w.queue = evs
			w.mu.Unlock()
		}

		w.mu.Lock()
		ev, state := w.queue[0], w.state
		w.mu.Unlock()
		if wait := state.NextAttemptAt.Sub(w.e.cfg.Clock.Now()); wait > 0 {
			if !w.sleep(wait, false) {
				return
			}
		}

		a, retryAfter := w.attempt(ev)
		if w.ctx.Err() != nil {
			// Leadership ended during the attempt: its outcome is not
			// recorded, and the next leader attempts the event again
			// (same webhook-id).
			return
		}
		w.e.metrics.attempt(a, ev)
		next := w.e.nextState(state, ev, a, retryAfter)
		if !w.record(log, a, next) {
			return
		}
		w.mu.Lock()
		w.state = next
		if a.Result == ResultDelivered {
			w.queue = w.queue[1:]
		}
		w.mu.Unlock()
		if next.Disabled {
			w.e.metrics.disabled.Inc()
			log.Warn("webhook: endpoint disabled", "failing_since", next.FailingSince,
				"failures", next.Failures, "last_error", a.Error)
			w.e.workerStopped(w)
			return
		}
	}
}

// nextState is the State after attempt a of ev from state.
func (e *Engine) nextState(state State, ev Event, a Attempt, retryAfter time.Duration) State {
	next := state
	if a.Result == ResultDelivered {
		next.Cursor = ev.ID
		next.Failures = 0
		next.FailingSince = time.Time{}
		next.NextAttemptAt = time.Time{}
		return next
	}
	next.Failures++
	if next.FailingSince.IsZero() {
		next.FailingSince = a.Time
	}
	now := e.cfg.Clock.Now()
	// 410 Gone: the receiver says it wants nothing more (Standard
	// Webhooks asks senders to disable such an endpoint).
	if a.Status == http.StatusGone || now.Sub(next.FailingSince) >= e.cfg.DisableAfter {
		next.Disabled = true
		next.NextAttemptAt = time.Time{}
		return next
	}
	wait := max(e.backoff(next.Failures), min(retryAfter, e.cfg.RetryMax))
	next.NextAttemptAt = now.Add(wait)
	return next
}

// record stores the attempt and the next state, retrying until it
// succeeds; false when the context ended first.
func (w *worker) record(log *slog.Logger, a Attempt, next State) bool {
	for i := 1; ; i++ {
		err := w.e.cfg.Progress.Record(w.ctx, w.id, a, next)
		if err == nil {
			return true
		}
		if w.ctx.Err() != nil {
			return false
		}
		log.Warn("webhook: record attempt", "event", a.EventID, "try", i, "err", err)
		if !w.sleep(w.e.backoff(i), false) {
			return false
		}
	}
}

// sleep waits d on the engine's clock; wakeable also returns early on a
// Notify. It returns false when the context ended.
func (w *worker) sleep(d time.Duration, wakeable bool) bool {
	t := w.e.cfg.Clock.NewTimer(d)
	defer t.Stop()
	var wake chan struct{}
	if wakeable {
		wake = w.wake
	}
	select {
	case <-w.ctx.Done():
		return false
	case <-t.C():
	case <-wake:
	}
	return true
}

// attempt makes one delivery attempt of ev; the duration is the receiver's
// Retry-After, when it sent one with a 429 or 503.
func (w *worker) attempt(ev Event) (Attempt, time.Duration) {
	ep := w.endpoint.Load()
	cfg := &w.e.cfg
	a := Attempt{EventID: ev.ID, Time: cfg.Clock.Now()}
	fail := func(r Result, err error) (Attempt, time.Duration) {
		a.Result, a.Error = r, err.Error()
		return a, 0
	}
	u, err := cfg.Policy.CheckURL(ep.URL)
	if err != nil {
		return fail(ResultRefused, err)
	}
	sig, err := Sign(ev.ID, a.Time, ev.Body, ep.Secrets...)
	if err != nil {
		return fail(ResultRefused, err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(cfg.Policy.withDialTarget(w.ctx, u), cfg.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(ev.Body))
	if err != nil {
		return fail(ResultRefused, fmt.Errorf("%w: %v", ErrInvalidURL, err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(HeaderID, ev.ID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(a.Time.Unix(), 10))
	req.Header.Set(HeaderSignature, sig)

	resp, err := w.e.client.Do(req)
	if err != nil {
		a.Duration = time.Since(start)
		return fail(classify(ctx, err), err)
	}
	// The answer's body is read (bounded) so that the connection can be
	// reused, and because a 2xx counts only once the answer is complete
	// within the timeout.
	head, readErr := readBounded(resp.Body, cfg.MaxResponseBytes)
	_ = resp.Body.Close()
	a.Duration = time.Since(start)
	a.Status = resp.StatusCode
	switch {
	case readErr != nil:
		return fail(classify(ctx, readErr), fmt.Errorf("HTTP %d, reading the body: %w", resp.StatusCode, readErr))
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		a.Result = ResultDelivered
		return a, 0
	}
	a.Result = ResultHTTPError
	a.Error = "HTTP " + strconv.Itoa(resp.StatusCode)
	if head != "" {
		a.Error += ": " + head
	}
	var retryAfter time.Duration
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), cfg.Clock.Now())
	}
	return a, retryAfter
}

// errorSnippetBytes is how much of a failed answer's body the delivery log
// keeps.
const errorSnippetBytes = 200

// readBounded reads at most limit bytes of body and returns the start of
// it, printable, for the delivery log.
func readBounded(body io.Reader, limit int64) (string, error) {
	var head bytes.Buffer
	_, err := io.Copy(io.Discard, io.TeeReader(io.LimitReader(body, limit), &limitedWriter{&head, errorSnippetBytes}))
	return printable(head.String()), err
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	buf *bytes.Buffer
	n   int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if room := l.n - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// printable keeps a body snippet on one line of printable text.
func printable(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == '\uFFFD' {
			return ' '
		}
		return r
	}, s))
}

// classify names the failure of an exchange.
func classify(ctx context.Context, err error) Result {
	switch {
	case errors.Is(err, ErrDestinationNotAllowed):
		return ResultRefused
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return ResultTimeout
	default:
		return ResultNetwork
	}
}

// parseRetryAfter reads a Retry-After header (seconds or an HTTP date);
// 0 when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		// Capped before the multiplication can overflow; the caller caps
		// it again at RetryMax.
		return time.Duration(min(s, 7*24*3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
