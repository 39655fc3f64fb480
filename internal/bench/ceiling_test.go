package bench

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHotClientCeiling measures how fast the load generator alone can run
// the hot race against a server that answers 409 at once: the most the
// harness can report on this machine. Set BENCH_CEILING=1 to run it.
func TestHotClientCeiling(t *testing.T) {
	if os.Getenv("BENCH_CEILING") == "" {
		t.Skip("set BENCH_CEILING=1")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		_, _ = w.Write([]byte(`{"error":"already_used","message":"already consumed","consumedAt":"2026-01-01T00:00:00.000Z"}`))
	}))
	defer srv.Close()
	for _, pipelined := range []bool{false, true} {
		s := &session{cfg: Config{HotRacers: 10000, HotConns: 1500, Seed: 1, HotPipelined: pipelined}, log: testLogger(t),
			rates: map[string]float64{}, rep: &Report{Hot: map[string]HotRes{}}}
		urls := []string{srv.URL, srv.URL, srv.URL}
		e := NewExactOnce(urls, "c", "s", 8).WithTransport(NewTransport(1500, 1500))
		ctx := context.Background()
		if !pipelined {
			warmConns(ctx, e, 1500)
		}
		if err := s.hotRace(ctx, e, "act_x"); err != nil {
			t.Fatal(err)
		}
		h := s.rep.Hot["exactonce"]
		t.Logf("client ceiling (pipelined %v): %d answers in %.3f s = %.0f/s (lost %d, errors %d %v)", pipelined, h.Won+h.Lost, h.Seconds, h.PerSec, h.Lost, h.Errors, h.Kinds)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestLoopClientCeiling measures the closed-loop verify rate of the load
// generator against a server that answers 200 at once (BENCH_CEILING=1).
func TestLoopClientCeiling(t *testing.T) {
	if os.Getenv("BENCH_CEILING") == "" {
		t.Skip("set BENCH_CEILING=1")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"actionId":"act_x","state":"active","activeAt":"2026-01-01T00:00:00.000Z","expiresAt":"2026-01-02T00:00:00.000Z","createdAt":"2026-01-01T00:00:00.000Z","pinRequired":false,"failedPinAttempts":0}`))
	}))
	defer srv.Close()
	for _, raw := range []bool{false, true} {
		e := NewExactOnce([]string{srv.URL, srv.URL, srv.URL}, "c", "s", 80)
		if raw {
			if err := e.UseRaw(80); err != nil {
				t.Fatal(err)
			}
		}
		cpu0 := cpuTime()
		res, err := RunLoop(context.Background(), RunSpec{Concurrency: 64, Duration: 2 * time.Second, Seed: 1,
			Op: func(ctx context.Context, w *Worker) error { return e.Verify(ctx, w, "act_x") }})
		if err != nil {
			t.Fatal(err)
		}
		cpu := cpuTime() - cpu0
		t.Logf("closed-loop client ceiling (raw %v): %.0f verifies/s, p50 %v, p99 %v, errors %d %v; client+server CPU %v per request",
			raw, float64(res.Ops)/res.Elapsed.Seconds(), res.Latency.P50, res.Latency.P99, res.Errors, res.FirstErrors, cpu/time.Duration(max(1, res.Ops)))
		e.Close()
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
