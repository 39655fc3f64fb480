package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/exactonce/exactonce/cluster"
)

// writeHandler handles a write whose credentials and body were checked:
// it builds one fsm.Command and hands it to the Backend, which proposes it
// on the leader wherever this node stands (cluster.Node.Apply forwards).
type writeHandler func(w http.ResponseWriter, r *http.Request, body []byte)

// clientWrite wraps a client's write route: the credentials are checked
// before a byte of the body is read, so an anonymous request never makes a
// node buffer its body; then the body is read under the route's limit.
// The handler finds the authenticated client with clientOf.
func (s *Server) clientWrite(h writeHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.authClient(w, r); !ok {
			return
		}
		body, ok := s.readBody(w, r)
		if !ok {
			return
		}
		h(w, r, body)
	})
}

// plainWrite wraps a write route authenticated elsewhere (admin routes,
// behind RequireAdmin) or not at all (the demo, rate-limited first).
func (s *Server) plainWrite(h writeHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := s.readBody(w, r)
		if !ok {
			return
		}
		h(w, r, body)
	})
}

// readBody reads the whole body under the route's size limit; on failure it
// has answered (413 or 400).
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	limit := s.cfg.MaxBodyBytes
	if isCSV(r) && r.Method == http.MethodPost && r.URL.Path == "/v1/actions" {
		limit = s.cfg.MaxCSVBodyBytes
	}
	if r.ContentLength > limit {
		WriteError(w, "payload_too_large", fmt.Sprintf("request body exceeds %d bytes", limit), nil)
		return nil, false
	}
	done := bodyDeadline(w, r, s.cfg.BodyReadTimeout)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	done(err)
	if err != nil {
		if bodyTimedOut(err) {
			writeBodyTimeout(w, s.cfg.BodyReadTimeout)
			return nil, false
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			WriteError(w, "payload_too_large", fmt.Sprintf("request body exceeds %d bytes", limit), nil)
			return nil, false
		}
		WriteError(w, "invalid_request", "cannot read the request body", nil)
		return nil, false
	}
	return body, true
}

// applyError answers a failed Backend.Apply: 503 unavailable when nothing
// was proposed, 500 internal when the leader refused to propose (it cannot
// serve the action: a payload its key cannot open), and 503
// outcome_unknown for everything else: when it is not known that nothing
// was proposed, the honest answer is that the outcome is unknown.
func (s *Server) applyError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, cluster.ErrUnavailable):
		WriteError(w, CodeUnavailable, "", nil)
	case errors.Is(err, cluster.ErrRejected):
		LoggerFrom(r.Context()).Error("the leader refused the write", "error", err)
		WriteError(w, errInternal, "the leader cannot serve this action (it cannot open its payload with its cluster key); nothing was changed", nil)
	case errors.Is(err, cluster.ErrOutcomeUnknown):
		WriteError(w, CodeOutcomeUnknown, "", nil)
	default:
		LoggerFrom(r.Context()).Error("apply failed", "error", err)
		WriteError(w, CodeOutcomeUnknown, "", nil)
	}
}
