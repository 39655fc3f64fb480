package fsm

import "sync"

// recentSettledCap bounds the action ids recentSettled keeps (about 4 MiB).
const recentSettledCap = 1 << 16

// recentSettled remembers the ids of the actions most recently settled
// (consumed, burned or canceled) by committed batches, oldest forgotten
// first. It is not replicated state: it only tells a reader that an
// action was settled here, so that a consume of it can be answered from a
// view (which stays authoritative) without trying first for the actions
// that are certainly still open. A settled action never reopens, and its
// id leaves the set before the batch that deletes it (retention) commits,
// so an id in the set is never a wrong hint; an id missing from it only
// costs the reader the normal, replicated path.
type recentSettled struct {
	mu   sync.RWMutex
	ids  map[string]struct{}
	ring []string
	next int
}

func newRecentSettled() *recentSettled {
	return &recentSettled{ids: make(map[string]struct{}), ring: make([]string, recentSettledCap)}
}

// add records ids, forgetting the oldest beyond the cap.
func (r *recentSettled) add(ids []string) {
	if len(ids) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if _, ok := r.ids[id]; ok {
			continue
		}
		if old := r.ring[r.next]; old != "" {
			delete(r.ids, old)
		}
		r.ring[r.next] = id
		r.ids[id] = struct{}{}
		r.next = (r.next + 1) % len(r.ring)
	}
}

// forget drops ids (actions deleted by retention): their cached answers
// must give way to the normal path, which answers 404.
func (r *recentSettled) forget(ids []string) {
	if len(ids) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		delete(r.ids, id)
	}
}

func (r *recentSettled) has(id string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.ids[id]
	return ok
}

// RecentlySettled reports whether this node applied, among its most recent
// settlements, one that consumed, burned or canceled the action id (any
// client's). It is a hint for answering consumes locally: true means a
// view will show the action settled; false means nothing (it may have been
// settled long ago, or before this process started).
func (f *FSM) RecentlySettled(id string) bool { return f.settled.has(id) }
