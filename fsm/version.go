package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// The declared formats (docs/upgrade.md, "Format versions"). A build reads
// exactly the versions it knows and stops at anything else: it never skips
// an entry or a record it does not understand, because a replica that skips
// what the others apply silently holds another state.
const (
	// CommandFormat is the format version of log entries: the first byte
	// of every command entry's data (binary.go). Version 1 is the compact
	// binary encoding of EncodeCommand.
	CommandFormat byte = 1
	// StateFormat is the format version of the state file: the buckets,
	// their keys and the encodings of their values (DESIGN.md, "Storage
	// layout"). A snapshot is the state file, so it is also the snapshot
	// format. It is recorded in meta/format when a file is created.
	StateFormat uint64 = 1
)

// keyFormat holds the state file's format version (StateFormat) in the
// meta bucket, as a big-endian uint64.
var keyFormat = []byte("format")

// ErrStateFormat is returned by Open and Restore for a state file or
// snapshot of a format version this build does not read.
var ErrStateFormat = errors.New("fsm: unsupported state format")

// checkStateFormat reads the state file's format version, recording
// StateFormat in a file that holds no state yet. A file of another version,
// or one that holds state but no version, is refused.
func checkStateFormat(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	v := meta.Get(keyFormat)
	if v == nil {
		applied, _, err := readMeta(tx)
		if err != nil {
			return err
		}
		if applied != 0 {
			return fmt.Errorf("%w: the file holds state (applied index %d) but no format version: it was written by a development build before format version %d; move it aside and let the node rebuild it from the cluster",
				ErrStateFormat, applied, StateFormat)
		}
		if err := meta.Put(keyFormat, binary.BigEndian.AppendUint64(nil, StateFormat)); err != nil {
			return fmt.Errorf("record the state format: %w", err)
		}
		return nil
	}
	if len(v) != 8 {
		return fmt.Errorf("%w: bad format version value %x", ErrStateFormat, v)
	}
	if got := binary.BigEndian.Uint64(v); got != StateFormat {
		return fmt.Errorf("%w: format version %d, this build reads %d: it was written by another version of exactonced; run the version that wrote it, or a newer one (docs/upgrade.md)",
			ErrStateFormat, got, StateFormat)
	}
	return nil
}

// UnreadableEntryError is the fatal error of a committed log entry this
// build cannot decode: of an unknown format version or command type (a
// newer leader wrote it), or malformed. ApplyBatch panics with it rather
// than skip the entry: the node exits, and every restart stops again at the
// same entry until it runs a build that reads it (DESIGN.md, "Entries this
// build does not know stop the node").
type UnreadableEntryError struct {
	// Index and Term identify the entry in the Raft log.
	Index, Term uint64
	// Err is DecodeCommand's error (wrapping ErrBadCommand, and
	// ErrUnknownFormat or ErrUnknownCommand when a newer build wrote it).
	Err error
}

// Error says which entry, why, and what to do.
func (e *UnreadableEntryError) Error() string {
	what := "this build cannot decode it"
	if errors.Is(e.Err, ErrUnknownFormat) || errors.Is(e.Err, ErrUnknownCommand) {
		what = "it was written by a newer version of exactonced: upgrade this node to the version the leader runs"
	}
	return fmt.Sprintf("fsm: cannot apply committed log entry %d (term %d): %v; %s. The node stops here and will stop at the same entry after every restart: it never skips an entry it does not understand (docs/upgrade.md)",
		e.Index, e.Term, e.Err, what)
}

// Unwrap returns the decoding error.
func (e *UnreadableEntryError) Unwrap() error { return e.Err }
