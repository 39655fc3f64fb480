// Package snapfile is the format of an ExactOnce backup file: what
// `exactonce snapshot save` writes, `exactonce snapshot inspect` reads and
// `exactonced --restore` starts a fresh cluster from (docs/operations.md,
// "Backups").
//
// A file is, in order:
//
//	magic      8 bytes  "EXOSNAP\x00"
//	version    4 bytes  big-endian format version (FormatVersion)
//	headLen    4 bytes  big-endian length of the header
//	header     headLen  JSON Header: index, term, FSM time, key check, state size
//	state      Header.StateSize bytes: the state machine's bbolt file, exactly
//	           as a Raft snapshot of the node holds it (fsm's tx.WriteTo)
//	trailer    8 bytes  "EXOSNAPE" then 32 bytes SHA-256 of everything before
//	           the trailer
//
// The state is not re-encoded: it is the same bytes a Raft snapshot carries,
// so whatever the state machine stores (new buckets included) travels
// unchanged. The version comes before the header so a later format can
// change everything after it; a reader refuses versions it does not know.
package snapfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"
)

// FormatVersion is the version of the backup file format this package
// writes and the only one it reads.
const FormatVersion = 1

// StateFormat names what the state section holds.
const StateFormat = "bbolt"

// Fixed parts of the format.
var (
	magic        = [8]byte{'E', 'X', 'O', 'S', 'N', 'A', 'P', 0}
	trailerMagic = [8]byte{'E', 'X', 'O', 'S', 'N', 'A', 'P', 'E'}
)

const (
	prefixLen  = 16 // magic, version, header length
	trailerLen = 8 + sha256.Size
	// maxHeaderLen bounds the JSON header a reader accepts.
	maxHeaderLen = 64 << 10
)

// Errors of a file that is not a usable backup. Every one wraps ErrDamaged
// except ErrUnsupportedVersion, so callers can tell "broken" from "too new".
var (
	// ErrDamaged: the file is not an intact backup file.
	ErrDamaged = errors.New("snapshot file damaged")
	// ErrNotSnapshot: the file does not start like a backup file.
	ErrNotSnapshot = fmt.Errorf("%w: not an ExactOnce snapshot file (bad magic)", ErrDamaged)
	// ErrTruncated: the file ends before its trailer.
	ErrTruncated = fmt.Errorf("%w: truncated (the file ends before its checksum)", ErrDamaged)
	// ErrChecksum: the SHA-256 in the trailer does not match the content.
	ErrChecksum = fmt.Errorf("%w: checksum mismatch (the content changed after it was written)", ErrDamaged)
	// ErrTrailingData: bytes follow the trailer.
	ErrTrailingData = fmt.Errorf("%w: data after the end of the snapshot", ErrDamaged)
	// ErrUnsupportedVersion: a format version this build cannot read.
	ErrUnsupportedVersion = errors.New("snapshot file format version not supported")
)

// Header describes the state a backup file holds.
type Header struct {
	// FormatVersion is the file format (FormatVersion when written here).
	FormatVersion int `json:"formatVersion"`
	// Index is the Raft index of the last entry the state includes (the
	// state machine's applied index), Term the term of that entry.
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	// Time is the state machine's clock (Unix ms): the newest leader stamp
	// the state has applied.
	Time int64 `json:"time"`
	// KeyCheck is the cluster key's check value recorded in the state
	// (secure.Keys.CheckValue): a node restores only with that key.
	KeyCheck HexBytes `json:"keyCheck"`
	// StateFormat is StateFormat; StateSize the length of the state section.
	StateFormat string `json:"stateFormat"`
	StateSize   int64  `json:"stateSize"`
	// CreatedAt is the wall-clock time of the save, NodeID the node that
	// served it (informational).
	CreatedAt time.Time `json:"createdAt"`
	NodeID    string    `json:"nodeId,omitempty"`
}

// HexBytes is a byte string written as hex in JSON.
type HexBytes []byte

// MarshalJSON writes b as a hex string.
func (b HexBytes) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(b)) }

// UnmarshalJSON reads a hex string.
func (b *HexBytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("not hex: %w", err)
	}
	*b = v
	return nil
}

// Writer writes one backup file: its header is encoded up front, so the
// file's total size is known before the state is streamed.
type Writer struct {
	h    Header
	head []byte
}

// NewWriter prepares a file for h (FormatVersion and StateFormat are set).
func NewWriter(h Header) (*Writer, error) {
	if h.StateSize < 0 {
		return nil, fmt.Errorf("snapfile: negative state size %d", h.StateSize)
	}
	h.FormatVersion = FormatVersion
	h.StateFormat = StateFormat
	js, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("snapfile: encode header: %w", err)
	}
	head := make([]byte, prefixLen, prefixLen+len(js))
	copy(head, magic[:])
	binary.BigEndian.PutUint32(head[8:], FormatVersion)
	binary.BigEndian.PutUint32(head[12:], uint32(len(js)))
	return &Writer{h: h, head: append(head, js...)}, nil
}

// Size is the length of the whole file.
func (w *Writer) Size() int64 { return int64(len(w.head)) + w.h.StateSize + trailerLen }

// Header is the header the file carries.
func (w *Writer) Header() Header { return w.h }

// WriteTo writes the file to out, taking the state from state, which must
// write exactly Header.StateSize bytes (a bbolt transaction's WriteTo does).
func (w *Writer) WriteTo(out io.Writer, state io.WriterTo) (int64, error) {
	sum := sha256.New()
	cw := &countWriter{w: io.MultiWriter(out, sum)}
	if _, err := cw.Write(w.head); err != nil {
		return cw.n, fmt.Errorf("snapfile: write header: %w", err)
	}
	n, err := state.WriteTo(cw)
	if err != nil {
		return cw.n, fmt.Errorf("snapfile: write state: %w", err)
	}
	if n != w.h.StateSize {
		return cw.n, fmt.Errorf("snapfile: the state was %d bytes, the header says %d", n, w.h.StateSize)
	}
	trailer := append(trailerMagic[:], sum.Sum(nil)...)
	if _, err := out.Write(trailer); err != nil {
		return cw.n, fmt.Errorf("snapfile: write trailer: %w", err)
	}
	return cw.n + int64(len(trailer)), nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Reader reads one backup file: NewReader parses the header, State streams
// the state section, and the checksum is checked when State reaches its
// end, before it reports io.EOF. A state reader that was not read to its
// end has not been verified.
type Reader struct {
	r      io.Reader
	h      Header
	sum    hash.Hash
	left   int64
	done   bool
	err    error
	digest []byte
}

// NewReader reads and checks the header of the file in r.
func NewReader(r io.Reader) (*Reader, error) {
	sum := sha256.New()
	tr := io.TeeReader(r, sum)
	var prefix [prefixLen]byte
	if n, err := io.ReadFull(tr, prefix[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if n > 0 && bytes.HasPrefix(magic[:], prefix[:min(n, 8)]) {
				return nil, ErrTruncated
			}
			return nil, ErrNotSnapshot
		}
		return nil, fmt.Errorf("snapfile: read header: %w", err)
	}
	if !bytes.Equal(prefix[:8], magic[:]) {
		return nil, ErrNotSnapshot
	}
	if v := binary.BigEndian.Uint32(prefix[8:]); v != FormatVersion {
		return nil, fmt.Errorf("%w: the file has format version %d, this build reads version %d", ErrUnsupportedVersion, v, FormatVersion)
	}
	n := binary.BigEndian.Uint32(prefix[12:])
	if n == 0 || n > maxHeaderLen {
		return nil, fmt.Errorf("%w: header length %d out of range", ErrDamaged, n)
	}
	js := make([]byte, n)
	if _, err := io.ReadFull(tr, js); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrTruncated
		}
		return nil, fmt.Errorf("snapfile: read header: %w", err)
	}
	var h Header
	dec := json.NewDecoder(bytes.NewReader(js))
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrDamaged, err)
	}
	if h.FormatVersion != FormatVersion || h.StateFormat != StateFormat || h.StateSize < 0 {
		return nil, fmt.Errorf("%w: header: format version %d, state %q of %d bytes", ErrDamaged, h.FormatVersion, h.StateFormat, h.StateSize)
	}
	return &Reader{r: r, h: h, sum: sum, left: h.StateSize}, nil
}

// Header is the file's header. It is checked by the checksum only once
// the state was read to its end.
func (r *Reader) Header() Header { return r.h }

// Read reads the state section; at its end it reads the trailer and
// returns io.EOF only when the checksum matches and nothing follows.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.left == 0 {
		if !r.done {
			r.err = r.finish()
			r.done = true
			if r.err != nil {
				return 0, r.err
			}
		}
		r.err = io.EOF
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.r.Read(p)
	r.sum.Write(p[:n])
	r.left -= int64(n)
	if err != nil && !(errors.Is(err, io.EOF) && r.left == 0) {
		if errors.Is(err, io.EOF) {
			err = ErrTruncated
		} else {
			err = fmt.Errorf("snapfile: read state: %w", err)
		}
		r.err = err
		return n, err
	}
	return n, nil
}

// finish reads and checks the trailer.
func (r *Reader) finish() error {
	var t [trailerLen]byte
	if _, err := io.ReadFull(r.r, t[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ErrTruncated
		}
		return fmt.Errorf("snapfile: read trailer: %w", err)
	}
	r.digest = r.sum.Sum(nil)
	if !bytes.Equal(t[:8], trailerMagic[:]) || !bytes.Equal(t[8:], r.digest) {
		return ErrChecksum
	}
	var one [1]byte
	if n, _ := io.ReadFull(r.r, one[:]); n > 0 {
		return ErrTrailingData
	}
	return nil
}

// Checksum is the file's SHA-256 (of everything before the trailer), known
// once the state was read to its end without error.
func (r *Reader) Checksum() []byte { return r.digest }

// Info is what Verify learns of a file.
type Info struct {
	Header
	// FileSize is the file's length; Checksum its verified SHA-256.
	FileSize int64    `json:"fileSize"`
	Checksum HexBytes `json:"sha256"`
}

// Verify reads the whole file at path and checks it: format, header,
// length and checksum. Its errors wrap ErrDamaged or ErrUnsupportedVersion
// when the file is at fault.
func Verify(path string) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, fmt.Errorf("snapfile: %w", err)
	}
	defer f.Close()
	cr := &countReader{r: f}
	sr, err := NewReader(cr)
	if err != nil {
		return Info{}, err
	}
	if _, err := io.Copy(io.Discard, sr); err != nil {
		return Info{}, err
	}
	return Info{Header: sr.Header(), FileSize: cr.n, Checksum: sr.Checksum()}, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
