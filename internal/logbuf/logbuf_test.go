package logbuf

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for the flusher goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestInfoBufferedWarnWrittenThrough: an Info line waits in the buffer, a
// Warn line (from a derived logger too) is written out with everything
// before it, and Run flushes the rest on its timer.
func TestInfoBufferedWarnWrittenThrough(t *testing.T) {
	out := &lockedBuffer{}
	w := New(out)
	log := slog.New(NewHandler(slog.NewTextHandler(w, nil), w)).With("node", "n1")

	log.Info("first")
	if out.String() != "" {
		t.Fatalf("info written at once: %q", out.String())
	}
	log.Warn("second")
	got := out.String()
	if !strings.Contains(got, "msg=first") || !strings.Contains(got, "msg=second") || !strings.Contains(got, "node=n1") {
		t.Fatalf("after a warning: %q", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	log.Info("third")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "msg=third") {
		if time.Now().After(deadline) {
			t.Fatalf("info line not flushed within 5s (interval %s)", FlushInterval)
		}
		time.Sleep(10 * time.Millisecond)
	}
	log.Info("fourth")
	cancel()
	<-done
	if !strings.Contains(out.String(), "msg=fourth") {
		t.Fatalf("Run did not flush when stopping: %q", out.String())
	}
}
