package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exactonce/exactonce/client"
)

// The PINs the workload uses: every PIN action has RightPIN.
const (
	RightPIN = "4711"
	WrongPIN = "0000"
)

// WorkloadConfig tunes the workload.
type WorkloadConfig struct {
	// WorkersPerNode is how many sequential clients are pinned to each node.
	WorkersPerNode int
	// Racers is the most concurrent consumers of one hot action.
	Racers int
	// RequestTimeout bounds one HTTP attempt.
	RequestTimeout time.Duration
	// Attempts is how many times a logical operation is tried (same
	// Idempotency-Key) before its outcome is left unknown.
	Attempts int
	// Think is the pause between a worker's operations.
	Think time.Duration
	Seed  uint64
}

// actionInfo is what the workload knows about an action it created.
type actionInfo struct {
	id     string
	hasPIN bool
	tag    string
	// wrongLeft is how many more wrong PINs the workload may still send
	// (a few more than three to probe the limit).
	wrongLeft atomic.Int32
}

// Workload drives clients pinned to each node and records the history.
type Workload struct {
	cfg     WorkloadConfig
	cluster *Cluster
	hist    *History
	log     *slog.Logger
	creds   client.Option

	clients []*client.Client // one per node, shared by its workers

	mu      sync.Mutex
	actions []*actionInfo
	byID    map[string]*actionInfo
	pending []*Op // write ops whose outcome is still unknown

	// lastExpiry is the latest expires_at of a short-window action.
	lastExpiry time.Time
	// windows counts short-window actions created (201).
	windows int

	keySeq atomic.Int64
	// procSeq numbers racer processes (after the workers).
	procSeq atomic.Int64
	racing  chan struct{}
	racers  sync.WaitGroup
}

// NewWorkload prepares a workload for a client with the given credentials.
func NewWorkload(cfg WorkloadConfig, c *Cluster, h *History, clientID, secret string, log *slog.Logger) (*Workload, error) {
	w := &Workload{cfg: cfg, cluster: c, hist: h, log: log, byID: map[string]*actionInfo{},
		creds: client.WithCredentials(clientID, secret), racing: make(chan struct{}, 64)}
	w.procSeq.Store(1000)
	for n := 1; n <= c.Nodes(); n++ {
		cl, err := client.New(c.URL(n), w.creds,
			client.WithHTTPClient(&http.Client{Timeout: cfg.RequestTimeout, Transport: client.NewTransport()}))
		if err != nil {
			return nil, fmt.Errorf("client for node%d: %w", n, err)
		}
		w.clients = append(w.clients, cl)
	}
	return w, nil
}

// Run runs the workers until ctx ends and waits for their racers.
func (w *Workload) Run(ctx context.Context) {
	var wg sync.WaitGroup
	nw := w.cfg.WorkersPerNode * w.cluster.Nodes()
	for i := range nw {
		wg.Go(func() { w.worker(ctx, i) })
	}
	wg.Wait()
	w.racers.Wait()
}

// Burst issues n creates round-robin over nodes (used while a node is
// kept away, so that it falls behind by many log entries).
func (w *Workload) Burst(ctx context.Context, n int, nodes []int) {
	proc := int(w.procSeq.Add(1))
	for i := 0; i < n && ctx.Err() == nil; i++ {
		w.create(ctx, proc, nodes[i%len(nodes)], false)
	}
}

// worker is one sequential client pinned to node i%N+1. Its process id in
// the history is i.
func (w *Workload) worker(ctx context.Context, i int) {
	node := i%w.cluster.Nodes() + 1
	rng := rand.New(rand.NewPCG(w.cfg.Seed, uint64(i)+1))
	var own []*actionInfo // cold actions this worker will consume itself
	for ctx.Err() == nil {
		switch r := rng.IntN(100); {
		case r < 22:
			if a := w.create(ctx, i, node, rng.IntN(3) == 0); a != nil {
				own = append(own, a)
			}
		case r < 42 && len(own) > 0:
			a := own[0]
			own = own[1:]
			pin := ""
			if a.hasPIN && rng.IntN(8) != 0 {
				pin = "right" // sometimes none: pin_required
			}
			w.consume(ctx, i, node, a, pin)
		case r < 47:
			w.hotRace(ctx, i, rng)
		case r < 52:
			w.windowProbe(ctx, i, rng)
		case r < 62:
			if a := w.pick(rng, true); a != nil && a.wrongLeft.Add(-1) >= 0 {
				w.consume(ctx, i, node, a, "wrong")
			}
		case r < 85:
			if a := w.pick(rng, false); a != nil {
				w.verify(ctx, i, node, a.id, false)
			}
		case r < 92:
			if a := w.pick(rng, false); a != nil {
				w.cancel(ctx, i, node, a)
			}
		default:
			if a := w.pick(rng, false); a != nil {
				pin := ""
				if a.hasPIN {
					pin = "right"
				}
				w.consume(ctx, i, node, a, pin)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(w.cfg.Think):
		}
	}
}

// hotRace creates one action and has several racers on every node consume
// it at once, each with its own Idempotency-Key and process id. The worker
// does not wait for its racers (a racer stuck on a cut-off node would stall
// it); at most cap(racing) racers are in flight.
func (w *Workload) hotRace(ctx context.Context, i int, rng *rand.Rand) {
	node := i%w.cluster.Nodes() + 1
	a := w.create(ctx, i, node, false)
	if a == nil {
		return
	}
	racers := 2 + rng.IntN(max(1, w.cfg.Racers-1))
	var start sync.WaitGroup
	start.Add(1)
	for r := range racers {
		select {
		case w.racing <- struct{}{}:
		case <-ctx.Done():
			start.Done()
			return
		}
		proc := int(w.procSeq.Add(1))
		w.racers.Go(func() {
			defer func() { <-w.racing }()
			start.Wait()
			w.consume(ctx, proc, r%w.cluster.Nodes()+1, a, "")
		})
	}
	start.Done()
}

// The probe plans of a short-window action (windowProbe).
const (
	probeConsumeInside = iota // too early, inside (200), too late
	probeNeverConsumed        // too early, verify inside, too late (expired), cancel too late
	probeBoundaries           // just before activeAt, just before expiresAt, after it
	probePlans
)

// windowProbe creates an action whose window opens 200-800 ms from now and
// closes 1-3 s later, then has one prober process consume, verify and
// cancel it around the window's edges (by the harness's clock, which is the
// nodes' clock unless a clock fault shifts one): some consumes too early
// (409 not_active), some inside (200), some too late (410 expired). Like
// hotRace it does not wait for its prober. Every choice comes from the
// worker's seeded rng.
func (w *Workload) windowProbe(ctx context.Context, i int, rng *rand.Rand) {
	node := i%w.cluster.Nodes() + 1
	activeAt := time.Now().Add(time.Duration(200+rng.IntN(601)) * time.Millisecond)
	expiresAt := activeAt.Add(time.Duration(1000+rng.IntN(2001)) * time.Millisecond)
	plan := rng.IntN(probePlans)
	nodes := make([]int, 6)
	for k := range nodes {
		nodes[k] = 1 + rng.IntN(w.cluster.Nodes())
	}
	jitter := make([]time.Duration, 3)
	for k := range jitter {
		jitter[k] = time.Duration(rng.IntN(300)) * time.Millisecond
	}
	a, op := w.createWindow(ctx, i, node, activeAt, expiresAt)
	if a == nil {
		return
	}
	// The window the leader stored (the request's, to the millisecond).
	from, err1 := time.Parse(time.RFC3339Nano, op.Outcome.ActiveAt)
	until, err2 := time.Parse(time.RFC3339Nano, op.Outcome.ExpiresAt)
	if err1 != nil || err2 != nil {
		return // the checker reports an unparsable window
	}
	select {
	case w.racing <- struct{}{}:
	case <-ctx.Done():
		return
	}
	proc := int(w.procSeq.Add(1))
	w.racers.Go(func() {
		defer func() { <-w.racing }()
		switch plan {
		case probeConsumeInside:
			w.consume(ctx, proc, nodes[0], a, "")
			if w.waitUntil(ctx, from.Add(jitter[0])) {
				w.consume(ctx, proc, nodes[1], a, "")
			}
			if w.waitUntil(ctx, until.Add(50*time.Millisecond+jitter[1])) {
				w.consume(ctx, proc, nodes[2], a, "")
				w.verify(ctx, proc, nodes[3], a.id, false)
			}
		case probeNeverConsumed:
			w.consume(ctx, proc, nodes[0], a, "")
			w.verify(ctx, proc, nodes[1], a.id, false)
			if w.waitUntil(ctx, from.Add(jitter[0])) {
				w.verify(ctx, proc, nodes[2], a.id, false)
			}
			if w.waitUntil(ctx, until.Add(jitter[1])) {
				w.consume(ctx, proc, nodes[3], a, "")
				w.cancel(ctx, proc, nodes[4], a)
				w.verify(ctx, proc, nodes[5], a.id, false)
			}
		case probeBoundaries:
			if w.waitUntil(ctx, from.Add(-jitter[0]/10)) {
				w.consume(ctx, proc, nodes[0], a, "")
			}
			if w.waitUntil(ctx, until.Add(-jitter[1]/10)) {
				w.consume(ctx, proc, nodes[1], a, "")
			}
			if w.waitUntil(ctx, until.Add(jitter[2]/10)) {
				w.consume(ctx, proc, nodes[2], a, "")
			}
		}
	})
}

// waitUntil waits for the wall-clock time t; false when ctx ended first.
func (w *Workload) waitUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// WaitWindowsClosed waits until every short-window action's expires_at has
// passed (by the harness's clock), so that the final reads see them in a
// state that no longer changes with time.
func (w *Workload) WaitWindowsClosed(ctx context.Context) {
	w.mu.Lock()
	t := w.lastExpiry
	w.mu.Unlock()
	w.waitUntil(ctx, t.Add(100*time.Millisecond))
}

// Windows returns how many short-window actions the workload created.
func (w *Workload) Windows() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.windows
}

func (w *Workload) pick(rng *rand.Rand, withPIN bool) *actionInfo {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.actions) == 0 {
		return nil
	}
	for range 8 {
		// Prefer recent actions: they are the ones still in play.
		lo := max(0, len(w.actions)-200)
		a := w.actions[lo+rng.IntN(len(w.actions)-lo)]
		if !withPIN || a.hasPIN {
			return a
		}
	}
	return nil
}

func (w *Workload) key(kind OpKind) string {
	return fmt.Sprintf("chaos-%d-%s-%d", w.cfg.Seed, kind, w.keySeq.Add(1))
}

func (w *Workload) register(a *actionInfo) {
	w.mu.Lock()
	w.actions = append(w.actions, a)
	w.byID[a.id] = a
	w.mu.Unlock()
}

// create creates one action; nil when its outcome stayed unknown or failed.
func (w *Workload) create(ctx context.Context, proc, node int, pin bool) *actionInfo {
	a, _ := w.createWith(ctx, proc, node, pin, time.Time{}, time.Time{})
	return a
}

// createWindow creates an action with the window [activeAt, expiresAt).
func (w *Workload) createWindow(ctx context.Context, proc, node int, activeAt, expiresAt time.Time) (*actionInfo, *Op) {
	a, op := w.createWith(ctx, proc, node, false, activeAt, expiresAt)
	if a != nil {
		w.mu.Lock()
		w.windows++
		if expiresAt.After(w.lastExpiry) {
			w.lastExpiry = expiresAt
		}
		w.mu.Unlock()
	}
	return a, op
}

// rfc3339ms is the time format of requests: RFC 3339 UTC, milliseconds.
const rfc3339ms = "2006-01-02T15:04:05.000Z07:00"

// createWith creates one action, with a window when activeAt is set; the
// action is nil when the outcome stayed unknown or failed.
func (w *Workload) createWith(ctx context.Context, proc, node int, pin bool, activeAt, expiresAt time.Time) (*actionInfo, *Op) {
	key := w.key(OpCreate)
	body := map[string]any{"payload": map[string]any{"chaos": key}}
	if pin {
		body["pin"] = RightPIN
	}
	window := !activeAt.IsZero()
	if window {
		body["active_at"] = activeAt.UTC().Format(rfc3339ms)
		body["expires_at"] = expiresAt.UTC().Format(rfc3339ms)
	}
	b, _ := json.Marshal(body)
	op := &Op{Process: proc, Kind: OpCreate, Key: key, HasPIN: pin, Window: window}
	resp := w.exec(ctx, op, node, http.MethodPost, "/v1/actions", b)
	if !op.OK() {
		if op.Outcome.Unknown {
			w.mu.Lock()
			w.pending = append(w.pending, op)
			w.mu.Unlock()
			op.body = b
		}
		return nil, op
	}
	op.Action = resp.ActionID
	a := &actionInfo{id: resp.ActionID, hasPIN: pin, tag: key}
	a.wrongLeft.Store(MaxPINAttempts + 1)
	w.register(a)
	return a, op
}

func (w *Workload) consume(ctx context.Context, proc, node int, a *actionInfo, pin string) {
	body := map[string]any{"consumer": map[string]any{"process": proc}}
	switch pin {
	case "right":
		body["pin"] = RightPIN
	case "wrong":
		body["pin"] = WrongPIN
	}
	b, _ := json.Marshal(body)
	op := &Op{Process: proc, Kind: OpConsume, Action: a.id, Key: w.key(OpConsume), PIN: pin, body: b}
	w.exec(ctx, op, node, http.MethodPost, "/v1/actions/"+a.id+"/consume", b)
	w.keepIfUnknown(op)
}

func (w *Workload) cancel(ctx context.Context, proc, node int, a *actionInfo) {
	op := &Op{Process: proc, Kind: OpCancel, Action: a.id, Key: w.key(OpCancel)}
	w.exec(ctx, op, node, http.MethodDelete, "/v1/actions/"+a.id, nil)
	w.keepIfUnknown(op)
}

func (w *Workload) verify(ctx context.Context, proc, node int, id string, final bool) *Op {
	op := &Op{Process: proc, Kind: OpVerify, Action: id, Final: final}
	w.exec(ctx, op, node, http.MethodGet, "/v1/actions/"+id, nil)
	return op
}

func (w *Workload) keepIfUnknown(op *Op) {
	if op.Outcome.Unknown {
		w.mu.Lock()
		w.pending = append(w.pending, op)
		w.mu.Unlock()
	}
}

// response holds the fields of any answer the workload parses.
type response struct {
	Error             string          `json:"error"`
	ActionID          string          `json:"actionId"`
	State             string          `json:"state"`
	ConsumedReason    string          `json:"consumedReason"`
	ConsumedAt        string          `json:"consumedAt"`
	FailedPINAttempts int             `json:"failedPinAttempts"`
	AttemptsRemaining int             `json:"attemptsRemaining"`
	ActiveAt          string          `json:"activeAt"`
	ExpiresAt         string          `json:"expiresAt"`
	Payload           json.RawMessage `json:"payload"`
}

// exec runs a logical operation: up to Attempts tries with the op's
// Idempotency-Key on node, retrying after an unknown outcome (transport
// error, timeout, 503 outcome_unknown) or 503 unavailable. It records the
// op in the history and returns the last parsed answer.
func (w *Workload) exec(ctx context.Context, op *Op, node int, method, path string, body []byte) response {
	op.Call = w.hist.Now()
	w.attempts(ctx, op, node, method, path, body, w.cfg.Attempts)
	op.Return = w.hist.Now()
	if op.Outcome.Unknown {
		op.Return = -1
	}
	w.hist.Add(op)
	return op.last
}

// attempts tries op up to n times and sets op.Outcome from all its
// attempts so far.
func (w *Workload) attempts(ctx context.Context, op *Op, node int, method, path string, body []byte, n int) {
	backoff := 200 * time.Millisecond
	for try := 0; try < n; try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
		}
		a, resp := w.attempt(ctx, op, node, method, path, body)
		op.Attempts = append(op.Attempts, a)
		op.last = resp
		if a.Status != 0 && a.Status != 503 {
			break
		}
		if ctx.Err() != nil && op.Kind == OpVerify {
			break
		}
	}
	op.Outcome = outcomeOf(op)
}

// outcomeOf derives a logical operation's outcome from its attempts: the
// first definite non-503 answer wins (a replay repeats it); otherwise
// unknown if any attempt may have taken effect, else 503 unavailable.
func outcomeOf(op *Op) Outcome {
	unknown := false
	for _, a := range op.Attempts {
		switch {
		case a.Status == 0 || (a.Status == 503 && a.Code != "unavailable"):
			unknown = true
		case a.Status != 503:
			return op.parsed(a)
		}
	}
	if unknown || len(op.Attempts) == 0 {
		return Outcome{Unknown: true}
	}
	return Outcome{Status: 503, Code: "unavailable"}
}

// attempt sends one HTTP request. A context that ends before the request
// is sent is not counted as a try by the caller (status 0 is unknown, which
// is always safe).
func (w *Workload) attempt(ctx context.Context, op *Op, node int, method, path string, body []byte) (Attempt, response) {
	cl := w.clients[node-1]
	a := Attempt{Node: node, Call: w.hist.Now()}
	var opts []client.CallOption
	if op.Key != "" {
		opts = append(opts, client.WithIdempotencyKey(op.Key))
	}
	// The request outlives the workload's context by its own timeout so
	// that stopping the workload does not turn answers into unknowns.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.RequestTimeout)
	defer cancel()
	status, raw, err := cl.Do(rctx, method, path, body, "", opts...)
	a.Return = w.hist.Now()
	var apiErr *client.APIError
	if err != nil && !errors.As(err, &apiErr) {
		a.Err = err.Error()
		return a, response{}
	}
	var resp response
	if jerr := json.Unmarshal(raw, &resp); jerr != nil && status < 300 {
		a.Err = "undecodable answer: " + jerr.Error()
		return a, response{}
	}
	a.Status, a.Code, a.ConsumedAt = status, resp.Error, resp.ConsumedAt
	if status == 200 && op.Kind == OpConsume {
		a.PayloadOK = w.payloadOK(op.Action, resp.Payload)
	}
	a.resp = resp
	return a, resp
}

// payloadOK checks a consumed payload against the one created.
func (w *Workload) payloadOK(id string, payload json.RawMessage) bool {
	w.mu.Lock()
	a := w.byID[id]
	w.mu.Unlock()
	var p struct {
		Chaos string `json:"chaos"`
	}
	return a != nil && json.Unmarshal(payload, &p) == nil && p.Chaos == a.tag
}

// Resolve retries every write whose outcome is still unknown with its
// Idempotency-Key against healthy nodes, extending the op to the retry.
func (w *Workload) Resolve(ctx context.Context, nodes []int, proc int) (resolved, still int) {
	w.mu.Lock()
	pending := w.pending
	w.pending = nil
	w.mu.Unlock()
	for i, op := range pending {
		node := nodes[i%len(nodes)]
		var method, path string
		var body []byte
		switch op.Kind {
		case OpCreate:
			method, path, body = http.MethodPost, "/v1/actions", op.body
		case OpConsume:
			method, path, body = http.MethodPost, "/v1/actions/"+op.Action+"/consume", op.body
		case OpCancel:
			method, path = http.MethodDelete, "/v1/actions/"+op.Action
		}
		op.Process = proc
		w.attempts(ctx, op, node, method, path, body, 3)
		if op.Outcome.Unknown {
			still++
			continue
		}
		resolved++
		op.Return = w.hist.Now()
		if op.Kind == OpCreate && op.OK() && op.last.ActionID != "" {
			op.Action = op.last.ActionID
			a := &actionInfo{id: op.Action, hasPIN: op.HasPIN, tag: op.Key}
			w.register(a)
			if op.Window {
				w.mu.Lock()
				w.windows++
				if t, err := time.Parse(time.RFC3339Nano, op.Outcome.ExpiresAt); err == nil && t.After(w.lastExpiry) {
					w.lastExpiry = t
				}
				w.mu.Unlock()
			}
		}
	}
	return resolved, still
}

// ReadBack verifies every known action once (marked Final), round-robin
// over nodes, retrying until a definite answer or ctx ends.
func (w *Workload) ReadBack(ctx context.Context, nodes []int, proc int) (missing int) {
	w.mu.Lock()
	ids := make([]string, 0, len(w.actions))
	for _, a := range w.actions {
		ids = append(ids, a.id)
	}
	w.mu.Unlock()
	for i, id := range ids {
		if ctx.Err() != nil {
			return missing + len(ids) - i // out of time: the rest is unread
		}
		op := w.verify(ctx, proc, nodes[i%len(nodes)], id, true)
		if !op.OK() {
			missing++
		}
	}
	return missing
}

// Actions returns how many actions the workload created.
func (w *Workload) Actions() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.actions)
}
