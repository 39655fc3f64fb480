package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// The derived-state journal (DESIGN.md, "The journal"): the counters and
// the state index are derived from the actions alone, and writing them with
// every Raft batch dirtied about thirteen more B+tree pages per commit than
// the actions themselves (a one-consume batch went from 6 to 19 pages, and
// from 33 to 140 µs). So an entry's action writes are recorded as changes
// in the small "journal" bucket, and the journal is folded into the
// counters and the state index once it holds journalMaxEntries entries or
// journalMaxChanges changes. Readers add the journal to what they read
// (View.journal), so Stats and List stay exact.
//
// The fold happens right after the entry that fills the journal, inside
// whatever batch holds it: the journal's content at every applied index is
// a function of the log alone, so replicas that split the log into other
// batches hold the same state (TestDeterminism).
var bucketJournal = []byte("journal") // index8 -> encoded changes of that entry

const (
	journalMaxEntries = 64
	journalMaxChanges = 1024
	journalRecordV1   = 1
)

// change is one write of an action, reduced to what the derived state
// needs: prev is nil for a create.
type change struct {
	prev, next *Action
}

// journalState is what the writer keeps in memory about the journal
// bucket; nil until the first batch after Open or Restore reads it.
type journalState struct {
	entries, changes int
	// totals are the clients' stored-action deltas not yet in the counters
	// (the quota reads them).
	totals map[string]int64
}

// add accounts for one entry's changes.
func (j *journalState) add(chs []change) {
	j.entries++
	j.changes += len(chs)
	for _, c := range chs {
		if c.prev == nil {
			j.totals[c.next.ClientID]++
		}
	}
}

// full reports whether the journal must be folded now.
func (j *journalState) full() bool {
	return j.entries >= journalMaxEntries || j.changes >= journalMaxChanges
}

// loadJournalState reads the journal bucket into a journalState.
func loadJournalState(tx *bolt.Tx) (*journalState, error) {
	j := &journalState{totals: map[string]int64{}}
	err := forEachJournalEntry(tx.Bucket(bucketJournal), func(_ []byte, chs []change) error {
		j.add(chs)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return j, nil
}

// forEachJournalEntry calls fn with every journal entry, in log order. A
// record that does not decode is a corrupt (or newer) state file: it is an
// error, never skipped.
func forEachJournalEntry(b *bolt.Bucket, fn func(k []byte, chs []change) error) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		chs, err := decodeChanges(v)
		if err != nil {
			return fmt.Errorf("journal entry %x: %w", k, err)
		}
		if err := fn(k, chs); err != nil {
			return err
		}
	}
	return nil
}

// encodeChanges encodes one entry's changes. A change keeps the fields the
// counters and the state index read; prev shares the immutable ones
// (id, client, createdAt, activeAt, expiresAt) with next.
func encodeChanges(chs []change) []byte {
	w := binWriter{b: make([]byte, 0, 16+64*len(chs))}
	w.byte1(journalRecordV1)
	w.uvarintInt(len(chs))
	for _, c := range chs {
		n := c.next
		w.boolean(c.prev != nil)
		w.str(n.ID)
		w.str(n.ClientID)
		w.varint(n.CreatedAt)
		w.varint(n.ActiveAt)
		w.varint(n.ExpiresAt)
		w.varint(n.ConsumedAt)
		w.varint(n.CanceledAt)
		w.str(n.ConsumedReason)
		if p := c.prev; p != nil {
			w.varint(p.ConsumedAt)
			w.varint(p.CanceledAt)
			w.str(p.ConsumedReason)
		}
	}
	return w.b
}

// decodeChanges decodes encodeChanges.
func decodeChanges(b []byte) ([]change, error) {
	if len(b) == 0 || b[0] != journalRecordV1 {
		return nil, fmt.Errorf("decode journal entry: unknown encoding")
	}
	r := binReader{b: b[1:]}
	n := r.count(9)
	chs := make([]change, 0, n)
	for i := 0; i < n && r.err == nil; i++ {
		hasPrev := r.boolean()
		next := &Action{ID: r.str(), ClientID: r.str(), CreatedAt: r.varint(), ActiveAt: r.varint(),
			ExpiresAt: r.varint(), ConsumedAt: r.varint(), CanceledAt: r.varint(), ConsumedReason: r.str()}
		c := change{next: next}
		if hasPrev {
			p := *next
			p.ConsumedAt, p.CanceledAt, p.ConsumedReason = r.varint(), r.varint(), r.str()
			c.prev = &p
		}
		chs = append(chs, c)
	}
	if err := r.end(); err != nil {
		return nil, fmt.Errorf("decode journal entry: %w", err)
	}
	return chs, nil
}

// journalKey is the journal key of log index i.
func journalKey(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }

// endEntry journals the changes the entry at index made, and folds the
// journal when it is full. An entry whose changes alone fill the journal
// (a large CSV) is folded directly, after the older entries.
func (s *store) endEntry(index uint64) error {
	chs := s.entryChanges
	if len(chs) == 0 {
		return nil
	}
	s.entryChanges = nil
	if len(chs) >= journalMaxChanges {
		if err := s.foldJournal(); err != nil {
			return err
		}
		return s.applyChanges(chs)
	}
	if err := s.journalB.Put(journalKey(index), encodeChanges(chs)); err != nil {
		return fatal(fmt.Errorf("put journal entry: %w", err))
	}
	s.journal.add(chs)
	if s.journal.full() {
		return s.foldJournal()
	}
	return nil
}

// foldJournal applies every journal entry to the counters and the state
// index, in log order, and empties the journal.
func (s *store) foldJournal() error {
	if s.journal.entries == 0 {
		return nil
	}
	var keys [][]byte
	err := forEachJournalEntry(s.journalB, func(k []byte, chs []change) error {
		keys = append(keys, bytes.Clone(k))
		return s.applyChanges(chs)
	})
	if err != nil {
		return fatal(err)
	}
	for _, k := range keys {
		if err := s.journalB.Delete(k); err != nil {
			return fatal(fmt.Errorf("delete journal entry: %w", err))
		}
	}
	s.journal.entries, s.journal.changes = 0, 0
	clear(s.journal.totals)
	return nil
}

// applyChanges writes changes into the counters (as deltas, flushed once
// per batch) and the state index.
func (s *store) applyChanges(chs []change) error {
	for _, c := range chs {
		s.counts.apply(c.next, changeOf(c.prev, c.next))
		g := groupOf(c.next)
		if c.prev != nil {
			pg := groupOf(c.prev)
			if pg == g {
				continue
			}
			if err := s.ixState.Delete(stateIxKey(c.prev, pg)); err != nil {
				return fatal(fmt.Errorf("delete state index: %w", err))
			}
		}
		if err := s.ixState.Put(stateIxKey(c.next, g), nil); err != nil {
			return fatal(fmt.Errorf("put state index: %w", err))
		}
	}
	return nil
}

// journal returns the client's changes not yet folded, in log order.
func (v *View) journal(clientID string) ([]change, error) {
	var out []change
	err := forEachJournalEntry(v.tx.Bucket(bucketJournal), func(_ []byte, chs []change) error {
		for _, c := range chs {
			if c.next.ClientID == clientID {
				out = append(out, c)
			}
		}
		return nil
	})
	return out, err
}

// seriesPoint is one series delta: d at time t.
type seriesPoint struct {
	series byte
	t, d   int64
}

// journalStats is the journal's part of a client's counts: scalar deltas
// and series points, which upTo adds to the tries' prefix counts.
type journalStats struct {
	total, consumed, burned, canceled int64
	points                            []seriesPoint
}

func statsOfChanges(chs []change) journalStats {
	var js journalStats
	for _, c := range chs {
		ch := changeOf(c.prev, c.next)
		js.total += ch.total
		js.consumed += ch.consumed
		js.burned += ch.burned
		js.canceled += ch.canceled
		forEachSeries(c.next, ch, func(series byte, t, d int64) {
			js.points = append(js.points, seriesPoint{series, t, d})
		})
	}
	return js
}

// upTo is the journal's part of a series' count at or before t.
func (js *journalStats) upTo(series byte, t int64) int64 {
	var n int64
	for _, p := range js.points {
		if p.series == series && p.t <= t {
			n += p.d
		}
	}
	return n
}

// stateIxAdditions are the state-index keys of group g the client's
// journal adds, sorted: List merges them into its walk of the index. (The
// entries the journal removes are still in the index; List checks every
// action it reads against the filters, so they are skipped.)
func stateIxAdditions(chs []change, g byte) [][]byte {
	var keys [][]byte
	for _, c := range chs {
		if groupOf(c.next) == g && (c.prev == nil || groupOf(c.prev) != g) {
			keys = append(keys, stateIxKey(c.next, g))
		}
	}
	slices.SortFunc(keys, bytes.Compare)
	return keys
}
