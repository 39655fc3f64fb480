package httpapi

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/secure"
)

// timeLayout is the response time format: RFC 3339, UTC, milliseconds.
const timeLayout = "2006-01-02T15:04:05.000Z"

// fmtTime formats Unix milliseconds; 0 (unset) gives "".
func fmtTime(ms int64) string {
	if ms == 0 {
		return ""
	}
	return time.UnixMilli(ms).UTC().Format(timeLayout)
}

// createResponse is the 201 body of a JSON create.
type createResponse struct {
	ActionID    string `json:"actionId"`
	ActiveAt    string `json:"activeAt"`
	ExpiresAt   string `json:"expiresAt"`
	CreatedAt   string `json:"createdAt"`
	PINRequired bool   `json:"pinRequired"`
}

// csvResponse is the 200 body of a CSV create.
type csvResponse struct {
	Total   int         `json:"total"`
	Created int         `json:"created"`
	Failed  int         `json:"failed"`
	Results []csvResult `json:"results"`
}

type csvResult struct {
	Row      int    `json:"row"`
	Status   string `json:"status"`
	ActionID string `json:"actionId,omitempty"`
	Error    string `json:"error,omitempty"`
	Message  string `json:"message,omitempty"`
}

// consumeResponse is the 200 body of a consume (and a demo reveal).
type consumeResponse struct {
	ActionID   string          `json:"actionId"`
	State      fsm.State       `json:"state"`
	Payload    json.RawMessage `json:"payload"`
	ConsumedAt string          `json:"consumedAt"`
}

// cancelResponse is the 200 body of a cancel.
type cancelResponse struct {
	ActionID   string    `json:"actionId"`
	State      fsm.State `json:"state"`
	CanceledAt string    `json:"canceledAt"`
}

// actionView is the verify object (also a list item). Never the payload or PIN.
type actionView struct {
	ActionID          string          `json:"actionId"`
	State             fsm.State       `json:"state"`
	ActiveAt          string          `json:"activeAt"`
	ExpiresAt         string          `json:"expiresAt"`
	CreatedAt         string          `json:"createdAt"`
	PINRequired       bool            `json:"pinRequired"`
	ConsumedAt        string          `json:"consumedAt,omitempty"`
	ConsumedReason    string          `json:"consumedReason,omitempty"`
	Consumer          json.RawMessage `json:"consumer,omitempty"`
	CanceledAt        string          `json:"canceledAt,omitempty"`
	FailedPINAttempts int             `json:"failedPinAttempts"`
}

func viewOf(a *fsm.Action, now int64) actionView {
	v := actionView{
		ActionID:          a.ID,
		State:             a.StateAt(now),
		ActiveAt:          fmtTime(a.ActiveAt),
		ExpiresAt:         fmtTime(a.ExpiresAt),
		CreatedAt:         fmtTime(a.CreatedAt),
		PINRequired:       len(a.PINHash) > 0,
		ConsumedAt:        fmtTime(a.ConsumedAt),
		ConsumedReason:    a.ConsumedReason,
		CanceledAt:        fmtTime(a.CanceledAt),
		FailedPINAttempts: a.FailedPINAttempts,
	}
	if len(a.Consumer) > 0 {
		v.Consumer = json.RawMessage(a.Consumer)
	}
	return v
}

// resultError renders a non-OK Result as (status, error body) with the
// extra fields SPEC.md names for each code, taken from the Result only.
func resultError(res *fsm.Result) (int, any) {
	code := string(res.Code)
	extra := map[string]any{}
	a := res.Action
	switch res.Code {
	case fsm.CodeCanceled:
		if a != nil {
			extra["canceledAt"] = fmtTime(a.CanceledAt)
		}
	case fsm.CodeAlreadyUsed:
		if a != nil {
			extra["consumedAt"] = fmtTime(a.ConsumedAt)
			extra["consumedReason"] = a.ConsumedReason
		}
	case fsm.CodeExpired:
		if a != nil {
			extra["expiresAt"] = fmtTime(a.ExpiresAt)
		}
	case fsm.CodeNotActive:
		if a != nil {
			extra["activeAt"] = fmtTime(a.ActiveAt)
		}
	case fsm.CodeInvalidPIN:
		extra["attemptsRemaining"] = res.AttemptsRemaining
	}
	return StatusForCode(code), errorBody(code, res.Message, extra)
}

// renderCreate renders the Result of a JSON create.
func renderCreate(res *fsm.Result) (int, any) {
	if res.Code != fsm.CodeOK {
		return resultError(res)
	}
	// A row rejected by the FSM's time checks may come back as a row error.
	if len(res.Rows) == 1 && res.Rows[0].Error != fsm.CodeOK {
		row := res.Rows[0]
		return StatusForCode(string(row.Error)), errorBody(string(row.Error), row.Message, nil)
	}
	a := res.Action
	if a == nil {
		return http.StatusInternalServerError, errorBody(string(fsm.CodeInternal), "create returned no action", nil)
	}
	return http.StatusCreated, createResponse{
		ActionID:    a.ID,
		ActiveAt:    fmtTime(a.ActiveAt),
		ExpiresAt:   fmtTime(a.ExpiresAt),
		CreatedAt:   fmtTime(a.CreatedAt),
		PINRequired: len(a.PINHash) > 0,
	}
}

// renderCSV renders the Result of a CSV create.
func renderCSV(res *fsm.Result) (int, any) {
	if res.Code != fsm.CodeOK {
		return resultError(res)
	}
	out := csvResponse{Total: len(res.Rows), Results: make([]csvResult, 0, len(res.Rows))}
	for _, r := range res.Rows {
		if r.Error != fsm.CodeOK {
			out.Failed++
			msg := r.Message
			if msg == "" {
				msg = defaultMessage[string(r.Error)]
			}
			out.Results = append(out.Results, csvResult{Row: r.Row, Status: "failed", Error: string(r.Error), Message: msg})
			continue
		}
		out.Created++
		out.Results = append(out.Results, csvResult{Row: r.Row, Status: "created", ActionID: r.ActionID})
	}
	return http.StatusOK, out
}

// renderConsume renders the Result of a consume, opening the payload.
func renderConsume(keys *secure.Keys, res *fsm.Result) (int, any) {
	if res.Code != fsm.CodeOK {
		return resultError(res)
	}
	a := res.Action
	if a == nil {
		return http.StatusInternalServerError, errorBody(string(fsm.CodeInternal), "consume returned no action", nil)
	}
	pt, err := keys.OpenPayload(a.ID, a.SealedPayload)
	if err != nil {
		return http.StatusInternalServerError, errorBody(string(fsm.CodeInternal), "cannot open the payload", nil)
	}
	return http.StatusOK, consumeResponse{
		ActionID:   a.ID,
		State:      fsm.StateConsumed,
		Payload:    json.RawMessage(pt),
		ConsumedAt: fmtTime(a.ConsumedAt),
	}
}

// renderCancel renders the Result of a cancel.
func renderCancel(res *fsm.Result) (int, any) {
	if res.Code != fsm.CodeOK {
		return resultError(res)
	}
	a := res.Action
	if a == nil {
		return http.StatusInternalServerError, errorBody(string(fsm.CodeInternal), "cancel returned no action", nil)
	}
	return http.StatusOK, cancelResponse{ActionID: a.ID, State: fsm.StateCanceled, CanceledAt: fmtTime(a.CanceledAt)}
}
