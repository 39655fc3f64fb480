package client

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"
)

// RetryPolicy bounds the retries of ConsumeWithRetry and WithRetry. Zero
// fields take the defaults: 5 attempts, backoff from 100 ms doubling to
// at most 2 s.
type RetryPolicy struct {
	// MaxAttempts is the most attempts in all, the first included.
	MaxAttempts int
	// InitialBackoff is the wait before the second attempt; each later
	// wait doubles, up to MaxBackoff. Each wait is drawn at random from
	// its upper half, so that clients that failed together do not retry
	// together; a Retry-After from the server is waited out in full.
	InitialBackoff time.Duration
	// MaxBackoff caps one wait.
	MaxBackoff time.Duration
}

// DefaultRetryPolicy is the policy of a zero RetryPolicy.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 5, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultRetryPolicy.MaxAttempts
	}
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = DefaultRetryPolicy.InitialBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = DefaultRetryPolicy.MaxBackoff
	}
	if p.MaxBackoff < p.InitialBackoff {
		p.MaxBackoff = p.InitialBackoff
	}
	return p
}

// backoff is the wait after the given failed attempt (1 for the first).
func (p RetryPolicy) backoff(attempt int, err error) time.Duration {
	d := p.InitialBackoff
	for i := 1; i < attempt && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	d = d/2 + rand.N(d/2+1)
	var ae *APIError
	if errors.As(err, &ae) && ae.RetryAfter > 0 {
		d = max(d, time.Duration(ae.RetryAfter)*time.Second)
	}
	return d
}

// WithRetry retries the call under p while its error is Temporary: a
// connection failure or a 503. A definite answer (any 2xx or 4xx) is
// returned at once. Create, consume and cancel keep one Idempotency-Key
// across the attempts (the one given with WithIdempotencyKey, or a new
// one), so the server does the write at most once and a later attempt gets
// the first one's answer. Reads are retried the same way. Other writes
// (demo, admin and cluster calls) take no key, so they are retried only
// after answers that say nothing was done (503 unavailable, 503
// overloaded). The context bounds the whole, waits included.
func WithRetry(p RetryPolicy) CallOption {
	return func(o *callOpts) { o.retry = &p }
}

// retryable reports whether a failed attempt of req may be sent again.
func retryable(req request, keyed bool, err error) bool {
	if !Temporary(err) {
		return false
	}
	if req.method == http.MethodGet || req.method == http.MethodHead || (req.keyed && keyed) {
		return true
	}
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOverloaded)
}

// NewIdempotencyKey returns a new random Idempotency-Key (128 bits). Keep
// it with the operation it belongs to (a job, a queue message) to retry
// that operation later, even from another process.
func NewIdempotencyKey() string {
	b := make([]byte, 16)
	_, _ = crand.Read(b) // crypto/rand.Read never fails
	return "sdk-" + base64.RawURLEncoding.EncodeToString(b)
}

// ConsumeWithRetry is Consume retried under p (a zero RetryPolicy for the
// defaults) with one Idempotency-Key for every attempt: the one given with
// WithIdempotencyKey, or a new one. It retries only while the outcome is
// unknown or nothing was done (Temporary: a connection failure, 503
// unavailable, overloaded or outcome_unknown), never after a definite
// answer: ErrAlreadyUsed, ErrInvalidPIN and the other 4xx come back at
// once. If a lost answer had consumed the action, the next attempt
// replays that answer, payload included. When the attempts or ctx run out
// the last error is returned, and Temporary(err) is then still true: the
// consume may or may not have happened, and the same key tells which.
func (c *Client) ConsumeWithRetry(ctx context.Context, id string, req *ConsumeRequest, p RetryPolicy, opts ...CallOption) (*Consumed, error) {
	return c.Consume(ctx, id, req, append(opts, WithRetry(p))...)
}
