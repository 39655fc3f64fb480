package fsm

import (
	"bytes"
	"testing"
)

// act is an action active in [t0, t0+hour), optionally with a PIN.
func act(mod func(a *Action)) *Action {
	a := &Action{ID: "act_1", ClientID: clA, SealedPayload: []byte("p"), CreatedAt: t0 - minMS,
		ActiveAt: t0, ExpiresAt: t0 + hour}
	if mod != nil {
		mod(a)
	}
	return a
}

func withPIN(a *Action) { a.PINHash = pinHash("1234") }

// TestDecideConsume walks SPEC.md's consume table row by row, including the
// order of its checks when several conditions hold at once.
func TestDecideConsume(t *testing.T) {
	expired := t0 + hour
	tests := []struct {
		name    string
		a       *Action
		c       Consume
		now     int64
		code    Code
		changed bool
		check   func(t *testing.T, n *Action, r Result)
	}{
		{name: "no such action", a: nil, now: t0, code: CodeNotFound},
		{name: "canceled", a: act(func(a *Action) { a.CanceledAt = t0 + 1 }), now: t0 + 2, code: CodeCanceled},
		{name: "canceled and expired answers canceled",
			a: act(func(a *Action) { a.CanceledAt = t0 + 1 }), now: expired + 5, code: CodeCanceled},
		{name: "consumed", a: act(func(a *Action) { a.ConsumedAt, a.ConsumedReason = t0+1, ReasonConsumed }),
			now: t0 + 2, code: CodeAlreadyUsed},
		{name: "consumed and expired answers already_used",
			a:   act(func(a *Action) { a.ConsumedAt, a.ConsumedReason = t0+1, ReasonConsumed }),
			now: expired + 5, code: CodeAlreadyUsed},
		{name: "burned answers already_used with reason",
			a: act(func(a *Action) {
				withPIN(a)
				a.ConsumedAt, a.ConsumedReason, a.FailedPINAttempts = t0+1, ReasonPINBurned, 3
			}),
			c: Consume{PINGiven: true, PINHash: pinHash("1234")}, now: t0 + 2, code: CodeAlreadyUsed,
			check: func(t *testing.T, _ *Action, r Result) {
				if r.Action.ConsumedReason != ReasonPINBurned {
					t.Errorf("reason %q", r.Action.ConsumedReason)
				}
			}},
		{name: "expired at exactly expiresAt", a: act(nil), now: expired, code: CodeExpired},
		{name: "expired and wrong pin answers expired, not counted", a: act(withPIN),
			c: Consume{PINGiven: true, PINHash: pinHash("0000")}, now: expired + 1, code: CodeExpired},
		{name: "pending", a: act(nil), now: t0 - 1, code: CodeNotActive},
		{name: "pending with wrong pin answers not_active, not counted", a: act(withPIN),
			c: Consume{PINGiven: true, PINHash: pinHash("0000")}, now: t0 - 1, code: CodeNotActive},
		{name: "pin required, none given, not counted", a: act(withPIN), now: t0, code: CodePINRequired},
		{name: "first wrong pin", a: act(withPIN), c: Consume{PINGiven: true, PINHash: pinHash("0000")},
			now: t0, code: CodeInvalidPIN, changed: true,
			check: func(t *testing.T, n *Action, r Result) {
				if r.AttemptsRemaining != 2 || n.FailedPINAttempts != 1 || n.ConsumedAt != 0 {
					t.Errorf("remaining %d attempts %d consumedAt %d", r.AttemptsRemaining, n.FailedPINAttempts, n.ConsumedAt)
				}
			}},
		{name: "empty pin given is a wrong pin", a: act(withPIN), c: Consume{PINGiven: true},
			now: t0, code: CodeInvalidPIN, changed: true},
		{name: "third wrong pin burns", a: act(func(a *Action) { withPIN(a); a.FailedPINAttempts = 2 }),
			c: Consume{PINGiven: true, PINHash: pinHash("0000")}, now: t0 + 7, code: CodeInvalidPIN, changed: true,
			check: func(t *testing.T, n *Action, r Result) {
				if r.AttemptsRemaining != 0 || n.FailedPINAttempts != 3 || n.ConsumedAt != t0+7 ||
					n.ConsumedReason != ReasonPINBurned || n.StateAt(t0+8) != StateConsumed {
					t.Errorf("got remaining %d, action %+v", r.AttemptsRemaining, n)
				}
			}},
		{name: "right pin consumes", a: act(func(a *Action) { withPIN(a); a.FailedPINAttempts = 2 }),
			c:   Consume{PINGiven: true, PINHash: pinHash("1234"), Consumer: []byte(`{"who":"x"}`)},
			now: t0 + 3, code: CodeOK, changed: true,
			check: func(t *testing.T, n *Action, r Result) {
				if n.ConsumedAt != t0+3 || n.ConsumedReason != ReasonConsumed || string(n.Consumer) != `{"who":"x"}` {
					t.Errorf("action %+v", n)
				}
				if !bytes.Equal(r.Action.SealedPayload, []byte("p")) {
					t.Errorf("winner's result lacks the payload")
				}
			}},
		{name: "no pin required ignores a given pin", a: act(nil), c: Consume{PINGiven: true, PINHash: pinHash("9")},
			now: t0, code: CodeOK, changed: true},
		{name: "active at exactly activeAt", a: act(nil), now: t0, code: CodeOK, changed: true},
		{name: "last ms before expiry", a: act(nil), now: expired - 1, code: CodeOK, changed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before Action
			if tt.a != nil {
				before = *tt.a
			}
			n, r := decideConsume(tt.a, &tt.c, tt.now)
			if r.Code != tt.code {
				t.Fatalf("code %q, want %q", r.Code, tt.code)
			}
			if (n != nil) != tt.changed {
				t.Fatalf("changed %v, want %v", n != nil, tt.changed)
			}
			if r.Time != tt.now {
				t.Errorf("result time %d, want %d", r.Time, tt.now)
			}
			if tt.a == nil {
				if r.Action != nil {
					t.Errorf("not found carries an action")
				}
				return
			}
			if tt.a.FailedPINAttempts != before.FailedPINAttempts || tt.a.ConsumedAt != before.ConsumedAt {
				t.Errorf("input action mutated")
			}
			if r.Action == nil {
				t.Fatalf("result has no action")
			}
			if r.Code != CodeOK && r.Action.SealedPayload != nil {
				t.Errorf("error result carries the payload")
			}
			if n == nil && r.Action.FailedPINAttempts != tt.a.FailedPINAttempts {
				t.Errorf("unchanged action reports different attempts")
			}
			if tt.check != nil {
				if n == nil {
					n = tt.a
				}
				tt.check(t, n, r)
			}
		})
	}
}

// TestDecideCancel covers SPEC.md's cancel rules.
func TestDecideCancel(t *testing.T) {
	tests := []struct {
		name     string
		a        *Action
		now      int64
		code     Code
		changed  bool
		canceled int64
	}{
		{name: "unknown", a: nil, now: t0, code: CodeNotFound},
		{name: "active", a: act(nil), now: t0 + 5, code: CodeOK, changed: true, canceled: t0 + 5},
		{name: "pending", a: act(nil), now: t0 - 5, code: CodeOK, changed: true, canceled: t0 - 5},
		{name: "again keeps first canceledAt", a: act(func(a *Action) { a.CanceledAt = t0 + 1 }),
			now: t0 + 9, code: CodeOK, canceled: t0 + 1},
		{name: "again after expiry still 200", a: act(func(a *Action) { a.CanceledAt = t0 + 1 }),
			now: t0 + 2*hour, code: CodeOK, canceled: t0 + 1},
		{name: "consumed", a: act(func(a *Action) { a.ConsumedAt, a.ConsumedReason = t0+1, ReasonConsumed }),
			now: t0 + 2, code: CodeAlreadyUsed},
		{name: "burned", a: act(func(a *Action) { a.ConsumedAt, a.ConsumedReason = t0+1, ReasonPINBurned }),
			now: t0 + 2, code: CodeAlreadyUsed},
		{name: "expired", a: act(nil), now: t0 + hour, code: CodeExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, r := decideCancel(tt.a, tt.now)
			if r.Code != tt.code || (n != nil) != tt.changed {
				t.Fatalf("code %q changed %v, want %q %v", r.Code, n != nil, tt.code, tt.changed)
			}
			if tt.canceled != 0 && r.Action.CanceledAt != tt.canceled {
				t.Errorf("canceledAt %d, want %d", r.Action.CanceledAt, tt.canceled)
			}
		})
	}
}

// TestDecideCreateRow covers defaults and the field-naming validation errors.
func TestDecideCreateRow(t *testing.T) {
	now := t0
	tests := []struct {
		name           string
		row            CreateRow
		code           Code
		msg            string
		active, expire int64
	}{
		{name: "defaults", row: CreateRow{ActionID: "a"}, active: now, expire: now + DefaultTTLMS},
		{name: "future activeAt shifts default expiry", row: CreateRow{ActionID: "a", ActiveAt: now + hour},
			active: now + hour, expire: now + hour + DefaultTTLMS},
		{name: "past activeAt keeps default from now", row: CreateRow{ActionID: "a", ActiveAt: now - hour},
			active: now - hour, expire: now + DefaultTTLMS},
		{name: "explicit", row: CreateRow{ActionID: "a", ActiveAt: now + 1, ExpiresAt: now + 2},
			active: now + 1, expire: now + 2},
		{name: "expires equal active", row: CreateRow{ActionID: "a", ActiveAt: now + hour, ExpiresAt: now + hour},
			code: CodeInvalidRequest, msg: "expires_at must be after active_at"},
		{name: "expires before active", row: CreateRow{ActionID: "a", ActiveAt: now + hour, ExpiresAt: now + 1},
			code: CodeInvalidRequest, msg: "expires_at must be after active_at"},
		{name: "expires now", row: CreateRow{ActionID: "a", ActiveAt: now - hour, ExpiresAt: now},
			code: CodeInvalidRequest, msg: "expires_at must be in the future"},
		{name: "expires in the past", row: CreateRow{ActionID: "a", ExpiresAt: now - 1, ActiveAt: now - 2},
			code: CodeInvalidRequest, msg: "expires_at must be in the future"},
		{name: "beyond max ttl", row: CreateRow{ActionID: "a", ExpiresAt: now + DefaultMaxTTLMS + 1},
			code: CodeInvalidRequest, msg: "expires_at is beyond the maximum TTL of 366 days"},
		{name: "exactly max ttl", row: CreateRow{ActionID: "a", ExpiresAt: now + DefaultMaxTTLMS},
			active: now, expire: now + DefaultMaxTTLMS},
		{name: "default expiry beyond max ttl", row: CreateRow{ActionID: "a", ActiveAt: now + DefaultMaxTTLMS},
			code: CodeInvalidRequest, msg: "expires_at is beyond the maximum TTL of 366 days"},
		{name: "static error passes through", row: CreateRow{Error: CodePayloadTooLarge, Message: "too big"},
			code: CodePayloadTooLarge, msg: "too big"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, code, msg := decideCreateRow(&tt.row, now, DefaultTTLMS, DefaultMaxTTLMS)
			if code != tt.code || msg != tt.msg {
				t.Fatalf("got %q %q, want %q %q", code, msg, tt.code, tt.msg)
			}
			if code != CodeOK {
				if a != nil {
					t.Fatalf("error row returned an action")
				}
				return
			}
			if a.ActiveAt != tt.active || a.ExpiresAt != tt.expire || a.CreatedAt != now {
				t.Errorf("active %d expires %d created %d, want %d %d %d",
					a.ActiveAt, a.ExpiresAt, a.CreatedAt, tt.active, tt.expire, now)
			}
		})
	}
}

// TestDecideClients covers client creation and revocation.
func TestDecideClients(t *testing.T) {
	if _, r := decideCreateClient(nil, &CreateClient{ID: DemoClientID}, t0); r.Code != CodeConflict {
		t.Errorf("demo id: %q", r.Code)
	}
	if _, r := decideCreateClient(&Client{ID: "x"}, &CreateClient{ID: "x"}, t0); r.Code != CodeConflict {
		t.Errorf("existing: %q", r.Code)
	}
	n, r := decideCreateClient(nil, &CreateClient{ID: "x", Name: "n"}, t0)
	if r.Code != CodeOK || n.CreatedAt != t0 || r.Client.ID != "x" {
		t.Errorf("create: %q %+v", r.Code, n)
	}
	if _, r := decideRevokeClient(nil, t0); r.Code != CodeClientNotFound {
		t.Errorf("revoke unknown: %q", r.Code)
	}
	n, r = decideRevokeClient(&Client{ID: "x"}, t0+1)
	if r.Code != CodeOK || n.RevokedAt != t0+1 || r.Client.RevokedAt != t0+1 {
		t.Errorf("revoke: %q %+v", r.Code, n)
	}
	n, r = decideRevokeClient(&Client{ID: "x", RevokedAt: t0}, t0+5)
	if r.Code != CodeOK || n != nil || r.Client.RevokedAt != t0 {
		t.Errorf("revoke again: %q %+v %+v", r.Code, n, r.Client)
	}
}
