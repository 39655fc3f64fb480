package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/secure"
)

// Convenience string forms of the FSM codes used for static errors.
const (
	errInvalid   = string(fsm.CodeInvalidRequest)
	errTooLarge  = string(fsm.CodePayloadTooLarge)
	errUnauth    = string(fsm.CodeUnauthorized)
	errInternal  = string(fsm.CodeInternal)
	errNoAction  = string(fsm.CodeNotFound)
	minPINLength = 4
	maxPINLength = 12
)

// authClient checks the client-id/client-secret headers against the local
// FSM and records the client for clientOf. It answers 401 (or 500, or 503)
// itself and returns ok=false on failure.
//
// A client id unknown here may belong to a client created a moment ago
// through another node: before answering 401 the node waits for a read
// barrier and looks again. Read barriers are coalesced (one confirmation
// round at a time serves every waiting reader), so a flood of unknown ids
// costs at most one round in flight, not one each.
func (s *Server) authClient(w http.ResponseWriter, r *http.Request) (string, bool) {
	id, ok1 := singleHeader(r, headerClientID)
	secret, ok2 := singleHeader(r, headerClientSecret)
	switch {
	case !ok1:
		writeRepeatedHeader(w, headerClientID)
		return "", false
	case !ok2:
		writeRepeatedHeader(w, headerClientSecret)
		return "", false
	}
	var c *fsm.Client
	if id != "" && secret != "" && id != fsm.DemoClientID {
		var err error
		c, err = s.clients.lookup(s.b.FSM(), id)
		if err == nil && c == nil && !s.b.IsLeader() {
			if berr := s.b.ReadBarrier(r.Context()); berr != nil {
				WriteError(w, CodeUnavailable, "", nil)
				return "", false
			}
			c, err = s.clients.lookup(s.b.FSM(), id)
		}
		if err != nil {
			LoggerFrom(r.Context()).Error("auth: read client", "error", err)
			WriteError(w, errInternal, "", nil)
			return "", false
		}
	}
	var hash []byte
	if c != nil {
		hash = c.SecretHash
	}
	// Always compare, so unknown and known clients take the same time.
	match := secure.SecretMatches(secret, hash)
	if c == nil || c.RevokedAt != 0 || !match {
		WriteError(w, errUnauth, "", nil)
		return "", false
	}
	if ri, ok := r.Context().Value(requestKey).(*requestInfo); ok {
		ri.clientID = id
	}
	return id, true
}

// clientOf returns the client authClient authenticated for r ("" when none).
func clientOf(r *http.Request) string {
	if ri, ok := r.Context().Value(requestKey).(*requestInfo); ok {
		return ri.clientID
	}
	return ""
}

// idempotency parses the Idempotency-Key header: nil when absent. A bad key
// answers 400 and returns ok=false.
func (s *Server) idempotency(w http.ResponseWriter, r *http.Request, body []byte) (*fsm.Idempotency, bool) {
	vals := r.Header.Values("Idempotency-Key")
	if len(vals) == 0 {
		return nil, true
	}
	key := vals[0]
	if len(vals) > 1 || key == "" || len(key) > 255 {
		WriteError(w, errInvalid, "Idempotency-Key must be 1 to 255 printable ASCII characters", nil)
		return nil, false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			WriteError(w, errInvalid, "Idempotency-Key must be 1 to 255 printable ASCII characters", nil)
			return nil, false
		}
	}
	return &fsm.Idempotency{Key: key, Fingerprint: s.cfg.Keys.RequestFingerprint(r.Method, r.URL.Path, body)}, true
}

// apply proposes cmd (on the leader, wherever this node stands) and writes
// the rendered Result.
func (s *Server) apply(w http.ResponseWriter, r *http.Request, cmd *fsm.Command, render func(*fsm.Result) (int, any)) {
	res, err := s.b.Apply(r.Context(), cmd)
	if err != nil {
		s.applyError(w, r, err)
		return
	}
	if res == nil {
		WriteError(w, errInternal, "no result", nil)
		return
	}
	if res.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	status, body := render(res)
	WriteJSON(w, status, body)
}

func isCSV(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && strings.EqualFold(mt, "text/csv")
}

// decodeStrict decodes one JSON value into v: unknown fields and trailing
// data are errors, and so is anything checkStrictJSON rejects (a field
// name in the wrong case, a duplicate key, invalid UTF-8, nesting deeper
// than maxJSONDepth). The error message names the offending field.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &ute):
			if ute.Field != "" {
				return fmt.Errorf("field %q has the wrong type (want %s)", ute.Field, ute.Type)
			}
			return fmt.Errorf("the body must be a JSON object")
		case errors.As(err, &se):
			return fmt.Errorf("malformed JSON at offset %d: %v", se.Offset, err)
		case errors.Is(err, io.EOF):
			return errors.New("empty body: a JSON object is required")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return fmt.Errorf("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		default:
			return fmt.Errorf("malformed JSON: %v", err)
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON object")
	}
	return checkStrictJSON(body, reflect.TypeOf(v))
}

// errTooLargeField marks a field over its size limit (413, not 400).
type errTooLargeField struct{ msg string }

func (e errTooLargeField) Error() string { return e.msg }

// compactObject checks that raw is a JSON object of at most limit bytes in
// compact form and returns that form.
func compactObject(field string, raw json.RawMessage, limit int) ([]byte, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("%s must be a JSON object", field)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, t); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %v", field, err)
	}
	if buf.Len() > limit {
		return nil, errTooLargeField{fmt.Sprintf("%s is %d bytes, over the limit of %d", field, buf.Len(), limit)}
	}
	return buf.Bytes(), nil
}

// parseTime parses an RFC 3339 time to Unix ms (truncated to ms).
func parseTime(field, v string) (int64, error) {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return 0, fmt.Errorf("%s must be an RFC 3339 time, e.g. 2030-01-02T15:04:05Z", field)
	}
	ms := t.UnixMilli()
	if ms <= 0 {
		return 0, fmt.Errorf("%s must be after 1970-01-01T00:00:00Z", field)
	}
	return ms, nil
}

func checkPIN(field, pin string) error {
	n := utf8.RuneCountInString(pin)
	if !utf8.ValidString(pin) || n < minPINLength || n > maxPINLength {
		return fmt.Errorf("%s must be %d to %d characters", field, minPINLength, maxPINLength)
	}
	return nil
}

// createRequest is the JSON create body.
type createRequest struct {
	Payload   json.RawMessage `json:"payload"`
	ActiveAt  *string         `json:"active_at"`
	ExpiresAt *string         `json:"expires_at"`
	PIN       *string         `json:"pin"`
}

// buildRow validates one action statically and, when valid, fills the row
// with a fresh id, the sealed payload and the PIN hash. Time-dependent
// checks are the FSM's, with the leader's stamp.
func (s *Server) buildRow(payload []byte, pin string, pinSet bool, activeAt, expiresAt int64) fsm.CreateRow {
	id := s.actionIDs.New(s.cfg.Now())
	row := fsm.CreateRow{
		ActionID:      id,
		SealedPayload: s.cfg.Keys.SealPayload(id, payload),
		ActiveAt:      activeAt,
		ExpiresAt:     expiresAt,
	}
	if pinSet {
		row.PINHash = s.cfg.Keys.PINHash(id, pin)
	}
	return row
}

// staticRowChecks are the time checks that need no clock.
func staticRowChecks(activeAt, expiresAt int64) error {
	if activeAt != 0 && expiresAt != 0 && expiresAt <= activeAt {
		return errors.New("expires_at must be after active_at")
	}
	return nil
}

func (s *Server) createActions(w http.ResponseWriter, r *http.Request, body []byte) {
	clientID := clientOf(r)
	idem, ok := s.idempotency(w, r, body)
	if !ok {
		return
	}
	if isCSV(r) {
		s.createCSV(w, r, clientID, idem, body)
		return
	}
	var req createRequest
	if err := decodeStrict(body, &req); err != nil {
		WriteError(w, errInvalid, err.Error(), nil)
		return
	}
	if req.Payload == nil || bytes.Equal(bytes.TrimSpace(req.Payload), []byte("null")) {
		WriteError(w, errInvalid, "payload is required", nil)
		return
	}
	payload, err := compactObject("payload", req.Payload, s.cfg.MaxPayloadBytes)
	if err != nil {
		var tl errTooLargeField
		if errors.As(err, &tl) {
			WriteError(w, errTooLarge, err.Error(), nil)
		} else {
			WriteError(w, errInvalid, err.Error(), nil)
		}
		return
	}
	var activeAt, expiresAt int64
	if req.ActiveAt != nil {
		if activeAt, err = parseTime("active_at", *req.ActiveAt); err != nil {
			WriteError(w, errInvalid, err.Error(), nil)
			return
		}
	}
	if req.ExpiresAt != nil {
		if expiresAt, err = parseTime("expires_at", *req.ExpiresAt); err != nil {
			WriteError(w, errInvalid, err.Error(), nil)
			return
		}
	}
	if err := staticRowChecks(activeAt, expiresAt); err != nil {
		WriteError(w, errInvalid, err.Error(), nil)
		return
	}
	if req.PIN != nil {
		if err := checkPIN("pin", *req.PIN); err != nil {
			WriteError(w, errInvalid, err.Error(), nil)
			return
		}
	}
	row := s.buildRow(payload, derefString(req.PIN), req.PIN != nil, activeAt, expiresAt)
	cmd := &fsm.Command{
		Type:        fsm.CmdCreateActions,
		ClientID:    clientID,
		Idempotency: idem,
		Create: &fsm.CreateActions{
			Rows:         []fsm.CreateRow{row},
			DefaultTTLMS: s.cfg.DefaultTTL.Milliseconds(),
			MaxTTLMS:     s.cfg.MaxTTL.Milliseconds(),
			MaxActions:   s.cfg.MaxActionsPerClient,
		},
	}
	s.apply(w, r, cmd, func(res *fsm.Result) (int, any) {
		if res.Code == fsm.CodeOK && !res.Replayed && res.Action != nil {
			s.metrics.creates.Inc()
		}
		return renderCreate(res)
	})
}

func derefString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// consumeRequest is the optional consume body.
type consumeRequest struct {
	PIN      *string         `json:"pin"`
	Consumer json.RawMessage `json:"consumer"`
}

func (s *Server) consumeAction(w http.ResponseWriter, r *http.Request, body []byte) {
	clientID := clientOf(r)
	idem, ok := s.idempotency(w, r, body)
	if !ok {
		return
	}
	actionID := mux.Vars(r)["id"]
	if idem == nil {
		// Behind a consume of the same action already in flight from this
		// node, wait for its outcome; see inflightConsumes. A follower
		// learns the outcome's entry through a read barrier first.
		leave, answered := s.waitBehindConsume(&s.consumes, w, r, body, actionID, !s.b.IsLeader())
		if answered {
			return
		}
		if leave != nil {
			defer leave()
		}
	}
	s.consume(w, r, clientID, actionID, idem, body)
}

// consume proposes one consume; shared by the API and the demo reveal.
func (s *Server) consume(w http.ResponseWriter, r *http.Request, clientID, actionID string, idem *fsm.Idempotency, body []byte) {
	c, code, msg := s.parseConsume(actionID, body)
	if c == nil {
		WriteError(w, code, msg, nil)
		return
	}
	cmd := &fsm.Command{Type: fsm.CmdConsume, ClientID: clientID, Idempotency: idem, Consume: c}
	s.apply(w, r, cmd, func(res *fsm.Result) (int, any) {
		if !res.Replayed {
			outcome := string(res.Code)
			if res.Code == fsm.CodeOK {
				outcome = "consumed"
			}
			s.metrics.consumes.WithLabelValues(outcome).Inc()
		}
		return renderConsume(s.cfg.Keys, res)
	})
}

// parseConsume validates a consume body and builds the command's Consume.
// On a bad body it returns nil and the error code and message to answer.
// The settled-consume shortcut uses it too, so both paths accept exactly
// the same bodies.
func (s *Server) parseConsume(actionID string, body []byte) (*fsm.Consume, string, string) {
	var req consumeRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeStrict(body, &req); err != nil {
			return nil, errInvalid, err.Error()
		}
	}
	c := &fsm.Consume{ActionID: actionID}
	if req.Consumer != nil && !bytes.Equal(bytes.TrimSpace(req.Consumer), []byte("null")) {
		cons, err := compactObject("consumer", req.Consumer, s.cfg.MaxConsumerBytes)
		if err != nil {
			var tl errTooLargeField
			if errors.As(err, &tl) {
				return nil, errTooLarge, err.Error()
			}
			return nil, errInvalid, err.Error()
		}
		c.Consumer = cons
	}
	// An empty PIN counts as no PIN: it answers pin_required and costs no attempt.
	if req.PIN != nil && *req.PIN != "" {
		if len(*req.PIN) > 256 {
			return nil, errInvalid, "pin is too long"
		}
		c.PINGiven = true
		c.PINHash = s.cfg.Keys.PINHash(actionID, *req.PIN)
	}
	return c, "", ""
}

func (s *Server) cancelAction(w http.ResponseWriter, r *http.Request, body []byte) {
	clientID := clientOf(r)
	idem, ok := s.idempotency(w, r, body)
	if !ok {
		return
	}
	cmd := &fsm.Command{Type: fsm.CmdCancel, ClientID: clientID, Idempotency: idem,
		Cancel: &fsm.Cancel{ActionID: mux.Vars(r)["id"]}}
	s.apply(w, r, cmd, func(res *fsm.Result) (int, any) {
		// A first cancellation sets canceledAt to the decision's time; a
		// repeated one answers the same 200 with the earlier canceledAt
		// (a repeat decided in the same millisecond counts again: rare,
		// and the result does not tell the two apart).
		if res.Code == fsm.CodeOK && !res.Replayed && res.Action != nil && res.Action.CanceledAt == res.Time {
			s.metrics.cancels.Inc()
		}
		return renderCancel(res)
	})
}

// readBarrier makes the read linearizable unless ?consistency=stale. It
// answers 503 (or 400) itself and returns false on failure. On a follower
// that has not yet applied what the read must see, onLeader (when not nil)
// may answer the read on the leader instead: it returns true when it
// wrote the answer; otherwise the follower waits for its state.
func (s *Server) readBarrier(w http.ResponseWriter, r *http.Request, onLeader func() bool) bool {
	switch c := r.URL.Query().Get("consistency"); c {
	case "", "linearizable":
	case "stale":
		// Stale, but within a bound: a node cut off from the leader for
		// longer than MaxStaleness may be missing any number of writes.
		if bound := s.cfg.MaxStaleness; bound > 0 {
			if d := s.b.LeaderContact(); d > bound {
				WriteError(w, CodeUnavailable, fmt.Sprintf("this node has not heard from a leader for longer than %s, the bound on stale reads", bound), nil)
				return false
			}
		}
		return true
	default:
		WriteError(w, errInvalid, "consistency must be linearizable or stale", nil)
		return false
	}
	if onLeader != nil {
		err := s.b.ReadBarrierWithin(r.Context(), followerReadLag)
		switch {
		case err == nil:
			return true
		case errors.Is(err, cluster.ErrLagging):
			// This follower has not learned of a recent commit yet (a
			// follower hears of a commit with the leader's next message,
			// up to 100 ms later when idle): the leader answers at once.
			// If it cannot, wait here.
			if onLeader() {
				return false
			}
		default:
			LoggerFrom(r.Context()).Info("read barrier failed", "error", err)
			WriteError(w, CodeUnavailable, "", nil)
			return false
		}
	}
	if err := s.b.ReadBarrier(r.Context()); err != nil {
		LoggerFrom(r.Context()).Info("read barrier failed", "error", err)
		WriteError(w, CodeUnavailable, "", nil)
		return false
	}
	return true
}

// followerReadLag is how long a linearizable verify on a follower waits
// for its state machine to reach the read index before the leader answers
// it (cluster.Node.ReadBarrierWithin, Server.LeaderRead).
const followerReadLag = time.Millisecond

// onlyConsistencyParam answers 400 for any query parameter but
// "consistency" (reads other than list take no other).
func onlyConsistencyParam(w http.ResponseWriter, r *http.Request) bool {
	for k := range r.URL.Query() {
		if k != "consistency" {
			WriteError(w, errInvalid, fmt.Sprintf("unknown query parameter %q", k), nil)
			return false
		}
	}
	return true
}

// now is the time states are derived at: never before the FSM clock.
func (s *Server) now() int64 {
	n := s.cfg.Now().UnixMilli()
	if f := s.b.FSM(); f != nil {
		if lt := f.LastTime(); lt > n {
			n = lt
		}
	}
	return n
}

func (s *Server) verifyAction(w http.ResponseWriter, r *http.Request) {
	clientID, ok := s.authClient(w, r)
	if !ok {
		return
	}
	if !onlyConsistencyParam(w, r) {
		return
	}
	id := mux.Vars(r)["id"]
	onLeader := func() bool {
		q, err := json.Marshal(leaderQuery{Kind: queryVerify, ClientID: clientID, ActionID: id})
		if err != nil {
			return false
		}
		b, err := s.b.ReadOnLeader(r.Context(), q)
		if err != nil {
			LoggerFrom(r.Context()).Info("verify on the leader failed; waiting for this node's state", "error", err)
			return false
		}
		var ans leaderAnswer
		if err := json.Unmarshal(b, &ans); err != nil || ans.Status == 0 {
			LoggerFrom(r.Context()).Warn("verify on the leader: unreadable answer", "error", err)
			return false
		}
		writeJSONBytes(w, ans.Status, ans.Body)
		return true
	}
	if !s.readBarrier(w, r, onLeader) || !s.stillAllowed(w, r, clientID) {
		return
	}
	s.verifyHere(w, r, clientID, id)
}

// verifyHere answers a verify from this node's state.
func (s *Server) verifyHere(w http.ResponseWriter, r *http.Request, clientID, id string) {
	var a *fsm.Action
	err := s.b.FSM().View(func(v *fsm.View) error {
		var err error
		a, err = v.Action(clientID, id)
		return err
	})
	if err != nil {
		LoggerFrom(r.Context()).Error("verify: read action", "error", err)
		WriteError(w, errInternal, "", nil)
		return
	}
	if a == nil {
		WriteError(w, errNoAction, "", nil)
		return
	}
	WriteJSON(w, http.StatusOK, viewOf(a, s.now()))
}

// statsResponse is the body of GET /v1/stats.
type statsResponse struct {
	Total           int64        `json:"total"`
	ByState         statsByState `json:"byState"`
	Burned          int64        `json:"burned"`
	CreatedLast24h  int64        `json:"createdLast24h"`
	ConsumedLast24h int64        `json:"consumedLast24h"`
	// Purged counts the actions retention deleted (docs/api.md, "Retention").
	Purged int64 `json:"purged"`
}

type statsByState struct {
	Pending  int64 `json:"pending"`
	Active   int64 `json:"active"`
	Consumed int64 `json:"consumed"`
	Expired  int64 `json:"expired"`
	Canceled int64 `json:"canceled"`
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	// Credentials first: an anonymous call costs no read barrier.
	clientID, ok := s.authClient(w, r)
	if !ok {
		return
	}
	if !onlyConsistencyParam(w, r) {
		return
	}
	if !s.readBarrier(w, r, nil) || !s.stillAllowed(w, r, clientID) {
		return
	}
	var st fsm.Stats
	err := s.b.FSM().View(func(v *fsm.View) error {
		var err error
		st, err = v.Stats(clientID, s.now())
		return err
	})
	if err != nil {
		LoggerFrom(r.Context()).Error("stats", "error", err)
		WriteError(w, errInternal, "", nil)
		return
	}
	WriteJSON(w, http.StatusOK, statsResponse{
		Total: st.Total,
		ByState: statsByState{
			Pending:  st.ByState[fsm.StatePending],
			Active:   st.ByState[fsm.StateActive],
			Consumed: st.ByState[fsm.StateConsumed],
			Expired:  st.ByState[fsm.StateExpired],
			Canceled: st.ByState[fsm.StateCanceled],
		},
		Burned:          st.Burned,
		CreatedLast24h:  st.CreatedLast24h,
		ConsumedLast24h: st.ConsumedLast24h,
		Purged:          st.Purged,
	})
}
