// Package logbuf buffers a process's log output: lines are written to the
// underlying file in batches (when the buffer fills, on a short timer, and
// at once after any record at Warn or above), not with one write system
// call per line. A busy node logs one access line per request, and those
// writes were several percent of a node's CPU at 20,000 requests per second.
//
// The price is that a process killed outright loses at most the last
// FlushInterval of Info and Debug lines; warnings and errors are written
// through before Handle returns.
package logbuf

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// FlushInterval is how long a line may wait in the buffer.
const FlushInterval = 100 * time.Millisecond

// bufSize is the buffer; a full buffer is written at once.
const bufSize = 64 << 10

// Writer is an io.Writer that buffers whole log records. It is safe for
// concurrent use.
type Writer struct {
	mu sync.Mutex
	bw *bufio.Writer
}

// New buffers writes to w. Call Run to flush on a timer and Flush before
// the process exits.
func New(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriterSize(w, bufSize)}
}

// Write buffers p (one log record, as slog's handlers write them).
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bw.Write(p)
}

// Flush writes out everything buffered.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bw.Flush()
}

// Run flushes every FlushInterval until ctx ends, then once more.
func (w *Writer) Run(ctx context.Context) {
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = w.Flush()
			return
		case <-t.C:
			_ = w.Flush()
		}
	}
}

// Handler wraps a slog.Handler that writes to a Writer, so that records at
// slog.LevelWarn and above are flushed before Handle returns.
type Handler struct {
	slog.Handler
	w *Writer
}

// NewHandler wraps h, which must write to w.
func NewHandler(h slog.Handler, w *Writer) *Handler { return &Handler{Handler: h, w: w} }

// Handle passes r on and flushes for warnings and errors.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		if ferr := h.w.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

// WithAttrs keeps the flushing behaviour on derived handlers.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{Handler: h.Handler.WithAttrs(attrs), w: h.w}
}

// WithGroup keeps the flushing behaviour on derived handlers.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{Handler: h.Handler.WithGroup(name), w: h.w}
}
