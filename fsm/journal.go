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
// from 33 to 140 µs). So an entry records only which actions it wrote, in
// the small "journal" bucket, and the journal is folded into the counters
// and the state index once it holds journalMaxEntries entries or
// journalMaxChanges changes. Readers add the journal to what they read
// (View.journal), so Stats and List stay exact.
//
// A record names the actions, not their values: an action written in the
// journal's window was open when the window began, or did not exist
// (terminal actions are never written), so its change over the window is
// from "absent" (created in the window) or from its own open form to what
// is stored now, and the counters' changes add up (changeOf(a, b) +
// changeOf(b, c) = changeOf(a, c)). Small records keep the journal on one
// bbolt page, so an entry's record costs its commit one page.
//
// The fold happens right after the entry that fills the journal, inside
// whatever batch holds it: the journal's content at every applied index is
// a function of the log alone, so replicas that split the log into other
// batches hold the same state (TestDeterminism).
var bucketJournal = []byte("journal") // index8 -> the ids of the actions that entry wrote

const (
	journalMaxEntries = 56
	journalMaxChanges = 1024
	// journalMaxAgeMS folds a journal whose first entry is older than
	// this (FSM time), so that an idle cluster's derived state, and the
	// due indexes retention sweeps (retention.go), lag by at most about
	// that much: the leader proposes an entry now and then when idle.
	journalMaxAgeMS = 1000
	// journalRecordV1 is the first byte of a journal record (StateFormat
	// 1): flags and id per action.
	journalRecordV1 = 1
	// journalCreated marks an action the entry created.
	journalCreated = 1
	// journalTimed marks the first record of a journal, which carries the
	// entry's FSM time (journalMaxAgeMS).
	journalTimed = 1
)

// change is one write of an action, reduced to what the derived state
// needs: prev is nil for a create.
type change struct {
	prev, next *Action
}

// journaled is one action written in the journal's window.
type journaled struct {
	id, clientID string
	// created: the action did not exist when the window began.
	created bool
	// last is what the counters and the state index read of the action
	// (derivedFields) as its latest write in the window left it, so that
	// the fold need not read it back; nil when the account was read from
	// the bucket (after Open or Restore), and then the fold reads it.
	last *Action
}

// journalState is what the writer keeps in memory about the journal
// bucket; nil until the first batch after Open or Restore reads it.
type journalState struct {
	entries, changes int
	// firstTime is the FSM time of the journal's first entry.
	firstTime int64
	// actions are the distinct actions written in the window, in the order
	// of their first write; index maps an id to its place there.
	actions []journaled
	index   map[string]int
	// totals are the clients' stored-action deltas not yet in the counters
	// (the quota reads them).
	totals map[string]int64
}

func newJournalState() *journalState {
	return &journalState{index: map[string]int{}, totals: map[string]int64{}}
}

// add accounts for one entry's writes, applied at FSM time t.
func (j *journalState) add(t int64, ws []journaled) {
	if j.entries == 0 {
		j.firstTime = t
	}
	j.entries++
	j.changes += len(ws)
	for _, w := range ws {
		if i, ok := j.index[w.id]; ok {
			j.actions[i].created = j.actions[i].created || w.created
			j.actions[i].last = w.last
		} else {
			j.index[w.id] = len(j.actions)
			j.actions = append(j.actions, w)
		}
		if w.created {
			j.totals[w.clientID]++
		}
	}
}

// reset empties the account after a fold.
func (j *journalState) reset() {
	j.entries, j.changes = 0, 0
	j.actions = j.actions[:0]
	clear(j.index)
	clear(j.totals)
}

// full reports whether the journal must be folded now.
func (j *journalState) full() bool {
	return j.entries >= journalMaxEntries || j.changes >= journalMaxChanges
}

// loadJournalState reads the journal bucket into a journalState.
func loadJournalState(tx *bolt.Tx) (*journalState, error) {
	j := newJournalState()
	actions := tx.Bucket(bucketActions)
	err := forEachJournalEntry(tx.Bucket(bucketJournal), func(_ []byte, t int64, ws []journaled) error {
		for i := range ws {
			a, err := loadAction(actions, ws[i].id)
			if err != nil {
				return err
			}
			if a == nil {
				return fmt.Errorf("journal: action %s is not stored", ws[i].id)
			}
			ws[i].clientID = a.ClientID
		}
		j.add(t, ws)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return j, nil
}

// forEachJournalEntry calls fn with every journal entry, in log order. A
// record that does not decode is a corrupt (or newer) state file: it is an
// error, never skipped. The records carry no client ids.
func forEachJournalEntry(b *bolt.Bucket, fn func(k []byte, t int64, ws []journaled) error) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		t, ws, err := decodeJournalRecord(v)
		if err != nil {
			return fmt.Errorf("journal entry %x: %w", k, err)
		}
		if err := fn(k, t, ws); err != nil {
			return err
		}
	}
	return nil
}

// encodeJournalRecord encodes the actions one entry wrote; the first
// record of a journal (first) also carries the entry's FSM time t. Every
// byte counts: a full journal of one-action records must fit one page
// (TestJournalFitsOnePage).
func encodeJournalRecord(first bool, t int64, chs []change) []byte {
	w := binWriter{b: make([]byte, 0, 12+36*len(chs))}
	w.byte1(journalRecordV1)
	if first {
		w.byte1(journalTimed)
		w.varint(t)
	} else {
		w.byte1(0)
	}
	w.uvarintInt(len(chs))
	for _, c := range chs {
		var flags byte
		if c.prev == nil {
			flags |= journalCreated
		}
		w.byte1(flags)
		w.str(c.next.ID)
	}
	return w.b
}

// decodeJournalRecord decodes encodeJournalRecord.
func decodeJournalRecord(b []byte) (int64, []journaled, error) {
	if len(b) == 0 || b[0] != journalRecordV1 {
		return 0, nil, fmt.Errorf("decode journal entry: unknown encoding")
	}
	r := binReader{b: b[1:]}
	var t int64
	switch r.byte1() {
	case 0:
	case journalTimed:
		t = r.varint()
	default:
		return 0, nil, fmt.Errorf("decode journal entry: unknown record flags")
	}
	n := r.count(2)
	ws := make([]journaled, 0, n)
	for i := 0; i < n && r.err == nil; i++ {
		flags := r.byte1()
		if flags&^journalCreated != 0 {
			return 0, nil, fmt.Errorf("decode journal entry: unknown flags %#x", flags)
		}
		ws = append(ws, journaled{created: flags&journalCreated != 0, id: r.str()})
	}
	if err := r.end(); err != nil {
		return 0, nil, fmt.Errorf("decode journal entry: %w", err)
	}
	return t, ws, nil
}

// journalKey is the journal key of log index i.
func journalKey(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }

// endEntry journals the changes the entry at index, applied at FSM time
// now, made, and folds the journal when it is full. An entry whose changes
// alone fill the journal (a large CSV) is folded directly, after the older
// entries.
func (s *store) endEntry(index uint64, now int64) error {
	chs := s.entryChanges
	if len(chs) == 0 {
		return nil
	}
	s.entryChanges = s.entryChanges[:0]
	if len(chs) >= journalMaxChanges {
		if err := s.foldJournal(); err != nil {
			return err
		}
		return s.applyChanges(chs)
	}
	if err := s.journalB.Put(journalKey(index), encodeJournalRecord(s.journal.entries == 0, now, chs)); err != nil {
		return fatal(fmt.Errorf("put journal entry: %w", err))
	}
	ws := make([]journaled, len(chs))
	for i, c := range chs {
		ws[i] = journaled{id: c.next.ID, clientID: c.next.ClientID, created: c.prev == nil, last: c.next}
	}
	s.journal.add(now, ws)
	if s.journal.full() {
		return s.foldJournal()
	}
	return nil
}

// foldJournal applies the journal's net change of every action it names
// to the counters and the state index, and empties the journal.
func (s *store) foldJournal() error {
	if s.journal.entries == 0 {
		return nil
	}
	for _, w := range s.journal.actions {
		c, err := netChange(s.actions, w)
		if err != nil {
			return fatal(err)
		}
		if err := s.applyChanges([]change{c}); err != nil {
			return err
		}
	}
	c := s.journalB.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return fatal(fmt.Errorf("empty the journal: %w", err))
		}
	}
	s.journal.reset()
	return nil
}

// netChange is the change the journal's window made to the action w names:
// from nothing (created in the window) or from its open form to what is
// stored now.
func netChange(actions *bolt.Bucket, w journaled) (change, error) {
	next := w.last
	if next == nil {
		a, err := loadAction(actions, w.id)
		if err != nil {
			return change{}, err
		}
		if a == nil {
			return change{}, fmt.Errorf("journal: action %s is not stored", w.id)
		}
		next = derivedFields(a)
	}
	c := change{next: next}
	if !w.created {
		p := *c.next
		p.ConsumedAt, p.CanceledAt, p.ConsumedReason = 0, 0, ""
		c.prev = &p
	}
	return c, nil
}

// applyChanges writes changes into the counters (as deltas, flushed once
// per batch) and the state index.
func (s *store) applyChanges(chs []change) error {
	for _, c := range chs {
		s.counts.apply(c.next, changeOf(c.prev, c.next))
		if err := s.followSettle(c); err != nil {
			return err
		}
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

// journal returns the client's net changes not yet folded. The records
// carry no client ids: every action they name is read, and the client's
// kept.
func (v *View) journal(clientID string) ([]change, error) {
	j := newJournalState()
	err := forEachJournalEntry(v.tx.Bucket(bucketJournal), func(_ []byte, t int64, rec []journaled) error {
		j.add(t, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	actions := v.tx.Bucket(bucketActions)
	var out []change
	for _, w := range j.actions {
		c, err := netChange(actions, w)
		if err != nil {
			return nil, err
		}
		if c.next.ClientID == clientID {
			out = append(out, c)
		}
	}
	return out, nil
}

// seriesPoint is one series delta: d at time t.
type seriesPoint struct {
	series byte
	t, d   int64
}

// journalStats is the journal's part of a client's counts: scalar deltas
// and series points, which upTo adds to the tries' prefix counts.
type journalStats struct {
	total, consumed, burned, canceled, purged int64
	points                                    []seriesPoint
}

func statsOfChanges(chs []change) journalStats {
	var js journalStats
	for _, c := range chs {
		ch := changeOf(c.prev, c.next)
		js.total += ch.total
		js.consumed += ch.consumed
		js.burned += ch.burned
		js.canceled += ch.canceled
		js.purged += ch.purged
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
