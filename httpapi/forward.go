package httpapi

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"time"

	"github.com/exactonce/exactonce/cluster"
)

// Headers of node-to-node forwarding.
const (
	// HeaderForwarded marks a request forwarded by a follower. A forwarded
	// request that lands on a non-leader is answered 503, never forwarded
	// again (one hop).
	HeaderForwarded = "X-ExactOnce-Forwarded"
	// headerForwardAuth proves the forwarder holds the cluster key.
	headerForwardAuth = "X-ExactOnce-Forward-Auth"
	// headerNotLeader marks a 503 given because the receiver is not the
	// leader: nothing was done, so the forwarder may look for the leader again.
	headerNotLeader = "X-ExactOnce-Not-Leader"
	// maxRelayBytes bounds a relayed response body.
	maxRelayBytes = 64 << 20
)

func isForwarded(r *http.Request) bool { return r.Header.Get(HeaderForwarded) != "" }

// trustedForward reports whether r was forwarded by a node of this cluster.
func (s *Server) trustedForward(r *http.Request) bool {
	got := r.Header.Get(headerForwardAuth)
	return isForwarded(r) && subtle.ConstantTimeCompare([]byte(got), []byte(s.fwdAuth)) == 1
}

// errNotLeader is returned by a write handler that found out (from Apply)
// that this node is not the leader, before writing anything.
var errNotLeader = errors.New("httpapi: not the leader")

// writeHandler handles a write on the leader with the already-read body. It
// returns errNotLeader, having written nothing, when Apply said
// cluster.ErrNotLeader; otherwise it has written the response.
type writeHandler func(w http.ResponseWriter, r *http.Request, body []byte) error

// write wraps a write route: it reads the body (bounded), then handles the
// request here when this node is the leader, or forwards it to the leader,
// waiting for one until the request deadline.
func (s *Server) write(h writeHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := s.readBody(w, r)
		if !ok {
			return
		}
		s.dispatchWrite(w, r, body, h)
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
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
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

func (s *Server) dispatchWrite(w http.ResponseWriter, r *http.Request, body []byte, h writeHandler) {
	ctx := r.Context()
	log := LoggerFrom(ctx)
	backoff := 5 * time.Millisecond
	wait := func() bool {
		t := time.NewTimer(backoff)
		defer t.Stop()
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for {
		if s.b.IsLeader() {
			err := h(w, r, body)
			if err == nil {
				return
			}
			// Leadership moved between the check and the proposal; nothing
			// was proposed, so look for the new leader.
			log.Info("leadership moved while proposing", "error", err)
		} else if isForwarded(r) {
			// One hop only: the forwarder re-resolves the leader.
			w.Header().Set(headerNotLeader, "1")
			WriteError(w, CodeUnavailable, "this node is not the leader", nil)
			return
		} else if leader := s.b.LeaderHTTP(); leader != "" {
			switch s.forward(w, r, body, leader, false) {
			case fwdDone:
				return
			case fwdRetry:
			}
		}
		if isForwarded(r) {
			w.Header().Set(headerNotLeader, "1")
			WriteError(w, CodeUnavailable, "this node is not the leader", nil)
			return
		}
		if !wait() {
			s.metrics.forwards.WithLabelValues("no_leader").Inc()
			WriteError(w, CodeUnavailable, "", nil)
			return
		}
	}
}

// applyError maps an error of Backend.Apply: errNotLeader for
// cluster.ErrNotLeader (the caller forwards), 503 unavailable for
// cluster.ErrUnavailable (nothing was proposed), and 503 outcome_unknown for
// everything else: when it is not known that nothing was proposed, the
// honest answer is that the outcome is unknown.
func (s *Server) applyError(w http.ResponseWriter, r *http.Request, err error) error {
	switch {
	case errors.Is(err, cluster.ErrNotLeader):
		return errNotLeader
	case errors.Is(err, cluster.ErrUnavailable):
		WriteError(w, CodeUnavailable, "", nil)
	case errors.Is(err, cluster.ErrOutcomeUnknown):
		WriteError(w, CodeOutcomeUnknown, "", nil)
	default:
		LoggerFrom(r.Context()).Error("apply failed", "error", err)
		WriteError(w, CodeOutcomeUnknown, "", nil)
	}
	return nil
}

// forwarder carries forwarded writes over a pooled transport.
type forwarder struct {
	client *http.Client
}

func newForwarder(rt http.RoundTripper) *forwarder {
	if rt == nil {
		rt = &http.Transport{
			Proxy: nil,
			DialContext: (&net.Dialer{
				Timeout:   2 * time.Second,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
	}
	return &forwarder{client: &http.Client{
		Transport: rt,
		// Never follow redirects: relay them as they are.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type fwdOutcome int

const (
	fwdDone  fwdOutcome = iota // a response was written
	fwdRetry                   // nothing reached the leader; try again
)

// hopHeaders are not relayed (RFC 9110 connection-specific fields).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// forward sends the request to the leader and relays its answer exactly.
// A failure before the request was written is retryable; a failure after
// it was written means the leader may have acted: 503 outcome_unknown. A
// read (read=true) changes nothing, so any failure is retryable and
// nothing is written.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, body []byte, leader string, read bool) fwdOutcome {
	if !read && s.batcher.eligible(body) {
		return s.batcher.forward(w, r, body, leader)
	}
	return s.forwardOne(w, r, body, leader, read)
}

// forwardHeader is the header a forwarded request carries: the client's,
// less hop-by-hop fields, plus the forwarding marks and proxy fields.
func (s *Server) forwardHeader(r *http.Request) http.Header {
	h := make(http.Header, len(r.Header)+4)
	for k, vs := range r.Header {
		h[k] = append([]string(nil), vs...)
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
	h.Set(HeaderForwarded, "1")
	h.Set(headerForwardAuth, s.fwdAuth)
	if prior := r.Header.Get("X-Forwarded-For"); prior != "" {
		h.Set("X-Forwarded-For", prior+", "+remoteHost(r))
	} else {
		h.Set("X-Forwarded-For", remoteHost(r))
	}
	if h.Get("X-Forwarded-Proto") == "" {
		proto := "http"
		if r.TLS != nil {
			proto = "https"
		}
		h.Set("X-Forwarded-Proto", proto)
	}
	return h
}

// relay writes the leader's answer to the client as it is.
func relay(w http.ResponseWriter, status int, header http.Header, body []byte) {
	for k, vs := range header {
		w.Header()[k] = append([]string(nil), vs...)
	}
	for _, h := range hopHeaders {
		w.Header().Del(h)
	}
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// forwardOne forwards one request in a request of its own (see forward).
func (s *Server) forwardOne(w http.ResponseWriter, r *http.Request, body []byte, leader string, read bool) fwdOutcome {
	ctx := r.Context()
	log := LoggerFrom(ctx)
	url := strings.TrimRight(leader, "/") + r.URL.RequestURI()
	var wrote bool
	trace := &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				wrote = true
			}
		},
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), r.Method, url, bytes.NewReader(body))
	if err != nil {
		log.Error("bad leader address", "leader", leader, "error", err)
		return fwdRetry
	}
	req.Header = s.forwardHeader(r)
	req.Host = r.Host
	resp, err := s.fwd.client.Do(req)
	if err != nil {
		if !wrote || read {
			log.Info("forward failed before sending; retrying", "leader", leader, "error", err)
			s.metrics.forwards.WithLabelValues("retry").Inc()
			return fwdRetry
		}
		log.Warn("forward failed after sending", "leader", leader, "error", err)
		s.metrics.forwards.WithLabelValues("outcome_unknown").Inc()
		WriteError(w, CodeOutcomeUnknown, "", nil)
		return fwdDone
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, maxRelayBytes))
	if err != nil && read {
		log.Info("forwarded read: reading the leader's answer failed; answering here", "leader", leader, "error", err)
		s.metrics.forwards.WithLabelValues("retry").Inc()
		return fwdRetry
	}
	if err != nil {
		log.Warn("forward: reading the leader's answer failed", "leader", leader, "error", err)
		s.metrics.forwards.WithLabelValues("outcome_unknown").Inc()
		WriteError(w, CodeOutcomeUnknown, "", nil)
		return fwdDone
	}
	return s.answerFromLeader(w, log, leader, resp.StatusCode, resp.Header, respBody)
}

// answerFromLeader relays the leader's answer to a forwarded request,
// unless it says it is not the leader: then nothing was done, and the
// caller forwards again.
func (s *Server) answerFromLeader(w http.ResponseWriter, log *slog.Logger, leader string, status int, header http.Header, body []byte) fwdOutcome {
	if status == http.StatusServiceUnavailable && header.Get(headerNotLeader) != "" {
		log.Info("forward target is not the leader; retrying", "leader", leader)
		s.metrics.forwards.WithLabelValues("not_leader").Inc()
		return fwdRetry
	}
	relay(w, status, header, body)
	s.metrics.forwards.WithLabelValues("ok").Inc()
	return fwdDone
}
