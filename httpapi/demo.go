package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"golang.org/x/time/rate"

	"github.com/exactonce/exactonce/fsm"
)

// defaultDemoPayload is the payload of a demo action created without one.
const defaultDemoPayload = `{"message":"Hello from ExactOnce"}`

// demoRevealsPerCreate is how many reveals an address may make per demo
// creation it may make: a demo is revealed once, and perhaps opened again
// to see that it is used. The limit bounds the cost of reveals of ids
// that do not exist, which are answered without a log entry but may cost
// a forward and a read barrier.
const demoRevealsPerCreate = 5

// maxLimiters bounds the per-address limiter table; beyond it, idle
// entries are dropped (a full bucket is the same as no entry).
const maxLimiters = 10000

// addrLimiter is a token bucket per remote address.
type addrLimiter struct {
	mu       sync.Mutex
	perMin   int
	limiters map[string]*limiterEntry
}

type limiterEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newAddrLimiter(perMinute int) *addrLimiter {
	return &addrLimiter{perMin: perMinute, limiters: map[string]*limiterEntry{}}
}

// allow takes a token for addr; when none is left it returns the wait.
func (l *addrLimiter) allow(addr string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.limiters[addr]
	if e == nil {
		if len(l.limiters) >= maxLimiters {
			// An entry idle for a minute has refilled: dropping it changes nothing.
			for k, v := range l.limiters {
				if now.Sub(v.seen) > time.Minute {
					delete(l.limiters, k)
				}
			}
		}
		e = &limiterEntry{lim: rate.NewLimiter(rate.Limit(float64(l.perMin)/60), l.perMin)}
		l.limiters[addr] = e
	}
	e.seen = now
	r := e.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// demoLimit rate-limits demo creation per remote address.
func (s *Server) demoLimit(next http.Handler) http.Handler {
	return s.limitByAddr(s.demo, "too many demo actions from this address; retry later", next)
}

// limitByAddr rate-limits next per remote address with lim, answering 429
// rate_limited with Retry-After, and 404 when the demo is disabled (lim is
// nil).
func (s *Server) limitByAddr(lim *addrLimiter, msg string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if lim == nil {
			WriteError(w, CodeNotFound, "the demo is disabled on this server", nil)
			return
		}
		if ok, wait := lim.allow(remoteHost(r), time.Now()); !ok {
			secs := int(math.Ceil(wait.Seconds()))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			WriteError(w, CodeRateLimited, msg, map[string]any{"retryAfterSeconds": secs})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// demoCreateResponse is the 201 body of POST /v1/demo.
type demoCreateResponse struct {
	ActionID  string `json:"actionId"`
	RevealURL string `json:"revealUrl"`
	ExpiresAt string `json:"expiresAt"`
}

func (s *Server) demoCreate(w http.ResponseWriter, r *http.Request, body []byte) {
	payload := []byte(defaultDemoPayload)
	if len(bytes.TrimSpace(body)) > 0 {
		var req struct {
			Payload json.RawMessage `json:"payload"`
		}
		if err := decodeStrict(body, &req); err != nil {
			WriteError(w, errInvalid, err.Error(), nil)
			return
		}
		if req.Payload != nil && !bytes.Equal(bytes.TrimSpace(req.Payload), []byte("null")) {
			p, err := compactObject("payload", req.Payload, s.cfg.MaxPayloadBytes)
			if err != nil {
				var tl errTooLargeField
				if errors.As(err, &tl) {
					WriteError(w, errTooLarge, err.Error(), nil)
				} else {
					WriteError(w, errInvalid, err.Error(), nil)
				}
				return
			}
			payload = p
		}
	}
	row := s.buildRow(payload, "", false, 0, 0)
	cmd := &fsm.Command{
		Type:     fsm.CmdCreateActions,
		ClientID: fsm.DemoClientID,
		Create: &fsm.CreateActions{
			Rows:         []fsm.CreateRow{row},
			DefaultTTLMS: DemoTTL.Milliseconds(),
			MaxTTLMS:     DemoTTL.Milliseconds(),
		},
	}
	s.apply(w, r, cmd, func(res *fsm.Result) (int, any) {
		status, v := renderCreate(res)
		if status != http.StatusCreated {
			return status, v
		}
		if !res.Replayed {
			s.metrics.creates.Inc()
		}
		c := v.(createResponse)
		return http.StatusCreated, demoCreateResponse{
			ActionID:  c.ActionID,
			RevealURL: s.revealURL(c.ActionID),
			ExpiresAt: c.ExpiresAt,
		}
	})
}

// revealURL is the reveal URL of a demo action, on this node's advertised
// address (Config.PublicURL). Never on the request's Host or
// X-Forwarded-Proto: whoever sends the request chooses those, and could
// make the answer point the demo's user anywhere.
func (s *Server) revealURL(actionID string) string {
	return s.cfg.PublicURL + "/v1/demo/" + url.PathEscape(actionID) + "/reveal"
}

// demoRevealRoute serves GET /v1/demo/{id}/reveal: rate-limited per
// remote address on the node the client reached, then demoReveal.
func (s *Server) demoRevealRoute() http.Handler {
	return s.limitByAddr(s.demoReveals, "too many demo reveals from this address; retry later", s.plainWrite(s.demoReveal))
}

// demoReveal consumes a demo action (on the leader, through Backend.Apply
// wherever this node stands). What the state already
// decides is answered from it, without a log entry: an id this node does
// not know (the reveal URLs of random ids cost the cluster nothing), and
// an action consumed, canceled or expired. Unknown and expired are only
// answered so after a read barrier: then no write committed before the
// request began is missing from the state, so the answer is the one the
// replicated consume would give (a demo action is active from its
// creation, and the barrier leaves nothing newer to decide it).
func (s *Server) demoReveal(w http.ResponseWriter, r *http.Request, _ []byte) {
	a, ok := s.demoAction(w, r)
	if !ok {
		return
	}
	if a != nil {
		if s.answerRevealFromState(w, a, false) {
			return
		}
		if s.now() < a.ExpiresAt {
			s.consume(w, r, fsm.DemoClientID, a.ID, nil, nil)
			return
		}
	}
	if err := s.b.ReadBarrier(r.Context()); err != nil {
		LoggerFrom(r.Context()).Info("demo reveal: read barrier failed", "error", err)
		WriteError(w, CodeUnavailable, "", nil)
		return
	}
	if a, ok = s.demoAction(w, r); !ok {
		return
	}
	if a == nil {
		s.metrics.consumes.WithLabelValues(string(fsm.CodeNotFound)).Inc()
		WriteError(w, errNoAction, "", nil)
		return
	}
	// Expiry is judged from state only on the leader, whose clock is at
	// most the next stamp; a follower's clock may run ahead, so there the
	// leader decides.
	if s.answerRevealFromState(w, a, s.b.IsLeader()) {
		return
	}
	s.consume(w, r, fsm.DemoClientID, a.ID, nil, nil)
}

// demoAction reads the demo action of the request's {id} from local
// state: nil when there is none. On a read error it has answered 500 and
// returns ok=false.
func (s *Server) demoAction(w http.ResponseWriter, r *http.Request) (*fsm.Action, bool) {
	var a *fsm.Action
	err := s.b.FSM().View(func(v *fsm.View) error {
		var err error
		a, err = v.Action(fsm.DemoClientID, mux.Vars(r)["id"])
		return err
	})
	if err != nil {
		LoggerFrom(r.Context()).Error("demo reveal: read action", "error", err)
		WriteError(w, errInternal, "", nil)
		return nil, false
	}
	return a, true
}

// answerRevealFromState answers a reveal of a settled demo action (410
// canceled, 409 already_used: terminal states) and, with expired, of one
// expired at s.now(), in the same checks' order as the state machine's
// consume, with the body its decision renders to. It returns false,
// having written nothing, for an action a consume could still take.
//
// expired is only set on the leader after a read barrier (demoReveal):
// there s.now() is at most the stamp the next entry would get, so an
// action expired at s.now() is expired for the state machine too.
func (s *Server) answerRevealFromState(w http.ResponseWriter, a *fsm.Action, expired bool) bool {
	res := &fsm.Result{Action: a, Code: settledCode(a)}
	if res.Code == fsm.CodeOK && expired && s.now() >= a.ExpiresAt {
		res.Code = fsm.CodeExpired
	}
	if res.Code == fsm.CodeOK {
		return false
	}
	s.metrics.consumes.WithLabelValues(string(res.Code)).Inc()
	status, body := resultError(res)
	WriteJSON(w, status, body)
	return true
}
