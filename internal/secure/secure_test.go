package secure

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKeys(t *testing.T, fill byte) *Keys {
	t.Helper()
	k, err := NewKeys(bytes.Repeat([]byte{fill}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealedPayloadOpensOnlyForItsActionAndKey(t *testing.T) {
	k := testKeys(t, 1)
	plain := []byte(`{"url":"https://example.test/reset?u=42"}`)
	sealed := k.SealPayload("act_a", plain)
	if bytes.Contains(sealed, []byte("example.test")) {
		t.Fatal("sealed payload contains plaintext")
	}
	got, err := k.OpenPayload("act_a", sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open = %q, %v", got, err)
	}
	if _, err := k.OpenPayload("act_b", sealed); err == nil {
		t.Fatal("payload sealed for act_a opened as act_b")
	}
	if _, err := testKeys(t, 2).OpenPayload("act_a", sealed); err == nil {
		t.Fatal("payload opened under another cluster key")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := k.OpenPayload("act_a", sealed); err == nil {
		t.Fatal("tampered payload opened")
	}
	if _, err := k.OpenPayload("act_a", []byte{1, 2}); err == nil {
		t.Fatal("short payload opened")
	}
	if bytes.Equal(k.SealPayload("act_a", plain), k.SealPayload("act_a", plain)) {
		t.Fatal("two seals of the same payload are identical: nonce reused")
	}
}

func TestPINHashIsKeyedAndBoundToTheAction(t *testing.T) {
	k := testKeys(t, 1)
	h := k.PINHash("act_a", "1234")
	if !Equal(h, k.PINHash("act_a", "1234")) {
		t.Fatal("PIN hash not deterministic")
	}
	for name, other := range map[string][]byte{
		"other pin":    k.PINHash("act_a", "1235"),
		"other action": k.PINHash("act_b", "1234"),
		"other key":    testKeys(t, 2).PINHash("act_a", "1234"),
	} {
		if Equal(h, other) {
			t.Errorf("%s gives the same PIN hash", name)
		}
	}
}

func TestSecretHashing(t *testing.T) {
	s := NewSecret()
	h := HashSecret(s)
	if !SecretMatches(s, h) || SecretMatches(s+"x", h) || SecretMatches("", h) {
		t.Fatal("SecretMatches accepts or rejects the wrong secret")
	}
	if bytes.Contains(h, []byte(s)) {
		t.Fatal("hash contains the secret")
	}
}

func TestIdentifiersAreURLSafeAndLongEnough(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewActionID()
		if !strings.HasPrefix(id, "act_") {
			t.Fatalf("action id %q lacks prefix", id)
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(id, "act_"))
		if err != nil || len(raw)*8 < 128 {
			t.Fatalf("action id %q: %d random bits, %v", id, len(raw)*8, err)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	k1, created, err := LoadOrCreateKey(dir, "")
	if err != nil || !created || len(k1) != KeySize {
		t.Fatalf("first start: %v created=%v len=%d", err, created, len(k1))
	}
	st, err := os.Stat(filepath.Join(dir, KeyFileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st.Mode(), err)
	}
	k2, created, err := LoadOrCreateKey(dir, "")
	if err != nil || created || !bytes.Equal(k1, k2) {
		t.Fatalf("restart gave another key: %v created=%v", err, created)
	}
	given := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, KeySize))
	k3, _, err := LoadOrCreateKey(dir, given)
	if err != nil || !bytes.Equal(k3, bytes.Repeat([]byte{7}, KeySize)) {
		t.Fatalf("given key not used: %v", err)
	}
	for _, bad := range []string{"not base64 !!", base64.StdEncoding.EncodeToString([]byte("short"))} {
		if _, _, err := LoadOrCreateKey(dir, bad); err == nil {
			t.Errorf("bad key %q accepted", bad)
		}
	}
}
