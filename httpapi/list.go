package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/exactonce/exactonce/fsm"
)

// listResponse is the body of GET /v1/actions.
type listResponse struct {
	Actions   []actionView `json:"actions"`
	NextToken *string      `json:"nextToken"`
}

// listParams are the query parameters GET /v1/actions accepts.
var listParams = map[string]bool{
	"state": true, "consumed_reason": true, "created_from": true, "created_to": true,
	"active_from": true, "active_to": true, "order_by": true, "order": true,
	"limit": true, "nextToken": true, "consistency": true,
}

// tokenVersion prefixes every page token so its format can evolve.
const tokenVersion = 1

// fingerprintLen is how much of the query fingerprint a token carries.
const fingerprintLen = 16

// queryFingerprint identifies the filters and order of a list (not the
// limit): a token is only valid with the query that produced it.
func queryFingerprint(q *fsm.ListQuery) []byte {
	h := sha256.New()
	fmt.Fprintf(h, "v1\x00%s\x00%s\x00%s\x00%d\x00%d\x00%d\x00%d\x00%s\x00%t",
		q.ClientID, q.State, q.ConsumedReason, q.CreatedFrom, q.CreatedTo,
		q.ActiveFrom, q.ActiveTo, q.OrderBy, q.Desc)
	return h.Sum(nil)[:fingerprintLen]
}

// encodeToken makes the opaque nextToken: version, fingerprint, FSM position.
func encodeToken(fp, next []byte) string {
	b := make([]byte, 0, 1+len(fp)+len(next))
	b = append(b, tokenVersion)
	b = append(b, fp...)
	b = append(b, next...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeToken checks a nextToken against the query and returns the position.
func decodeToken(tok string, fp []byte) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 1+fingerprintLen+1 || b[0] != tokenVersion {
		return nil, fmt.Errorf("nextToken is not a valid page token")
	}
	if subtle.ConstantTimeCompare(b[1:1+fingerprintLen], fp) != 1 {
		return nil, fmt.Errorf("nextToken belongs to a list with other filters or order")
	}
	return b[1+fingerprintLen:], nil
}

// parseListQuery validates the query string; errors name the parameter.
func parseListQuery(r *http.Request, clientID string) (fsm.ListQuery, string, error) {
	vals := r.URL.Query()
	q := fsm.ListQuery{ClientID: clientID, OrderBy: fsm.OrderCreatedAt, Desc: true, Limit: DefaultListLimit}
	for k, v := range vals {
		if !listParams[k] {
			return q, "", fmt.Errorf("unknown query parameter %q", k)
		}
		if len(v) > 1 {
			return q, "", fmt.Errorf("query parameter %q is given more than once", k)
		}
	}
	if v := vals.Get("state"); v != "" {
		switch st := fsm.State(v); st {
		case fsm.StatePending, fsm.StateActive, fsm.StateConsumed, fsm.StateExpired, fsm.StateCanceled:
			q.State = st
		default:
			return q, "", fmt.Errorf("state must be one of pending, active, consumed, expired, canceled")
		}
	}
	if v := vals.Get("consumed_reason"); v != "" {
		if v != fsm.ReasonConsumed && v != fsm.ReasonPINBurned {
			return q, "", fmt.Errorf("consumed_reason must be consumed or invalid_pin_burned")
		}
		q.ConsumedReason = v
	}
	for _, tf := range []struct {
		name string
		dst  *int64
	}{{"created_from", &q.CreatedFrom}, {"created_to", &q.CreatedTo}, {"active_from", &q.ActiveFrom}, {"active_to", &q.ActiveTo}} {
		if v := vals.Get(tf.name); v != "" {
			ms, err := parseTime(tf.name, v)
			if err != nil {
				return q, "", err
			}
			*tf.dst = ms
		}
	}
	if v := vals.Get("order_by"); v != "" {
		switch ob := fsm.OrderBy(v); ob {
		case fsm.OrderCreatedAt, fsm.OrderActiveAt, fsm.OrderExpiresAt:
			q.OrderBy = ob
		default:
			return q, "", fmt.Errorf("order_by must be createdAt, activeAt or expiresAt")
		}
	}
	switch vals.Get("order") {
	case "", "desc":
	case "asc":
		q.Desc = false
	default:
		return q, "", fmt.Errorf("order must be asc or desc")
	}
	if v, ok := vals["limit"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 1 || n > MaxListLimit {
			return q, "", fmt.Errorf("limit must be an integer from 1 to %d", MaxListLimit)
		}
		q.Limit = n
	}
	fp := queryFingerprint(&q)
	if v, ok := vals["nextToken"]; ok {
		after, err := decodeToken(v[0], fp)
		if err != nil {
			return q, "", err
		}
		q.After = after
	}
	return q, string(fp), nil
}

func (s *Server) listActions(w http.ResponseWriter, r *http.Request) {
	// Credentials first: an anonymous call costs no read barrier.
	clientID, ok := s.authClient(w, r)
	if !ok {
		return
	}
	if !s.readBarrier(w, r, nil) || !s.stillAllowed(w, r, clientID) {
		return
	}
	q, fp, err := parseListQuery(r, clientID)
	if err != nil {
		WriteError(w, errInvalid, err.Error(), nil)
		return
	}
	q.Now = s.now()
	var page fsm.ListPage
	err = s.b.FSM().View(func(v *fsm.View) error {
		var err error
		page, err = v.List(q)
		return err
	})
	if errors.Is(err, fsm.ErrBadCursor) {
		WriteError(w, errInvalid, "nextToken is not a valid page token", nil)
		return
	}
	if err != nil {
		LoggerFrom(r.Context()).Error("list", "error", err)
		WriteError(w, errInternal, "", nil)
		return
	}
	out := listResponse{Actions: make([]actionView, 0, len(page.Actions))}
	for _, a := range page.Actions {
		out.Actions = append(out.Actions, viewOf(a, q.Now))
	}
	if page.Next != nil {
		tok := encodeToken([]byte(fp), page.Next)
		out.NextToken = &tok
	}
	WriteJSON(w, http.StatusOK, out)
}
