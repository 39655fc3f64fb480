package fsm

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// randomLog builds n encoded entries (starting at index 1) of a plausible
// mixed workload: clients, creates (JSON and CSV), consumes with and
// without PINs, cancels, idempotent repeats, revocations and stamps that
// sometimes go backwards.
func randomLog(t testing.TB, seed uint64, n int) []*raft.Log {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	clients := []string{"cl_0", "cl_1", "cl_2", DemoClientID}
	var ids []string
	owner := map[string]string{}
	now := t0
	logs := make([]*raft.Log, 0, n)
	add := func(c *Command) { logs = append(logs, entry(t, uint64(len(logs)+1), c)) }
	for _, c := range clients[:3] {
		add(clientCmd(c, now))
	}
	// pick returns an action id and, mostly, its owner as the caller.
	pick := func() (string, string) {
		if len(ids) == 0 || rng.IntN(20) == 0 {
			return clients[rng.IntN(len(clients))], fmt.Sprintf("act_missing%d", rng.IntN(5))
		}
		id := ids[rng.IntN(len(ids))]
		if rng.IntN(10) == 0 {
			return clients[rng.IntN(len(clients))], id
		}
		return owner[id], id
	}
	for len(logs) < n {
		switch rng.IntN(10) {
		case 0:
			now -= rng.Int64N(5 * minMS) // a stale stamp
		default:
			now += rng.Int64N(2 * minMS)
		}
		client := clients[rng.IntN(len(clients))]
		var cmd *Command
		switch k := rng.IntN(100); {
		case k < 30:
			row := CreateRow{ActionID: fmt.Sprintf("act_%d", len(ids)), SealedPayload: []byte{byte(k)}}
			if rng.IntN(3) == 0 {
				row.PINHash = pinHash(fmt.Sprint(rng.IntN(2)))
			}
			if rng.IntN(3) == 0 {
				row.ActiveAt = now + rng.Int64N(2*hour) - hour
			}
			if rng.IntN(3) == 0 {
				row.ExpiresAt = now + rng.Int64N(4*hour) - hour
			}
			ids = append(ids, row.ActionID)
			owner[row.ActionID] = client
			cmd = createCmd(client, now, row)
		case k < 35:
			c := &CreateActions{CSV: true, DefaultTTLMS: hour, MaxTTLMS: 30 * DefaultTTLMS}
			for r := 0; r < 1+rng.IntN(20); r++ {
				id := fmt.Sprintf("act_%d", len(ids))
				if rng.IntN(10) == 0 && len(ids) > 0 {
					_, id = pick() // a conflict
				} else {
					owner[id] = client
				}
				ids = append(ids, id)
				row := CreateRow{Row: r + 2, ActionID: id, SealedPayload: []byte("x")}
				if rng.IntN(8) == 0 {
					row = CreateRow{Row: r + 2, Error: CodeInvalidRequest, Message: "bad row"}
				}
				c.Rows = append(c.Rows, row)
			}
			cmd = &Command{Type: CmdCreateActions, Time: now, ClientID: client, Create: c}
		case k < 75:
			c, id := pick()
			switch rng.IntN(3) {
			case 0:
				cmd = consumeCmd(c, now, id)
			default:
				cmd = consumePIN(c, now, id, fmt.Sprint(rng.IntN(2)))
			}
		case k < 85:
			c, id := pick()
			cmd = cancelCmd(c, now, id)
		case k < 88:
			cmd = noopCmd(now)
			if len(logs) > 2*n/3 && rng.IntN(4) == 0 {
				// Late, a short retention, so that sweeps erase and purge
				// (and most of the state stays for the tests that need
				// a large one).
				cmd = retentionCmd(now, minMS*(10+rng.Int64N(180)))
			}
		case k < 89 && len(logs) > n/2 && rng.IntN(10) == 0:
			cmd = revokeCmd("cl_2", now) // late and rare: most clients stay usable
		default:
			c, id := pick()
			cmd = consumeCmd(c, now, id)
			if rng.IntN(2) == 0 {
				cmd = cancelCmd(c, now, id)
			}
		}
		if rng.IntN(3) == 0 {
			withIdem(cmd, fmt.Sprint("key", rng.IntN(30)), fmt.Sprint("fp", rng.IntN(2)))
		}
		if rng.IntN(1000) == 0 {
			now += IdempotencyTTLMS // let records expire and be purged
		}
		add(cmd)
	}
	return logs
}

// withoutRetention replaces randomLog's retention commands by no-ops, for
// tests that need all the state the log makes.
func withoutRetention(t testing.TB, logs []*raft.Log) []*raft.Log {
	t.Helper()
	out := make([]*raft.Log, len(logs))
	for i, l := range logs {
		out[i] = l
		if cmd, err := DecodeCommand(l.Data); err == nil && cmd.Type == CmdSetRetention {
			out[i] = entry(t, l.Index, noopCmd(cmd.Time))
		}
	}
	return out
}

// applySplit applies logs in batches whose sizes come from rng (max maxBatch).
func applySplit(f *FSM, logs []*raft.Log, rng *rand.Rand, maxBatch int) []interface{} {
	var out []interface{}
	for i := 0; i < len(logs); {
		n := min(1+rng.IntN(maxBatch), len(logs)-i)
		out = append(out, f.ApplyBatch(logs[i:i+n])...)
		i += n
	}
	return out
}

// TestDeterminism applies one random log to FSMs with different batch
// splits: equal state hashes and equal per-entry results.
func TestDeterminism(t *testing.T) {
	seed := testSeed(t)
	logs := randomLog(t, seed, 3000)
	dir := t.TempDir()
	var hashes []string
	var results [][]interface{}
	var last *FSM
	for i, maxBatch := range []int{1, 64, 500} {
		f := openFSM(t, filepath.Join(dir, fmt.Sprint(i)))
		last = f
		results = append(results, applySplit(f, logs, rand.New(rand.NewPCG(seed, uint64(i))), maxBatch))
		hashes = append(hashes, hashOf(t, f))
		if f.AppliedIndex() != uint64(len(logs)) {
			t.Fatalf("applied %d", f.AppliedIndex())
		}
	}
	// The hash covers the counters and the state index (every bucket);
	// make sure the workload filled them and that they count right.
	if err := last.View(func(v *View) error {
		for _, b := range [][]byte{bucketCounts, bucketIxState} {
			if v.tx.Bucket(b).Stats().KeyN == 0 {
				return fmt.Errorf("bucket %s is empty", b)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	purged := int64(0)
	for _, c := range []string{"cl_0", "cl_1", "cl_2", DemoClientID} {
		purged += checkStats(t, last, c, last.LastTime()).Purged
	}
	// Retention ran too: some actions were deleted, leaving nothing behind.
	if purged == 0 {
		t.Fatalf("seed %d: no action was purged: retention is not exercised", seed)
	}
	checkNoDanglingKeys(t, last)
	for i := 1; i < len(hashes); i++ {
		if hashes[i] != hashes[0] {
			t.Fatalf("seed %d: hash %d %s != %s", seed, i, hashes[i], hashes[0])
		}
		for j := range results[0] {
			if !reflect.DeepEqual(results[i][j], results[0][j]) {
				t.Fatalf("seed %d: entry %d result differs: %+v vs %+v", seed, j+1, results[i][j], results[0][j])
			}
		}
	}
	// The workload must actually exercise the interesting outcomes.
	codes := map[Code]int{}
	replays := 0
	for _, r := range results[0] {
		if res, ok := r.(*Result); ok {
			codes[res.Code]++
			if res.Replayed {
				replays++
			}
		}
	}
	for _, c := range []Code{CodeOK, CodeNotFound, CodeAlreadyUsed, CodeInvalidPIN, CodeIdempotencyReused, CodeCanceled} {
		if codes[c] == 0 {
			t.Errorf("seed %d: workload produced no %q (%v)", seed, c, codes)
		}
	}
	t.Logf("outcomes %v, replays %d", codes, replays)
	if replays == 0 {
		t.Errorf("seed %d: no replays", seed)
	}
}

// memSink is an in-memory raft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	canceled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.canceled = true; return nil }
func (s *memSink) Close() error  { return nil }

// snapshotBytes takes and persists a snapshot of f.
func snapshotBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	var sink memSink
	if err := s.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

// TestSnapshotRestore: restore into a fresh FSM gives the same hash, index,
// clock and reads; restoring over an FSM with other state replaces it.
func TestSnapshotRestore(t *testing.T) {
	seed := testSeed(t)
	logs := randomLog(t, seed, 1500)
	dir := t.TempDir()
	src := openFSM(t, filepath.Join(dir, "src"))
	src.ApplyBatch(logs)
	data := snapshotBytes(t, src)

	dst := openFSM(t, filepath.Join(dir, "dst"))
	dst.ApplyBatch(randomLog(t, seed+1, 200)) // unrelated state, replaced
	if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if hashOf(t, dst) != hashOf(t, src) || dst.AppliedIndex() != src.AppliedIndex() || dst.LastTime() != src.LastTime() {
		t.Fatalf("restored state differs")
	}
	q := ListQuery{ClientID: "cl_1", Now: src.LastTime(), Limit: MaxListLimit}
	if a, b := listAll(t, src, q), listAll(t, dst, q); !reflect.DeepEqual(a, b) || len(a) == 0 {
		t.Fatalf("restored list differs (%d vs %d)", len(a), len(b))
	}
	// The restored FSM keeps applying, and survives a reopen.
	more := randomLog(t, seed, 1600)[1500:]
	src.ApplyBatch(more)
	dst.ApplyBatch(more)
	want := hashOf(t, src)
	if hashOf(t, dst) != want {
		t.Fatalf("diverged after restore")
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	re := openFSM(t, filepath.Join(dir, "dst"))
	if hashOf(t, re) != want || re.AppliedIndex() != 1600 {
		t.Fatalf("reopened restored file differs")
	}
	if err := re.Restore(io.NopCloser(bytes.NewReader([]byte("not a bolt file")))); err == nil {
		t.Fatalf("restored garbage")
	}
	if hashOf(t, re) != want {
		t.Fatalf("failed restore changed the state")
	}
}

// TestSnapshotWhileApplying: a snapshot persisted while applies continue
// equals the state of an FSM that applied exactly the log up to the
// snapshot's index; readers and WaitApplied keep working across a restore.
func TestSnapshotWhileApplying(t *testing.T) {
	seed := testSeed(t)
	logs := randomLog(t, seed, 2000)
	dir := t.TempDir()
	f := openFSM(t, filepath.Join(dir, "live"))
	f.ApplyBatch(logs[:700])
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		applySplit(f, logs[700:], rand.New(rand.NewPCG(seed, 7)), 50)
	}()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	wg.Wait()

	ref := openFSM(t, filepath.Join(dir, "ref"))
	ref.ApplyBatch(logs[:700])
	restored := openFSM(t, filepath.Join(dir, "restored"))

	// Readers run throughout the restore.
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			err := restored.View(func(v *View) error {
				_, err := v.List(ListQuery{ClientID: "cl_0", Now: t0})
				return err
			})
			if err != nil {
				t.Errorf("view during restore: %v", err)
				return
			}
		}
	}()
	waited := make(chan bool)
	go func() { waited <- restored.WaitApplied(700, nil) }()
	if err := restored.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	select {
	case ok := <-waited:
		if !ok {
			t.Fatalf("WaitApplied returned false")
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("WaitApplied not woken by restore")
	}
	close(stop)
	readers.Wait()
	if restored.AppliedIndex() != 700 || hashOf(t, restored) != hashOf(t, ref) {
		t.Fatalf("snapshot is not the state at index 700 (applied %d)", restored.AppliedIndex())
	}
	if f.AppliedIndex() != 2000 {
		t.Fatalf("live applied %d", f.AppliedIndex())
	}
}

// TestRestart: state and applied index survive a reopen; re-applying
// entries at or below the applied index is a no-op.
func TestRestart(t *testing.T) {
	seed := testSeed(t)
	logs := randomLog(t, seed, 1000)
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	f.ApplyBatch(logs[:600])
	want, last := hashOf(t, f), f.LastTime()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.View(func(*View) error { return nil }); err != ErrClosed {
		t.Fatalf("view after close: %v", err)
	}
	f = openFSM(t, path)
	if f.AppliedIndex() != 600 || f.LastTime() != last || hashOf(t, f) != want {
		t.Fatalf("reopened: applied %d", f.AppliedIndex())
	}
	// Raft replays from its own snapshot index: everything <= 600 is skipped.
	out := f.ApplyBatch(logs[:800])
	for i, r := range out[:600] {
		if r != nil {
			t.Fatalf("entry %d re-applied: %v", i+1, r)
		}
	}
	ref := openFSM(t, filepath.Join(t.TempDir(), "ref"))
	ref.ApplyBatch(logs[:800])
	if hashOf(t, f) != hashOf(t, ref) {
		t.Fatalf("restart + replay differs from a straight apply")
	}
}

// TestWaitApplied: waiters wake on advance and give up when done closes.
func TestWaitApplied(t *testing.T) {
	h := newHarness(t)
	done := make(chan struct{})
	close(done)
	if h.f.WaitApplied(100, done) {
		t.Fatalf("WaitApplied(100) true at %d", h.f.AppliedIndex())
	}
	if !h.f.WaitApplied(h.idx, nil) {
		t.Fatalf("WaitApplied of the applied index false")
	}
	target := h.idx + 3
	res := make(chan bool, 4)
	for i := 0; i < 4; i++ {
		go func() { res <- h.f.WaitApplied(target, nil) }()
	}
	for i := 0; i < 3; i++ {
		h.apply(noopCmd(t0))
	}
	for i := 0; i < 4; i++ {
		select {
		case ok := <-res:
			if !ok {
				t.Fatalf("waiter returned false")
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("waiter not woken")
		}
	}
}

// allActions reads every stored action, by id.
func allActions(t testing.TB, f *FSM) map[string]*Action {
	t.Helper()
	out := map[string]*Action{}
	err := f.db.View(func(tx *boltTx) error {
		return tx.Bucket(bucketActions).ForEach(func(k, v []byte) error {
			a, err := decodeAction(v)
			out[string(k)] = a
			return err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// recreatedAfter reports whether a create in logs names id (it may succeed
// once retention deleted the first action of that id).
func recreatedAfter(logs []*raft.Log, id string) bool {
	for _, l := range logs {
		cmd, err := DecodeCommand(l.Data)
		if err != nil || cmd.Type != CmdCreateActions {
			continue
		}
		for _, row := range cmd.Create.Rows {
			if row.ActionID == id {
				return true
			}
		}
	}
	return false
}

// TestInvariants over a random log: at most one successful consume per
// action (replays aside), and terminal actions never change afterwards
// (their payload went when they settled); retention may delete them.
func TestInvariants(t *testing.T) {
	seed := testSeed(t)
	logs := randomLog(t, seed, 3000)
	f := openFSM(t, filepath.Join(t.TempDir(), "inv"))
	out := f.ApplyBatch(logs[:1500])
	terminal := map[string]*Action{}
	for id, a := range allActions(t, f) {
		if a.ConsumedAt != 0 || a.CanceledAt != 0 {
			terminal[id] = a
		}
	}
	if len(terminal) == 0 {
		t.Fatalf("seed %d: no terminal actions to check", seed)
	}
	out = append(out, f.ApplyBatch(logs[1500:])...)
	after := allActions(t, f)
	for id, a := range terminal {
		if after[id] == nil || recreatedAfter(logs[1500:], id) {
			continue // deleted by retention, the one change allowed
		}
		if !reflect.DeepEqual(after[id], a) {
			t.Fatalf("seed %d: terminal action %s changed:\n%+v\n%+v", seed, id, a, after[id])
		}
	}
	// An id is one action from its create to its deletion by retention:
	// the log may create it again after that (the server's ids carry 128
	// random bits and never repeat; this log reuses them on purpose), and
	// each life has its own winner.
	winners := map[string]int{}
	life := map[string]int{}
	recreated := map[string]bool{}
	for i, r := range out {
		res, ok := r.(*Result)
		cmd, err := DecodeCommand(logs[i].Data)
		if !ok || err != nil {
			continue
		}
		if cmd.Type == CmdCreateActions && !res.Replayed {
			for j, row := range cmd.Create.Rows {
				created := res.Code == CodeOK && !cmd.Create.CSV || cmd.Create.CSV && j < len(res.Rows) && res.Rows[j].Error == CodeOK
				if created && row.ActionID != "" {
					if life[row.ActionID] > 0 && i >= 1500 {
						recreated[row.ActionID] = true
					}
					life[row.ActionID]++
				}
			}
		}
		if cmd.Type != CmdConsume || res.Code != CodeOK || res.Replayed {
			continue
		}
		winners[fmt.Sprint(cmd.Consume.ActionID, "#", life[cmd.Consume.ActionID])]++
	}
	for key, n := range winners {
		if n != 1 {
			t.Fatalf("seed %d: action %s consumed %d times", seed, key, n)
		}
	}
	for key := range winners {
		id := key[:strings.IndexByte(key, '#')]
		if a := after[id]; a != nil && !recreated[id] && life[id] == 1 && a.ConsumedReason != ReasonConsumed {
			t.Fatalf("seed %d: winner of %s but stored reason %q", seed, id, a.ConsumedReason)
		}
	}
	if len(winners) == 0 {
		t.Fatalf("seed %d: no consume succeeded", seed)
	}
}
