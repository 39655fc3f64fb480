package fsm

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Bucket names. See DESIGN.md for the layout.
var (
	bucketMeta      = []byte("meta")       // applied index, FSM time
	bucketClients   = []byte("clients")    // clientID -> Client
	bucketActions   = []byte("actions")    // actionID -> Action
	bucketIxCreated = []byte("ix_created") // clientID 0 time8 actionID -> ""
	bucketIxActive  = []byte("ix_active")
	bucketIxExpires = []byte("ix_expires")
	bucketIdem      = []byte("idem")    // clientID 0 key -> idemRecord
	bucketIdemExp   = []byte("idemexp") // time8 clientID 0 key -> ""
	// bucketIxState indexes each action under its state group:
	// clientID 0 group order time8 actionID -> "" (stateIxKey).
	bucketIxState = []byte("ix_state")
	bucketCounts  = []byte("counts") // per-client counters (counters.go)

	allBuckets = [][]byte{bucketMeta, bucketClients, bucketActions, bucketIxCreated,
		bucketIxActive, bucketIxExpires, bucketIdem, bucketIdemExp, bucketIxState, bucketCounts,
		bucketJournal, bucketDueExpiry, bucketDuePurge}

	keyApplied  = []byte("applied")
	keyLastTime = []byte("lastTime")
	// keyKeyCheck holds the cluster key's check value (CmdRecordKeyCheck).
	keyKeyCheck = []byte("keyCheck")
)

// errFatal marks a failure to write inside the apply transaction: the
// transaction may hold part of a command, so the whole batch must fail.
var errFatal = errors.New("fsm: write failed")

func fatal(err error) error { return fmt.Errorf("%w: %w", errFatal, err) }

// putTime encodes a Unix ms time so that byte order is numeric order, also
// for negative times (sign bit flipped, big endian).
func putTime(b []byte, t int64) { binary.BigEndian.PutUint64(b, uint64(t)^(1<<63)) }

// getTime decodes putTime.
func getTime(b []byte) int64 { return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)) }

// clientPrefix is clientID followed by a 0 byte: the start of every key of
// that client in the per-client buckets.
func clientPrefix(clientID string) []byte {
	p := make([]byte, 0, len(clientID)+1)
	p = append(p, clientID...)
	return append(p, 0)
}

// ixKey is an ordered index key: clientID 0 time8 actionID.
func ixKey(clientID string, t int64, actionID string) []byte {
	k := make([]byte, len(clientID)+1+8+len(actionID))
	n := copy(k, clientID)
	k[n] = 0
	putTime(k[n+1:], t)
	copy(k[n+9:], actionID)
	return k
}

// State groups of the state index: open actions (pending, active or
// expired, told apart by time), consumed (burns included) and canceled.
// An action moves from open to one of the others once, when it settles.
const (
	groupOpen     byte = 'o'
	groupConsumed byte = 'u'
	groupCanceled byte = 'x'
)

// groupOf is the state group of a stored action.
func groupOf(a *Action) byte {
	switch {
	case a.ConsumedAt != 0:
		return groupConsumed
	case a.CanceledAt != 0:
		return groupCanceled
	}
	return groupOpen
}

// stateIxPrefix is the start of a client's state-index range for one group
// and ordering (cursorTag without the direction bit).
func stateIxPrefix(clientID string, group, order byte) []byte {
	return append(clientPrefix(clientID), group, order)
}

// stateIxKey is a's state-index key in group g: in creation order, the
// default order of a list. Lists in another order with a state filter walk
// that field's index under the scan budget instead: one key per action
// keeps a write's index work small (three orderings cost a consume six
// index writes; measured in docs/performance.md).
func stateIxKey(a *Action, g byte) []byte {
	p := stateIxPrefix(a.ClientID, g, cursorTag(OrderCreatedAt, false))
	k := make([]byte, len(p)+8+len(a.ID))
	n := copy(k, p)
	putTime(k[n:], a.CreatedAt)
	copy(k[n+8:], a.ID)
	return k
}

// idemKey is the idempotency record key: clientID 0 key.
func idemKey(clientID, key string) []byte {
	return append(clientPrefix(clientID), key...)
}

// idemExpKey is the purge-order key: time8 followed by the record key.
func idemExpKey(exp int64, recKey []byte) []byte {
	k := make([]byte, 8+len(recKey))
	putTime(k, exp)
	copy(k[8:], recKey)
	return k
}

// idemRecord is a remembered outcome for (client, Idempotency-Key).
type idemRecord struct {
	Fingerprint []byte  `json:"f"`
	ExpiresAt   int64   `json:"e"`
	Result      *Result `json:"r"`
}

// readMeta returns the applied index and FSM time stored in tx.
func readMeta(tx *bolt.Tx) (uint64, int64, error) {
	b := tx.Bucket(bucketMeta)
	if b == nil {
		return 0, 0, errors.New("missing meta bucket")
	}
	var applied uint64
	var last int64
	if v := b.Get(keyApplied); v != nil {
		if len(v) != 8 {
			return 0, 0, errors.New("bad applied index")
		}
		applied = binary.BigEndian.Uint64(v)
	}
	if v := b.Get(keyLastTime); v != nil {
		if len(v) != 8 {
			return 0, 0, errors.New("bad last time")
		}
		last = getTime(v)
	}
	return applied, last, nil
}

// writeMeta stores the applied index and FSM time.
func writeMeta(tx *bolt.Tx, applied uint64, last int64) error {
	b := tx.Bucket(bucketMeta)
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], applied)
	if err := b.Put(keyApplied, v[:]); err != nil {
		return fatal(fmt.Errorf("put applied: %w", err))
	}
	var t [8]byte
	putTime(t[:], last)
	if err := b.Put(keyLastTime, t[:]); err != nil {
		return fatal(fmt.Errorf("put last time: %w", err))
	}
	return nil
}

// store is the read-write side of one apply transaction.
type store struct {
	tx                             *bolt.Tx
	meta, clients, actions         *bolt.Bucket
	ixCreated, ixActive, ixExpires *bolt.Bucket
	idem, idemExp                  *bolt.Bucket
	ixState, countsB, journalB     *bolt.Bucket
	dueExpiry, duePurge            *bolt.Bucket
	// retention is the recorded retention in ms, and due when the sweeps
	// can next find work (retention.go).
	retention int64
	due       *dueHint
	// counts holds this transaction's counter deltas until flushCounts.
	counts counts
	// journal is the FSM's account of the journal bucket, and
	// entryChanges the changes of the entry being applied (journal.go).
	journal      *journalState
	entryChanges []change
	// allowed remembers clientAllowed's answers within this transaction
	// (one Raft batch), so a batch of one client's commands decodes its
	// record once. putClient forgets the client it writes.
	allowed map[string]bool
	// settled lists the actions this transaction settled (consumed,
	// burned or canceled), for FSM.RecentlySettled after the commit, and
	// purged those it deleted (retention), forgotten before the commit.
	settled, purged []string
}

// appendFill is how full bbolt fills the pages it splits in the buckets
// whose keys mostly arrive in order (ids and creation and activation times
// grow with time: DESIGN.md, "Costs and limits"), instead of its default
// half. A split at the right edge then leaves a full page behind rather
// than a half-empty one that no later key would fill. It is not stored in
// the file, so every write transaction sets it (newStore). The buckets
// keyed by expiresAt keep the default: clients choose expiries, and keys
// that arrive out of order left pages a quarter full with full splits.
const appendFill = 1.0

func newStore(tx *bolt.Tx, j *journalState, due *dueHint) (*store, error) {
	retention, err := readRetention(tx.Bucket(bucketMeta))
	if err != nil {
		return nil, err
	}
	s := &store{
		retention: retention,
		due:       due,
		dueExpiry: tx.Bucket(bucketDueExpiry),
		duePurge:  tx.Bucket(bucketDuePurge),
		journalB:  tx.Bucket(bucketJournal),
		journal:   j,
		tx:        tx,
		meta:      tx.Bucket(bucketMeta),
		clients:   tx.Bucket(bucketClients),
		actions:   tx.Bucket(bucketActions),
		ixCreated: tx.Bucket(bucketIxCreated),
		ixActive:  tx.Bucket(bucketIxActive),
		ixExpires: tx.Bucket(bucketIxExpires),
		idem:      tx.Bucket(bucketIdem),
		idemExp:   tx.Bucket(bucketIdemExp),
		ixState:   tx.Bucket(bucketIxState),
		countsB:   tx.Bucket(bucketCounts),
		counts:    newCounts(),
	}
	for _, b := range []*bolt.Bucket{s.actions, s.ixCreated, s.ixActive, s.ixState,
		s.idemExp, s.journalB, s.duePurge} {
		b.FillPercent = appendFill
	}
	return s, nil
}

// storedActions is how many actions the client stores, this transaction's
// creates and the journal's included.
func (s *store) storedActions(clientID string) (int64, error) {
	n, err := getCount(s.countsB, scalarKey(clientID, cntTotal))
	if err != nil {
		return 0, err
	}
	return n + s.counts.scalars[scalarID{clientID, cntTotal}] + s.journal.totals[clientID], nil
}

// flushCounts writes the transaction's counter deltas (once per batch).
func (s *store) flushCounts() error { return s.counts.flush(s.countsB) }

// loadAction returns the action with id, or nil.
func loadAction(b *bolt.Bucket, id string) (*Action, error) {
	v := b.Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	a, err := decodeAction(v)
	if err != nil {
		return nil, fmt.Errorf("action %s: %w", id, err)
	}
	return a, nil
}

// loadClientAction returns clientID's action, nil when absent or owned by
// another client.
func loadClientAction(b *bolt.Bucket, clientID, id string) (*Action, error) {
	a, err := loadAction(b, id)
	if err != nil || a == nil || a.ClientID != clientID {
		return nil, err
	}
	return a, nil
}

// loadClient returns the stored client, or nil.
func loadClient(b *bolt.Bucket, id string) (*Client, error) {
	v := b.Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	var c Client
	if err := decodeValue(v, &c); err != nil {
		return nil, fmt.Errorf("client %s: %w", id, err)
	}
	return &c, nil
}

// clientAllowed reports whether id may act on actions: the demo client, or
// a stored, unrevoked client.
func (s *store) clientAllowed(id string) (bool, error) {
	if id == DemoClientID {
		return true, nil
	}
	if id == "" {
		return false, nil
	}
	if ok, seen := s.allowed[id]; seen {
		return ok, nil
	}
	c, err := loadClient(s.clients, id)
	if err != nil {
		return false, err
	}
	ok := c != nil && c.RevokedAt == 0
	if s.allowed == nil {
		s.allowed = map[string]bool{}
	}
	s.allowed[id] = ok
	return ok, nil
}

// putAction writes next over prev (nil for a create) with its index
// entries and counters. The ordered indexes are written only at create (the
// indexed times never change); the state index moves the action's entries
// when it leaves the open group.
func (s *store) putAction(prev, next *Action) error {
	if err := s.actions.Put([]byte(next.ID), encodeAction(next)); err != nil {
		return fatal(fmt.Errorf("put action: %w", err))
	}
	if prev != nil && groupOf(prev) != groupOpen {
		// A write over a terminal action changes none of the derived
		// state (changeOf is zero), and the journal's net changes assume
		// none happens (DESIGN.md, "Net changes"). No decision makes one;
		// a build with a deliberately broken decision does (the chaos
		// harness's self-test, chaosbug), and must not stop the node.
		return nil
	}
	if prev != nil && groupOf(next) != groupOpen {
		s.settled = append(s.settled, next.ID)
	}
	if prev == nil {
		for _, ix := range []struct {
			b *bolt.Bucket
			t int64
		}{{s.ixCreated, next.CreatedAt}, {s.ixActive, next.ActiveAt}, {s.ixExpires, next.ExpiresAt}} {
			if err := ix.b.Put(ixKey(next.ClientID, ix.t, next.ID), nil); err != nil {
				return fatal(fmt.Errorf("put index: %w", err))
			}
		}
	}
	// The counters and the state index follow through the journal.
	c := change{next: derivedFields(next)}
	if prev != nil {
		c.prev = derivedFields(prev)
	}
	s.entryChanges = append(s.entryChanges, c)
	return nil
}

// derivedFields copies what the counters and the state index read of a.
func derivedFields(a *Action) *Action {
	return &Action{ID: a.ID, ClientID: a.ClientID, CreatedAt: a.CreatedAt, ActiveAt: a.ActiveAt,
		ExpiresAt: a.ExpiresAt, ConsumedAt: a.ConsumedAt, CanceledAt: a.CanceledAt, ConsumedReason: a.ConsumedReason}
}

// putClient writes a client.
func (s *store) putClient(c *Client) error {
	v, err := encodeValue(c)
	if err != nil {
		return fatal(err)
	}
	if err := s.clients.Put([]byte(c.ID), v); err != nil {
		return fatal(fmt.Errorf("put client: %w", err))
	}
	delete(s.allowed, c.ID)
	return nil
}

// needsClient reports whether the command acts on the caller's actions.
func needsClient(t CommandType) bool {
	return t == CmdCreateActions || t == CmdConsume || t == CmdCancel
}

// apply decides and writes one command at FSM time now. A returned error
// wrapping errFatal means the transaction must be abandoned; any other
// error happened before anything was written.
func (s *store) apply(cmd *Command, now int64) (*Result, error) {
	if cmd.Type == CmdNoop {
		return &Result{Time: now}, nil
	}
	if needsClient(cmd.Type) {
		ok, err := s.clientAllowed(cmd.ClientID)
		if err != nil {
			return nil, err
		}
		if !ok {
			return &Result{Code: CodeUnauthorized, Time: now}, nil
		}
	}
	var recKey []byte
	staleExp, stale := int64(0), false
	if cmd.Idempotency != nil {
		recKey = idemKey(cmd.ClientID, cmd.Idempotency.Key)
		if v := s.idem.Get(recKey); v != nil {
			var rec idemRecord
			if err := decodeValue(v, &rec); err != nil {
				return nil, fmt.Errorf("idempotency record: %w", err)
			}
			if rec.ExpiresAt > now {
				if subtle.ConstantTimeCompare(rec.Fingerprint, cmd.Idempotency.Fingerprint) != 1 {
					return &Result{Code: CodeIdempotencyReused, Time: now}, nil
				}
				r := rec.Result
				if r == nil {
					r = &Result{}
				}
				r.Replayed = true
				return r, nil
			}
			// Expired but not purged yet: the new record replaces it.
			staleExp, stale = rec.ExpiresAt, true
		}
	}
	res, err := s.decide(cmd, now)
	if err != nil {
		return nil, err
	}
	if recKey != nil {
		if stale {
			if err := s.deleteIdem(recKey, staleExp); err != nil {
				return nil, err
			}
		}
		if err := s.putIdem(recKey, cmd.Idempotency.Fingerprint, now+IdempotencyTTLMS, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// decide dispatches to the command's decision and writes its outcome.
func (s *store) decide(cmd *Command, now int64) (*Result, error) {
	switch cmd.Type {
	case CmdCreateActions:
		return s.create(cmd.ClientID, cmd.Create, now)
	case CmdConsume:
		a, err := loadClientAction(s.actions, cmd.ClientID, cmd.Consume.ActionID)
		if err != nil {
			return nil, err
		}
		next, res := decideConsume(a, cmd.Consume, now)
		if next != nil {
			if err := s.putAction(a, next); err != nil {
				return nil, err
			}
		}
		return &res, nil
	case CmdCancel:
		a, err := loadClientAction(s.actions, cmd.ClientID, cmd.Cancel.ActionID)
		if err != nil {
			return nil, err
		}
		next, res := decideCancel(a, now)
		if next != nil {
			if err := s.putAction(a, next); err != nil {
				return nil, err
			}
		}
		return &res, nil
	case CmdCreateClient:
		c, err := loadClient(s.clients, cmd.CreateClient.ID)
		if err != nil {
			return nil, err
		}
		next, res := decideCreateClient(c, cmd.CreateClient, now)
		if next != nil {
			if err := s.putClient(next); err != nil {
				return nil, err
			}
		}
		return &res, nil
	case CmdRevokeClient:
		c, err := loadClient(s.clients, cmd.RevokeClient.ID)
		if err != nil {
			return nil, err
		}
		next, res := decideRevokeClient(c, now)
		if next != nil {
			if err := s.putClient(next); err != nil {
				return nil, err
			}
		}
		return &res, nil
	case CmdSetRetention:
		next, res := decideSetRetention(s.retention, cmd.SetRetention, now)
		if next != 0 {
			if err := s.setRetention(next); err != nil {
				return nil, err
			}
		}
		return &res, nil
	case CmdRecordKeyCheck:
		next, res := decideKeyCheck(bytes.Clone(s.meta.Get(keyKeyCheck)), cmd.KeyCheck, now)
		if next != nil {
			if err := s.meta.Put(keyKeyCheck, next); err != nil {
				return nil, fatal(fmt.Errorf("put key check: %w", err))
			}
		}
		return &res, nil
	}
	return nil, fmt.Errorf("unknown command type %d", cmd.Type)
}

// create decides every row first (reads only), then the quota for the valid
// rows together, then writes them all or none.
func (s *store) create(clientID string, c *CreateActions, now int64) (*Result, error) {
	rows := make([]RowResult, len(c.Rows))
	valid := make([]*Action, 0, len(c.Rows))
	seen := make(map[string]struct{}, len(c.Rows))
	for i := range c.Rows {
		r := &c.Rows[i]
		a, code, msg := decideCreateRow(r, now, c.DefaultTTLMS, c.MaxTTLMS)
		if code == CodeOK {
			_, dup := seen[a.ID]
			if dup || s.actions.Get([]byte(a.ID)) != nil {
				a, code, msg = nil, CodeConflict, "action id already exists"
			}
		}
		rows[i] = RowResult{Row: r.Row, Error: code, Message: msg}
		if a != nil {
			a.ClientID = clientID
			seen[a.ID] = struct{}{}
			rows[i].ActionID = a.ID
			valid = append(valid, a)
		}
	}
	stored, err := s.storedActions(clientID)
	if err != nil {
		return nil, err
	}
	if code, msg := decideQuota(clientID, stored, int64(len(valid)), c.MaxActions); code != CodeOK {
		return &Result{Code: code, Message: msg, Time: now}, nil
	}
	// Insert in id order: ids are random, and the rows of one batch share
	// their index timestamps, so unsorted inserts land all over bbolt's
	// pages and it moves memory quadratically (a 10,000-row CSV spent a
	// quarter of its time in memmove). Sorted, each page fills in turn.
	// The order is a pure function of the command, so every node agrees.
	slices.SortFunc(valid, func(a, b *Action) int { return strings.Compare(a.ID, b.ID) })
	for _, a := range valid {
		if err := s.putAction(nil, a); err != nil {
			return nil, err
		}
	}
	res := &Result{Time: now}
	if c.CSV {
		res.Rows = rows
		return res, nil
	}
	if len(rows) != 1 {
		res.Code, res.Message = CodeInvalidRequest, "a JSON create has exactly one row"
		return res, nil
	}
	res.Code, res.Message = rows[0].Error, rows[0].Message
	if len(valid) == 1 {
		res.Action = resultAction(valid[0], false)
	}
	return res, nil
}

// putIdem stores a remembered outcome and its purge entry.
func (s *store) putIdem(recKey, fingerprint []byte, exp int64, res *Result) error {
	v, err := encodeValue(&idemRecord{Fingerprint: fingerprint, ExpiresAt: exp, Result: res})
	if err != nil {
		return fatal(err)
	}
	if err := s.idem.Put(recKey, v); err != nil {
		return fatal(fmt.Errorf("put idempotency record: %w", err))
	}
	if err := s.idemExp.Put(idemExpKey(exp, recKey), nil); err != nil {
		return fatal(fmt.Errorf("put idempotency expiry: %w", err))
	}
	return nil
}

// deleteIdem removes a record and its purge entry.
func (s *store) deleteIdem(recKey []byte, exp int64) error {
	if err := s.idem.Delete(recKey); err != nil {
		return fatal(fmt.Errorf("delete idempotency record: %w", err))
	}
	if err := s.idemExp.Delete(idemExpKey(exp, recKey)); err != nil {
		return fatal(fmt.Errorf("delete idempotency expiry: %w", err))
	}
	return nil
}

// purgeIdempotency deletes at most limit records whose expiry <= now, in
// expiry order. Driven only by FSM time, so every replica purges alike.
func (s *store) purgeIdempotency(now int64, limit int) error {
	var keys [][]byte
	c := s.idemExp.Cursor()
	for k, _ := c.First(); k != nil && len(keys) < limit; k, _ = c.Next() {
		if len(k) < 8 || getTime(k[:8]) > now {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := s.deleteIdem(k[8:], getTime(k[:8])); err != nil {
			return err
		}
	}
	return nil
}
