package cluster

// parallelLog lets the leader write its own log in parallel with
// replication (Raft thesis §10.2.1, what etcd does), instead of first
// writing and fsyncing it and only then sending the entries to the
// followers, which is what hashicorp/raft's dispatchLogs does. On a 2-core
// machine that saves about one fsync (~0.1 ms) on every write.
//
// How it stays safe. hashicorp/raft counts the leader in the commit quorum
// as soon as StoreLogs returns, so with an early return its commit index
// can run ahead of what is durable on a majority. Nothing may observe such
// an index, so two gates hold it back until the leader's write is durable:
//
//   - the state machine (gatedFSM) applies a batch only when the log is
//     durable through the batch's last entry: no client answer, read,
//     snapshot or membership-change future (they respond after the FSM saw
//     the configuration entry) reflects an entry before that;
//   - the transport (commitCap) lowers LeaderCommitIndex in every
//     AppendEntries to the durable index, so a follower never applies
//     beyond it either.
//
// An entry that is observed is therefore durable on the leader and on the
// followers that acknowledged it (followers write synchronously): on a
// majority. If the leader loses power before its write lands, the entries
// it lost were never observed, and the cluster may keep them or overwrite
// them as Raft sees fit.
//
// At most one leader write is in flight: a leader StoreLogs that finds one
// waits for it first, as dispatchLogs did before, so the entries arriving
// meanwhile form the next, larger batch. The overlap is kept for the
// newest batch; under load the batching is worth more (the 10,000-racer
// hot race answered 20-22k/s with unlimited early writes, 22-36k/s so).
//
// Only the leader's own writes are early; a follower's StoreLogs returns
// after its fsync, as before, because its acknowledgement counts. Every
// other operation (a follower write, a truncation, LastIndex) first waits
// until the pending writes are durable, so the store sees operations in
// the order Raft issued them.

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// parallelLog is the raft.LogStore Raft is given (under a raft.LogCache).
type parallelLog struct {
	inner raft.LogStore
	// early reports whether a StoreLogs call may return before the write
	// is durable: true only on the leader (see Node.logEarly).
	early func() bool
	// fatal is called when a write that already returned early fails;
	// such a node cannot go on (default: panic, as etcd does).
	fatal func(error)

	mu   sync.Mutex
	cond *sync.Cond // signalled when pending changes or durable changes
	// pending is the batch handed to the writer and not yet durable (nil:
	// none; there is at most one, see StoreLogs).
	pending []*raft.Log
	// durable is the last index known durable in inner.
	durable uint64
	closed  bool
	done    chan struct{}
}

// newParallelLog wraps inner; early decides per call whether a StoreLogs
// may return before its fsync.
func newParallelLog(inner raft.LogStore, early func() bool, fatal func(error)) (*parallelLog, error) {
	last, err := inner.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("cluster: raft log last index: %w", err)
	}
	if fatal == nil {
		fatal = func(err error) { panic(err) }
	}
	p := &parallelLog{inner: inner, early: early, fatal: fatal, durable: last, done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	go p.writer()
	return p, nil
}

// writer writes the pending batch (one raft-wal append, one fsync).
func (p *parallelLog) writer() {
	defer close(p.done)
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		for p.pending == nil && !p.closed {
			p.cond.Wait()
		}
		if p.pending == nil {
			return
		}
		batch := p.pending
		p.mu.Unlock()
		err := p.inner.StoreLogs(batch)
		p.mu.Lock()
		if err != nil {
			p.mu.Unlock()
			p.fatal(fmt.Errorf("cluster: writing the leader's Raft log (entries %d-%d) failed after Raft was told it succeeded; the node must restart: %w",
				batch[0].Index, batch[len(batch)-1].Index, err))
			p.mu.Lock()
			return
		}
		p.pending = nil
		p.durable = batch[len(batch)-1].Index
		p.cond.Broadcast()
	}
}

// idleLocked waits until no write is pending or in flight (the writer
// drops a batch from pending only once it is durable).
func (p *parallelLog) idleLocked() {
	for p.pending != nil {
		p.cond.Wait()
	}
}

// Durable is the last index known to be on disk.
func (p *parallelLog) Durable() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.durable
}

// WaitDurable blocks until the log is durable through index, or nothing
// is pending (then index is as durable as it will get: a follower's
// entries are written before StoreLogs returns).
func (p *parallelLog) WaitDurable(index uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.durable < index && p.pending != nil {
		p.cond.Wait()
	}
}

// FirstIndex implements raft.LogStore.
func (p *parallelLog) FirstIndex() (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	first, err := p.inner.FirstIndex()
	if err != nil || first != 0 || p.pending == nil {
		return first, err
	}
	return p.pending[0].Index, nil
}

// LastIndex implements raft.LogStore.
func (p *parallelLog) LastIndex() (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending != nil {
		return p.pending[len(p.pending)-1].Index, nil
	}
	return p.inner.LastIndex()
}

// GetLog implements raft.LogStore: a pending entry is served from memory
// (replication reads the entries it sends while they are being written).
func (p *parallelLog) GetLog(index uint64, log *raft.Log) error {
	p.mu.Lock()
	if b := p.pending; b != nil {
		if first := b[0].Index; index >= first && index < first+uint64(len(b)) {
			*log = *b[index-first]
			p.mu.Unlock()
			return nil
		}
	}
	p.mu.Unlock()
	// Not pending: written already (the writer drops a batch from pending
	// only after inner has it), or absent.
	return p.inner.GetLog(index, log)
}

// StoreLog implements raft.LogStore.
func (p *parallelLog) StoreLog(log *raft.Log) error {
	return p.StoreLogs([]*raft.Log{log})
}

// StoreLogs implements raft.LogStore. On the leader it queues the batch
// and returns; otherwise it writes after the pending batch, and returns
// when durable.
func (p *parallelLog) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errParallelLogClosed
	}
	if p.early() {
		// At most one write in flight: while one is, the leader waits for
		// it, as it did before, so that the entries arriving meanwhile
		// form the next, larger batch (under load, batching is worth more
		// than the overlap).
		p.idleLocked()
		p.pending = logs
		p.cond.Broadcast()
		return nil
	}
	p.idleLocked()
	if err := p.inner.StoreLogs(logs); err != nil {
		return err
	}
	p.durable = logs[len(logs)-1].Index
	p.cond.Broadcast()
	return nil
}

// DeleteRange implements raft.LogStore. A head compaction (below every
// pending entry) goes straight through; anything else waits for the
// pending writes first.
func (p *parallelLog) DeleteRange(min, max uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.pending != nil && p.pending[0].Index <= max {
		p.cond.Wait()
	}
	if err := p.inner.DeleteRange(min, max); err != nil {
		return err
	}
	// A tail truncation lowers what is durable; a head compaction leaves
	// the last index alone.
	last, err := p.inner.LastIndex()
	if err != nil {
		return fmt.Errorf("cluster: raft log last index after truncation: %w", err)
	}
	if last < p.durable {
		p.durable = last
	}
	return nil
}

// IsMonotonic passes the inner store's raft.MonotonicLogStore answer on.
func (p *parallelLog) IsMonotonic() bool {
	m, ok := p.inner.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// Close writes what is pending and stops the writer. It does not close
// inner. Raft must be shut down first.
func (p *parallelLog) Close() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	<-p.done
}

var errParallelLogClosed = fmt.Errorf("cluster: raft log closed")

// gatedFSM applies a batch only once the leader's log is durable through
// it (see the file comment).
// It also times each batch's application and each snapshot (metrics.go).
type gatedFSM struct {
	stateMachine
	log     *parallelLog
	metrics *metrics
}

// ApplyBatch implements raft.BatchingFSM.
func (g gatedFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	if len(logs) > 0 {
		g.log.WaitDurable(logs[len(logs)-1].Index)
	}
	start := time.Now()
	out := g.stateMachine.ApplyBatch(logs)
	g.metrics.stateCommit.Observe(time.Since(start).Seconds())
	return out
}

// Apply implements raft.FSM.
func (g gatedFSM) Apply(l *raft.Log) interface{} {
	g.log.WaitDurable(l.Index)
	start := time.Now()
	out := g.stateMachine.Apply(l)
	g.metrics.stateCommit.Observe(time.Since(start).Seconds())
	return out
}

// Snapshot implements raft.FSM; the snapshot it returns records its
// duration and size once persisted.
func (g gatedFSM) Snapshot() (raft.FSMSnapshot, error) {
	start := time.Now()
	s, err := g.stateMachine.Snapshot()
	if err != nil {
		return nil, err
	}
	return &measuredSnapshot{FSMSnapshot: s, start: start, m: g.metrics}, nil
}

// cappedPipeline lowers LeaderCommitIndex to the leader's durable index in
// pipelined AppendEntries (see the file comment).
type cappedPipeline struct {
	raft.AppendPipeline
	durable func() uint64
}

// AppendEntries implements raft.AppendPipeline.
func (c cappedPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	args.LeaderCommitIndex = min(args.LeaderCommitIndex, c.durable())
	return c.AppendPipeline.AppendEntries(args, resp)
}

// cacheEntryMax is the largest entry recentLog caches.
const cacheEntryMax = 64 << 10

// logCacheEntries is how many recent entries recentLog keeps: with
// cacheEntryMax, at most 16 MiB.
const logCacheEntries = 256

// largeBatchMax bounds the one large batch recentLog keeps beside the cache.
const largeBatchMax = 64 << 20

// recentLog is raft.LogCache over the log, plus the last large batch: Raft
// reads back what it just wrote (the previous entry of every AppendEntries,
// for its term; the entries it sends; a follower's committed entries), and
// raft-wal serves each read with a pread and a decode of the whole entry.
//
// A batch with an entry over cacheEntryMax (a big CSV create) is written
// around the cache, so the cache holds at most logCacheEntries*cacheEntryMax
// bytes. The last such batch (up to largeBatchMax bytes) is kept aside
// instead: without it, every AppendEntries after a 10,000-row create read
// and decoded the megabytes of that create again just for its term, a
// quarter of the leader's CPU while creating.
//
// Both stay coherent: LogCache matches a slot by index, so a skipped index
// misses there, and every overwrite of an index goes through DeleteRange,
// which empties the cache and drops the large batch.
type recentLog struct {
	*raft.LogCache
	store raft.LogStore
	large *largeBatch
}

// largeBatch is the last batch written around the cache.
type largeBatch struct {
	max  int
	mu   sync.Mutex
	logs []*raft.Log // consecutive indexes, or empty
}

func newRecentLog(store raft.LogStore) (recentLog, error) {
	c, err := raft.NewLogCache(logCacheEntries, store)
	if err != nil {
		return recentLog{}, fmt.Errorf("cluster: raft log cache: %w", err)
	}
	return recentLog{LogCache: c, store: store, large: &largeBatch{max: largeBatchMax}}, nil
}

// StoreLog implements raft.LogStore.
func (c recentLog) StoreLog(l *raft.Log) error { return c.StoreLogs([]*raft.Log{l}) }

// StoreLogs implements raft.LogStore.
func (c recentLog) StoreLogs(logs []*raft.Log) error {
	size := 0
	large := false
	for _, l := range logs {
		size += len(l.Data)
		large = large || len(l.Data) > cacheEntryMax
	}
	if !large {
		return c.LogCache.StoreLogs(logs)
	}
	c.large.set(nil)
	if err := c.store.StoreLogs(logs); err != nil {
		return err
	}
	if size <= c.large.max {
		c.large.set(logs)
	}
	return nil
}

// GetLog implements raft.LogStore.
func (c recentLog) GetLog(index uint64, out *raft.Log) error {
	if c.large.get(index, out) {
		return nil
	}
	return c.LogCache.GetLog(index, out)
}

// DeleteRange implements raft.LogStore.
func (c recentLog) DeleteRange(lo, hi uint64) error {
	c.large.set(nil)
	return c.LogCache.DeleteRange(lo, hi)
}

func (b *largeBatch) set(logs []*raft.Log) {
	b.mu.Lock()
	b.logs = append([]*raft.Log(nil), logs...)
	b.mu.Unlock()
}

func (b *largeBatch) get(index uint64, out *raft.Log) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.logs) == 0 || index < b.logs[0].Index {
		return false
	}
	i := index - b.logs[0].Index
	if i >= uint64(len(b.logs)) || b.logs[i].Index != index {
		return false
	}
	*out = *b.logs[i]
	return true
}
