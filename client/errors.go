package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// codeError is the sentinel of one API error code; an *APIError with that
// code matches it under errors.Is.
type codeError string

func (e codeError) Error() string { return "exactonce: " + string(e) }

// The API's error codes (docs/api.md, "Error codes"), one sentinel each.
// Match them with errors.Is:
//
//	if errors.Is(err, client.ErrAlreadyUsed) { ... }
//
// errors.As(err, &apiErr) with an *APIError gives the status, the message
// and the extra fields.
var (
	// ErrInvalidRequest (400): malformed JSON, an unknown field, a bad value.
	ErrInvalidRequest error = codeError("invalid_request")
	// ErrUnauthorized (401): credentials missing or wrong, or the client is revoked.
	ErrUnauthorized error = codeError("unauthorized")
	// ErrPINRequired (401): a consume of a PIN action without a PIN; no attempt counted.
	ErrPINRequired error = codeError("pin_required")
	// ErrInvalidPIN (401): a wrong PIN; the field attemptsRemaining tells how many are left.
	ErrInvalidPIN error = codeError("invalid_pin")
	// ErrActionNotFound (404): no such action for this client.
	ErrActionNotFound error = codeError("action_not_found")
	// ErrClientNotFound (404): admin revoke of an unknown client.
	ErrClientNotFound error = codeError("client_not_found")
	// ErrNotFound (404): unknown route, or the demo is disabled.
	ErrNotFound error = codeError("not_found")
	// ErrMethodNotAllowed (405): known route, wrong method.
	ErrMethodNotAllowed error = codeError("method_not_allowed")
	// ErrRequestTimeout (408): the request body did not arrive in time; nothing was done.
	ErrRequestTimeout error = codeError("request_timeout")
	// ErrAlreadyUsed (409): the action was consumed or burned.
	ErrAlreadyUsed error = codeError("already_used")
	// ErrNotActive (409): the action's activeAt is still ahead.
	ErrNotActive error = codeError("not_active")
	// ErrConflict (409): an id collision, or a cluster operation Raft refused.
	ErrConflict error = codeError("conflict")
	// ErrCanceled (410): the action was canceled.
	ErrCanceled error = codeError("canceled")
	// ErrExpired (410): the action expired.
	ErrExpired error = codeError("expired")
	// ErrPayloadTooLarge (413): a body, payload, consumer or CSV row count over its limit.
	ErrPayloadTooLarge error = codeError("payload_too_large")
	// ErrHeadersTooLarge (431): the request line and header are over 64 KiB.
	ErrHeadersTooLarge error = codeError("headers_too_large")
	// ErrIdempotencyKeyReused (422): the same Idempotency-Key with a different request.
	ErrIdempotencyKeyReused error = codeError("idempotency_key_reused")
	// ErrRateLimited (429): the demo rate limit; retryAfterSeconds says when to retry.
	ErrRateLimited error = codeError("rate_limited")
	// ErrQuotaExceeded (429): the create would exceed the client's quota; nothing was created.
	ErrQuotaExceeded error = codeError("quota_exceeded")
	// ErrInternal (500): a bug or a corrupt store.
	ErrInternal error = codeError("internal")
	// ErrUnavailable (503): no leader reachable in time; nothing was done, a retry is safe.
	ErrUnavailable error = codeError("unavailable")
	// ErrOverloaded (503): the node is busy; nothing was done, retry later or elsewhere.
	ErrOverloaded error = codeError("overloaded")
	// ErrOutcomeUnknown (503): the write reached the leader but its fate is
	// unknown; retry with the same Idempotency-Key.
	ErrOutcomeUnknown error = codeError("outcome_unknown")
)

// Codes lists every error code the API documents, in the order of
// docs/api.md's table, with its sentinel.
var codes = []error{
	ErrInvalidRequest, ErrUnauthorized, ErrPINRequired, ErrInvalidPIN, ErrActionNotFound,
	ErrClientNotFound, ErrNotFound, ErrMethodNotAllowed, ErrRequestTimeout, ErrAlreadyUsed,
	ErrNotActive, ErrConflict, ErrCanceled, ErrExpired, ErrPayloadTooLarge, ErrHeadersTooLarge,
	ErrIdempotencyKeyReused, ErrRateLimited, ErrQuotaExceeded, ErrInternal, ErrUnavailable,
	ErrOverloaded, ErrOutcomeUnknown,
}

// ErrConnection matches every failure to exchange a request and its
// answer with the node: a refused connection, a reset, a TLS failure, the
// context's deadline. Whether a write took effect is then unknown (it may
// have reached the server); only a retry with the same Idempotency-Key is
// safe. The error also wraps the underlying cause, so errors.Is(err,
// context.DeadlineExceeded) still works.
var ErrConnection = errors.New("connection failed")

// APIError is a non-2xx answer from the server.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the "error" field, e.g. "already_used"; empty when the body
	// was not a JSON error.
	Code string
	// Message is the "message" field.
	Message string
	// Body is the raw response body.
	Body []byte
	// Fields holds every field of the JSON error body (consumedAt,
	// attemptsRemaining, ...).
	Fields map[string]json.RawMessage
	// RetryAfter is the Retry-After header in seconds (429, 503
	// overloaded), 0 when absent.
	RetryAfter int
}

func (e *APIError) Error() string {
	code := e.Code
	if code == "" {
		code = http.StatusText(e.Status)
	}
	if e.Message != "" {
		return fmt.Sprintf("%d %s: %s", e.Status, code, e.Message)
	}
	return fmt.Sprintf("%d %s", e.Status, code)
}

// Is reports whether target is the sentinel of e's code (ErrAlreadyUsed
// for "already_used"), so that errors.Is matches an API error by its code.
func (e *APIError) Is(target error) bool {
	c, ok := target.(codeError)
	return ok && e.Code != "" && string(c) == e.Code
}

// Field decodes one extra field of the error body into v; it reports
// whether the field was present and decoded.
func (e *APIError) Field(name string, v any) bool {
	raw, ok := e.Fields[name]
	if !ok {
		return false
	}
	return json.Unmarshal(raw, v) == nil
}

// ErrorCode returns err's API error code, or "" when err is not an *APIError.
func ErrorCode(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// IsCode reports whether err is an *APIError with the given code.
func IsCode(err error, code string) bool { return code != "" && ErrorCode(err) == code }

// Temporary reports whether err says that nothing is known to have been
// done, or that the outcome is unknown, so that sending the same request
// again (with the same Idempotency-Key for a write) may succeed: a
// connection failure (ErrConnection) or any 503 (ErrUnavailable,
// ErrOverloaded, ErrOutcomeUnknown). A definite answer (a 4xx, a 2xx) is
// never temporary. It is the test ConsumeWithRetry and WithRetry use.
func Temporary(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrConnection) {
		return true
	}
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable
}

func newAPIError(status int, header http.Header, body []byte) *APIError {
	e := &APIError{Status: status, Body: body}
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) == nil {
		e.Fields = fields
		_ = json.Unmarshal(fields["error"], &e.Code)
		_ = json.Unmarshal(fields["message"], &e.Message)
	} else {
		e.Message = strings.TrimSpace(string(body))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "..."
		}
	}
	if ra := header.Get("Retry-After"); ra != "" {
		_, _ = fmt.Sscanf(ra, "%d", &e.RetryAfter)
	}
	return e
}
