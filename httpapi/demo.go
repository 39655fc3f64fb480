package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"golang.org/x/time/rate"

	"github.com/exactonce/exactonce/fsm"
)

// defaultDemoPayload is the payload of a demo action created without one.
const defaultDemoPayload = `{"message":"Hello from ExactOnce"}`

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
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.demo == nil {
			WriteError(w, CodeNotFound, "the demo is disabled on this server", nil)
			return
		}
		if ok, wait := s.demo.allow(remoteHost(r), time.Now()); !ok {
			secs := int(math.Ceil(wait.Seconds()))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			WriteError(w, CodeRateLimited, "too many demo actions from this address; retry later",
				map[string]any{"retryAfterSeconds": secs})
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
	base := baseURL(r)
	s.apply(w, r, cmd, func(res *fsm.Result) (int, any) {
		status, v := renderCreate(res)
		if status != http.StatusCreated {
			return status, v
		}
		c := v.(createResponse)
		return http.StatusCreated, demoCreateResponse{
			ActionID:  c.ActionID,
			RevealURL: base + "/v1/demo/" + c.ActionID + "/reveal",
			ExpiresAt: c.ExpiresAt,
		}
	})
}

// baseURL is the scheme and host the client used, from the Host header
// (and X-Forwarded-Proto when set by a forwarding node or proxy).
func baseURL(r *http.Request) string {
	if r.Host == "" {
		return ""
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
		scheme = p
	}
	return scheme + "://" + r.Host
}

func (s *Server) demoReveal(w http.ResponseWriter, r *http.Request, _ []byte) {
	s.consume(w, r, fsm.DemoClientID, mux.Vars(r)["id"], nil, nil)
}
