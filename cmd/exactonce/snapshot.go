package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/exactonce/exactonce/internal/snapfile"
)

// snapshotReport is what save and inspect print: the file's header and its
// verified length and checksum.
type snapshotReport struct {
	File string `json:"file"`
	snapfile.Info
	// FSMTime is Header.Time as RFC 3339.
	FSMTime string `json:"fsmTime"`
	// ChecksumStatus is "ok": a file that fails the check is refused.
	ChecksumStatus string `json:"checksum"`
}

func (a *app) snapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Back up the whole state to a file (save), or check such a file (inspect)",
		Long: "snapshot save FILE streams a consistent copy of the whole state (admin token) from the node at --addr\n" +
			"into FILE (mode 0600, written to a temporary file, fsynced, then renamed). It holds every write\n" +
			"acknowledged before the call; writes go on meanwhile. snapshot inspect FILE checks a file and prints\n" +
			"its index, term, time, format version, key check value, size and checksum status. A new cluster\n" +
			"starts from a file with `exactonced --restore FILE` (docs/operations.md, \"Backups\").\n\n" +
			"Exit status 6: the file (or the one received) is damaged or of an unknown format version.\n" +
			"With -o table the report is a table.",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "save FILE",
		Short: "Save a backup of the whole state into FILE (admin token)",
		Long: "Save a backup of the whole state into FILE (admin token). --timeout bounds the wait for the\n" +
			"node to start sending and each pause of the transfer, not the whole transfer.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return a.saveSnapshot(cmd.Context(), args[0]) },
	}, &cobra.Command{
		Use:   "inspect FILE",
		Short: "Check a backup file and print what it holds",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			info, err := snapfile.Verify(args[0])
			switch {
			case errors.Is(err, snapfile.ErrDamaged), errors.Is(err, snapfile.ErrUnsupportedVersion):
				return &exitError{exitDamagedFile, fmt.Errorf("%s: %w", args[0], err)}
			case err != nil:
				return &exitError{exitFailure, fmt.Errorf("%s: %w", args[0], err)}
			}
			return a.printReport(args[0], info)
		},
	})
	return cmd
}

// printReport prints the report of a verified file.
func (a *app) printReport(file string, info snapfile.Info) error {
	b, err := json.Marshal(snapshotReport{File: file, Info: info,
		FSMTime: time.UnixMilli(info.Time).UTC().Format(time.RFC3339Nano), ChecksumStatus: "ok"})
	if err != nil {
		return &exitError{exitFailure, fmt.Errorf("encode report: %w", err)}
	}
	return a.print(b)
}

// saveSnapshot downloads a backup into file: the stream is checked as it
// arrives (format, length, checksum) and renamed into place only whole.
func (a *app) saveSnapshot(ctx context.Context, file string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	// The timer ends the call when the node is silent for --timeout: first
	// while it runs its read barrier, then between reads.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := time.AfterFunc(a.g.timeout, func() { cancel(fmt.Errorf("no data from the node for %s (--timeout)", a.g.timeout)) })
	defer idle.Stop()
	body, _, err := c.Snapshot(ctx)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = fmt.Errorf("%w (%w)", err, cause)
		}
		return apiFailure(err)
	}
	defer body.Close()

	dir, name := filepath.Split(file)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+name+".partial-*")
	if err != nil {
		return &exitError{exitFailure, fmt.Errorf("snapshot save: %w", err)}
	}
	done := false
	defer func() {
		if !done {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return &exitError{exitFailure, fmt.Errorf("snapshot save: %w", err)}
	}
	in := &idleReader{r: body, t: idle, d: a.g.timeout}
	counted := &countingWriter{w: tmp}
	sr, err := snapfile.NewReader(io.TeeReader(in, counted))
	if err == nil {
		_, err = io.Copy(io.Discard, sr)
	}
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = fmt.Errorf("%w (%w)", err, cause)
		}
		err = fmt.Errorf("snapshot save: the answer of %s: %w; %s was not written", a.g.addr, err, file)
		if errors.Is(err, snapfile.ErrDamaged) || errors.Is(err, snapfile.ErrUnsupportedVersion) {
			return &exitError{exitDamagedFile, err}
		}
		return apiFailure(err)
	}
	if err := tmp.Sync(); err != nil {
		return &exitError{exitFailure, fmt.Errorf("snapshot save: sync: %w", err)}
	}
	if err := tmp.Close(); err != nil {
		return &exitError{exitFailure, fmt.Errorf("snapshot save: close: %w", err)}
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return &exitError{exitFailure, fmt.Errorf("snapshot save: %w", err)}
	}
	done = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the rename survives a crash
		_ = d.Close()
	}
	return a.printReport(file, snapfile.Info{Header: sr.Header(), FileSize: counted.n, Checksum: sr.Checksum()})
}

// idleReader restarts t (d) on every read that returns data.
type idleReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (i *idleReader) Read(p []byte) (int, error) {
	n, err := i.r.Read(p)
	if n > 0 {
		i.t.Reset(i.d)
	}
	return n, err
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
