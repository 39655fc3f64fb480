package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"
)

// List limits.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
	// DefaultListScanBudget is how many index entries one List call
	// examines at most (ListQuery.ScanBudget 0): the bound on a page's work
	// whatever the client stores and however selective the filters.
	DefaultListScanBudget = 10000
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

// SampleActions returns up to n stored actions of any client that still
// hold a payload (terminal ones lost theirs), in id order: enough to check
// that a cluster key opens the payloads already stored. It examines at
// most sampleActionsBudget actions.
func (v *View) SampleActions(n int) ([]*Action, error) {
	var out []*Action
	c := v.tx.Bucket(bucketActions).Cursor()
	seen := 0
	for k, val := c.First(); k != nil && len(out) < n && seen < sampleActionsBudget; k, val = c.Next() {
		seen++
		a, err := decodeAction(val)
		if err != nil {
			return nil, fmt.Errorf("fsm: sample actions: action %s: %w", k, err)
		}
		if len(a.SealedPayload) > 0 {
			out = append(out, a)
		}
	}
	return out, nil
}

// sampleActionsBudget bounds the actions SampleActions examines.
const sampleActionsBudget = 10000

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
	// ScanBudget bounds the index entries examined (0: DefaultListScanBudget).
	// When it runs out first, the page ends early, with fewer than Limit
	// actions (maybe none) and a Next that resumes after the last entry
	// examined.
	ScanBudget int
}

// ListPage is one page of a list.
type ListPage struct {
	Actions []*Action
	// Next is the position to resume after, nil at the end: the last
	// returned action, or the last entry examined when the scan budget ran
	// out. It holds no client id; it is only valid with the same OrderBy and
	// Desc.
	Next []byte
	// Scanned is how many index entries the call examined.
	Scanned int
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

// listGroup is the state-index group a query can walk instead of the
// ordering index of all the client's actions, 0 when there is none.
func listGroup(q *ListQuery) byte {
	switch q.State {
	case StatePending, StateActive, StateExpired:
		return groupOpen
	case StateConsumed:
		return groupConsumed
	case StateCanceled:
		return groupCanceled
	}
	if q.ConsumedReason != "" {
		return groupConsumed // only consumed actions have a reason
	}
	return 0
}

// narrowByState tightens the [from, to) range of the ordering field with
// what an open state implies about it at q.Now (activeAt < expiresAt
// always). It only skips entries that cannot match: matches still decides.
func narrowByState(q *ListQuery, from, to int64) (int64, int64) {
	above := func(t int64) { // field > t
		if from == 0 || from < t+1 {
			from = t + 1
		}
	}
	atOrBelow := func(t int64) { // field <= t
		if to == 0 || to > t+1 {
			to = t + 1
		}
	}
	switch {
	case q.OrderBy == OrderActiveAt && q.State == StatePending:
		above(q.Now)
	case q.OrderBy == OrderActiveAt && (q.State == StateActive || q.State == StateExpired):
		atOrBelow(q.Now)
	case q.OrderBy == OrderExpiresAt && q.State == StateExpired:
		atOrBelow(q.Now)
	case q.OrderBy == OrderExpiresAt && (q.State == StatePending || q.State == StateActive):
		above(q.Now)
	}
	return from, to
}

// List returns one page of the client's actions. It walks the index of the
// ordering field within the client's key range (narrowed by a time filter
// on that same field), so other clients' actions are never scanned; in
// creation order a state or consumed_reason filter walks only the client's
// actions in that state group (state index); in every order the range is
// narrowed by what the state implies about the ordering field. At most
// ScanBudget entries are examined.
func (v *View) List(q ListQuery) (ListPage, error) {
	if q.Limit <= 0 {
		q.Limit = DefaultListLimit
	}
	q.Limit = min(q.Limit, MaxListLimit)
	budget := q.ScanBudget
	if budget <= 0 {
		budget = DefaultListScanBudget
	}
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
	// extra holds the state-index keys the journal adds (journal.go).
	var extra [][]byte
	if g := listGroup(&q); g != 0 {
		from, to = narrowByState(&q, from, to)
		if q.OrderBy == OrderCreatedAt {
			bucket = bucketIxState
			prefix = stateIxPrefix(q.ClientID, g, cursorTag(q.OrderBy, false))
			chs, err := v.journal(q.ClientID)
			if err != nil {
				return ListPage{}, fmt.Errorf("fsm: list: %w", err)
			}
			extra = stateIxAdditions(chs, g)
		}
	}
	lo := prefix
	// The first key after the range: the prefix's last byte (0 or an
	// ordering tag, never 0xff) plus one.
	hi := bytes.Clone(prefix)
	hi[len(hi)-1]++
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
	// ei is the next extra key to merge in: extra is sorted, and walked
	// from the first key at or after lo (ascending) or the last key before
	// hi (descending); after is exclusive.
	var ei, estep int
	if q.Desc {
		k, _ = c.Seek(hi)
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		step = c.Prev
		inRange = func(k []byte) bool { return bytes.Compare(k, lo) >= 0 }
		ei = sort.Search(len(extra), func(i int) bool { return bytes.Compare(extra[i], hi) >= 0 }) - 1
		estep = -1
	} else {
		k, _ = c.Seek(lo)
		if after != nil && bytes.Equal(k, after) {
			k, _ = c.Next()
		}
		step = c.Next
		inRange = func(k []byte) bool { return bytes.Compare(k, hi) < 0 }
		ei = sort.Search(len(extra), func(i int) bool { return bytes.Compare(extra[i], lo) >= 0 })
		if after != nil && ei < len(extra) && bytes.Equal(extra[ei], after) {
			ei++
		}
		estep = 1
	}
	// next yields the index's and the journal's keys merged in walk order.
	boltKey := k
	next := func() []byte {
		var e []byte
		if ei >= 0 && ei < len(extra) {
			e = extra[ei]
		}
		switch {
		case e == nil:
		case boltKey == nil, q.Desc == (bytes.Compare(e, boltKey) > 0):
			ei += estep
			return e
		}
		out := boltKey
		boltKey, _ = step()
		return out
	}

	var page ListPage
	var lastKey, lastSeen []byte
	position := func(k []byte) []byte { return append([]byte{tag}, k[len(prefix):]...) }
	for k = next(); k != nil && inRange(k); k = next() {
		if page.Scanned == budget {
			// More entries remain: resume after the last one examined
			// (every entry up to it was examined, matches returned).
			page.Next = position(lastSeen)
			break
		}
		page.Scanned++
		lastSeen = bytes.Clone(k)
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
			page.Next = position(lastKey)
			break
		}
		page.Actions = append(page.Actions, a)
		lastKey = lastSeen
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
	// Purged counts the client's actions deleted by retention.
	Purged int64
}

// Stats counts the client's actions at time now (Unix ms) from the
// counters the apply transactions keep (counters.go): a few scalar reads
// and at most six counting-trie prefix sums, bounded whatever the client
// stores. The counts are exact, to the millisecond (DESIGN.md, "Counters").
func (v *View) Stats(clientID string, now int64) (Stats, error) {
	st, err := v.stats(clientID, now)
	if err != nil {
		return Stats{}, fmt.Errorf("fsm: stats: %w", err)
	}
	return st, nil
}

func (v *View) stats(clientID string, now int64) (Stats, error) {
	b := v.tx.Bucket(bucketCounts)
	prefix := clientPrefix(clientID)
	var scalars [5]int64
	for i, kind := range []byte{cntTotal, cntConsumed, cntBurned, cntCanceled, cntPurged} {
		n, err := getCount(b, scalarKey(clientID, kind))
		if err != nil {
			return Stats{}, err
		}
		scalars[i] = n
	}
	chs, err := v.journal(clientID)
	if err != nil {
		return Stats{}, err
	}
	js := statsOfChanges(chs)
	total, consumed := scalars[0]+js.total, scalars[1]+js.consumed
	burned, canceled := scalars[2]+js.burned, scalars[3]+js.canceled
	_, last, err := readMeta(v.tx)
	if err != nil {
		return Stats{}, err
	}
	upTo := func(series byte, t int64) (int64, error) {
		n, err := countAtOrBefore(b, prefix, series, t)
		return n + js.upTo(series, t), err
	}
	since := now - dayMS
	// Every createdAt and consumedAt is at or before the FSM time, so for
	// the usual now >= last the count at or before now is the total.
	createdByNow, consumedByNow := total, consumed-burned
	if now < last {
		if createdByNow, err = upTo(seriesCreated, now); err != nil {
			return Stats{}, err
		}
		if consumedByNow, err = upTo(seriesConsumed, now); err != nil {
			return Stats{}, err
		}
	}
	createdBefore, err := upTo(seriesCreated, since)
	if err != nil {
		return Stats{}, err
	}
	consumedBefore, err := upTo(seriesConsumed, since)
	if err != nil {
		return Stats{}, err
	}
	// Open actions: expired when expiresAt <= now, pending when activeAt >
	// now (disjoint, as activeAt < expiresAt), active otherwise.
	expired, err := upTo(seriesExpires, now)
	if err != nil {
		return Stats{}, err
	}
	activated, err := upTo(seriesActive, now)
	if err != nil {
		return Stats{}, err
	}
	open := total - consumed - canceled
	pending := open - activated
	return Stats{
		Total: total,
		ByState: map[State]int64{
			StatePending:  pending,
			StateActive:   open - pending - expired,
			StateConsumed: consumed,
			StateExpired:  expired,
			StateCanceled: canceled,
		},
		Burned:          burned,
		CreatedLast24h:  createdByNow - createdBefore,
		ConsumedLast24h: consumedByNow - consumedBefore,
		Purged:          scalars[4] + js.purged,
	}, nil
}
