package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/traceparent"
)

// Forwarding writes (DESIGN.md, "Forwarding"): a follower's Apply carries
// the command to the leader over the cluster service, and the leader
// proposes it as if it were its own. One hop: the leader never forwards a
// forwarded command, it answers "not the leader" and the follower looks
// for the leader again. Nothing the client sent but the command travels
// (and its W3C traceparent, see headerTraceparents).
//
// A follower sends one call at a time per leader while the path is idle
// and, while maxBatchesInFlight calls are already in flight, queues the
// commands that arrive and sends them together: the leader proposes a
// batch's commands concurrently, so Raft writes them in one log batch.
//
// Outcomes: a call that failed before its request was written proposed
// nothing and is retried (on whichever node leads by then); a call whose
// answer was lost after it was written may have committed: outcome unknown.
const (
	// maxBatchesInFlight bounds the calls a follower has in flight to one
	// leader before it starts queueing commands into batches.
	maxBatchesInFlight = 2
	// maxBatchCommands bounds the commands in one call.
	maxBatchCommands = 128
	// maxForwardPayload bounds the encoded commands of one call (a call
	// always takes at least one command, whatever its size).
	maxForwardPayload = 4 << 20
)

// Per-command outcome codes in an apply answer; part of the wire format.
const (
	fwdResult      byte = 1 // a fresh fsm.Result (JSON)
	fwdReplayed    byte = 2 // an fsm.Result replayed from its idempotency record
	fwdNotLeader   byte = 3 // the receiver is not the leader: nothing was proposed
	fwdUnavailable byte = 4 // nothing was proposed (no ready leader in time)
	fwdUnknown     byte = 5 // proposed, outcome unknown
	fwdRejected    byte = 6 // refused by Config.Vet before proposing
	fwdFailed      byte = 7 // the state machine failed the entry (message)
	fwdNoDeadline  byte = 8 // the command's deadline had passed on arrival: nothing proposed
)

// Deadlines of forwarded commands.
const (
	// defaultFwdTimeout is a command's deadline when its caller has none.
	defaultFwdTimeout = rpcCallTimeout
	// forwardMinLeft: a command arriving with less time left is not
	// proposed (it could only end as outcome_unknown).
	forwardMinLeft = time.Millisecond
	// maxForwardCallMillis bounds the deadline a command may carry.
	maxForwardCallMillis = 60_000
)

// headerTraceparents carries the W3C traceparents of a forwarded batch's
// commands (internal/traceparent), one per command in order, separated by
// commas, an empty entry for a command without one. It is a header rather
// than part of the command frames so that the frames stay as they are: a
// leader that does not know the header ignores it and still reads every
// command right, and a leader that knows it ignores a header whose entry
// count does not match or whose entries do not parse. Tracing context is
// advisory; a command never fails over it.
const headerTraceparents = "X-ExactOnce-Traceparents"

// A full batch's traceparents (55 characters and a comma each) stay under
// 8 KiB, well within the internal server's 16 KiB header limit (rpc.go):
// this fails to compile if maxBatchCommands grows past that.
const _ = uint(8<<10 - maxBatchCommands*56)

// errForwardRetry: nothing reached a leader; look for it again.
var errForwardRetry = errors.New("cluster: forward: nothing was sent")

// Apply proposes cmd on the leader and returns the state machine's result.
// On the leader it stamps cmd.Time with its clock (never going back) and
// proposes it; on a follower it forwards cmd to the leader (see above).
// While nothing was proposed it keeps looking for a leader until ctx ends,
// then returns ErrUnavailable; when a proposal's fate cannot be known it
// returns ErrOutcomeUnknown; a command refused by Config.Vet returns
// ErrRejected.
//
// An FSM-level failure to decode or store the entry comes back wrapped
// (neither of the sentinels); typed business outcomes are in Result.Code.
func (n *Node) Apply(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	if cmd == nil {
		return nil, errors.New("cluster: apply: nil command")
	}
	ctx, cancel := n.mergeCtx(ctx)
	defer cancel()
	backoff := 2 * time.Millisecond
	for {
		res, err := n.applyHere(ctx, cmd)
		if !errors.Is(err, ErrNotLeader) {
			return res, err
		}
		if _, id := n.raft.LeaderWithID(); id != "" && id != n.nodeID {
			res, err = n.fwd.apply(ctx, string(id), cmd)
			if !errors.Is(err, errForwardRetry) && !errors.Is(err, ErrNotLeader) {
				return res, err
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("cluster: apply: no leader took the command: %w (%w)", ErrUnavailable, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// forwarder carries a follower's commands to the leader.
type forwarder struct {
	n     *Node
	mu    sync.Mutex
	lanes map[string]*fwdLane
	// workers run the leader's side of batched commands.
	workers *workers
}

func newForwarder(n *Node) *forwarder {
	return &forwarder{n: n, lanes: map[string]*fwdLane{}, workers: newWorkers()}
}

// fwdLane is the forwarding state towards one leader.
type fwdLane struct {
	leader   string
	mu       sync.Mutex
	inflight int
	queue    []*fwdCall
}

// fwdCall is one command on its way to the leader.
type fwdCall struct {
	data     []byte
	deadline time.Time
	// traceparent is the W3C traceparent of the request the command
	// serves ("" when none).
	traceparent string
	done        chan struct{}
	taken       bool // under lane.mu: sent, so it can no longer be withdrawn
	res         *fsm.Result
	err         error
}

func (f *forwarder) lane(leader string) *fwdLane {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.lanes[leader]
	if !ok {
		if len(f.lanes) > 16 {
			for k, old := range f.lanes {
				old.mu.Lock()
				idle := old.inflight == 0 && len(old.queue) == 0
				old.mu.Unlock()
				if idle {
					delete(f.lanes, k)
				}
			}
		}
		l = &fwdLane{leader: leader}
		f.lanes[leader] = l
	}
	return l
}

// apply forwards cmd to leader and waits for its outcome.
func (f *forwarder) apply(ctx context.Context, leader string, cmd *fsm.Command) (*fsm.Result, error) {
	data, err := fsm.EncodeCommand(cmd)
	if err != nil {
		return nil, fmt.Errorf("cluster: forward: encode command: %w", err)
	}
	c := &fwdCall{data: data, done: make(chan struct{}), traceparent: traceparent.FromContext(ctx)}
	c.deadline, _ = ctx.Deadline()
	l := f.lane(leader)
	l.mu.Lock()
	l.queue = append(l.queue, c)
	if l.inflight < maxBatchesInFlight {
		l.inflight++
		l.mu.Unlock()
		go f.sendLoop(l)
	} else {
		l.mu.Unlock()
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		l.mu.Lock()
		if !c.taken {
			for i, q := range l.queue {
				if q == c {
					l.queue = append(l.queue[:i], l.queue[i+1:]...)
					break
				}
			}
			l.mu.Unlock()
			return nil, fmt.Errorf("cluster: forward: %w (%w)", ErrUnavailable, ctx.Err())
		}
		l.mu.Unlock()
		return nil, fmt.Errorf("cluster: forward: %w (no answer from the leader before the deadline: %w)", ErrOutcomeUnknown, ctx.Err())
	}
}

// sendLoop holds one of the lane's slots and sends calls until the queue
// is empty.
func (f *forwarder) sendLoop(l *fwdLane) {
	for {
		l.mu.Lock()
		if len(l.queue) == 0 {
			l.inflight--
			l.mu.Unlock()
			return
		}
		n, size := 1, len(l.queue[0].data)
		for n < len(l.queue) && n < maxBatchCommands && size+len(l.queue[n].data) <= maxForwardPayload {
			size += len(l.queue[n].data)
			n++
		}
		calls := make([]*fwdCall, n)
		copy(calls, l.queue)
		l.queue = append(l.queue[:0], l.queue[n:]...)
		for _, c := range calls {
			c.taken = true
		}
		l.mu.Unlock()
		f.send(l.leader, calls)
		for _, c := range calls {
			close(c.done)
		}
	}
}

// send sends calls to leader in one request and sets every call's outcome.
func (f *forwarder) send(leader string, calls []*fwdCall) {
	setAll := func(err error) {
		for _, c := range calls {
			c.err = err
		}
	}
	now := time.Now()
	var last time.Time
	buf := binary.AppendUvarint(nil, uint64(len(calls)))
	for _, c := range calls {
		left := defaultFwdTimeout
		if !c.deadline.IsZero() {
			left = c.deadline.Sub(now)
			if c.deadline.After(last) {
				last = c.deadline
			}
		}
		ms := max(left.Milliseconds(), 0)
		buf = binary.AppendUvarint(buf, uint64(min(ms, maxForwardCallMillis)))
		buf = binary.AppendUvarint(buf, uint64(len(c.data)))
		buf = append(buf, c.data...)
	}
	if last.IsZero() {
		last = now.Add(defaultFwdTimeout)
	}
	ctx, cancel := context.WithDeadline(f.n.ctx, last)
	defer cancel()
	addr := f.n.rpcAddr(leader)
	if addr == "" {
		setAll(errForwardRetry)
		return
	}
	var wrote bool
	trace := &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) { wrote = i.Err == nil }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, "https://"+addr+rpcApply, bytes.NewReader(buf))
	if err != nil {
		setAll(errForwardRetry)
		return
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if tps := encodeTraceparents(calls); tps != "" {
		req.Header.Set(headerTraceparents, tps)
	}
	res, err := f.n.peers.get(leader).Do(req)
	if err != nil {
		if !wrote {
			f.n.log.Debug("forward failed before sending; retrying", "leader", leader, "err", err)
			f.n.metrics.forwards.WithLabelValues("retry").Add(float64(len(calls)))
			setAll(errForwardRetry)
			return
		}
		f.n.log.Warn("forward failed after sending: outcome unknown", "leader", leader, "commands", len(calls), "err", err)
		f.n.metrics.forwards.WithLabelValues("outcome_unknown").Add(float64(len(calls)))
		setAll(fmt.Errorf("cluster: forward to %s: %w (%w)", leader, ErrOutcomeUnknown, err))
		return
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxRPCAnswer))
	if err == nil && res.StatusCode != http.StatusOK {
		if res.Header.Get(headerRPCError) == rpcErrBadRequest {
			err = fmt.Errorf("the leader refused the call: %s", bytes.TrimSpace(body))
		} else {
			// Refused before any command ran (a leader shutting down).
			setAll(errForwardRetry)
			return
		}
	}
	if err == nil {
		err = decodeApplyAnswer(body, calls)
	}
	if err != nil {
		f.n.log.Warn("forward: the leader's answer is unreadable: outcome unknown", "leader", leader, "err", err)
		f.n.metrics.forwards.WithLabelValues("outcome_unknown").Add(float64(len(calls)))
		setAll(fmt.Errorf("cluster: forward to %s: %w (%w)", leader, ErrOutcomeUnknown, err))
		return
	}
	for _, c := range calls {
		result := "ok"
		switch {
		case errors.Is(c.err, ErrNotLeader):
			result = "not_leader"
		case errors.Is(c.err, ErrOutcomeUnknown):
			result = "outcome_unknown"
		case c.err != nil:
			result = "error"
		}
		f.n.metrics.forwards.WithLabelValues(result).Inc()
	}
}

// encodeTraceparents is the headerTraceparents value for calls, "" when
// none has a traceparent.
func encodeTraceparents(calls []*fwdCall) string {
	some := false
	parts := make([]string, len(calls))
	for i, c := range calls {
		parts[i] = c.traceparent
		some = some || c.traceparent != ""
	}
	if !some {
		return ""
	}
	return strings.Join(parts, ",")
}

// decodeTraceparents reads a headerTraceparents value for count commands:
// nil when it is absent or does not hold count entries, else one entry per
// command, "" for an entry that is empty or not a valid traceparent.
func decodeTraceparents(h string, count int) []string {
	if h == "" {
		return nil
	}
	parts := strings.Split(h, ",")
	if len(parts) != count {
		return nil
	}
	for i, p := range parts {
		parts[i], _ = traceparent.Parse(p)
	}
	return parts
}

// decodeApplyAnswer reads an apply answer into calls.
func decodeApplyAnswer(b []byte, calls []*fwdCall) error {
	r := bytes.NewReader(b)
	count, err := binary.ReadUvarint(r)
	if err != nil || count != uint64(len(calls)) {
		return fmt.Errorf("answer holds %d outcomes for %d commands (%v)", count, len(calls), err)
	}
	for _, c := range calls {
		code, err := r.ReadByte()
		if err != nil {
			return fmt.Errorf("read outcome: %w", err)
		}
		size, err := binary.ReadUvarint(r)
		if err != nil || size > uint64(r.Len()) {
			return fmt.Errorf("read outcome body: bad size (%v)", err)
		}
		data := make([]byte, size)
		_, _ = io.ReadFull(r, data)
		switch code {
		case fwdResult, fwdReplayed:
			var res fsm.Result
			if err := json.Unmarshal(data, &res); err != nil {
				return fmt.Errorf("decode result: %w", err)
			}
			res.Replayed = code == fwdReplayed
			c.res = &res
		case fwdNotLeader:
			c.err = ErrNotLeader
		case fwdUnavailable, fwdNoDeadline:
			c.err = fmt.Errorf("cluster: forward: the leader proposed nothing: %w (%s)", ErrUnavailable, data)
		case fwdUnknown:
			c.err = fmt.Errorf("cluster: forward: %w (%s)", ErrOutcomeUnknown, data)
		case fwdRejected:
			c.err = fmt.Errorf("cluster: forward: %w: %s", ErrRejected, data)
		case fwdFailed:
			c.err = fmt.Errorf("cluster: forward: the leader's state machine failed the entry: %s", data)
		default:
			return fmt.Errorf("unknown outcome code %d", code)
		}
	}
	if r.Len() != 0 {
		return errors.New("trailing data after the outcomes")
	}
	return nil
}

// serveApply is the leader's side: it proposes every command of the call
// concurrently and answers all outcomes in order.
func (n *Node) serveApply(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRPCBody))
	if err != nil {
		writeRPCError(w, http.StatusBadRequest, rpcErrBadRequest, fmt.Sprintf("read body: %v", err))
		return
	}
	type item struct {
		cmd     *fsm.Command
		timeout time.Duration
		code    byte
		data    []byte
	}
	rd := bytes.NewReader(body)
	count, err := binary.ReadUvarint(rd)
	if err != nil || count == 0 || count > maxBatchCommands {
		writeRPCError(w, http.StatusBadRequest, rpcErrBadRequest, "bad command count")
		return
	}
	items := make([]item, count)
	for i := range items {
		ms, err1 := binary.ReadUvarint(rd)
		size, err2 := binary.ReadUvarint(rd)
		if err1 != nil || err2 != nil || size > uint64(rd.Len()) || ms > maxForwardCallMillis {
			writeRPCError(w, http.StatusBadRequest, rpcErrBadRequest, "bad command frame")
			return
		}
		data := make([]byte, size)
		_, _ = io.ReadFull(rd, data)
		cmd, err := fsm.DecodeCommand(data)
		if err != nil {
			// A command this node cannot decode is refused whole: a peer
			// of another version must not have half a batch applied.
			writeRPCError(w, http.StatusBadRequest, rpcErrBadRequest, fmt.Sprintf("command %d: %v", i, err))
			return
		}
		items[i] = item{cmd: cmd, timeout: time.Duration(ms) * time.Millisecond}
	}
	if rd.Len() != 0 {
		writeRPCError(w, http.StatusBadRequest, rpcErrBadRequest, "trailing data after the commands")
		return
	}
	tps := decodeTraceparents(r.Header.Get(headerTraceparents), len(items))
	if tps == nil && r.Header.Get(headerTraceparents) != "" {
		n.log.Debug("forwarded batch: ignoring a traceparents header that does not match its commands", "from", peerOf(r))
	}
	var wg sync.WaitGroup
	for i := range items {
		it := &items[i]
		wg.Add(1)
		n.fwd.workers.Go(func() {
			defer wg.Done()
			if it.timeout < forwardMinLeft {
				it.code, it.data = fwdNoDeadline, []byte("no time left")
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), it.timeout)
			defer cancel()
			tp := ""
			if tps != nil {
				tp = tps[i]
			}
			if tp != "" {
				ctx = traceparent.NewContext(ctx, tp)
			}
			res, err := n.applyHere(ctx, it.cmd)
			it.code, it.data = encodeOutcome(res, err)
			if tp != "" {
				n.log.Debug("forwarded command", "from", peerOf(r), "type", it.cmd.Type, "outcome", outcomeName(it.code), "traceparent", tp)
			}
		})
	}
	wg.Wait()
	out := binary.AppendUvarint(make([]byte, 0, 64*len(items)), count)
	for _, it := range items {
		out = append(out, it.code)
		out = binary.AppendUvarint(out, uint64(len(it.data)))
		out = append(out, it.data...)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(out)
}

// outcomeName names an outcome code in logs.
func outcomeName(code byte) string {
	switch code {
	case fwdResult:
		return "result"
	case fwdReplayed:
		return "replayed"
	case fwdNotLeader:
		return "not_leader"
	case fwdUnavailable:
		return "unavailable"
	case fwdUnknown:
		return "outcome_unknown"
	case fwdRejected:
		return "rejected"
	case fwdFailed:
		return "failed"
	case fwdNoDeadline:
		return "no_deadline"
	default:
		return fmt.Sprintf("code_%d", code)
	}
}

// encodeOutcome turns applyHere's answer into an outcome code and body.
func encodeOutcome(res *fsm.Result, err error) (byte, []byte) {
	switch {
	case err == nil:
		b, jerr := json.Marshal(res)
		if jerr != nil {
			return fwdUnknown, []byte("encode result: " + jerr.Error())
		}
		if res.Replayed {
			return fwdReplayed, b
		}
		return fwdResult, b
	case errors.Is(err, ErrNotLeader):
		return fwdNotLeader, nil
	case errors.Is(err, ErrUnavailable):
		return fwdUnavailable, []byte(err.Error())
	case errors.Is(err, ErrRejected):
		return fwdRejected, []byte(err.Error())
	case errors.Is(err, ErrOutcomeUnknown):
		return fwdUnknown, []byte(err.Error())
	default:
		return fwdFailed, []byte(err.Error())
	}
}

// LeaderReader serves a read on the leader for a follower that has not yet
// applied what the read must see (ReadOnLeader). query and the answer are
// the caller's own encoding.
type LeaderReader func(ctx context.Context, query []byte) ([]byte, error)

// SetLeaderReader installs the function the leader runs for ReadOnLeader.
func (n *Node) SetLeaderReader(fn LeaderReader) { n.leaderReader.Store(&fn) }

// ReadOnLeader runs query on the leader, after a linearizable read barrier
// there, and returns its answer. A follower whose state lags the read index
// (ReadBarrierWithin's ErrLagging) uses it instead of waiting for the
// leader's next heartbeat. Every failure wraps ErrUnavailable.
func (n *Node) ReadOnLeader(ctx context.Context, query []byte) ([]byte, error) {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return nil, fmt.Errorf("cluster: leader read: leader unknown: %w", ErrUnavailable)
	}
	if id == n.nodeID {
		return n.readHere(ctx, query)
	}
	var out struct {
		Answer []byte `json:"answer"`
	}
	if err := n.callPeer(ctx, string(id), http.MethodPost, rpcRead, struct {
		Query []byte `json:"query"`
	}{query}, &out); err != nil {
		return nil, fmt.Errorf("cluster: leader read on %s: %w (%w)", id, ErrUnavailable, err)
	}
	return out.Answer, nil
}

// readHere runs a leader read on this node.
func (n *Node) readHere(ctx context.Context, query []byte) ([]byte, error) {
	fn := n.leaderReader.Load()
	if fn == nil {
		return nil, fmt.Errorf("cluster: leader read: no reader installed: %w", ErrUnavailable)
	}
	if n.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	if err := n.ReadBarrier(ctx); err != nil {
		return nil, err
	}
	return (*fn)(ctx, query)
}

func (n *Node) serveLeaderRead(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Query []byte `json:"query"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	if err := dec.Decode(&in); err != nil {
		writeRPCError(w, http.StatusBadRequest, rpcErrBadRequest, fmt.Sprintf("bad body: %v", err))
		return
	}
	answer, err := n.readHere(r.Context(), in.Query)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, struct {
			Answer []byte `json:"answer"`
		}{answer})
	case errors.Is(err, ErrNotLeader):
		writeRPCError(w, http.StatusServiceUnavailable, rpcErrNotLeader, err.Error())
	default:
		writeRPCError(w, http.StatusServiceUnavailable, rpcErrUnavailable, err.Error())
	}
}
