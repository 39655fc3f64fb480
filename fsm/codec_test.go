package fsm

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
)

// sampleCommands holds one command of every type with every field set.
func sampleCommands() []*Command {
	csv := &Command{Type: CmdCreateActions, Time: -5, ClientID: clA, Create: &CreateActions{CSV: true,
		DefaultTTLMS: hour, MaxTTLMS: 2 * hour, Rows: []CreateRow{
			{Row: 2, ActionID: "act_1", SealedPayload: []byte{0, 1, 2}, PINHash: pinHash("1"), ActiveAt: t0, ExpiresAt: t0 + 1},
			{Row: 3, Error: CodeInvalidRequest, Message: "pin: too short"},
		}}}
	return []*Command{
		withIdem(createCmd(clA, t0, CreateRow{ActionID: "act_1", PINHash: pinHash("1")}), "k", "fp"),
		csv,
		withConsumer(withIdem(consumePIN(clA, t0, "act_1", "1234"), "k", "fp"), `{"a":1}`),
		consumeCmd(clA, t0, "act_1"),
		cancelCmd(clA, t0, "act_1"),
		clientCmd(clA, t0),
		revokeCmd(clA, t0),
		noopCmd(t0),
		keyCheckCmd(t0, "cv1"),
	}
}

// TestCodec: every command type round-trips through both versions, and
// malformed entries are rejected with ErrBadCommand.
func TestCodec(t *testing.T) {
	for _, c := range sampleCommands() {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != commandVersionBinary {
			t.Fatalf("version %d", b[0])
		}
		d, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", c, err)
		}
		if !reflect.DeepEqual(d, c) {
			t.Fatalf("binary round trip\n got %+v\nwant %+v", d, c)
		}
		j, err := encodeCommandJSON(c)
		if err != nil {
			t.Fatal(err)
		}
		d, err = DecodeCommand(j)
		if err != nil || !reflect.DeepEqual(d, c) {
			t.Fatalf("json round trip %v\n got %+v\nwant %+v", err, d, c)
		}
		// Every truncation of a valid entry is rejected, never a panic.
		for n := 0; n < len(b); n++ {
			if _, err := DecodeCommand(b[:n]); !errors.Is(err, ErrBadCommand) {
				t.Fatalf("truncated to %d of %d: %v", n, len(b), err)
			}
		}
	}
	good, _ := EncodeCommand(noopCmd(t0))
	for _, bad := range [][]byte{nil, {0}, {3}, {1}, {1, '{'}, {1, 'n', 'u', 'l', 'l'}, {2, 99, 0, 0, 0},
		append(bytes.Clone(good), 0), {2, byte(CmdCreateActions), 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}} {
		if _, err := DecodeCommand(bad); !errors.Is(err, ErrBadCommand) {
			t.Errorf("decode %v: %v", bad, err)
		}
	}
	if _, err := EncodeCommand(nil); err == nil {
		t.Errorf("encode nil succeeded")
	}
	if _, err := EncodeCommand(&Command{Type: CmdConsume}); err == nil {
		t.Errorf("encode consume without body succeeded")
	}
}

// TestActionCodec: stored actions round-trip, and JSON values written by
// the earlier encoding are still read.
func TestActionCodec(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 3))
	rb := func() []byte {
		if rng.IntN(3) == 0 {
			return nil
		}
		b := make([]byte, 1+rng.IntN(40))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return b
	}
	ri := func() int64 { return rng.Int64() - rng.Int64() }
	for i := 0; i < 500; i++ {
		a := &Action{ID: string(rb()), ClientID: string(rb()), SealedPayload: rb(), PINHash: rb(),
			CreatedAt: ri(), ActiveAt: ri(), ExpiresAt: ri(), ConsumedAt: ri(), ConsumedReason: string(rb()),
			Consumer: rb(), CanceledAt: ri(), FailedPINAttempts: rng.IntN(5)}
		b := encodeAction(a)
		d, err := decodeAction(b)
		if err != nil || !reflect.DeepEqual(d, a) {
			t.Fatalf("seed %d: round trip %v\n got %+v\nwant %+v", seed, err, d, a)
		}
		for n := 0; n < len(b); n++ {
			if _, err := decodeAction(b[:n]); err == nil {
				t.Fatalf("seed %d: truncated action decoded", seed)
			}
		}
	}
	a := act(withPIN)
	j, err := encodeValue(a)
	if err != nil {
		t.Fatal(err)
	}
	d, err := decodeAction(j)
	if err != nil || !reflect.DeepEqual(d, a) {
		t.Fatalf("json action: %v %+v", err, d)
	}
}

// FuzzDecodeCommand: decoding never panics, and whatever decodes
// re-encodes to a stable form.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands() {
		b, _ := EncodeCommand(c)
		f.Add(b)
		j, _ := encodeCommandJSON(c)
		f.Add(j)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data)
		if err != nil {
			return
		}
		b1, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("decoded command does not encode: %v", err)
		}
		c2, err := DecodeCommand(b1)
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
		b2, err := EncodeCommand(c2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("unstable encoding")
		}
	})
}
