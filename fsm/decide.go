package fsm

import (
	"bytes"
	"crypto/subtle"
	"fmt"
	"strings"
)

// The decisions below are pure: they read only their arguments and return
// the new state plus the outcome. Storage (store.go) loads the inputs and
// writes the outputs, so every SPEC.md row can be table-tested here.

// Defaults used when a create entry carries no TTL settings.
const (
	DefaultTTLMS    = 24 * 60 * 60 * 1000
	DefaultMaxTTLMS = 366 * 24 * 60 * 60 * 1000
	dayMS           = 24 * 60 * 60 * 1000
	// DefaultMaxActions is the per-client quota of stored actions used when
	// a create entry carries MaxActions 0: finite, so that a server left at
	// its defaults cannot be filled by one client.
	DefaultMaxActions = 1_000_000
)

// resultAction is the copy of an action placed in a Result. The sealed
// payload is kept only when keep is true (a successful consume, whose
// response carries the payload); every other result, which is also what an
// idempotency record stores, leaves it out so no response can leak it and
// records stay small.
func resultAction(a *Action, keep bool) *Action {
	if a == nil {
		return nil
	}
	c := *a
	if !keep {
		c.SealedPayload = nil
	}
	return &c
}

// decideCreateRow validates one create row at FSM time now and returns the
// action to store, or an error code and a message naming the field. The
// existence of the id is checked by the caller.
func decideCreateRow(r *CreateRow, now, defaultTTL, maxTTL int64) (*Action, Code, string) {
	if r.Error != CodeOK {
		return nil, r.Error, r.Message
	}
	if r.ActionID == "" {
		return nil, CodeInvalidRequest, "action id is required"
	}
	if defaultTTL <= 0 {
		defaultTTL = DefaultTTLMS
	}
	if maxTTL <= 0 {
		maxTTL = DefaultMaxTTLMS
	}
	activeAt := r.ActiveAt
	if activeAt == 0 {
		activeAt = now
	}
	expiresAt := r.ExpiresAt
	if expiresAt == 0 {
		expiresAt = max(now, activeAt) + defaultTTL
	}
	switch {
	case expiresAt <= activeAt:
		return nil, CodeInvalidRequest, "expires_at must be after active_at"
	case expiresAt <= now:
		return nil, CodeInvalidRequest, "expires_at must be in the future"
	case expiresAt-now > maxTTL:
		return nil, CodeInvalidRequest, fmt.Sprintf("expires_at is beyond the maximum TTL of %d days", maxTTL/dayMS)
	}
	return &Action{
		ID:            r.ActionID,
		SealedPayload: r.SealedPayload,
		PINHash:       r.PINHash,
		CreatedAt:     now,
		ActiveAt:      activeAt,
		ExpiresAt:     expiresAt,
	}, CodeOK, ""
}

// decideQuota decides whether a client holding stored actions may store
// adding more under the command's quota (0: DefaultMaxActions, negative:
// none). The demo client is exempt: its creations are bounded by the
// per-address demo rate limit instead, and a quota on the one shared demo
// client would let anyone switch the demo off by filling it.
func decideQuota(clientID string, stored, adding, quota int64) (Code, string) {
	if quota == 0 {
		quota = DefaultMaxActions
	}
	if quota < 0 || adding <= 0 || clientID == DemoClientID || stored+adding <= quota {
		return CodeOK, ""
	}
	return CodeQuotaExceeded, fmt.Sprintf("the client may store at most %d actions: it stores %d and this request adds %d", quota, stored, adding)
}

// decideConsume applies SPEC.md's consume table, checks in order. a is the
// client's action or nil. next is the action to store, nil when the state
// does not change.
func decideConsume(a *Action, c *Consume, now int64) (next *Action, res Result) {
	res.Time = now
	if a == nil {
		res.Code = CodeNotFound
		return nil, res
	}
	switch {
	case a.CanceledAt != 0:
		res.Code = CodeCanceled
	case a.ConsumedAt != 0 && !chaosBugSkipConsumedCheck:
		res.Code = CodeAlreadyUsed
	case now >= a.ExpiresAt:
		res.Code = CodeExpired
	case now < a.ActiveAt:
		res.Code = CodeNotActive
	case len(a.PINHash) > 0 && !c.PINGiven:
		res.Code = CodePINRequired
	}
	if res.Code != CodeOK {
		res.Action = resultAction(a, false)
		return nil, res
	}
	n := *a
	if len(a.PINHash) > 0 && subtle.ConstantTimeCompare(a.PINHash, c.PINHash) != 1 {
		n.FailedPINAttempts++
		res.Code = CodeInvalidPIN
		res.AttemptsRemaining = max(MaxPINAttempts-n.FailedPINAttempts, 0)
		if n.FailedPINAttempts >= MaxPINAttempts {
			n.ConsumedAt = now
			n.ConsumedReason = ReasonPINBurned
			n.SealedPayload = nil // terminal: the payload goes (retention.go)
		}
		res.Action = resultAction(&n, false)
		return &n, res
	}
	n.ConsumedAt = now
	n.ConsumedReason = ReasonConsumed
	n.Consumer = c.Consumer
	// The winner's answer (and its idempotency record, for 24 h) carries
	// the payload; the stored action no longer does.
	res.Action = resultAction(&n, true)
	n.SealedPayload = nil
	return &n, res
}

// decideCancel applies SPEC.md's cancel rules. a is the client's action or
// nil; next is the action to store, nil when the state does not change.
func decideCancel(a *Action, now int64) (next *Action, res Result) {
	res.Time = now
	if a == nil {
		res.Code = CodeNotFound
		return nil, res
	}
	switch {
	case a.ConsumedAt != 0:
		res.Code = CodeAlreadyUsed
	case a.CanceledAt != 0:
		// Canceling again answers the same 200 with the first canceledAt.
	case now >= a.ExpiresAt:
		res.Code = CodeExpired
	default:
		n := *a
		n.CanceledAt = now
		n.SealedPayload = nil // terminal: the payload goes (retention.go)
		res.Action = resultAction(&n, false)
		return &n, res
	}
	res.Action = resultAction(a, false)
	return nil, res
}

// decideCreateClient registers a client unless the id is taken (existing
// is the stored client with that id, or nil).
func decideCreateClient(existing *Client, c *CreateClient, now int64) (next *Client, res Result) {
	res.Time = now
	switch {
	case c.ID == "" || strings.IndexByte(c.ID, 0) >= 0:
		// A 0 byte would break the clientID 0x00 key prefix of the indexes.
		res.Code, res.Message = CodeInvalidRequest, "client id is empty or invalid"
		return nil, res
	case c.ID == DemoClientID || existing != nil:
		res.Code, res.Message = CodeConflict, "client id already exists"
		return nil, res
	}
	n := &Client{ID: c.ID, Name: c.Name, SecretHash: c.SecretHash, CreatedAt: now}
	cc := *n
	res.Client = &cc
	return n, res
}

// decideRevokeClient revokes a client at once; revoking again is a no-op.
func decideRevokeClient(existing *Client, now int64) (next *Client, res Result) {
	res.Time = now
	if existing == nil {
		res.Code = CodeClientNotFound
		return nil, res
	}
	if existing.RevokedAt != 0 {
		c := *existing
		res.Client = &c
		return nil, res
	}
	n := *existing
	n.RevokedAt = now
	c := n
	res.Client = &c
	return &n, res
}

// decideKeyCheck records the cluster key's check value when none is
// recorded (stored is nil) and refuses another value afterwards: the state
// keeps the first. next is the value to store, nil when nothing changes.
func decideKeyCheck(stored []byte, k *KeyCheck, now int64) (next []byte, res Result) {
	res.Time = now
	switch {
	case len(k.Value) == 0:
		res.Code, res.Message = CodeInvalidRequest, "key check value is empty"
		res.KeyCheck = stored
		return nil, res
	case stored == nil:
		res.KeyCheck = bytes.Clone(k.Value)
		return bytes.Clone(k.Value), res
	case !bytes.Equal(stored, k.Value):
		res.Code = CodeKeyMismatch
		res.Message = "the state records another cluster key: this node runs with a different key than the cluster"
	}
	res.KeyCheck = stored
	return nil, res
}
