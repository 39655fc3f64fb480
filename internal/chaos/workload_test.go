package chaos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeNode answers like one ExactOnce node for a scripted consume: the
// first tries of each Idempotency-Key get the scripted answers, later ones
// a 200 replay.
type fakeNode struct {
	mu     sync.Mutex
	script []int // statuses for the first consume tries: 0 = hang past the timeout
	tries  map[string]int
	keys   []string
}

func (f *fakeNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodPost && r.URL.Path == "/v1/actions" {
		w.WriteHeader(201)
		fmt.Fprintf(w, `{"actionId":"act_1"}`)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	f.mu.Lock()
	f.keys = append(f.keys, key)
	n := f.tries[key]
	f.tries[key]++
	f.mu.Unlock()
	if n < len(f.script) {
		switch st := f.script[n]; st {
		case 0:
			<-r.Context().Done()
			return
		case 503:
			w.WriteHeader(503)
			fmt.Fprint(w, `{"error":"outcome_unknown","message":"leader lost"}`)
			return
		}
	}
	w.WriteHeader(200)
	fmt.Fprintf(w, `{"actionId":"act_1","state":"consumed","payload":{"chaos":"tag"},"consumedAt":"2026-01-01T00:00:00.000Z"}`)
}

func newFakeWorkload(t *testing.T, script []int, attempts int) (*Workload, *fakeNode, *History) {
	t.Helper()
	f := &fakeNode{script: script, tries: map[string]int{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := NewCluster(ClusterConfig{Net: &Loopback{BasePort: p - 1}, Nodes: 1, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	h := NewHistory()
	w, err := NewWorkload(WorkloadConfig{WorkersPerNode: 1, Racers: 2, RequestTimeout: time.Second, Attempts: attempts, Seed: 1}, c, h, "cl", "secret", log)
	if err != nil {
		t.Fatal(err)
	}
	w.register(&actionInfo{id: "act_1", tag: "tag"})
	return w, f, h
}

func TestConsumeRetriesUnknownOutcomeWithSameKey(t *testing.T) {
	w, f, h := newFakeWorkload(t, []int{0, 503}, 4)
	w.consume(context.Background(), 0, 1, w.byID["act_1"], "")
	ops := h.Ops()
	if len(ops) != 1 {
		t.Fatalf("%d ops recorded, want 1", len(ops))
	}
	op := ops[0]
	if len(op.Attempts) != 3 || op.Outcome.Status != 200 || !op.Outcome.PayloadOK {
		t.Fatalf("op %s with %d attempts, want 3 attempts ending in a 200 with the created payload", op, len(op.Attempts))
	}
	if op.Attempts[0].Err == "" || op.Attempts[1].Code != "outcome_unknown" {
		t.Fatalf("attempts %+v: want a timeout, then 503 outcome_unknown", op.Attempts)
	}
	for _, k := range f.keys {
		if k != op.Key || k == "" {
			t.Fatalf("tries used keys %v, want %q every time", f.keys, op.Key)
		}
	}
	if op.Call > op.Attempts[0].Call || op.Return < op.Attempts[2].Return {
		t.Fatalf("op interval [%d,%d] does not cover its attempts", op.Call, op.Return)
	}
}

func TestUnknownConsumeIsResolvedAfterHealing(t *testing.T) {
	w, f, h := newFakeWorkload(t, []int{0, 0}, 2)
	w.consume(context.Background(), 0, 1, w.byID["act_1"], "")
	if op := h.Ops()[0]; !op.Outcome.Unknown || op.Return != -1 {
		t.Fatalf("after two timeouts: %s, want unknown", op)
	}
	resolved, still := w.Resolve(context.Background(), []int{1}, 99)
	op := h.Ops()[0]
	if resolved != 1 || still != 0 || op.Outcome.Status != 200 || len(op.Attempts) != 3 || op.Return < 0 {
		t.Fatalf("resolve: %d resolved, %d still unknown, op %s", resolved, still, op)
	}
	if f.keys[2] != op.Key {
		t.Fatalf("the retry after healing used key %q, want %q", f.keys[2], op.Key)
	}
}
