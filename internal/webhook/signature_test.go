package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// specVerify is a Standard Webhooks verifier written from the spec's text
// (spec/standard-webhooks.md, "Verifying webhook authenticity"), on
// purpose without any code of this package: strip "whsec_" and
// base64-decode the secret; HMAC-SHA256 over "msg_id.timestamp.payload";
// base64; the header is a space-delimited list of "v1,<sig>"; compare in
// constant time; refuse a timestamp outside the tolerance.
func specVerify(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing header")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return err
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return errors.New("timestamp outside tolerance")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := mac.Sum(nil)
	for _, sig := range strings.Split(sigs, " ") {
		parts := strings.SplitN(sig, ",", 2)
		if len(parts) != 2 || parts[0] != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(parts[1])
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no matching signature")
}

// The vector of the Standard Webhooks reference libraries (their Go, JS
// and Python tests sign exactly this and expect exactly this).
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignMatchesReferenceVector(t *testing.T) {
	s, err := ParseSecret(vectorSecret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Sign(vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorBody), s)
	if err != nil {
		t.Fatal(err)
	}
	if got != vectorSignature {
		t.Fatalf("Sign = %q, want the reference libraries' %q", got, vectorSignature)
	}
	// The spec verifier accepts the reference vector too, so it is a
	// verifier of the spec and not of our signer.
	h := headers(vectorID, vectorTimestamp, vectorSignature)
	if err := specVerify(vectorSecret, h, []byte(vectorBody), time.Unix(vectorTimestamp, 0), DefaultTolerance); err != nil {
		t.Fatalf("spec verifier refuses the reference vector: %v", err)
	}
}

// headers builds the three delivery headers.
func headers(id string, ts int64, sig string) http.Header {
	h := http.Header{}
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderSignature, sig)
	return h
}

func TestSignatureAgainstSpecVerifier(t *testing.T) {
	oldSecret, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	newSecret, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_765_065_600, 0)
	body := []byte(`{"id":"evt_1","type":"action.consumed","data":{"actionId":"act_x"}}`)
	rotating, err := Sign("evt_1", now, body, newSecret, oldSecret)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Fields(rotating)); n != 2 {
		t.Fatalf("two secrets gave %d signatures: %q", n, rotating)
	}
	single, err := Sign("evt_1", now, body, newSecret)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		secret  Secret
		sig     string
		ts      time.Time
		body    []byte
		now     time.Time
		wantErr bool
	}{
		{"valid", newSecret, single, now, body, now, false},
		{"rotation: receiver still on the old secret", oldSecret, rotating, now, body, now, false},
		{"rotation: receiver already on the new secret", newSecret, rotating, now, body, now, false},
		{"wrong secret", stranger, rotating, now, body, now, true},
		{"changed body", newSecret, single, now, []byte(strings.Replace(string(body), "act_x", "act_y", 1)), now, true},
		{"within tolerance, behind", newSecret, single, now, body, now.Add(DefaultTolerance - time.Second), false},
		{"within tolerance, ahead", newSecret, single, now, body, now.Add(-DefaultTolerance + time.Second), false},
		{"too old", newSecret, single, now, body, now.Add(DefaultTolerance + time.Second), true},
		{"from the future", newSecret, single, now, body, now.Add(-DefaultTolerance - time.Second), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := headers("evt_1", c.ts.Unix(), c.sig)
			err := specVerify(c.secret.Encode(), h, c.body, c.now, DefaultTolerance)
			if (err != nil) != c.wantErr {
				t.Fatalf("spec verifier: err = %v, want error %v", err, c.wantErr)
			}
			// Verify (for our own tools and tests) agrees with the spec.
			err2 := Verify(h, c.body, c.now, DefaultTolerance, c.secret)
			if (err2 != nil) != c.wantErr {
				t.Fatalf("Verify: err = %v, want error %v", err2, c.wantErr)
			}
		})
	}
	// A timestamp changed after signing (a replay made to look fresh) fails.
	h := headers("evt_1", now.Unix()+60, single)
	if err := specVerify(newSecret.Encode(), h, body, now, DefaultTolerance); err == nil {
		t.Fatal("a changed timestamp still verifies")
	}
}

func TestVerifyErrors(t *testing.T) {
	s, err := ParseSecret(vectorSecret)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(vectorTimestamp, 0)
	for _, c := range []struct {
		name string
		h    http.Header
		want error
	}{
		{"no id", headers("", vectorTimestamp, vectorSignature), ErrMissingHeader},
		{"no signature", headers(vectorID, vectorTimestamp, ""), ErrMissingHeader},
		{"timestamp not a number", func() http.Header {
			h := headers(vectorID, 0, vectorSignature)
			h.Set(HeaderTimestamp, "1614265330.5")
			return h
		}(), ErrTimestampOutOfTolerance},
		{"v1a only", headers(vectorID, vectorTimestamp, "v1a,"+strings.TrimPrefix(vectorSignature, "v1,")), ErrNoMatchingSignature},
	} {
		if err := Verify(c.h, []byte(vectorBody), at, DefaultTolerance, s); !errors.Is(err, c.want) {
			t.Errorf("%s: Verify = %v, want %v", c.name, err, c.want)
		}
	}
}

func TestParseSecret(t *testing.T) {
	good, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseSecret(good.Encode())
	if err != nil || string(back.key) != string(good.key) {
		t.Fatalf("ParseSecret(Encode()) = %v, %v", back, err)
	}
	for _, bad := range []string{
		"",
		"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", // no prefix
		"whsec_not base64!",                // not base64
		"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 16)), // too short
		"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 65)), // too long
	} {
		if _, err := ParseSecret(bad); !errors.Is(err, ErrInvalidSecret) {
			t.Errorf("ParseSecret(%q) = %v, want ErrInvalidSecret", bad, err)
		}
	}
	if s := good.String(); strings.Contains(s, good.Encode()[6:]) {
		t.Fatalf("String shows the key: %q", s)
	}
}

func TestSignRefusesAmbiguousIDs(t *testing.T) {
	s, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "evt.1", "evt 1", "evt\n1"} {
		if _, err := Sign(id, time.Now(), nil, s); !errors.Is(err, ErrInvalidMessageID) {
			t.Errorf("Sign(%q) = %v, want ErrInvalidMessageID", id, err)
		}
	}
	if _, err := Sign("evt_1", time.Now(), nil); !errors.Is(err, ErrInvalidSecret) {
		t.Errorf("Sign without a secret = %v, want ErrInvalidSecret", err)
	}
}
