package httpapi

import (
	"fmt"
	"net/http"
)

// CodeHeadersTooLarge is the error code of a request whose header is over
// Config.MaxHeaderBytes (431).
const CodeHeadersTooLarge = "headers_too_large"

// Auth headers: each may appear at most once in a request.
const (
	headerClientID     = "client-id"
	headerClientSecret = "client-secret"
	headerAuthz        = "Authorization"
)

// singleHeader returns the value of header name ("" when absent), and
// false when the request carries it more than once. An auth header given
// twice is refused rather than read as its first value: a proxy or client
// library may join, split or reorder repeated fields, so "the first" need
// not be the one the caller meant.
func singleHeader(r *http.Request, name string) (string, bool) {
	vs := r.Header.Values(name)
	switch len(vs) {
	case 0:
		return "", true
	case 1:
		return vs[0], true
	}
	return "", false
}

// writeRepeatedHeader answers 400 invalid_request for a header that must
// appear once and appears more often.
func writeRepeatedHeader(w http.ResponseWriter, name string) {
	WriteError(w, errInvalid, fmt.Sprintf("the %s header must be given at most once", name), nil)
}

// requestHeaderBytes approximates the size of r's request line and header
// as it came on the wire, the way net/http counts it against
// http.Server.MaxHeaderBytes.
func requestHeaderBytes(r *http.Request) int {
	n := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2
	if r.Host != "" {
		n += len("Host: ") + len(r.Host) + 2
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n + 2
}

// headersTooLarge answers 431 headers_too_large, as JSON, when r's header
// is over the limit. net/http answers in plain text on its own, at
// http.Server.MaxHeaderBytes (plus 4 KiB); exactonced sets that well above
// Config.MaxHeaderBytes so that this check is the one that answers.
func (s *Server) headersTooLarge(w http.ResponseWriter, r *http.Request) bool {
	if requestHeaderBytes(r) <= s.cfg.MaxHeaderBytes {
		return false
	}
	WriteError(w, CodeHeadersTooLarge, fmt.Sprintf("the request header is over %d bytes", s.cfg.MaxHeaderBytes), nil)
	return true
}
