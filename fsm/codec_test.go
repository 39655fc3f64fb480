package fsm

import (
	"bytes"
	"encoding/hex"
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
		retentionCmd(t0, hour),
	}
}

// TestCodec: every command type round-trips through format version 1,
// and malformed entries are rejected with ErrBadCommand; entries of another
// format version or of an unknown command type say so (ErrUnknownFormat,
// ErrUnknownCommand), so the node can tell a newer leader from corruption.
func TestCodec(t *testing.T) {
	for _, c := range sampleCommands() {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != CommandFormat {
			t.Fatalf("version %d", b[0])
		}
		d, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", c, err)
		}
		if !reflect.DeepEqual(d, c) {
			t.Fatalf("binary round trip\n got %+v\nwant %+v", d, c)
		}
		// Every truncation of a valid entry is rejected, never a panic.
		for n := 0; n < len(b); n++ {
			if _, err := DecodeCommand(b[:n]); !errors.Is(err, ErrBadCommand) {
				t.Fatalf("truncated to %d of %d: %v", n, len(b), err)
			}
		}
		// Any other version byte is an unknown format, whatever follows.
		for _, v := range []byte{0, 2, 3, 255} {
			other := append([]byte{v}, b[1:]...)
			if _, err := DecodeCommand(other); !errors.Is(err, ErrBadCommand) || !errors.Is(err, ErrUnknownFormat) {
				t.Fatalf("version %d: %v, want ErrUnknownFormat", v, err)
			}
		}
	}
	good, _ := EncodeCommand(noopCmd(t0))
	for _, bad := range [][]byte{nil, {1}, {1, byte(CmdNoop)}, append(bytes.Clone(good), 0), {1, '{', '}'},
		{1, byte(CmdCreateActions), 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}} {
		if _, err := DecodeCommand(bad); !errors.Is(err, ErrBadCommand) {
			t.Errorf("decode %v: %v", bad, err)
		}
	}
	for _, typ := range []byte{0, 9, 99, 255} {
		if _, err := DecodeCommand([]byte{CommandFormat, typ, 0, 0, 0}); !errors.Is(err, ErrBadCommand) || !errors.Is(err, ErrUnknownCommand) {
			t.Errorf("command type %d: %v, want ErrUnknownCommand", typ, err)
		}
	}
	if _, err := EncodeCommand(nil); err == nil {
		t.Errorf("encode nil succeeded")
	}
	if _, err := EncodeCommand(&Command{Type: CmdConsume}); err == nil {
		t.Errorf("encode consume without body succeeded")
	}
	if _, err := EncodeCommand(&Command{Type: 99}); !errors.Is(err, ErrUnknownCommand) {
		t.Errorf("encode an unknown type: %v", err)
	}
}

// TestCommandFormatV1Layout pins the bytes of format version 1: entries
// in the log are read again after every restart and by every other build of
// the cluster, so an encoding change must be a new version
// (docs/upgrade.md), never a silent change of this one.
func TestCommandFormatV1Layout(t *testing.T) {
	for _, tc := range []struct {
		cmd  *Command
		want string
	}{
		// version, type, time (zigzag varint), client (length-prefixed),
		// no idempotency key.
		{noopCmd(t0), "01" + "06" + "80a0abfef962" + "00" + "00"},
		// ... client "cl_a", idempotency key "k" with fingerprint "fp",
		// then the consume: id, PIN given, PIN hash, no consumer.
		{withIdem(consumePIN(clA, t0, "act_1", "1234"), "k", "fp"),
			"01" + "02" + "80a0abfef962" + "04636c5f61" + "01016b026670" +
				"056163745f31" + "01" + "0768283132333429" + "00"},
		// ... no client, no key, the retention in ms (zigzag varint).
		{retentionCmd(t0, hour), "01" + "08" + "80a0abfef962" + "00" + "00" + "80bab703"},
	} {
		b, err := EncodeCommand(tc.cmd)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b); got != tc.want {
			t.Errorf("type %d: format version 1 bytes\n got %s\nwant %s", tc.cmd.Type, got, tc.want)
		}
	}
}

// TestActionCodec: stored actions round-trip; a value of another
// encoding (such as JSON) is refused.
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
	j, err := encodeValue(act(withPIN))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{nil, j, {2}, append([]byte{2}, encodeAction(act(withPIN))[1:]...)} {
		if _, err := decodeAction(bad); err == nil {
			t.Errorf("decoded %q", bad)
		}
	}
}

// FuzzDecodeCommand: decoding never panics, and whatever decodes
// re-encodes to a stable form.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands() {
		b, _ := EncodeCommand(c)
		f.Add(b)
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
