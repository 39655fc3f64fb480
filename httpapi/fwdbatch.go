package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"time"
)

// Batched forwarding.
//
// Under load, most writes reach a follower and cross a second HTTP hop to
// the leader; that hop (a request parsed, a response written, and the
// client side of both on the follower) was the largest cost of a forwarded
// write after the write itself (docs/performance.md). A follower therefore
// sends one write at a time per leader as before while the path is idle,
// and, while up to maxBatchesInFlight requests to the leader are already
// in flight, queues further writes and sends them together in one request
// to forwardBatchPath. The leader runs every batched request through its
// own router, concurrently, exactly as if it had arrived alone (so Raft
// proposes them together), and answers all of them in one response.
//
// Outcomes keep the meaning they have for a single forward: a batch that
// failed before it was written is retried call by call; a batch whose
// answer was lost after it was written makes each of its requests
// outcome_unknown; a call the leader answered "not the leader" is retried
// on its own. A leader that does not know the batch route (an older
// version during a rolling upgrade) gets single forwards for a while.
const (
	// forwardBatchPath is the leader's batch route.
	forwardBatchPath = "/internal/v1/forward-batch"
	// headerBatch marks a batch answer. The leader sets it before it runs
	// any request of the batch, so an answer without it (a 404 from a
	// leader without the route, a refusal) means none of them ran.
	headerBatch = "X-ExactOnce-Batch"
	// maxBatchesInFlight bounds the requests a follower has in flight to
	// one leader before it starts queueing writes into batches.
	maxBatchesInFlight = 2
	// maxBatchCalls bounds the writes in one batch.
	maxBatchCalls = 128
	// maxBatchedBody is the largest body sent in a batch; larger ones (CSV
	// creates) are forwarded alone.
	maxBatchedBody = 64 << 10
	// maxBatchPayload bounds the calls a follower puts in one batch by
	// their bodies and headers (a batch always takes at least one call).
	maxBatchPayload = 4 << 20
	// maxBatchBytes bounds a batch request body the leader accepts: the
	// follower's bound, encoded (in JSON, bodies in base64), with room to
	// spare.
	maxBatchBytes = 2*maxBatchPayload + 1<<20
	// noBatchFor is how long a leader that lacks the batch route gets
	// single forwards before the route is tried again.
	noBatchFor = time.Minute
)

// batchedRequest is one forwarded request inside a batch.
type batchedRequest struct {
	Method string      `json:"method"`
	URI    string      `json:"uri"`
	Host   string      `json:"host,omitempty"`
	Header http.Header `json:"header"`
	Body   []byte      `json:"body,omitempty"`
	// TimeoutMs is what is left of the client's deadline when the batch
	// is sent; the leader gives the request no longer.
	TimeoutMs int64 `json:"timeoutMs"`
}

// batchedResponse is the leader's answer to one batchedRequest.
type batchedResponse struct {
	Status int         `json:"status"`
	Header http.Header `json:"header"`
	Body   []byte      `json:"body,omitempty"`
}

// callOutcome is what became of one queued call.
type callOutcome int

const (
	callAnswered callOutcome = iota // res holds the leader's answer
	callRetry                       // nothing reached a leader; forward again
	callUnknown                     // sent, answer lost: outcome unknown
)

// fwdCall is one write waiting in a lane.
type fwdCall struct {
	req      batchedRequest
	size     int // bytes of body and header, for maxBatchPayload
	deadline time.Time
	done     chan struct{}
	taken    bool // under lane.mu: sent, so it can no longer be withdrawn
	outcome  callOutcome
	res      batchedResponse
}

// fwdLane is the forwarding state towards one leader address.
type fwdLane struct {
	leader   string
	mu       sync.Mutex
	inflight int
	queue    []*fwdCall
	noBatch  time.Time // single forwards only until then
}

// fwdBatcher groups a follower's concurrent forwarded writes (see above).
type fwdBatcher struct {
	s     *Server
	mu    sync.Mutex
	lanes map[string]*fwdLane
}

func newFwdBatcher(s *Server) *fwdBatcher {
	return &fwdBatcher{s: s, lanes: map[string]*fwdLane{}}
}

// eligible reports whether a write may travel in a batch: one with a small
// body (large CSV creates go alone).
func (b *fwdBatcher) eligible(body []byte) bool {
	return b != nil && len(body) <= maxBatchedBody
}

func (b *fwdBatcher) lane(leader string) *fwdLane {
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.lanes[leader]
	if !ok {
		if len(b.lanes) > 16 {
			// Leaders come and go by address; forget idle lanes.
			for k, old := range b.lanes {
				old.mu.Lock()
				idle := old.inflight == 0 && len(old.queue) == 0
				old.mu.Unlock()
				if idle {
					delete(b.lanes, k)
				}
			}
		}
		l = &fwdLane{leader: leader}
		b.lanes[leader] = l
	}
	return l
}

// forward forwards one write through leader's lane: alone when the lane
// has room, else in the next batch.
func (b *fwdBatcher) forward(w http.ResponseWriter, r *http.Request, body []byte, leader string) fwdOutcome {
	l := b.lane(leader)
	l.mu.Lock()
	if l.inflight < maxBatchesInFlight && len(l.queue) == 0 || time.Now().Before(l.noBatch) {
		l.inflight++
		l.mu.Unlock()
		out := b.s.forwardOne(w, r, body, leader, false)
		b.release(l)
		return out
	}
	ctx := r.Context()
	c := &fwdCall{
		req: batchedRequest{Method: r.Method, URI: r.URL.RequestURI(), Host: r.Host,
			Header: b.s.forwardHeader(r), Body: body},
		done: make(chan struct{}),
	}
	c.deadline, _ = ctx.Deadline()
	c.size = len(body) + len(c.req.URI)
	for k, vs := range c.req.Header {
		for _, v := range vs {
			c.size += len(k) + len(v) + 8
		}
	}
	l.queue = append(l.queue, c)
	if l.inflight < maxBatchesInFlight {
		l.inflight++
		go b.sendLoop(l)
	}
	l.mu.Unlock()

	log := LoggerFrom(ctx)
	select {
	case <-c.done:
	case <-ctx.Done():
		l.mu.Lock()
		if !c.taken {
			// Still queued: withdraw it; nothing was sent.
			for i, q := range l.queue {
				if q == c {
					l.queue = append(l.queue[:i], l.queue[i+1:]...)
					break
				}
			}
			l.mu.Unlock()
			return fwdRetry
		}
		l.mu.Unlock()
		log.Warn("batched forward: no answer before the deadline", "leader", leader)
		b.s.metrics.forwards.WithLabelValues("outcome_unknown").Inc()
		WriteError(w, CodeOutcomeUnknown, "", nil)
		return fwdDone
	}
	switch c.outcome {
	case callRetry:
		b.s.metrics.forwards.WithLabelValues("retry").Inc()
		return fwdRetry
	case callUnknown:
		b.s.metrics.forwards.WithLabelValues("outcome_unknown").Inc()
		WriteError(w, CodeOutcomeUnknown, "", nil)
		return fwdDone
	}
	return b.s.answerFromLeader(w, log, leader, c.res.Status, c.res.Header, c.res.Body)
}

// release gives back a single forward's slot, or hands it to a sender when
// writes queued up meanwhile.
func (b *fwdBatcher) release(l *fwdLane) {
	l.mu.Lock()
	if len(l.queue) > 0 {
		l.mu.Unlock()
		go b.sendLoop(l)
		return
	}
	l.inflight--
	l.mu.Unlock()
}

// sendLoop holds one of the lane's slots and sends batches until the
// queue is empty.
func (b *fwdBatcher) sendLoop(l *fwdLane) {
	for {
		l.mu.Lock()
		if len(l.queue) == 0 {
			l.inflight--
			l.mu.Unlock()
			return
		}
		n, size := 1, l.queue[0].size
		for n < len(l.queue) && n < maxBatchCalls && size+l.queue[n].size <= maxBatchPayload {
			size += l.queue[n].size
			n++
		}
		calls := make([]*fwdCall, n)
		copy(calls, l.queue)
		l.queue = append(l.queue[:0], l.queue[n:]...)
		for _, c := range calls {
			c.taken = true
		}
		l.mu.Unlock()
		b.send(l, calls)
		for _, c := range calls {
			close(c.done)
		}
	}
}

// send sends calls in one request and sets every call's outcome.
func (b *fwdBatcher) send(l *fwdLane, calls []*fwdCall) {
	setAll := func(o callOutcome) {
		for _, c := range calls {
			c.outcome = o
		}
	}
	now := time.Now()
	var last time.Time
	for _, c := range calls {
		left := 10 * time.Second
		if !c.deadline.IsZero() {
			left = c.deadline.Sub(now)
		}
		c.req.TimeoutMs = max(1, left.Milliseconds())
		if d := now.Add(left); d.After(last) {
			last = d
		}
	}
	reqs := make([]*batchedRequest, len(calls))
	for i, c := range calls {
		reqs[i] = &c.req
	}
	payload := encodeBatchRequests(reqs)
	// The batch belongs to no single client: it lives until the last
	// deadline among its calls, plus time for the answer to come back.
	ctx, cancel := context.WithDeadline(context.Background(), last.Add(time.Second))
	defer cancel()
	var wrote bool
	trace := &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
		if i.Err == nil {
			wrote = true
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost,
		strings.TrimRight(l.leader, "/")+forwardBatchPath, bytes.NewReader(payload))
	if err != nil {
		b.s.log.Error("bad leader address", "leader", l.leader, "error", err)
		setAll(callRetry)
		return
	}
	req.Header.Set("Content-Type", contentTypeBatch)
	req.Header.Set(HeaderForwarded, "1")
	req.Header.Set(headerForwardAuth, b.s.fwdAuth)
	resp, err := b.s.fwd.client.Do(req)
	if err != nil {
		if !wrote {
			b.s.log.Info("batched forward failed before sending; retrying", "leader", l.leader, "calls", len(calls), "error", err)
			setAll(callRetry)
			return
		}
		b.s.log.Warn("batched forward failed after sending", "leader", l.leader, "calls", len(calls), "error", err)
		setAll(callUnknown)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRelayBytes))
	if resp.Header.Get(headerBatch) == "" {
		// Not a batch answer, so the node ran none of the calls: a leader
		// without the route (single forwards for a while), a node that is
		// no longer the leader, or a refused batch.
		switch {
		case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed ||
			resp.StatusCode == http.StatusBadRequest:
			// 400: a leader that reads only JSON batches (an earlier
			// version) could not read this one.
			b.s.log.Info("leader does not take batched forwards; forwarding singly", "leader", l.leader, "status", resp.StatusCode, "for", noBatchFor)
			l.mu.Lock()
			l.noBatch = time.Now().Add(noBatchFor)
			l.mu.Unlock()
		case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(headerNotLeader) != "":
		default:
			b.s.log.Warn("batched forward refused; retrying", "leader", l.leader, "status", resp.StatusCode, "calls", len(calls))
		}
		setAll(callRetry)
		return
	}
	var out []batchedResponse
	if err == nil {
		if resp.Header.Get("Content-Type") == contentTypeBatch {
			out, err = decodeBatchResponses(body, len(calls))
		} else {
			err = json.Unmarshal(body, &out)
		}
	}
	if err == nil && len(out) != len(calls) {
		err = errors.New("answer count differs from the calls sent")
	}
	if err != nil {
		b.s.log.Warn("batched forward: reading the leader's answer failed", "leader", l.leader, "calls", len(calls), "error", err)
		setAll(callUnknown)
		return
	}
	for i, c := range calls {
		c.outcome, c.res = callAnswered, out[i]
	}
}

// serveForwardBatch is the leader's side: it serves each request of a
// batch through the router, all at once, and answers them in order.
func (s *Server) serveForwardBatch(w http.ResponseWriter, r *http.Request) {
	if !s.trustedForward(r) {
		WriteError(w, CodeNotFound, "", nil)
		return
	}
	if !s.b.IsLeader() {
		// Nothing is done: the follower looks for the leader again.
		w.Header().Set(headerNotLeader, "1")
		WriteError(w, CodeUnavailable, "this node is not the leader", nil)
		return
	}
	binaryBatch := r.Header.Get("Content-Type") == contentTypeBatch
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBatchBytes))
	var reqs []batchedRequest
	switch {
	case err != nil:
	case binaryBatch:
		reqs, err = decodeBatchRequests(raw, maxBatchCalls)
	default: // JSON, from a follower of an earlier version
		err = json.Unmarshal(raw, &reqs)
	}
	if err != nil || len(reqs) == 0 || len(reqs) > maxBatchCalls {
		WriteError(w, "invalid_request", "malformed forward batch", nil)
		return
	}
	// From here on the answer carries headerBatch, whatever happens: the
	// follower then knows the requests may have run (see send).
	w.Header().Set(headerBatch, "1")
	out := make([]batchedResponse, len(reqs))
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Add(1)
		s.batchWorkers.Go(func() {
			defer wg.Done()
			out[i] = s.serveBatched(r, &reqs[i])
		})
	}
	wg.Wait()
	if !binaryBatch {
		WriteJSON(w, http.StatusOK, out)
		return
	}
	w.Header().Set("Content-Type", contentTypeBatch)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(encodeBatchResponses(out))
}

// serveBatched serves one request of a batch as if it had come alone.
func (s *Server) serveBatched(batch *http.Request, br *batchedRequest) batchedResponse {
	ctx, cancel := context.WithTimeout(batch.Context(), time.Duration(br.TimeoutMs)*time.Millisecond)
	defer cancel()
	rec := &bufferedResponse{header: http.Header{}}
	req, err := http.NewRequestWithContext(ctx, br.Method, br.URI, bytes.NewReader(br.Body))
	if err != nil || !strings.HasPrefix(br.URI, "/") {
		WriteError(rec, "invalid_request", "malformed forwarded request", nil)
		return rec.response()
	}
	req.Header = br.Header
	if req.Header == nil {
		req.Header = http.Header{}
	}
	req.Host = br.Host
	req.RequestURI = br.URI
	req.RemoteAddr = batch.RemoteAddr
	req.TLS = batch.TLS
	s.ServeHTTP(rec, req)
	return rec.response()
}

// bufferedResponse is an http.ResponseWriter that keeps the answer.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

func (b *bufferedResponse) response() batchedResponse {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return batchedResponse{Status: b.status, Header: b.header, Body: b.body.Bytes()}
}
