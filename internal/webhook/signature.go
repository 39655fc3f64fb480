package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The Standard Webhooks headers every delivery carries (docs/webhooks.md).
const (
	// HeaderID carries the event id: the same on every repeat of an event,
	// so that a receiver can use it as an idempotency key.
	HeaderID = "webhook-id"
	// HeaderTimestamp carries the attempt's time in Unix seconds; it is
	// signed, so a receiver can refuse replays of old deliveries.
	HeaderTimestamp = "webhook-timestamp"
	// HeaderSignature carries one or more space-separated signatures,
	// each "v1," followed by the base64 HMAC-SHA256 of "id.timestamp.body".
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts every serialized webhook secret (Standard Webhooks'
// symmetric secret format).
const SecretPrefix = "whsec_"

// Secret sizes in bytes: Standard Webhooks asks for 24 to 64 random bytes;
// GenerateSecret makes 32, the size of the HMAC-SHA256 block's digest.
const (
	MinSecretBytes      = 24
	MaxSecretBytes      = 64
	generatedSecretSize = 32
)

// DefaultTolerance is how far a receiver's clock may be from a delivery's
// webhook-timestamp before Verify refuses it as a possible replay: the
// tolerance the Standard Webhooks reference libraries use.
const DefaultTolerance = 5 * time.Minute

// signatureVersion prefixes a symmetric (HMAC-SHA256) signature.
const signatureVersion = "v1"

// Errors of signing and verification; the returned errors wrap them.
var (
	// ErrInvalidSecret: a secret is not "whsec_" + base64 of 24 to 64 bytes.
	ErrInvalidSecret = errors.New("webhook: invalid secret")
	// ErrInvalidMessageID: an event id is empty, or holds a '.', a space or
	// a control character (the signed content is "id.timestamp.body", so an
	// id with a '.' could be confused with another id and timestamp).
	ErrInvalidMessageID = errors.New("webhook: invalid message id")
	// ErrMissingHeader: a delivery lacks one of the three headers.
	ErrMissingHeader = errors.New("webhook: missing header")
	// ErrTimestampOutOfTolerance: webhook-timestamp is not an integer or
	// is too far from the verifier's clock.
	ErrTimestampOutOfTolerance = errors.New("webhook: timestamp outside tolerance")
	// ErrNoMatchingSignature: no v1 signature in the header matches.
	ErrNoMatchingSignature = errors.New("webhook: no matching signature")
)

// Secret is a webhook's HMAC-SHA256 signing key. Its String and LogValue
// never show the key, so that a Secret logged by mistake leaks nothing;
// Encode gives the "whsec_..." form shown to the user once.
type Secret struct {
	key []byte
}

// GenerateSecret returns a new random secret of 32 bytes.
func GenerateSecret() (Secret, error) {
	key := make([]byte, generatedSecretSize)
	if _, err := rand.Read(key); err != nil {
		return Secret{}, fmt.Errorf("generate webhook secret: %w", err)
	}
	return Secret{key: key}, nil
}

// ParseSecret decodes a "whsec_<base64>" secret.
func ParseSecret(s string) (Secret, error) {
	rest, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return Secret{}, fmt.Errorf("%w: does not start with %q", ErrInvalidSecret, SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return Secret{}, fmt.Errorf("%w: not standard base64 after %q", ErrInvalidSecret, SecretPrefix)
	}
	if len(key) < MinSecretBytes || len(key) > MaxSecretBytes {
		return Secret{}, fmt.Errorf("%w: %d bytes, want %d to %d", ErrInvalidSecret, len(key), MinSecretBytes, MaxSecretBytes)
	}
	return Secret{key: key}, nil
}

// Encode returns the secret as "whsec_" + standard base64 of its key.
func (s Secret) Encode() string {
	return SecretPrefix + base64.StdEncoding.EncodeToString(s.key)
}

// IsZero reports whether s holds no key.
func (s Secret) IsZero() bool { return len(s.key) == 0 }

// String hides the key.
func (s Secret) String() string { return SecretPrefix + "<redacted>" }

// LogValue hides the key from log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// sign returns the base64 HMAC-SHA256 of "id.timestamp.body" under s.
func (s Secret) sign(id, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// checkMessageID refuses ids that could make two signed contents equal.
func checkMessageID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidMessageID)
	}
	for _, r := range id {
		if r == '.' || r <= ' ' || r == 0x7f {
			return fmt.Errorf("%w: %q holds %q", ErrInvalidMessageID, id, r)
		}
	}
	return nil
}

// Sign returns the webhook-signature header value for a delivery of body
// with message id at time ts: one "v1,<base64>" per secret, separated by
// spaces. Signing with every live secret lets a receiver rotate its secret
// without a window in which deliveries fail verification.
func Sign(id string, ts time.Time, body []byte, secrets ...Secret) (string, error) {
	if err := checkMessageID(id); err != nil {
		return "", err
	}
	if len(secrets) == 0 {
		return "", fmt.Errorf("%w: no secret to sign with", ErrInvalidSecret)
	}
	timestamp := strconv.FormatInt(ts.Unix(), 10)
	sigs := make([]string, 0, len(secrets))
	for _, s := range secrets {
		if s.IsZero() {
			return "", fmt.Errorf("%w: empty", ErrInvalidSecret)
		}
		sigs = append(sigs, signatureVersion+","+s.sign(id, timestamp, body))
	}
	return strings.Join(sigs, " "), nil
}

// Verify checks a delivery the way a Standard Webhooks receiver does: the
// three headers present, webhook-timestamp within tolerance of now, and one
// of the v1 signatures matching one of secrets (compared in constant time).
// Receivers outside Go follow docs/webhooks.md; tests and tools in this
// repository use Verify.
func Verify(h http.Header, body []byte, now time.Time, tolerance time.Duration, secrets ...Secret) error {
	id, timestamp, sigHeader := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	for _, hv := range [][2]string{{HeaderID, id}, {HeaderTimestamp, timestamp}, {HeaderSignature, sigHeader}} {
		if hv[1] == "" {
			return fmt.Errorf("%w: %s", ErrMissingHeader, hv[0])
		}
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not Unix seconds", ErrTimestampOutOfTolerance, timestamp)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s away from now", ErrTimestampOutOfTolerance, d.Round(time.Second))
	}
	for _, s := range secrets {
		want := []byte(s.sign(id, timestamp, body))
		for _, sig := range strings.Fields(sigHeader) {
			version, value, ok := strings.Cut(sig, ",")
			if ok && version == signatureVersion && subtle.ConstantTimeCompare([]byte(value), want) == 1 {
				return nil
			}
		}
	}
	return ErrNoMatchingSignature
}
