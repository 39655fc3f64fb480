package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// setStateFormat rewrites meta/format of a closed state file (nil deletes it).
func setStateFormat(t *testing.T, path string, v []byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if v == nil {
			return tx.Bucket(bucketMeta).Delete(keyFormat)
		}
		return tx.Bucket(bucketMeta).Put(keyFormat, v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStateFormat: a new state file records StateFormat; a file (or a
// snapshot, which is the file) of another format version, or holding state
// but no version, is refused with ErrStateFormat by Open and by Restore,
// and a refused Restore leaves the state as it was.
func TestStateFormat(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	h := &harness{t: t, f: openFSM(t, path)}
	h.mustOK(clientCmd(clA, t0))
	err := h.f.View(func(v *View) error {
		if got := v.tx.Bucket(bucketMeta).Get(keyFormat); !bytes.Equal(got, binary.BigEndian.AppendUint64(nil, StateFormat)) {
			t.Errorf("meta/format %x, want %d", got, StateFormat)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if err := h.f.View(func(v *View) error { _, err := v.tx.WriteTo(&snap); return err }); err != nil {
		t.Fatal(err)
	}
	if err := h.f.Close(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		v    []byte
	}{
		{"newer", binary.BigEndian.AppendUint64(nil, StateFormat+1)},
		{"missing", nil},
		{"garbled", []byte{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(p, snap.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			setStateFormat(t, p, tc.v)
			if f, err := Open(Options{Path: p, NoSync: true, InitialMmapSize: 64 << 20}); !errors.Is(err, ErrStateFormat) {
				if f != nil {
					_ = f.Close()
				}
				t.Fatalf("open: %v, want ErrStateFormat", err)
			}
			// The same file as a snapshot from a leader.
			other := openFSM(t, filepath.Join(t.TempDir(), "other.db"))
			oh := &harness{t: t, f: other}
			oh.mustOK(clientCmd(clB, t0))
			before := hashOf(t, other)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := other.Restore(readCloser{bytes.NewReader(b)}); !errors.Is(err, ErrStateFormat) {
				t.Fatalf("restore: %v, want ErrStateFormat", err)
			}
			if hashOf(t, other) != before || other.AppliedIndex() != oh.idx {
				t.Fatalf("a refused restore changed the state")
			}
		})
	}
	// The file of this version opens again.
	f := openFSM(t, path)
	if f.AppliedIndex() != h.idx {
		t.Fatalf("applied %d, want %d", f.AppliedIndex(), h.idx)
	}
}
