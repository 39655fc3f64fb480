// Package secure holds ExactOnce's cryptography: random identifiers and
// secrets, secret hashing, keyed PIN hashing and payload sealing at rest.
//
// One 32-byte cluster key is the root of everything keyed. Two independent
// sub-keys are derived from it with HKDF-SHA256, one for AES-256-GCM payload
// sealing and one for HMAC-SHA256 PIN hashing, so that neither use can leak
// material useful to the other. Every node of a cluster must share the key.
package secure

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the size of the cluster key in bytes.
const KeySize = 32

// KeyFileName is the file in the data dir that holds a generated cluster key.
const KeyFileName = "cluster.key"

// Keys holds the sub-keys derived from the cluster key.
type Keys struct {
	aead   cipher.AEAD
	pinKey []byte
	// fpKey keys request fingerprints (RequestFingerprint).
	fpKey []byte
	// checkValue identifies the cluster key without revealing it, so nodes
	// can detect a mismatched key before they corrupt anything.
	checkValue []byte
}

// NewKeys derives the sub-keys from a 32-byte cluster key.
func NewKeys(clusterKey []byte) (*Keys, error) {
	if len(clusterKey) != KeySize {
		return nil, fmt.Errorf("cluster key must be %d bytes, got %d", KeySize, len(clusterKey))
	}
	encKey, err := hkdf.Key(sha256.New, clusterKey, nil, "exactonce payload aes-256-gcm v1", 32)
	if err != nil {
		return nil, fmt.Errorf("derive payload key: %w", err)
	}
	pinKey, err := hkdf.Key(sha256.New, clusterKey, nil, "exactonce pin hmac-sha256 v1", 32)
	if err != nil {
		return nil, fmt.Errorf("derive pin key: %w", err)
	}
	fpKey, err := hkdf.Key(sha256.New, clusterKey, nil, "exactonce request fingerprint hmac-sha256 v1", 32)
	if err != nil {
		return nil, fmt.Errorf("derive fingerprint key: %w", err)
	}
	check, err := hkdf.Key(sha256.New, clusterKey, nil, "exactonce key check v1", 16)
	if err != nil {
		return nil, fmt.Errorf("derive key check: %w", err)
	}
	block, err := aes.NewCipher(encKey)
	if err != nil {
		return nil, fmt.Errorf("payload cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("payload gcm: %w", err)
	}
	return &Keys{aead: aead, pinKey: pinKey, fpKey: fpKey, checkValue: check}, nil
}

// RequestFingerprint is the keyed hash (HMAC-SHA256) of a request's
// method, path and body that an idempotency record keeps. Keyed, because
// a body holds the payload and PIN: a plain hash in the state file and
// the log would let whoever holds them confirm a guessed payload or PIN.
func (k *Keys) RequestFingerprint(method, path string, body []byte) []byte {
	m := hmac.New(sha256.New, k.fpKey)
	m.Write([]byte(method))
	m.Write([]byte{0})
	m.Write([]byte(path))
	m.Write([]byte{0})
	m.Write(body)
	return m.Sum(nil)
}

// ParseKey decodes a cluster key given as standard or URL-safe base64.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("cluster key must decode to %d bytes, got %d", KeySize, len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("cluster key is not valid base64")
}

// LoadOrCreateKey returns the cluster key: the given base64 value when set,
// else the key file in dataDir, generated (mode 0600) on first start.
// created reports whether a new key file was written.
func LoadOrCreateKey(dataDir, given string) (key []byte, created bool, err error) {
	if given != "" {
		key, err = ParseKey(given)
		return key, false, err
	}
	path := filepath.Join(dataDir, KeyFileName)
	b, err := os.ReadFile(path)
	if err == nil {
		key, err = ParseKey(string(b))
		if err != nil {
			return nil, false, fmt.Errorf("read %s: %w", path, err)
		}
		return key, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("read cluster key: %w", err)
	}
	key = make([]byte, KeySize)
	rand.Read(key)
	if err := WriteSecretFile(path, base64.StdEncoding.EncodeToString(key)+"\n"); err != nil {
		return nil, false, err
	}
	return key, true, nil
}

// ReadSecretFile returns the trimmed content of a file holding a secret (a
// cluster key, an admin token). Like ssh with a private key, it refuses a
// file that its group or others may read or write: a secret that every local
// user can read is not a secret. The owner is not checked, so a file mounted
// by Docker or systemd (LoadCredential) for the service user passes.
func ReadSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open secret file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("stat secret file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("secret file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("secret file %s has mode %04o: it must not be accessible by group or others (chmod 600 %s)", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return "", fmt.Errorf("read secret file: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("secret file %s is empty", path)
	}
	return v, nil
}

// WriteSecretFile writes content to path with mode 0600, atomically and
// durably: the file is fsynced before it is renamed into place and its
// directory after, so that a power loss leaves either no file or the whole
// content, never an empty file under the final name (the node id, the
// cluster key and its check value are read back on every start).
func WriteSecretFile(path, content string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create dir for %s: %w", path, err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir of %s: %w", path, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir of %s: %w", path, err)
	}
	return nil
}

// CheckValue identifies the cluster key without revealing it.
func (k *Keys) CheckValue() []byte { return append([]byte(nil), k.checkValue...) }

// SealPayload encrypts a payload for storage. The action id is bound as
// additional data, so a sealed payload cannot be moved to another action.
// Output: 12-byte random nonce || ciphertext || tag.
func (k *Keys) SealPayload(actionID string, plaintext []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plaintext)+k.aead.Overhead())
	rand.Read(nonce)
	return k.aead.Seal(nonce, nonce, plaintext, []byte(actionID))
}

// ErrCannotOpen is wrapped by every OpenPayload failure: the sealed payload
// is damaged or was sealed under another cluster key.
var ErrCannotOpen = errors.New("cannot open the payload")

// OpenPayload decrypts a payload sealed by SealPayload for the same action.
// Its errors wrap ErrCannotOpen.
func (k *Keys) OpenPayload(actionID string, sealed []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(sealed) < ns+k.aead.Overhead() {
		return nil, fmt.Errorf("%w of %s: sealed payload too short", ErrCannotOpen, actionID)
	}
	pt, err := k.aead.Open(nil, sealed[:ns], sealed[ns:], []byte(actionID))
	if err != nil {
		return nil, fmt.Errorf("%w of %s (is the cluster key the same on every node?): %w", ErrCannotOpen, actionID, err)
	}
	return pt, nil
}

// PINHash is the keyed hash of a PIN for one action: HMAC-SHA256 under the
// PIN sub-key over the action id and the PIN. Without the cluster key a
// stolen data dir does not give up even 4-digit PINs.
func (k *Keys) PINHash(actionID, pin string) []byte {
	m := hmac.New(sha256.New, k.pinKey)
	m.Write([]byte(actionID))
	m.Write([]byte{0})
	m.Write([]byte(pin))
	return m.Sum(nil)
}

// HashSecret hashes a high-entropy generated secret (client secret, admin
// token) for storage. A plain SHA-256 suffices because the secrets carry 256
// random bits: there is nothing for a slow hash to protect against, and
// auth runs on every request.
func HashSecret(secret string) []byte {
	h := sha256.Sum256([]byte("exactonce secret v1\x00" + secret))
	return h[:]
}

// Equal compares two byte strings in constant time.
func Equal(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// SecretMatches reports whether secret hashes to storedHash, in constant time.
func SecretMatches(secret string, storedHash []byte) bool {
	return Equal(HashSecret(secret), storedHash)
}

func randomString(prefix string, nbytes int) string {
	b := make([]byte, nbytes)
	rand.Read(b) // never fails (crypto/rand panics on an unusable source)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// NewClientID returns "cl_" + 96 random bits.
func NewClientID() string { return randomString("cl_", 12) }

// NewSecret returns a 256-bit random secret, URL-safe.
func NewSecret() string { return randomString("sec_", 32) }

// NewToken returns a 256-bit random bearer token, URL-safe.
func NewToken() string { return randomString("", 32) }

// NewRequestID returns a short random request id.
func NewRequestID() string { return randomString("", 9) }
