package cluster

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hcLogger adapts Raft's and memberlist's hclog output to slog.
//
// Raft is chatty at info level (every election, every snapshot); those
// records are demoted to slog Debug so that an info-level service log
// stays quiet. The cluster package logs the transitions that matter
// (leadership, bootstrap, membership changes) itself at Info.
type hcLogger struct {
	l       *slog.Logger
	name    string
	implied []interface{}
}

var _ hclog.Logger = (*hcLogger)(nil)

func newHCLogger(l *slog.Logger) *hcLogger { return &hcLogger{l: l} }

// slogLevel maps an hclog level to the slog level it is reported at.
func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Error:
		return slog.LevelError
	case hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelDebug
	}
}

func (h *hcLogger) Log(level hclog.Level, msg string, args ...interface{}) {
	lv := slogLevel(level)
	if !h.l.Enabled(context.Background(), lv) {
		return
	}
	attrs := make([]interface{}, 0, len(h.implied)+len(args)+2)
	if h.name != "" {
		attrs = append(attrs, "module", h.name)
	}
	attrs = append(attrs, h.implied...)
	attrs = append(attrs, args...)
	h.l.Log(context.Background(), lv, msg, attrs...)
}

func (h *hcLogger) Trace(msg string, args ...interface{}) { h.Log(hclog.Trace, msg, args...) }
func (h *hcLogger) Debug(msg string, args ...interface{}) { h.Log(hclog.Debug, msg, args...) }
func (h *hcLogger) Info(msg string, args ...interface{})  { h.Log(hclog.Info, msg, args...) }
func (h *hcLogger) Warn(msg string, args ...interface{})  { h.Log(hclog.Warn, msg, args...) }
func (h *hcLogger) Error(msg string, args ...interface{}) { h.Log(hclog.Error, msg, args...) }

func (h *hcLogger) enabled(level hclog.Level) bool {
	return h.l.Enabled(context.Background(), slogLevel(level))
}

func (h *hcLogger) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hcLogger) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hcLogger) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hcLogger) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hcLogger) IsError() bool { return h.enabled(hclog.Error) }

func (h *hcLogger) ImpliedArgs() []interface{} { return h.implied }

func (h *hcLogger) With(args ...interface{}) hclog.Logger {
	c := *h
	c.implied = append(append([]interface{}(nil), h.implied...), args...)
	return &c
}

func (h *hcLogger) Name() string { return h.name }

func (h *hcLogger) Named(name string) hclog.Logger {
	c := *h
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

func (h *hcLogger) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

// SetLevel is a no-op: the level is the slog handler's.
func (h *hcLogger) SetLevel(hclog.Level) {}

func (h *hcLogger) GetLevel() hclog.Level {
	switch {
	case h.IsDebug():
		return hclog.Debug
	case h.IsWarn():
		return hclog.Warn
	default:
		return hclog.Error
	}
}

func (h *hcLogger) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(nil), "", 0)
}

func (h *hcLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return &stdWriter{h: h}
}

// stdWriter turns standard-library log lines ("[WARN] memberlist: ...")
// into slog records, honouring the bracketed level prefix.
type stdWriter struct{ h *hcLogger }

func (w *stdWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		s := strings.TrimSpace(string(line))
		level := hclog.Info
		for prefix, lv := range map[string]hclog.Level{
			"[ERR]": hclog.Error, "[ERROR]": hclog.Error, "[WARN]": hclog.Warn,
			"[INFO]": hclog.Info, "[DEBUG]": hclog.Debug, "[TRACE]": hclog.Trace,
		} {
			if i := strings.Index(s, prefix); i >= 0 {
				level = lv
				s = strings.TrimSpace(s[i+len(prefix):])
				break
			}
		}
		w.h.Log(level, s)
	}
	return len(p), nil
}
