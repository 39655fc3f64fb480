package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"
)

// Retention (DESIGN.md, "Retention"; docs/api.md, "Retention"): a terminal
// action (consumed, burned, canceled, expired) is deleted Retention after it
// became terminal, by the state machine's time, and its payload is erased
// as soon as it is terminal: at once for a consume, burn or cancel (the
// decisions store it without the payload), at the next sweep for an
// expiry. Two global indexes in time order drive the sweeps:
//
//   - due_expiry (expiresAt, id): open actions that still hold a payload.
//     The fold adds a created action; the expiry sweep erases the payload of
//     each action it reaches that is still open, and drops the key (a
//     settled action's key is dropped without a write).
//   - due_purge (terminal time, id): terminal actions. The fold adds a
//     settled action at its settle time; the expiry sweep adds an expired
//     one at its expiresAt. The purge sweep deletes each action it reaches
//     whose terminal time is at or before now - Retention.
//
// Both sweeps run after every command entry and examine at most
// sweepBudget keys each, so the work per entry is bounded and a backlog
// drains over the following entries (the leader proposes an entry now and
// then when idle, cluster.Node's clock ticks). What a sweep does depends
// only on the state and the entry, so every replica does the same.
var (
	bucketDueExpiry = []byte("due_expiry") // time8(expiresAt) actionID -> ""
	bucketDuePurge  = []byte("due_purge")  // time8(terminal time) actionID -> ""
	keyRetention    = []byte("retention")  // meta: retention in ms, big-endian
)

const (
	// DefaultRetentionMS is the retention of a state that never recorded
	// one: 30 days.
	DefaultRetentionMS int64 = 30 * dayMS
	// MinRetentionMS and MaxRetentionMS bound CmdSetRetention.
	MinRetentionMS int64 = 1000
	MaxRetentionMS int64 = 100 * 365 * dayMS
	// sweepBudget is how many keys each sweep examines per entry.
	sweepBudget = 64
)

// dueKey is a key of the due indexes: time8 followed by the action id.
func dueKey(t int64, id string) []byte {
	k := make([]byte, 8+len(id))
	putTime(k, t)
	copy(k[8:], id)
	return k
}

// terminalAt is when a settled action became terminal (0 for an open one).
func terminalAt(a *Action) int64 {
	if a.ConsumedAt != 0 {
		return a.ConsumedAt
	}
	return a.CanceledAt
}

// readRetention returns the recorded retention, or DefaultRetentionMS.
func readRetention(meta *bolt.Bucket) (int64, error) {
	v := meta.Get(keyRetention)
	if v == nil {
		return DefaultRetentionMS, nil
	}
	if len(v) != 8 {
		return 0, errors.New("bad retention value")
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// decideSetRetention decides CmdSetRetention over the recorded retention:
// next is the value to store, or 0 when nothing changes.
func decideSetRetention(current int64, r *SetRetention, now int64) (next int64, res Result) {
	res.Time = now
	switch {
	case r.RetentionMS < MinRetentionMS || r.RetentionMS > MaxRetentionMS:
		res.Code = CodeInvalidRequest
		res.Message = fmt.Sprintf("retention must be between %d ms and %d days", MinRetentionMS, MaxRetentionMS/dayMS)
		return 0, res
	case r.RetentionMS == current:
		return 0, res
	}
	return r.RetentionMS, res
}

// setRetention stores a retention decided by decideSetRetention.
func (s *store) setRetention(ms int64) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(ms))
	if err := s.meta.Put(keyRetention, v[:]); err != nil {
		return fatal(fmt.Errorf("put retention: %w", err))
	}
	s.retention = ms
	return nil
}

// followSettle keeps the due indexes in step with one net change of an
// action (called where the counters and the state index follow it).
func (s *store) followSettle(c change) error {
	n := c.next
	open := groupOf(n) == groupOpen
	if c.prev == nil && open {
		if err := s.dueExpiry.Put(dueKey(n.ExpiresAt, n.ID), nil); err != nil {
			return fatal(fmt.Errorf("put due expiry: %w", err))
		}
		s.due.expiry.inserted(n.ExpiresAt)
		return nil
	}
	if (c.prev == nil || groupOf(c.prev) == groupOpen) && !open {
		if err := s.duePurge.Put(dueKey(terminalAt(n), n.ID), nil); err != nil {
			return fatal(fmt.Errorf("put due purge: %w", err))
		}
		s.due.purge.inserted(terminalAt(n))
	}
	return nil
}

// dueHint is the earliest time in each due index, as far as the writer
// knows, so that a sweep with nothing due costs no lookup: most entries
// find nothing. It only ever skips a lookup that would find no key, so the
// state is the same with or without it. A lookup learns the first key it
// left; every insert lowers the time.
type dueHint struct {
	expiry, purge dueNext
}

// dueNext is one index's earliest key time, when known.
type dueNext struct {
	known bool
	t     int64
}

func newDueHint() *dueHint { return &dueHint{} }

// inserted lowers n for a key at time t.
func (n *dueNext) inserted(t int64) {
	if n.known && t < n.t {
		n.t = t
	}
}

// nothingBy reports whether n proves that no key is at or before t.
func (n *dueNext) nothingBy(t int64) bool { return n.known && t < n.t }

// dueKeys returns up to sweepBudget keys of b whose time is at or before
// t, and records in n the time of the first key it did not take.
func dueKeys(b *bolt.Bucket, t int64, n *dueNext) [][]byte {
	if n.nothingBy(t) {
		return nil
	}
	var keys [][]byte
	c := b.Cursor()
	k, _ := c.First()
	for ; k != nil && len(keys) < sweepBudget; k, _ = c.Next() {
		if len(k) < 8 || getTime(k[:8]) > t {
			break
		}
		keys = append(keys, append([]byte(nil), k...))
	}
	// The keys taken leave the index; what remains starts at k.
	switch {
	case k == nil:
		*n = dueNext{known: true, t: math.MaxInt64}
	case len(k) >= 8:
		*n = dueNext{known: true, t: getTime(k[:8])}
	default:
		*n = dueNext{}
	}
	return keys
}

// sweep erases the payloads of actions expired by now and deletes the
// actions terminal for longer than the retention, a bounded number each.
func (s *store) sweep(now int64) error {
	if s.journal.entries > 0 && now-s.journal.firstTime >= journalMaxAgeMS {
		// The due indexes follow the journal: fold an old one first.
		if err := s.foldJournal(); err != nil {
			return err
		}
	}
	if err := s.sweepExpired(now); err != nil {
		return err
	}
	return s.sweepPurge(now - s.retention)
}

// sweepExpired handles the due_expiry keys at or before now.
func (s *store) sweepExpired(now int64) error {
	for _, k := range dueKeys(s.dueExpiry, now, &s.due.expiry) {
		id := string(k[8:])
		a, err := loadAction(s.actions, id)
		if err != nil {
			return fatal(err)
		}
		if err := s.dueExpiry.Delete(k); err != nil {
			return fatal(fmt.Errorf("delete due expiry: %w", err))
		}
		if a == nil || groupOf(a) != groupOpen {
			continue // deleted, or settled: the payload went at the settle
		}
		// Expired: terminal from expiresAt on. Neither the counters nor
		// the state index change (an expired action stays in the open
		// group), so the write needs no journal record.
		a.SealedPayload = nil
		if err := s.actions.Put([]byte(id), encodeAction(a)); err != nil {
			return fatal(fmt.Errorf("erase expired payload: %w", err))
		}
		if err := s.duePurge.Put(dueKey(a.ExpiresAt, id), nil); err != nil {
			return fatal(fmt.Errorf("put due purge: %w", err))
		}
		s.due.purge.inserted(a.ExpiresAt)
	}
	return nil
}

// sweepPurge deletes the actions whose due_purge time is at or before cut.
func (s *store) sweepPurge(cut int64) error {
	for _, k := range dueKeys(s.duePurge, cut, &s.due.purge) {
		id := string(k[8:])
		if _, pending := s.journal.index[id]; pending {
			// The derived state must hold the action before it leaves.
			if err := s.foldJournal(); err != nil {
				return err
			}
		}
		a, err := loadAction(s.actions, id)
		if err != nil {
			return fatal(err)
		}
		if a != nil {
			if err := s.purge(a); err != nil {
				return err
			}
		}
		if err := s.duePurge.Delete(k); err != nil {
			return fatal(fmt.Errorf("delete due purge: %w", err))
		}
	}
	return nil
}

// purge deletes a with every index key and count it holds, and counts it
// as purged.
func (s *store) purge(a *Action) error {
	s.purged = append(s.purged, a.ID)
	s.counts.apply(a, changeOf(a, nil))
	dels := []struct {
		b *bolt.Bucket
		k []byte
	}{
		{s.ixState, stateIxKey(a, groupOf(a))},
		{s.ixCreated, ixKey(a.ClientID, a.CreatedAt, a.ID)},
		{s.ixActive, ixKey(a.ClientID, a.ActiveAt, a.ID)},
		{s.ixExpires, ixKey(a.ClientID, a.ExpiresAt, a.ID)},
		{s.dueExpiry, dueKey(a.ExpiresAt, a.ID)},
		{s.actions, []byte(a.ID)},
	}
	for _, d := range dels {
		if err := d.b.Delete(d.k); err != nil {
			return fatal(fmt.Errorf("purge %s: %w", a.ID, err))
		}
	}
	return nil
}

// Retention is the recorded retention in ms (DefaultRetentionMS when none
// was set).
func (v *View) Retention() (int64, error) {
	return readRetention(v.tx.Bucket(bucketMeta))
}
