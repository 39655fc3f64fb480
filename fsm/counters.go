package fsm

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Per-client counters (bucket "counts") make Stats a bounded read: they are
// changed in the apply transaction that changes an action, from the action
// before and after the write alone, so every replica holds the same counts.
// See DESIGN.md ("Counters") for why the time-dependent counts are
// counting tries.
//
// Keys start with clientID 0x00, then a kind byte:
//
//	scalar:  kind                         -> count
//	series:  kind level(1) bucket(8, BE)  -> count of times t with
//	         key(t) >> (8*level) == bucket
//
// Counts are 8-byte big-endian; a count that falls to zero is deleted, so
// the bucket holds only non-zero counts and a scan visits only those.
const (
	cntTotal    byte = 't' // actions stored
	cntConsumed byte = 'u' // consumed, burns included
	cntBurned   byte = 'b' // burned by the third wrong PIN
	cntCanceled byte = 'x' // canceled
	cntPurged   byte = 'p' // deleted by retention (retention.go)

	seriesCreated  byte = 'C' // every action, by createdAt
	seriesConsumed byte = 'S' // successful consumes, by consumedAt
	seriesExpires  byte = 'E' // open actions, by expiresAt
	seriesActive   byte = 'A' // open actions, by activeAt
)

// trieLevels and trieDigitBits shape the counting tries: 8 levels of 8-bit
// digits cover the 64-bit time key, so a prefix count visits at most
// 8*255 non-zero buckets, whatever the number of actions.
const (
	trieLevels    = 8
	trieDigitBits = 8
)

// timeKeyU is the order-preserving unsigned form of a time (as putTime).
func timeKeyU(t int64) uint64 { return uint64(t) ^ (1 << 63) }

// scalarKey is a client's scalar counter key.
func scalarKey(clientID string, kind byte) []byte {
	return append(clientPrefix(clientID), kind)
}

// seriesKey is the key of the level-k bucket b of a client's series.
func seriesKey(prefix []byte, series byte, level int, b uint64) []byte {
	k := make([]byte, len(prefix)+2+8)
	n := copy(k, prefix)
	k[n], k[n+1] = series, byte(level)
	binary.BigEndian.PutUint64(k[n+2:], b)
	return k
}

// countsChange is how one write of an action changes its client's
// counters: scalar deltas, and the series entries to add or remove.
type countsChange struct {
	total, consumed, burned, canceled, purged int64
	// open is +1 when the write creates an open action and -1 when it
	// settles one (consume, burn, cancel) or deletes it: the expiresAt and
	// activeAt series count open actions only.
	open int64
	// created and consumedOK are +1 when the write adds the action to the
	// createdAt and successful-consume series, -1 when it removes it.
	created, consumedOK int64
}

// changeOf is the counters' change for writing next over prev (nil for a
// create; next nil for a deletion by retention). It is a pure function of
// the two values, and changes add up: changeOf(a, b) + changeOf(b, c) =
// changeOf(a, c) (the journal folds net changes). A write that does not
// change consumed/canceled (a wrong PIN that does not burn, a payload
// erased at expiry) changes nothing.
func changeOf(prev, next *Action) countsChange {
	if next == nil {
		return removalOf(prev)
	}
	var c countsChange
	if prev == nil {
		c.total, c.created = 1, 1
		if next.ConsumedAt == 0 && next.CanceledAt == 0 {
			c.open = 1
		}
		prev = &Action{}
	}
	wasOpen := prev.ConsumedAt == 0 && prev.CanceledAt == 0
	if prev.ConsumedAt == 0 && next.ConsumedAt != 0 {
		c.consumed = 1
		if next.ConsumedReason == ReasonPINBurned {
			c.burned = 1
		} else {
			c.consumedOK = 1
		}
	}
	if prev.CanceledAt == 0 && next.CanceledAt != 0 {
		c.canceled = 1
	}
	if c.total == 0 && wasOpen && (next.ConsumedAt != 0 || next.CanceledAt != 0) {
		c.open = -1
	}
	return c
}

// removalOf is the change of deleting a: it leaves every count it was in,
// and counts as purged.
func removalOf(a *Action) countsChange {
	c := countsChange{total: -1, created: -1, purged: 1}
	switch {
	case a.ConsumedAt != 0:
		c.consumed = -1
		if a.ConsumedReason == ReasonPINBurned {
			c.burned = -1
		} else {
			c.consumedOK = -1
		}
	case a.CanceledAt != 0:
		c.canceled = -1
	default:
		c.open = -1
	}
	return c
}

// counts accumulates counter deltas within one apply transaction; flush
// writes them once per batch. A series delta is kept as one point (its
// time) and spread over the trie's levels only at flush, where the points,
// sorted, share their upper buckets: adding a point is one map update
// instead of one per level.
type counts struct {
	scalars map[scalarID]int64
	points  map[pointID]int64
}

// scalarID names a client's scalar counter.
type scalarID struct {
	client string
	kind   byte
}

// pointID names a time in a client's series.
type pointID struct {
	client string
	series byte
	t      int64
}

func newCounts() counts {
	return counts{scalars: map[scalarID]int64{}, points: map[pointID]int64{}}
}

// addScalar adds d to a client's scalar counter.
func (c counts) addScalar(clientID string, kind byte, d int64) {
	if d != 0 {
		c.scalars[scalarID{clientID, kind}] += d
	}
}

// addSeries adds d at time t to a client's series.
func (c counts) addSeries(clientID string, series byte, t int64, d int64) {
	if d != 0 {
		c.points[pointID{clientID, series, t}] += d
	}
}

// apply records ch for the action a of client a.ClientID (for a deletion,
// the action deleted).
func (c counts) apply(a *Action, ch countsChange) {
	c.addScalar(a.ClientID, cntTotal, ch.total)
	c.addScalar(a.ClientID, cntConsumed, ch.consumed)
	c.addScalar(a.ClientID, cntBurned, ch.burned)
	c.addScalar(a.ClientID, cntCanceled, ch.canceled)
	c.addScalar(a.ClientID, cntPurged, ch.purged)
	forEachSeries(a, ch, func(series byte, t, d int64) { c.addSeries(a.ClientID, series, t, d) })
}

// forEachSeries calls fn with each series point ch adds for the action a
// (the one definition the counters and the journal's readers share).
func forEachSeries(a *Action, ch countsChange, fn func(series byte, t, d int64)) {
	if ch.created != 0 {
		fn(seriesCreated, a.CreatedAt, ch.created)
	}
	if ch.consumedOK != 0 {
		fn(seriesConsumed, a.ConsumedAt, ch.consumedOK)
	}
	if ch.open != 0 {
		fn(seriesExpires, a.ExpiresAt, ch.open)
		fn(seriesActive, a.ActiveAt, ch.open)
	}
}

// getCount reads a stored counter (0 when absent).
func getCount(b *bolt.Bucket, key []byte) (int64, error) {
	v := b.Get(key)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("counter %q: bad value length %d", key, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// flush adds the deltas to the stored counters, in key order, and forgets
// them. A stored counter that cannot be read is a corrupt state file: the
// batch fails.
func (c counts) flush(b *bolt.Bucket) error {
	type delta struct {
		key []byte
		d   int64
	}
	var ds []delta
	for id, d := range c.scalars {
		if d != 0 {
			ds = append(ds, delta{scalarKey(id.client, id.kind), d})
		}
	}
	type point struct {
		pointID
		u uint64
		d int64
	}
	pts := make([]point, 0, len(c.points))
	for id, d := range c.points {
		if d != 0 {
			pts = append(pts, point{id, timeKeyU(id.t), d})
		}
	}
	slices.SortFunc(pts, func(x, y point) int {
		if n := strings.Compare(x.client, y.client); n != 0 {
			return n
		}
		if x.series != y.series {
			return int(x.series) - int(y.series)
		}
		return cmp.Compare(x.u, y.u)
	})
	// Per client and series, the sorted points' buckets at each level come
	// in order: runs of one bucket sum into one delta.
	for i := 0; i < len(pts); {
		j := i + 1
		for j < len(pts) && pts[j].client == pts[i].client && pts[j].series == pts[i].series {
			j++
		}
		prefix := clientPrefix(pts[i].client)
		for level := 0; level < trieLevels; level++ {
			shift := trieDigitBits * level
			for k := i; k < j; {
				bucket, sum := pts[k].u>>shift, int64(0)
				for ; k < j && pts[k].u>>shift == bucket; k++ {
					sum += pts[k].d
				}
				if sum != 0 {
					ds = append(ds, delta{seriesKey(prefix, pts[i].series, level, bucket), sum})
				}
			}
		}
		i = j
	}
	slices.SortFunc(ds, func(x, y delta) int { return bytes.Compare(x.key, y.key) })
	for _, e := range ds {
		n, err := getCount(b, e.key)
		if err != nil {
			return fatal(err)
		}
		n += e.d
		switch {
		case n < 0:
			return fatal(fmt.Errorf("counter %q would fall below zero", e.key))
		case n == 0:
			err = b.Delete(e.key)
		default:
			var v [8]byte
			binary.BigEndian.PutUint64(v[:], uint64(n))
			err = b.Put(e.key, v[:])
		}
		if err != nil {
			return fatal(fmt.Errorf("write counter: %w", err))
		}
	}
	clear(c.scalars)
	clear(c.points)
	return nil
}

// countAtOrBefore returns how many times t <= at a client's series holds.
// It sums, for each level from the top, the buckets that precede at's
// bucket within their common parent: at most trieLevels*255 keys.
func countAtOrBefore(b *bolt.Bucket, prefix []byte, series byte, at int64) (int64, error) {
	u := timeKeyU(at)
	var total int64
	c := b.Cursor()
	for level := trieLevels - 1; level >= 0; level-- {
		shift := uint(trieDigitBits * level)
		// Buckets [lo, hi) of this level: same parent as u's bucket and
		// below it; at level 0, [lo, hi] (u itself is at or before).
		lo := (u >> (shift + trieDigitBits)) << trieDigitBits
		hi := u >> shift
		from := seriesKey(prefix, series, level, lo)
		var n int64
		var err error
		if level == 0 {
			n, err = sumRange(c, from, nil, seriesKey(prefix, series, 0, hi))
		} else {
			n, err = sumRange(c, from, seriesKey(prefix, series, level, hi), nil)
		}
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// sumRange sums the counts of keys in [from, to) (or [from, through] when
// to is nil).
func sumRange(c *bolt.Cursor, from, to, through []byte) (int64, error) {
	var n int64
	for k, v := c.Seek(from); k != nil; k, v = c.Next() {
		if to != nil && bytes.Compare(k, to) >= 0 || through != nil && bytes.Compare(k, through) > 0 {
			break
		}
		if len(v) != 8 {
			return 0, fmt.Errorf("counter %q: bad value length %d", k, len(v))
		}
		n += int64(binary.BigEndian.Uint64(v))
	}
	return n, nil
}
