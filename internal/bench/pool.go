package bench

import (
	"math/rand/v2"
	"sync"
)

// Pool is a concurrency-safe set of action ids: consume workloads take each
// id once; verify workloads pick any id ever added.
type Pool struct {
	mu     sync.Mutex
	fresh  []string
	all    []string
	cursor int
}

// Add puts ids into the pool as fresh (not yet consumed) actions.
func (p *Pool) Add(ids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fresh = append(p.fresh, ids...)
	p.all = append(p.all, ids...)
}

// Take removes and returns a fresh id; false when none is left.
func (p *Pool) Take() (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cursor >= len(p.fresh) {
		return "", false
	}
	id := p.fresh[p.cursor]
	p.fresh[p.cursor] = ""
	p.cursor++
	if p.cursor > 1<<16 && p.cursor*2 > len(p.fresh) {
		p.fresh = append([]string(nil), p.fresh[p.cursor:]...)
		p.cursor = 0
	}
	return id, true
}

// Fresh reports how many ids are left to take.
func (p *Pool) Fresh() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.fresh) - p.cursor
}

// Any returns a random id ever added; false when the pool never had one.
func (p *Pool) Any(r *rand.Rand) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.all) == 0 {
		return "", false
	}
	return p.all[r.IntN(len(p.all))], true
}
