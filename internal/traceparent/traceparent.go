// Package traceparent reads the W3C Trace Context traceparent header
// (https://www.w3.org/TR/trace-context/#traceparent-header) and carries it
// in a context, so that a request's log lines, on the node that answered
// it and on the leader a follower forwarded its write to, name the trace
// the caller started. ExactOnce records no spans of its own: it only
// passes the caller's trace context along and logs it.
package traceparent

import "context"

// Header is the HTTP header name (case-insensitive on the wire).
const Header = "Traceparent"

// maxLen bounds a header accepted from a future version: version 00 is 55
// characters; later versions may append fields, which are ignored.
const maxLen = 512

// Parse validates a traceparent header value and returns its version-00
// form ("00-<trace-id>-<parent-id>-<flags>"). It reports false for
// anything malformed: the all-zero trace or parent id, version ff,
// upper-case hex, a wrong length. A version above 00 is read as 00 when
// its first four fields are well formed and any further data follows a
// "-", as the specification asks of a version-00 reader.
func Parse(v string) (string, bool) {
	if len(v) < 55 || len(v) > maxLen {
		return "", false
	}
	if v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return "", false
	}
	version, traceID, parentID, flags := v[0:2], v[3:35], v[36:52], v[53:55]
	if !lowerHex(version) || !lowerHex(traceID) || !lowerHex(parentID) || !lowerHex(flags) {
		return "", false
	}
	switch {
	case version == "ff":
		return "", false
	case version == "00" && len(v) != 55:
		return "", false
	case len(v) > 55 && v[55] != '-':
		return "", false
	case allZero(traceID) || allZero(parentID):
		return "", false
	}
	if version == "00" {
		return v, true
	}
	return "00" + v[2:55], true
}

// lowerHex reports whether s is all lower-case hexadecimal digits.
func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}

type ctxKey struct{}

// NewContext returns ctx carrying tp, a value Parse accepted.
func NewContext(ctx context.Context, tp string) context.Context {
	return context.WithValue(ctx, ctxKey{}, tp)
}

// FromContext returns the traceparent ctx carries, "" when none.
func FromContext(ctx context.Context) string {
	tp, _ := ctx.Value(ctxKey{}).(string)
	return tp
}
