package snapfile

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testSeed is the seed of the random tests, printed so a failure repeats.
func testSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return seed
}

// build writes a file holding state and returns its bytes.
func build(t *testing.T, state []byte) []byte {
	t.Helper()
	w, err := NewWriter(Header{Index: 42, Term: 3, Time: 1_700_000_000_123, KeyCheck: []byte{0xde, 0xad, 0xbe, 0xef},
		StateSize: int64(len(state)), CreatedAt: time.Unix(1_700_000_000, 0).UTC(), NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := w.WriteTo(&buf, bytes.NewReader(state))
	if err != nil {
		t.Fatal(err)
	}
	if n != w.Size() || int64(buf.Len()) != w.Size() {
		t.Fatalf("wrote %d bytes (buffer %d), Size says %d", n, buf.Len(), w.Size())
	}
	return buf.Bytes()
}

func read(file []byte) (Header, []byte, error) {
	r, err := NewReader(bytes.NewReader(file))
	if err != nil {
		return Header{}, nil, err
	}
	state, err := io.ReadAll(r)
	return r.Header(), state, err
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 1))
	for _, size := range []int{0, 1, 4096, 100_000} {
		state := make([]byte, size)
		for i := range state {
			state[i] = byte(rng.Uint32())
		}
		h, got, err := read(build(t, state))
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if !bytes.Equal(got, state) {
			t.Fatalf("size %d: state differs", size)
		}
		if h.FormatVersion != FormatVersion || h.Index != 42 || h.Term != 3 || h.Time != 1_700_000_000_123 ||
			!bytes.Equal(h.KeyCheck, []byte{0xde, 0xad, 0xbe, 0xef}) || h.StateSize != int64(size) || h.StateFormat != StateFormat || h.NodeID != "n1" {
			t.Fatalf("header %+v", h)
		}
	}
}

// TestDamageIsRefused flips bytes all over a file, truncates it at every
// length and appends to it: every one is refused with ErrDamaged.
func TestDamageIsRefused(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 2))
	state := make([]byte, 3000)
	for i := range state {
		state[i] = byte(rng.Uint32())
	}
	file := build(t, state)
	for i := range file {
		bad := bytes.Clone(file)
		bad[i] ^= byte(1 + rng.IntN(255))
		if _, _, err := read(bad); !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for n := range len(file) {
		_, _, err := read(file[:n])
		if !errors.Is(err, ErrDamaged) {
			t.Fatalf("truncated to %d of %d bytes: %v", n, len(file), err)
		}
		if n >= 16 && !errors.Is(err, ErrTruncated) {
			t.Fatalf("truncated to %d of %d bytes: %v, want ErrTruncated", n, len(file), err)
		}
	}
	if _, _, err := read(append(bytes.Clone(file), 0)); !errors.Is(err, ErrTrailingData) {
		t.Fatalf("a byte appended: %v", err)
	}
	// Flipping the state section is a checksum mismatch.
	bad := bytes.Clone(file)
	bad[len(file)-trailerLen-10] ^= 0x40
	if _, _, err := read(bad); !errors.Is(err, ErrChecksum) {
		t.Fatalf("state byte flipped: %v", err)
	}
}

func TestUnknownVersionIsRefused(t *testing.T) {
	file := build(t, []byte("state"))
	file[11] = 2 // version 2
	if _, _, err := read(file); !errors.Is(err, ErrUnsupportedVersion) || errors.Is(err, ErrDamaged) {
		t.Fatalf("version 2: %v", err)
	}
	if _, _, err := read([]byte("SQLite format 3\x00 and more")); !errors.Is(err, ErrNotSnapshot) {
		t.Fatalf("another file: %v", err)
	}
}

func TestVerify(t *testing.T) {
	file := build(t, bytes.Repeat([]byte{7}, 5000))
	path := filepath.Join(t.TempDir(), "b.snap")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.FileSize != int64(len(file)) || len(info.Checksum) != 32 || info.Index != 42 {
		t.Fatalf("info %+v", info)
	}
	if err := os.WriteFile(path, file[:len(file)-1], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(path); !errors.Is(err, ErrTruncated) {
		t.Fatalf("truncated: %v", err)
	}
}

// TestWrongStateSizeIsAnError: a state that writes fewer or more bytes
// than the header says never makes a file.
func TestWrongStateSizeIsAnError(t *testing.T) {
	w, err := NewWriter(Header{StateSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo(io.Discard, bytes.NewReader(make([]byte, 9))); err == nil {
		t.Fatal("9 bytes for 10: no error")
	}
}
