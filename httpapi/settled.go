package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/gorilla/mux"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
)

// consumeWrite is clientWrite for the consume route with one shortcut: a
// consume of an action that this node's applied state already shows
// consumed (or burned) or canceled is answered here, on any node, with no
// log entry and no forwarding (see answerSettledConsume). Every other
// consume takes the normal write path.
func (s *Server) consumeWrite() http.Handler {
	return s.clientWrite(func(w http.ResponseWriter, r *http.Request, body []byte) {
		if s.answerSettledConsume(w, r, body) {
			return
		}
		s.consumeAction(w, r, body)
	})
}

// waitBehindConsume queues r behind a consume of actionID already in
// flight in q (proposed here or carried to the leader from here), then tries
// to answer it from local state. It returns answered when it wrote the
// answer (503 when ctx ended while waiting: nothing was proposed);
// otherwise the caller goes on, calling leave (when not nil) once done,
// since r then holds the action's slot. With barrier (a follower), a read
// barrier comes first, so that the state read includes the awaited
// consume when it committed; a failed barrier lets the caller go on.
//
// A follower hears of the awaited consume's commit only with the leader's
// next message, up to Raft's commit timeout (50 ms) later when no other
// write follows, while the leader applied it before it answered: so when
// this node's state lags the read index, the leader answers from its own
// state (querySettledConsume), as a lagging verify is answered.
func (s *Server) waitBehindConsume(q *inflightConsumes, w http.ResponseWriter, r *http.Request, body []byte, actionID string, barrier bool) (leave func(), answered bool) {
	leave, err := q.enter(r.Context(), actionID)
	switch {
	case err != nil:
		WriteError(w, CodeUnavailable, "", nil) // nothing was proposed
		return nil, true
	case leave != nil:
		return leave, false
	case barrier:
		err := s.b.ReadBarrierWithin(r.Context(), followerReadLag)
		if errors.Is(err, cluster.ErrLagging) {
			if s.answerSettledOnLeader(w, r, body, actionID) {
				return nil, true
			}
			err = s.b.ReadBarrier(r.Context())
		}
		if err != nil {
			return nil, false
		}
	}
	return nil, s.answerSettledConsume(w, r, body)
}

// answerSettledOnLeader asks the leader for the answer to a consume of a
// settled action (querySettledConsume) and writes it; false (nothing
// written) when the action is not settled there, the request must take
// the normal path, or the leader cannot answer.
func (s *Server) answerSettledOnLeader(w http.ResponseWriter, r *http.Request, body []byte, actionID string) bool {
	clientID := clientOf(r)
	if !s.settledShortcutApplies(r, body, clientID, actionID) {
		return false
	}
	q, err := json.Marshal(leaderQuery{Kind: querySettledConsume, ClientID: clientID, ActionID: actionID})
	if err != nil {
		return false
	}
	b, err := s.b.ReadOnLeader(r.Context(), q)
	if err != nil {
		LoggerFrom(r.Context()).Info("settled consume on the leader failed; waiting for this node's state", "error", err)
		return false
	}
	var ans leaderAnswer
	if err := json.Unmarshal(b, &ans); err != nil || ans.Status == 0 {
		return false // not settled on the leader: the normal path decides
	}
	s.metrics.consumes.WithLabelValues(ans.Code).Inc()
	s.metrics.settled.Inc()
	writeJSONBytes(w, ans.Status, ans.Body)
	return true
}

// settledShortcutApplies reports whether a consume may be answered from
// a settled action's state at all (see answerSettledConsume).
func (s *Server) settledShortcutApplies(r *http.Request, body []byte, clientID, actionID string) bool {
	if len(r.Header.Values("Idempotency-Key")) != 0 || clientID == "" || clientID == fsm.DemoClientID {
		return false
	}
	c, _, _ := s.parseConsume(actionID, body)
	return c != nil
}

// settledAnswerHere renders, from this node's state, the answer to a
// consume by clientID of the settled action actionID; ok is false when
// the action is unknown here or still open.
func (s *Server) settledAnswerHere(clientID, actionID string) (settledAnswer, bool) {
	var a *fsm.Action
	err := s.b.FSM().View(func(v *fsm.View) error {
		var err error
		a, err = v.Action(clientID, actionID)
		return err
	})
	if err != nil || a == nil {
		return settledAnswer{}, false
	}
	res := &fsm.Result{Action: a, Code: settledCode(a)}
	if res.Code == fsm.CodeOK {
		return settledAnswer{}, false
	}
	status, out := resultError(res)
	b, err := encodeJSON(out)
	if err != nil {
		return settledAnswer{}, false // the normal path answers
	}
	return settledAnswer{clientID: clientID, code: string(res.Code), status: status, body: b}, true
}

// answerSettledConsume answers a consume from local state when the outcome
// cannot depend on anything newer: consumed and canceled are terminal
// states, and a node applies only committed entries, so an action it shows
// as settled was settled before this request arrived and stays so forever.
// The answer (409 already_used or 410 canceled, with the same body the
// state machine's decision renders to) is therefore the one a linearizable
// execution gives at the request's own time, whatever the PIN or consumer:
// both checks come after the settled checks in SPEC.md's order.
//
// It falls through (returns false, having written nothing) whenever the
// shortcut could differ from the replicated decision: a request carrying an
// Idempotency-Key (its outcome must be remembered in the replicated state),
// a body the normal path would reject, the demo client (whose reveals have
// their own route), and an action that is unknown here or still open. The
// credentials were checked already (clientWrite).
//
// Only actions this node settled recently (fsm.FSM.RecentlySettled) are
// looked up: most consumes are of open actions, and for them the lookup
// would be wasted work. An action settled long ago, or before this process
// started, takes the normal path, which gives the same answer.
func (s *Server) answerSettledConsume(w http.ResponseWriter, r *http.Request, body []byte) bool {
	actionID := mux.Vars(r)["id"]
	if !s.b.FSM().RecentlySettled(actionID) {
		return false
	}
	clientID := clientOf(r)
	if !s.settledShortcutApplies(r, body, clientID, actionID) {
		return false
	}
	ans, ok := s.settledAnswers.get(actionID)
	if !ok || ans.clientID != clientID {
		if ans, ok = s.settledAnswerHere(clientID, actionID); !ok {
			return false
		}
		s.settledAnswers.put(actionID, ans)
	}
	s.metrics.consumes.WithLabelValues(ans.code).Inc()
	s.metrics.settled.Inc()
	writeJSONBytes(w, ans.status, ans.body)
	return true
}

// settledCode is the state machine's answer to a consume of a settled
// action (410 canceled, 409 already_used, in the consume's order of
// checks), or CodeOK for an action a consume could still take.
func settledCode(a *fsm.Action) fsm.Code {
	switch {
	case a.CanceledAt != 0:
		return fsm.CodeCanceled
	case a.ConsumedAt != 0:
		return fsm.CodeAlreadyUsed
	}
	return fsm.CodeOK
}

// settledAnswersMax bounds the answers settledAnswers keeps.
const settledAnswersMax = 4096

// settledAnswers keeps the rendered answers given to consumes of settled
// actions, so that a crowd consuming one action costs one lookup and one
// rendering per node, not one each. An answer never goes stale: a settled
// action is terminal, and the answer's fields (consumedAt, consumedReason,
// canceledAt) never change once set; it is only given while the action's
// id is in fsm.FSM.RecentlySettled, which retention empties of an action
// before deleting it. Each
// request is still authenticated, and a cached answer is only given to the
// action's own client.
type settledAnswers struct {
	mu sync.RWMutex
	m  map[string]settledAnswer // by action id
}

type settledAnswer struct {
	clientID string
	code     string
	status   int
	body     []byte
}

func (c *settledAnswers) get(actionID string) (settledAnswer, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	a, ok := c.m[actionID]
	return a, ok
}

func (c *settledAnswers) put(actionID string, a settledAnswer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= settledAnswersMax {
		// Full: start again. The crowds it serves are on a few actions.
		c.m = make(map[string]settledAnswer)
	}
	c.m[actionID] = a
}

// inflightConsumes lets a node hold back consumes of an action while a
// consume of it is already in flight from this node (proposed on the
// leader, or forwarded to it from a follower): when a crowd races for one action,
// the first request is proposed, and the rest wait for its outcome instead
// of each appending an entry that can only lose. If it settled the action,
// they are answered from state (already_used), which is linearizable: each
// waiter's request began before the settling entry applied and is answered
// after. If not (a wrong PIN, say), each proposes its own consume.
type inflightConsumes struct {
	mu sync.Mutex
	m  map[string]chan struct{}
	// waiting counts requests waiting behind another (tests).
	waiting atomic.Int64
}

// enter returns a leave func when no consume of id is in flight here: the
// caller proposes, then calls leave. Otherwise it waits for the one in
// flight to finish and returns nil, or ctx's error.
func (f *inflightConsumes) enter(ctx context.Context, id string) (func(), error) {
	f.mu.Lock()
	if ch, ok := f.m[id]; ok {
		f.mu.Unlock()
		f.waiting.Add(1)
		defer f.waiting.Add(-1)
		select {
		case <-ch:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.m == nil {
		f.m = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	f.m[id] = ch
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		delete(f.m, id)
		f.mu.Unlock()
		close(ch)
	}, nil
}
