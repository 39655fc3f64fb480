package httpapi

import (
	"errors"
	"net"
	"net/http"
	"os"
	"time"
)

// CodeRequestTimeout is the error code of a request whose body did not
// arrive within Config.BodyReadTimeout (408).
const CodeRequestTimeout = "request_timeout"

// bodyDeadline bounds the reading of r's body to d from now, with a read
// deadline on the connection (http.ResponseController), so that a client
// trickling its body cannot hold the connection and a handler for the
// whole http.Server.ReadTimeout. A read past the deadline fails with an
// error bodyTimedOut recognises; answer it with writeBodyTimeout.
//
// Call done with the error of the body read, as soon as it returns. On
// success it lifts the deadline. That matters: once the body is read,
// net/http reads from the connection in the background to notice a client
// going away, and a deadline passing then would cancel the request's
// context while its write is in Raft. After a timeout the deadline stays,
// so that net/http, which drains an unread body before it reuses a
// connection, gives up at once too.
//
// A writer without deadlines (httptest.ResponseRecorder, a body already in
// memory) gets no deadline and a no-op done.
func bodyDeadline(w http.ResponseWriter, r *http.Request, d time.Duration) (done func(readErr error)) {
	if d <= 0 || r.Body == nil || r.Body == http.NoBody {
		return func(error) {}
	}
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Now().Add(d)); err != nil {
		return func(error) {}
	}
	return func(readErr error) {
		if !bodyTimedOut(readErr) {
			_ = rc.SetReadDeadline(time.Time{})
		}
	}
}

// bodyTimedOut reports whether err, from reading a body under
// bodyDeadline, is the deadline passing.
func bodyTimedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// writeBodyTimeout answers 408 request_timeout for a body that did not
// arrive within the deadline. Nothing was done. The connection is closed
// after the answer, since the rest of the body may still be on its way.
func writeBodyTimeout(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Connection", "close")
	WriteError(w, CodeRequestTimeout, "the request body did not arrive within "+d.String(), nil)
}
