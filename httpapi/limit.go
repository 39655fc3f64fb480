package httpapi

import (
	"net/http"
	"strconv"
	"sync/atomic"
)

// CodeOverloaded is the error code of a request refused because the node
// already serves Config.MaxConcurrentRequests requests (503). It is not
// unavailable: the cluster may be healthy, and only this node is busy.
// Either way nothing was done, so a retry (after Retry-After, possibly on
// another node) is safe.
const CodeOverloaded = "overloaded"

// overloadRetryAfter is the Retry-After, in seconds, of a 503 overloaded.
// Requests last milliseconds to seconds: a slot is likely free by then.
const overloadRetryAfter = 1

// inflightRequests counts the requests a node is serving, against
// Config.MaxConcurrentRequests. The zero value is ready to use.
type inflightRequests struct{ n atomic.Int64 }

// enter takes a slot; false when all limit slots are taken (limit < 0:
// no cap).
func (f *inflightRequests) enter(limit int) bool {
	if limit < 0 {
		return true
	}
	if f.n.Add(1) > int64(limit) {
		f.n.Add(-1)
		return false
	}
	return true
}

// leave gives back a slot taken by enter (when there was a cap).
func (f *inflightRequests) leave() { f.n.Add(-1) }

// uncappedRoute reports the routes the cap leaves alone: probes and
// scrapes, which must keep answering on a busy node (an overloaded node is
// not dead).
func uncappedRoute(route string) bool {
	return route == "/healthz" || route == "/readyz" || route == "/metrics"
}

// admit applies the concurrency cap to a request of route. When the node
// is full it answers 503 overloaded with Retry-After, without reading the
// body, and returns ok=false. counted says the caller must call
// s.inflight.leave once the request is done.
func (s *Server) admit(w http.ResponseWriter, route string) (counted, ok bool) {
	limit := s.cfg.MaxConcurrentRequests
	if limit < 0 || uncappedRoute(route) {
		return false, true
	}
	if !s.inflight.enter(limit) {
		w.Header().Set("Retry-After", strconv.Itoa(overloadRetryAfter))
		WriteError(w, CodeOverloaded, "", map[string]any{"retryAfterSeconds": overloadRetryAfter})
		return false, false
	}
	return true, true
}
