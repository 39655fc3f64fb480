package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/httpapi"
	"github.com/exactonce/exactonce/internal/config"
	"github.com/exactonce/exactonce/internal/secure"
	"github.com/exactonce/exactonce/internal/snapfile"
)

// Online backup and restore (docs/operations.md, "Backups"). A save is
// served by the node the operator calls, leader or follower, after a
// linearizable read barrier (cluster.Node.BeginBackup): the copy holds
// every write acknowledged before the call, as the leader's would, and
// reading the whole state file costs that node only, not the leader every
// write goes through. The file is the state machine's own snapshot bytes
// in the snapfile format (header, bbolt file, SHA-256 trailer).

// snapshotWriteIdle bounds how long one write of a save's answer may wait
// for the client: the answer may take minutes in all, far beyond the API
// server's write timeout, but a stalled client must not hold the read
// transaction (and the pages it pins) for ever.
const snapshotWriteIdle = time.Minute

// backupAPI serves GET /v1/admin/snapshot.
type backupAPI struct {
	node *cluster.Node
	now  func() time.Time
	log  *slog.Logger
}

// backupRoutes mounts the backup endpoint (admin token):
//
//	GET /v1/admin/snapshot   a backup file of the whole state (application/octet-stream)
func backupRoutes(node *cluster.Node, adminTokenHash []byte, now func() time.Time, log *slog.Logger) func(r *mux.Router) {
	b := &backupAPI{node: node, now: now, log: log}
	return func(r *mux.Router) {
		r.Handle("/v1/admin/snapshot", httpapi.RequireAdmin(adminTokenHash, http.HandlerFunc(b.save))).Methods(http.MethodGet)
	}
}

// save streams a backup file. Until the first byte it answers errors as
// the API does (503 unavailable without a leader or quorum); once the
// file streams, a failure can only cut it short, which the reader's
// length and checksum checks reveal.
func (b *backupAPI) save(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.Query()) > 0 {
		httpapi.WriteError(w, string(fsm.CodeInvalidRequest), "this call takes no query parameters", nil)
		return
	}
	start := time.Now()
	bk, err := b.node.BeginBackup(r.Context())
	if err != nil {
		httpapi.WriteError(w, httpapi.CodeUnavailable, err.Error(), nil)
		return
	}
	defer func() {
		if err := bk.Close(); err != nil {
			b.log.Warn("end the backup's read transaction", "err", err)
		}
	}()
	if bk.KeyCheck == nil {
		// Recorded by the first node ready with this version; a backup
		// without it could be restored under any key.
		httpapi.WriteError(w, httpapi.CodeUnavailable, "the cluster key's check value is not recorded in the state yet; retry in a moment", nil)
		return
	}
	sw, err := snapfile.NewWriter(snapfile.Header{
		Index: bk.AppliedIndex, Term: bk.Term, Time: bk.LastTime, KeyCheck: bk.KeyCheck,
		StateSize: bk.Size, CreatedAt: b.now().UTC(), NodeID: b.node.ID(),
	})
	if err != nil {
		httpapi.WriteError(w, string(fsm.CodeInternal), err.Error(), nil)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(sw.Size(), 10))
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="exactonce-%d.snap"`, bk.AppliedIndex))
	w.WriteHeader(http.StatusOK)
	dw := &deadlineWriter{w: w, rc: http.NewResponseController(w), idle: snapshotWriteIdle}
	n, err := sw.WriteTo(dw, bk)
	if err != nil {
		b.log.Warn("backup cut short", "index", bk.AppliedIndex, "bytes", n, "of", sw.Size(), "err", err)
		return
	}
	b.log.Info("backup saved", "index", bk.AppliedIndex, "term", bk.Term, "bytes", n,
		"duration_ms", time.Since(start).Milliseconds(), "remote", r.RemoteAddr)
}

// deadlineWriter gives every write its own deadline of idle from now.
type deadlineWriter struct {
	w    io.Writer
	rc   *http.ResponseController
	idle time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if err := d.rc.SetWriteDeadline(time.Now().Add(d.idle)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return 0, fmt.Errorf("set write deadline: %w", err)
	}
	return d.w.Write(p)
}

// restoreLeftovers are the data dir entries that mean a node already holds
// state: --restore is for the first start only.
var restoreLeftovers = []string{stateFile, stateFile + ".unclean", "raft"}

// prepareRestore checks --restore before anything is opened: the data dir
// holds no state, the file is intact (read whole, checksum checked) and
// was saved under this node's cluster key. It returns the seed for
// cluster.Config.Seed, whose reader checks the checksum again as Raft's
// snapshot store receives it (the file could change in between), and a
// function closing the file. A bad file or setting is a *config.UsageError
// (exit 2), another key a *keyMismatchError (exit 3).
func prepareRestore(cfg *config.Config, keys *secure.Keys, log *slog.Logger) (*cluster.Seed, func(), error) {
	for _, name := range restoreLeftovers {
		path := filepath.Join(cfg.DataDir, name)
		if _, err := os.Lstat(path); err == nil {
			return nil, nil, &config.UsageError{Err: fmt.Errorf(
				"--restore is for the first start of a node with an empty data dir, but %s already holds state (%s): "+
					"start this node without --restore, or give --restore a new data dir", cfg.DataDir, path)}
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("--restore: check the data dir: %w", err)
		}
	}
	info, err := snapfile.Verify(cfg.Restore)
	if err != nil {
		return nil, nil, &config.UsageError{Err: fmt.Errorf("--restore %s: %w; nothing was changed", cfg.Restore, err)}
	}
	if !bytes.Equal(info.KeyCheck, keys.CheckValue()) {
		return nil, nil, &keyMismatchError{msg: fmt.Sprintf(
			"--restore %s: the backup was saved under the cluster key with check value %x, but this node's key from %s has check value %x. "+
				"Start the node with the key the backup's cluster used (check a key with `exactonce keygen --check-value FILE`). Nothing was changed",
			cfg.Restore, []byte(info.KeyCheck), keySource(cfg), keys.CheckValue())}
	}
	f, err := os.Open(cfg.Restore)
	if err != nil {
		return nil, nil, fmt.Errorf("--restore: %w", err)
	}
	sr, err := snapfile.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil || sr.Header().Index != info.Index || sr.Header().StateSize != info.StateSize {
		_ = f.Close()
		return nil, nil, fmt.Errorf("--restore %s: the file changed while it was read (%v)", cfg.Restore, err)
	}
	log.Info("restoring from a backup", "file", cfg.Restore, "index", info.Index, "term", info.Term,
		"fsm_time", time.UnixMilli(info.Time).UTC().Format(time.RFC3339Nano), "bytes", info.FileSize)
	return &cluster.Seed{Index: info.Index, State: sr}, func() { _ = f.Close() }, nil
}
