package secure

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"sync/atomic"
	"time"
)

// sortedAlphabet is the 64 URL-safe characters in ASCII order. Base64 with
// this alphabet (big-endian 6-bit groups) keeps byte order: a < b as bytes
// exactly when their encodings compare so as strings.
const sortedAlphabet = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"

// sortedEncoding encodes action ids (see ActionIDs).
var sortedEncoding = base64.NewEncoding(sortedAlphabet).WithPadding(base64.NoPadding)

// Action id layout, before encoding: an 8-byte creation stamp, then the
// random part.
const (
	actionIDStampBytes  = 8
	actionIDRandomBytes = 16
	// ActionIDPrefix starts every action id.
	ActionIDPrefix = "act_"
)

// ActionIDs makes action ids: "act_" + 32 URL-safe characters encoding a
// creation stamp (8 bytes) and 128 random bits. The ids one generator makes
// sort, as strings, in the order it made them.
//
// Why: the state stores actions in a B+tree keyed by id. Purely random ids
// scatter every batch of creates, and the consumes of actions created
// together, over the whole tree, so each dirties a leaf page of its own on
// every node. Ids that grow with time append at the tree's right edge and
// keep actions created together on shared pages (the reason UUIDv7 and
// ULID exist). The stamp reveals the creation time to the millisecond; the
// 128 random bits are what makes an id unguessable (SPEC: at least 128).
//
// The stamp is the Unix time in milliseconds shifted left 16 bits, plus a
// sequence: each id takes max(now<<16, previous+1), so ids stay ordered
// within a millisecond and when the clock steps back. The zero value is
// ready to use and safe for concurrent use.
type ActionIDs struct {
	last atomic.Uint64
}

// New returns a fresh action id stamped with now.
func (g *ActionIDs) New(now time.Time) string {
	stamp := uint64(now.UnixMilli()) << 16
	for {
		prev := g.last.Load()
		next := max(stamp, prev+1)
		if g.last.CompareAndSwap(prev, next) {
			stamp = next
			break
		}
	}
	var raw [actionIDStampBytes + actionIDRandomBytes]byte
	binary.BigEndian.PutUint64(raw[:actionIDStampBytes], stamp)
	rand.Read(raw[actionIDStampBytes:]) // never fails (crypto/rand panics on an unusable source)
	return ActionIDPrefix + sortedEncoding.EncodeToString(raw[:])
}
