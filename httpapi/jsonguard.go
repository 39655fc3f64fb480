package httpapi

import (
	"mime"
	"net/http"

	"github.com/exactonce/exactonce/fsm"
)

// jsonGuard makes every answer of the API JSON, whoever writes it. The
// API's own handlers always answer JSON; a handler mounted through
// Config.Extra may not: an http.ServeMux answers an unknown path with a plain-text 404, a wrong method with a
// plain-text 405, and an unclean path with a 301 redirect. jsonGuard turns
// any answer of status 300 or more that is not JSON into the API's JSON
// error for that status, and a redirect into 404 not_found: the path as
// sent names nothing, and this API never redirects.
type jsonGuard struct {
	http.ResponseWriter
	wrote bool
	// swallow drops the body of a replaced answer.
	swallow bool
}

func (g *jsonGuard) WriteHeader(code int) {
	if g.wrote || code < 300 {
		if code >= 200 {
			g.wrote = true
		}
		g.ResponseWriter.WriteHeader(code)
		return
	}
	g.wrote = true
	if isJSONType(g.Header().Get("Content-Type")) {
		g.ResponseWriter.WriteHeader(code)
		return
	}
	g.swallow = true
	h := g.Header()
	h.Del("Location")
	h.Del("Content-Length")
	status, ecode := code, codeForStatus(code)
	if code < 400 {
		status = http.StatusNotFound
	}
	WriteJSON(g.ResponseWriter, status, errorBody(ecode, "", nil))
}

func (g *jsonGuard) Write(b []byte) (int, error) {
	if !g.wrote {
		g.WriteHeader(http.StatusOK)
	}
	if g.swallow {
		return len(b), nil
	}
	return g.ResponseWriter.Write(b)
}

// Flush passes a flush through to the underlying writer when it can.
func (g *jsonGuard) Flush() {
	_ = http.NewResponseController(g.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (g *jsonGuard) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// isJSONType reports a JSON media type.
func isJSONType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}

// codeForStatus is the error code a replaced answer of status gets.
func codeForStatus(status int) string {
	switch {
	case status < 400, status == http.StatusNotFound:
		return CodeNotFound
	case status == http.StatusMethodNotAllowed:
		return CodeMethodNotAllowed
	case status == http.StatusUnauthorized:
		return string(fsm.CodeUnauthorized)
	case status == http.StatusRequestEntityTooLarge:
		return string(fsm.CodePayloadTooLarge)
	case status == http.StatusRequestTimeout:
		return CodeRequestTimeout
	case status == http.StatusRequestHeaderFieldsTooLarge:
		return CodeHeadersTooLarge
	case status == http.StatusTooManyRequests:
		return CodeRateLimited
	case status == http.StatusServiceUnavailable:
		return CodeUnavailable
	case status < 500:
		return string(fsm.CodeInvalidRequest)
	}
	return string(fsm.CodeInternal)
}
