package secure

import (
	"bytes"
	"encoding/base64"
	"errors"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	var ids ActionIDs
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := ids.New(time.Now())
		if !strings.HasPrefix(id, ActionIDPrefix) {
			t.Fatalf("action id %q lacks prefix", id)
		}
		raw, err := sortedEncoding.DecodeString(strings.TrimPrefix(id, ActionIDPrefix))
		if err != nil || (len(raw)-actionIDStampBytes)*8 < 128 {
			t.Fatalf("action id %q: %d random bits, %v", id, (len(raw)-actionIDStampBytes)*8, err)
		}
		if strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
			t.Fatalf("action id %q is not URL-safe", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
}

// Ids sort in the order one generator made them: within a millisecond, over
// a later millisecond, and when the clock steps back.
func TestActionIDsSortInCreationOrder(t *testing.T) {
	var ids ActionIDs
	base := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	clock := []time.Time{base, base, base, base.Add(time.Millisecond), base.Add(-time.Second), base.Add(time.Hour)}
	prev := ""
	for i := 0; i < 70000; i++ { // more than a millisecond's 65,536 sequence numbers
		id := ids.New(clock[i%len(clock)])
		if id <= prev {
			t.Fatalf("id %d %q does not sort after %q", i, id, prev)
		}
		prev = id
	}
	// Two ids a second apart from fresh generators sort by time.
	var a, b ActionIDs
	if x, y := a.New(base), b.New(base.Add(time.Second)); x >= y {
		t.Fatalf("later id %q sorts before %q", y, x)
	}
}

// The sorted alphabet keeps byte order, which the ordering above relies on.
func TestSortedEncodingKeepsByteOrder(t *testing.T) {
	r := mrand.New(mrand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		a, b := make([]byte, 24), make([]byte, 24)
		for j := range a {
			a[j], b[j] = byte(r.IntN(256)), byte(r.IntN(256))
		}
		if i%3 == 0 {
			copy(b, a[:r.IntN(24)])
		}
		want := bytes.Compare(a, b)
		got := strings.Compare(sortedEncoding.EncodeToString(a), sortedEncoding.EncodeToString(b))
		if want != got {
			t.Fatalf("%x vs %x: bytes compare %d, encodings %d", a, b, want, got)
		}
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

func TestOpenPayloadErrorsWrapErrCannotOpen(t *testing.T) {
	sealed := testKeys(t, 1).SealPayload("act_a", []byte("x"))
	for name, err := range map[string]error{
		"other key": func() error { _, err := testKeys(t, 2).OpenPayload("act_a", sealed); return err }(),
		"too short": func() error { _, err := testKeys(t, 1).OpenPayload("act_a", []byte{1}); return err }(),
	} {
		if !errors.Is(err, ErrCannotOpen) {
			t.Errorf("%s: %v does not wrap ErrCannotOpen", name, err)
		}
	}
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if v, err := ReadSecretFile(write("ok", " s3cret\n", 0o600)); err != nil || v != "s3cret" {
		t.Errorf("0600 file: %q %v", v, err)
	}
	if v, err := ReadSecretFile(write("ro", "s3cret", 0o400)); err != nil || v != "s3cret" {
		t.Errorf("0400 file: %q %v", v, err)
	}
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"group", "s", 0o640, "chmod 600"},
		{"world", "s", 0o604, "chmod 600"},
		{"groupwrite", "s", 0o620, "chmod 600"},
		{"empty", " \n", 0o600, "empty"},
	} {
		_, err := ReadSecretFile(write(tc.name, tc.content, tc.mode))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
	if _, err := ReadSecretFile(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("missing file accepted")
	}
	if _, err := ReadSecretFile(dir); err == nil {
		t.Errorf("a directory accepted")
	}
}
