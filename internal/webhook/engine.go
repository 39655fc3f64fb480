package webhook

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"
)

// Event is one event as delivered: its id (the webhook-id of every attempt
// to deliver it), its type, when it happened, and the exact JSON body that
// is sent and signed.
type Event struct {
	// ID is the event's stable id ("evt_..."), the same on every node.
	ID string
	// Type is the event type ("action.consumed", ...).
	Type string
	// CreatedAt is when the event happened (the log entry's time); the
	// delivery latency metric counts from it.
	CreatedAt time.Time
	// Body is the request body, sent and signed byte for byte.
	Body []byte
}

// Source hands out the events to deliver to a webhook.
type Source interface {
	// EventsAfter returns up to limit events for webhookID that follow
	// cursor in the event log's order ("" starts at the oldest kept
	// event), already filtered to the event types the webhook subscribed
	// to. cursor is the id of the last event delivered to the webhook; the
	// source must resume after it even if that event is no longer kept.
	// An empty result means the webhook is caught up.
	EventsAfter(ctx context.Context, webhookID, cursor string, limit int) ([]Event, error)
}

// Result classifies an attempt.
type Result string

// The results of an attempt; every one but ResultDelivered is a failure
// that is retried (or that disables the endpoint).
const (
	// ResultDelivered: a 2xx answer within the attempt timeout.
	ResultDelivered Result = "delivered"
	// ResultHTTPError: an answer with another status (3xx included:
	// redirects are not followed).
	ResultHTTPError Result = "http_error"
	// ResultTimeout: no full answer within the attempt timeout.
	ResultTimeout Result = "timeout"
	// ResultNetwork: the connection failed or was closed.
	ResultNetwork Result = "network"
	// ResultRefused: the destination is not allowed (Policy), or the
	// endpoint cannot sign (no secret).
	ResultRefused Result = "refused"
)

// results lists every Result, for metrics that start every series at zero.
var results = []Result{ResultDelivered, ResultHTTPError, ResultTimeout, ResultNetwork, ResultRefused}

// Attempt is one delivery attempt, as the delivery log shows it.
type Attempt struct {
	// EventID is the event attempted (the webhook-id sent).
	EventID string
	// Time is when the attempt started (the signed webhook-timestamp).
	Time time.Time
	// Duration is how long the exchange took.
	Duration time.Duration
	// Status is the HTTP status answered, 0 when there was no answer.
	Status int
	// Result classifies the attempt.
	Result Result
	// Error says what went wrong, "" when delivered.
	Error string
}

// State is a webhook's delivery progress: what the engine needs to resume
// where it stopped. On the leader it is replicated state, so a new leader
// continues from it (see Progress).
type State struct {
	// Cursor is the id of the last event delivered ("" before the first).
	Cursor string
	// Failures counts the failed attempts since the last delivered event.
	Failures int
	// FailingSince is when the first of those failures happened; zero
	// while the endpoint is healthy.
	FailingSince time.Time
	// NextAttemptAt is when the next attempt is due after a failure;
	// zero means now.
	NextAttemptAt time.Time
	// Disabled is set when the endpoint failed for the whole disable
	// window, or answered 410 Gone; nothing is delivered to it after.
	Disabled bool
}

// Progress records the outcome of every attempt. On the leader each call
// becomes a replicated command that stores the attempt in the webhook's
// delivery log and its new State, so that a new leader resumes from the
// last recorded State: an event delivered but not recorded is delivered
// again, with the same webhook-id (at least once).
type Progress interface {
	// Record stores attempt a and the webhook's state after it. It must
	// return only once next is durable (for a replicated store:
	// committed and applied). On error the engine retries the same
	// record until it succeeds or its context ends; it does not deliver
	// the webhook's next event before the record succeeded.
	Record(ctx context.Context, webhookID string, a Attempt, next State) error
}

// Endpoint is a registered webhook as the engine delivers to it.
type Endpoint struct {
	// ID is the webhook's id.
	ID string
	// URL is where events are POSTed.
	URL string
	// Secrets sign every delivery, each giving one signature in
	// webhook-signature (more than one while a secret is rotated).
	Secrets []Secret
	// State is the recorded delivery progress; the engine starts from it
	// when it starts delivering to this endpoint.
	State State
}

// Defaults of Config.
const (
	// DefaultAttemptTimeout: a 2xx must arrive within 10 s (docs/webhooks.md).
	DefaultAttemptTimeout = 10 * time.Second
	// DefaultRetryBase is the backoff's first ceiling.
	DefaultRetryBase = 5 * time.Second
	// DefaultRetryMax caps the backoff: a recovered endpoint hears again
	// within the hour.
	DefaultRetryMax = time.Hour
	// DefaultDisableAfter: an endpoint failing for 3 days is disabled.
	DefaultDisableAfter = 72 * time.Hour
	// DefaultPollInterval: a worker with nothing to deliver looks for new
	// events this often even when Notify is not called.
	DefaultPollInterval = 5 * time.Second
	// DefaultReadAhead: events a worker reads from the Source at once.
	DefaultReadAhead = 100
	// DefaultMaxResponseBytes: how much of an answer's body is read (and
	// thrown away) before the connection is closed.
	DefaultMaxResponseBytes = 64 << 10
	// userAgent identifies deliveries to receivers.
	userAgent = "ExactOnce-Webhooks/1"
)

// Config configures an Engine. Source and Progress are required; every
// other field has a default.
type Config struct {
	// Source hands out the events to deliver.
	Source Source
	// Progress records attempts and delivery progress.
	Progress Progress
	// Policy decides which destinations are allowed; nil allows every
	// public address (NewPolicy(nil)).
	Policy *Policy
	// Logger receives the engine's logs; nil discards them.
	Logger *slog.Logger
	// Clock is the engine's time; nil is the system clock.
	Clock Clock
	// Rand draws the backoff's jitter; nil seeds one from crypto/rand.
	// It is used under the engine's lock.
	Rand *mathrand.Rand
	// AttemptTimeout bounds one attempt, connection to last body byte.
	AttemptTimeout time.Duration
	// RetryBase and RetryMax shape the backoff: after the n-th failure in
	// a row the next attempt waits a uniformly random time in
	// [0, min(RetryMax, RetryBase·2^(n-1))) ("full jitter"), or the
	// receiver's Retry-After when longer (capped at RetryMax).
	RetryBase, RetryMax time.Duration
	// DisableAfter is how long an endpoint may keep failing before it is
	// disabled.
	DisableAfter time.Duration
	// PollInterval is how often an idle worker looks for new events
	// without a Notify.
	PollInterval time.Duration
	// ReadAhead is how many events a worker reads at once.
	ReadAhead int
	// MaxResponseBytes bounds how much of an answer's body is read.
	MaxResponseBytes int64
	// TLSClientConfig configures HTTPS to receivers (a private CA, for
	// example); nil uses the system roots with TLS 1.2 at least.
	TLSClientConfig *tls.Config
}

// Engine delivers events to webhooks: one worker goroutine per endpoint,
// each with at most one attempt in flight and its events in order, so that
// a slow or dead endpoint only ever delays itself. It runs on the leader
// (Run), from endpoints and states the caller keeps up to date
// (SetEndpoints).
type Engine struct {
	cfg     Config
	log     *slog.Logger
	client  *http.Client
	metrics *metrics

	// randMu guards cfg.Rand, shared by the workers.
	randMu sync.Mutex

	mu        sync.Mutex
	endpoints map[string]Endpoint // the desired set, from SetEndpoints
	workers   map[string]*worker  // running workers, while Run runs
	runCtx    context.Context     // non-nil while Run runs
	wg        sync.WaitGroup
}

// New returns an engine; it delivers nothing until Run.
func New(cfg Config) (*Engine, error) {
	if cfg.Source == nil || cfg.Progress == nil {
		return nil, errors.New("webhook: Config needs a Source and a Progress")
	}
	if cfg.Policy == nil {
		cfg.Policy = &Policy{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.Rand == nil {
		var seed [16]byte
		if _, err := rand.Read(seed[:]); err != nil {
			return nil, fmt.Errorf("webhook: seed jitter: %w", err)
		}
		cfg.Rand = mathrand.New(mathrand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
	}
	setDefault(&cfg.AttemptTimeout, DefaultAttemptTimeout)
	setDefault(&cfg.RetryBase, DefaultRetryBase)
	setDefault(&cfg.RetryMax, DefaultRetryMax)
	setDefault(&cfg.DisableAfter, DefaultDisableAfter)
	setDefault(&cfg.PollInterval, DefaultPollInterval)
	setDefault(&cfg.ReadAhead, DefaultReadAhead)
	setDefault(&cfg.MaxResponseBytes, DefaultMaxResponseBytes)
	if cfg.TLSClientConfig == nil {
		cfg.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	e := &Engine{
		cfg:       cfg,
		log:       cfg.Logger,
		client:    newClient(cfg),
		endpoints: map[string]Endpoint{},
		workers:   map[string]*worker{},
	}
	e.metrics = newMetrics(e)
	return e, nil
}

// setDefault sets *v to def when it is not positive.
func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// newClient builds the HTTP client of deliveries: every connection checked
// by the Policy on the address dialed, no proxy from the environment (a
// proxy would dial for us, unchecked), no redirects followed, and the
// attempt timeout on each step.
func newClient(cfg Config) *http.Client {
	dialer := &net.Dialer{
		Timeout:        cfg.AttemptTimeout,
		KeepAlive:      30 * time.Second,
		ControlContext: cfg.Policy.control,
	}
	transport := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        cfg.TLSClientConfig,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    cfg.AttemptTimeout,
		ResponseHeaderTimeout:  cfg.AttemptTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport: transport,
		// A 3xx is a failed attempt: following it would send the event
		// where nobody registered (and past the Policy's URL check).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// SetEndpoints replaces the set of endpoints the engine delivers to: it
// starts a worker for each new endpoint not Disabled, stops the worker of
// each endpoint absent or Disabled, and hands a changed URL or secrets to a
// running worker for its next attempt (a running worker keeps its own,
// newer State). The list must reflect every Record that returned before
// the call, so that an endpoint the engine disabled is given as Disabled.
// It may be called before and while Run runs.
func (e *Engine) SetEndpoints(eps []Endpoint) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.endpoints = make(map[string]Endpoint, len(eps))
	for _, ep := range eps {
		e.endpoints[ep.ID] = ep
	}
	if e.runCtx == nil {
		return
	}
	for id, w := range e.workers {
		ep, ok := e.endpoints[id]
		if !ok || ep.State.Disabled {
			w.cancel()
			delete(e.workers, id)
			continue
		}
		w.setEndpoint(ep)
	}
	e.startWorkersLocked()
}

// startWorkersLocked starts a worker for each enabled endpoint without one.
func (e *Engine) startWorkersLocked() {
	for id, ep := range e.endpoints {
		if ep.State.Disabled || e.workers[id] != nil {
			continue
		}
		w := newWorker(e, ep)
		e.workers[id] = w
		e.wg.Go(func() { w.run() })
	}
}

// Run delivers until ctx ends (on a leader: until it loses leadership),
// then waits for its workers to stop. An attempt cut short by the end of
// ctx is not recorded; the next leader makes it again. Each worker starts
// from the State of the last SetEndpoints, so a node that leads again
// calls SetEndpoints with the applied state before Run.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.runCtx != nil {
		e.mu.Unlock()
		return errors.New("webhook: engine already running")
	}
	e.runCtx = ctx
	e.startWorkersLocked()
	e.mu.Unlock()

	<-ctx.Done()

	e.mu.Lock()
	for id, w := range e.workers {
		w.cancel()
		delete(e.workers, id)
	}
	e.runCtx = nil
	e.mu.Unlock()
	e.wg.Wait()
	return nil
}

// Notify tells every worker that new events may be there. The caller calls
// it after applying log entries that produced events; without it, idle
// workers still look every PollInterval. It never blocks.
func (e *Engine) Notify() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, w := range e.workers {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// workerStopped removes w once it stopped by itself (disabled endpoint).
func (e *Engine) workerStopped(w *worker) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.workers[w.id] == w {
		delete(e.workers, w.id)
	}
	if ep, ok := e.endpoints[w.id]; ok {
		ep.State = w.stateSnapshot()
		e.endpoints[w.id] = ep
	}
}

// jitter returns a uniform random fraction in [0, 1).
func (e *Engine) jitter() float64 {
	e.randMu.Lock()
	defer e.randMu.Unlock()
	return e.cfg.Rand.Float64()
}

// backoff returns the wait before the next attempt after failures failed
// attempts in a row: full jitter under an exponential ceiling.
func (e *Engine) backoff(failures int) time.Duration {
	return backoffDelay(e.cfg.RetryBase, e.cfg.RetryMax, failures, e.jitter())
}

// backoffDelay is u·min(max, base·2^(failures-1)), u in [0, 1).
func backoffDelay(base, maxDelay time.Duration, failures int, u float64) time.Duration {
	ceiling := base
	for i := 1; i < failures && ceiling < maxDelay; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, maxDelay)
	return time.Duration(u * float64(ceiling))
}
