package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/secure"
)

// Error codes of the HTTP layer that are not FSM outcomes.
const (
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeUnavailable      = "unavailable"
	CodeOutcomeUnknown   = "outcome_unknown"
	CodeRateLimited      = "rate_limited"
)

// statusOf maps an error code to its HTTP status (SPEC.md).
var statusOf = map[string]int{
	string(fsm.CodeNotFound):          http.StatusNotFound,
	string(fsm.CodeCanceled):          http.StatusGone,
	string(fsm.CodeAlreadyUsed):       http.StatusConflict,
	string(fsm.CodeExpired):           http.StatusGone,
	string(fsm.CodeNotActive):         http.StatusConflict,
	string(fsm.CodePINRequired):       http.StatusUnauthorized,
	string(fsm.CodeInvalidPIN):        http.StatusUnauthorized,
	string(fsm.CodeIdempotencyReused): http.StatusUnprocessableEntity,
	string(fsm.CodeInvalidRequest):    http.StatusBadRequest,
	string(fsm.CodeUnauthorized):      http.StatusUnauthorized,
	string(fsm.CodeClientNotFound):    http.StatusNotFound,
	string(fsm.CodeConflict):          http.StatusConflict,
	string(fsm.CodePayloadTooLarge):   http.StatusRequestEntityTooLarge,
	string(fsm.CodeInternal):          http.StatusInternalServerError,
	CodeNotFound:                      http.StatusNotFound,
	CodeMethodNotAllowed:              http.StatusMethodNotAllowed,
	CodeUnavailable:                   http.StatusServiceUnavailable,
	CodeOutcomeUnknown:                http.StatusServiceUnavailable,
	CodeRateLimited:                   http.StatusTooManyRequests,
	// A quota limits the client's resources, not its identity or rights:
	// 429, as gRPC's RESOURCE_EXHAUSTED maps, not 403. It has no
	// Retry-After: waiting frees no room, storing fewer actions does.
	string(fsm.CodeQuotaExceeded): http.StatusTooManyRequests,
	CodeOverloaded:                http.StatusServiceUnavailable,
	CodeRequestTimeout:            http.StatusRequestTimeout,
	CodeHeadersTooLarge:           http.StatusRequestHeaderFieldsTooLarge,
}

// defaultMessage is the message of an error body when none is more specific.
var defaultMessage = map[string]string{
	string(fsm.CodeNotFound):          "no such action",
	string(fsm.CodeCanceled):          "the action was canceled",
	string(fsm.CodeAlreadyUsed):       "the action was already used",
	string(fsm.CodeExpired):           "the action has expired",
	string(fsm.CodeNotActive):         "the action is not active yet",
	string(fsm.CodePINRequired):       "this action requires a PIN",
	string(fsm.CodeInvalidPIN):        "wrong PIN",
	string(fsm.CodeIdempotencyReused): "this Idempotency-Key was used with a different request",
	string(fsm.CodeInvalidRequest):    "invalid request",
	string(fsm.CodeUnauthorized):      "missing or invalid credentials",
	string(fsm.CodeClientNotFound):    "no such client",
	string(fsm.CodeConflict):          "conflict",
	string(fsm.CodePayloadTooLarge):   "request body or payload too large",
	string(fsm.CodeInternal):          "internal error",
	string(fsm.CodeQuotaExceeded):     "the client stores as many actions as its quota allows",
	CodeNotFound:                      "no such route",
	CodeMethodNotAllowed:              "method not allowed on this route",
	CodeUnavailable:                   "no leader reachable within the request deadline; nothing was done",
	CodeOutcomeUnknown:                "the write was proposed but its outcome is unknown; retry with the same Idempotency-Key",
	CodeRateLimited:                   "too many requests",
	CodeOverloaded:                    "this node is serving as many requests as it may; nothing was done, retry later",
	CodeRequestTimeout:                "the request body did not arrive in time",
	CodeHeadersTooLarge:               "the request header is too large",
}

// StatusForCode returns the HTTP status of an error code (500 if unknown).
func StatusForCode(code string) int {
	if s, ok := statusOf[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// encodeJSON renders v as the exact bytes of a response body. HTML escaping
// is off so that payloads come back byte for byte as stored.
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := encodeJSON(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":"internal","message":"cannot encode response"}` + "\n")
	}
	writeJSONBytes(w, status, b)
}

// writeJSONBytes writes an already encoded JSON response.
func writeJSONBytes(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// errorBody builds {"error": code, "message": msg, ...extra}. An empty msg
// takes the code's default message.
func errorBody(code, msg string, extra map[string]any) map[string]any {
	if msg == "" {
		msg = defaultMessage[code]
		if msg == "" {
			msg = code
		}
	}
	body := map[string]any{"error": code, "message": msg}
	for k, v := range extra {
		body[k] = v
	}
	return body
}

// WriteError writes a typed JSON error: status from the code, body
// {"error": code, "message": msg, ...extra}. Extra handlers mounted through
// Config.Extra use it to look like the rest of the API.
func WriteError(w http.ResponseWriter, code, msg string, extra map[string]any) {
	WriteJSON(w, StatusForCode(code), errorBody(code, msg, extra))
}

// AdminAuthorized reports whether r carries "Authorization: Bearer <token>",
// once, whose secure.HashSecret equals tokenHash, compared in constant
// time. An empty tokenHash authorizes nobody.
func AdminAuthorized(r *http.Request, tokenHash []byte) bool {
	if len(tokenHash) == 0 {
		return false
	}
	h, ok := singleHeader(r, headerAuthz)
	if !ok {
		return false
	}
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	token := strings.TrimSpace(h[len(prefix):])
	return secure.SecretMatches(token, tokenHash)
}

// RequireAdmin wraps an extra handler with the admin bearer-token check,
// answering 401 unauthorized like the built-in admin routes, and 400
// invalid_request when Authorization is given more than once.
func RequireAdmin(tokenHash []byte, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := singleHeader(r, headerAuthz); !ok {
			writeRepeatedHeader(w, headerAuthz)
			return
		}
		if !AdminAuthorized(r, tokenHash) {
			WriteError(w, string(fsm.CodeUnauthorized), "missing or invalid admin token", nil)
			return
		}
		next.ServeHTTP(w, r)
	})
}
