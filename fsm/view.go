package fsm

import (
	"bytes"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// List limits.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// ErrBadCursor is returned by List for an After that is not a Next of the
// same ordering and direction.
var ErrBadCursor = errors.New("fsm: bad list cursor")

// View is a read-only, consistent view of the state.
type View struct {
	tx *bolt.Tx
}

// Action returns the client's action, or nil when there is none (an action
// of another client is reported as absent).
func (v *View) Action(clientID, actionID string) (*Action, error) {
	a, err := loadClientAction(v.tx.Bucket(bucketActions), clientID, actionID)
	if err != nil {
		return nil, fmt.Errorf("fsm: read action: %w", err)
	}
	return a, nil
}

// Client returns a client, or nil when unknown. The demo client is not a
// stored client and is reported as nil.
func (v *View) Client(clientID string) (*Client, error) {
	c, err := loadClient(v.tx.Bucket(bucketClients), clientID)
	if err != nil {
		return nil, fmt.Errorf("fsm: read client: %w", err)
	}
	return c, nil
}

// KeyCheck returns the cluster key's check value recorded by
// CmdRecordKeyCheck, nil when none is recorded yet.
func (v *View) KeyCheck() []byte {
	return bytes.Clone(v.tx.Bucket(bucketMeta).Get(keyKeyCheck))
}

// SampleActions returns up to n stored actions of any client, in id order:
// enough to check that a cluster key opens the payloads already stored.
func (v *View) SampleActions(n int) ([]*Action, error) {
	var out []*Action
	c := v.tx.Bucket(bucketActions).Cursor()
	for k, val := c.First(); k != nil && len(out) < n; k, val = c.Next() {
		a, err := decodeAction(val)
		if err != nil {
			return nil, fmt.Errorf("fsm: sample actions: action %s: %w", k, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// Clients lists all clients (revoked ones included), ordered by id.
func (v *View) Clients() ([]*Client, error) {
	var out []*Client
	err := v.tx.Bucket(bucketClients).ForEach(func(k, val []byte) error {
		var c Client
		if err := decodeValue(val, &c); err != nil {
			return fmt.Errorf("client %s: %w", k, err)
		}
		out = append(out, &c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: list clients: %w", err)
	}
	return out, nil
}

// OrderBy is a list ordering field.
type OrderBy string

// The list orderings.
const (
	OrderCreatedAt OrderBy = "createdAt"
	OrderActiveAt  OrderBy = "activeAt"
	OrderExpiresAt OrderBy = "expiresAt"
)

// ListQuery selects a client's actions. Zero values mean "no filter".
// Time bounds are Unix ms: From is inclusive, To is exclusive.
type ListQuery struct {
	ClientID       string
	State          State
	ConsumedReason string
	CreatedFrom    int64
	CreatedTo      int64
	ActiveFrom     int64
	ActiveTo       int64
	// OrderBy defaults to OrderCreatedAt; ties are broken by action id.
	OrderBy OrderBy
	Desc    bool
	// Limit defaults to DefaultListLimit and is clamped to MaxListLimit.
	Limit int
	// After is the opaque position returned as ListPage.Next; nil starts at
	// the beginning. Paging by position returns every match exactly once.
	After []byte
	// Now is the time states are derived at (Unix ms).
	Now int64
}

// ListPage is one page of a list.
type ListPage struct {
	Actions []*Action
	// Next is the position after the last returned action, nil at the end.
	// It holds no client id; it is only valid with the same OrderBy and Desc.
	Next []byte
}

// cursorTag identifies ordering and direction in a cursor's first byte.
func cursorTag(ob OrderBy, desc bool) byte {
	var t byte
	switch ob {
	case OrderActiveAt:
		t = 2
	case OrderExpiresAt:
		t = 3
	default:
		t = 1
	}
	if desc {
		t |= 0x80
	}
	return t
}

// List returns one page of the client's actions. It walks the index of the
// ordering field within the client's key range (narrowed by a time filter
// on that same field), so other clients' actions are never scanned.
func (v *View) List(q ListQuery) (ListPage, error) {
	if q.Limit <= 0 {
		q.Limit = DefaultListLimit
	}
	q.Limit = min(q.Limit, MaxListLimit)
	var bucket []byte
	var from, to int64
	switch q.OrderBy {
	case "", OrderCreatedAt:
		q.OrderBy = OrderCreatedAt
		bucket, from, to = bucketIxCreated, q.CreatedFrom, q.CreatedTo
	case OrderActiveAt:
		bucket, from, to = bucketIxActive, q.ActiveFrom, q.ActiveTo
	case OrderExpiresAt:
		bucket = bucketIxExpires
	default:
		return ListPage{}, fmt.Errorf("fsm: unknown order %q", q.OrderBy)
	}
	prefix := clientPrefix(q.ClientID)
	lo := prefix
	hi := append([]byte(q.ClientID), 1) // first key after the client's range
	if from != 0 {
		lo = timeKey(prefix, from)
	}
	if to != 0 {
		hi = timeKey(prefix, to)
	}
	tag := cursorTag(q.OrderBy, q.Desc)
	var after []byte
	if q.After != nil {
		if len(q.After) < 9 || q.After[0] != tag {
			return ListPage{}, ErrBadCursor
		}
		after = append(bytes.Clone(prefix), q.After[1:]...)
		if q.Desc {
			if bytes.Compare(after, hi) < 0 {
				hi = after // exclusive
			}
		} else if bytes.Compare(after, lo) >= 0 {
			lo = after
		} else {
			after = nil
		}
	}

	actions := v.tx.Bucket(bucketActions)
	c := v.tx.Bucket(bucket).Cursor()
	var k []byte
	var step func() ([]byte, []byte)
	var inRange func([]byte) bool
	if q.Desc {
		k, _ = c.Seek(hi)
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		step = c.Prev
		inRange = func(k []byte) bool { return bytes.Compare(k, lo) >= 0 }
	} else {
		k, _ = c.Seek(lo)
		if after != nil && bytes.Equal(k, after) {
			k, _ = c.Next()
		}
		step = c.Next
		inRange = func(k []byte) bool { return bytes.Compare(k, hi) < 0 }
	}

	var page ListPage
	var lastKey []byte
	for ; k != nil && inRange(k); k, _ = step() {
		if len(k) < len(prefix)+8 {
			continue
		}
		id := string(k[len(prefix)+8:])
		a, err := loadAction(actions, id)
		if err != nil {
			return ListPage{}, fmt.Errorf("fsm: list: %w", err)
		}
		if a == nil || !q.matches(a) {
			continue
		}
		if len(page.Actions) == q.Limit {
			// One more match exists: the page has a next.
			page.Next = append([]byte{tag}, lastKey[len(prefix):]...)
			break
		}
		page.Actions = append(page.Actions, a)
		lastKey = bytes.Clone(k)
	}
	return page, nil
}

// timeKey is prefix followed by an encoded time.
func timeKey(prefix []byte, t int64) []byte {
	k := make([]byte, len(prefix)+8)
	copy(k, prefix)
	putTime(k[len(prefix):], t)
	return k
}

// matches applies the query's filters to one action.
func (q *ListQuery) matches(a *Action) bool {
	switch {
	case a.ClientID != q.ClientID:
		return false
	case q.State != "" && a.StateAt(q.Now) != q.State:
		return false
	case q.ConsumedReason != "" && a.ConsumedReason != q.ConsumedReason:
		return false
	case q.CreatedFrom != 0 && a.CreatedAt < q.CreatedFrom:
		return false
	case q.CreatedTo != 0 && a.CreatedAt >= q.CreatedTo:
		return false
	case q.ActiveFrom != 0 && a.ActiveAt < q.ActiveFrom:
		return false
	case q.ActiveTo != 0 && a.ActiveAt >= q.ActiveTo:
		return false
	}
	return true
}

// Stats are a client's counts at a time.
type Stats struct {
	Total int64
	// ByState always holds all five states.
	ByState map[State]int64
	// Burned counts actions consumed by the third wrong PIN.
	Burned int64
	// CreatedLast24h counts createdAt in (now-24h, now].
	CreatedLast24h int64
	// ConsumedLast24h counts successful consumes with consumedAt in (now-24h, now].
	ConsumedLast24h int64
}

// Stats counts the client's actions at time now (Unix ms). It reads every
// action of the client once.
func (v *View) Stats(clientID string, now int64) (Stats, error) {
	st := Stats{ByState: map[State]int64{
		StatePending: 0, StateActive: 0, StateConsumed: 0, StateExpired: 0, StateCanceled: 0,
	}}
	prefix := clientPrefix(clientID)
	actions := v.tx.Bucket(bucketActions)
	c := v.tx.Bucket(bucketIxCreated).Cursor()
	since := now - dayMS
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if len(k) < len(prefix)+8 {
			continue
		}
		a, err := loadAction(actions, string(k[len(prefix)+8:]))
		if err != nil {
			return Stats{}, fmt.Errorf("fsm: stats: %w", err)
		}
		if a == nil || a.ClientID != clientID {
			continue
		}
		st.Total++
		st.ByState[a.StateAt(now)]++
		if a.ConsumedReason == ReasonPINBurned {
			st.Burned++
		}
		if a.CreatedAt > since && a.CreatedAt <= now {
			st.CreatedLast24h++
		}
		if a.ConsumedReason == ReasonConsumed && a.ConsumedAt > since && a.ConsumedAt <= now {
			st.ConsumedLast24h++
		}
	}
	return st, nil
}
