package fsm

import (
	"bytes"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
)

// StateCopy is a consistent, read-only copy of the whole state in the
// making, for a backup (docs/operations.md, "Backups"): the same bytes
// Persist gives a Raft snapshot (the bbolt file as of one read
// transaction), with what the copy holds read in that same transaction.
// Applies go on while it is written. Close it when done.
type StateCopy struct {
	tx *bolt.Tx
	// AppliedIndex and LastTime are the state's applied Raft index and FSM
	// time; KeyCheck the cluster key's check value it records (nil when
	// none is recorded yet); Size the number of bytes WriteTo writes.
	AppliedIndex uint64
	LastTime     int64
	KeyCheck     []byte
	Size         int64
}

// BeginCopy starts a StateCopy. Like Snapshot it only begins a bbolt read
// transaction: cheap, and it never blocks applies.
func (f *FSM) BeginCopy() (*StateCopy, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ErrClosed
	}
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("fsm: copy: begin: %w", err)
	}
	applied, last, err := readMeta(tx)
	if err != nil {
		_ = tx.Rollback()
		return nil, fmt.Errorf("fsm: copy: %w", err)
	}
	return &StateCopy{
		tx:           tx,
		AppliedIndex: applied,
		LastTime:     last,
		KeyCheck:     bytes.Clone(tx.Bucket(bucketMeta).Get(keyKeyCheck)),
		Size:         tx.Size(),
	}, nil
}

// WriteTo writes the state file as of the copy (Size bytes) to w.
func (c *StateCopy) WriteTo(w io.Writer) (int64, error) {
	n, err := c.tx.WriteTo(w)
	if err != nil {
		return n, fmt.Errorf("fsm: copy: %w", err)
	}
	return n, nil
}

// Close ends the copy's read transaction.
func (c *StateCopy) Close() error {
	if err := c.tx.Rollback(); err != nil {
		return fmt.Errorf("fsm: copy: %w", err)
	}
	return nil
}
