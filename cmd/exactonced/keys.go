package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/config"
	"github.com/exactonce/exactonce/internal/secure"
)

// The cluster key is the cluster's root of trust: payloads are sealed and
// PINs hashed under keys derived from it, and a node running with another
// key would consume actions whose payloads it cannot open. Its check value
// (secure.Keys.CheckValue, which reveals nothing of the key) is therefore
// kept twice: in the data dir (keyCheckFile, compared before Raft opens, so
// a wrong key touches nothing) and in the replicated state
// (fsm.CmdRecordKeyCheck, compared once the node is ready, so a node whose
// data dir has no record yet, or a fresh node joining with a wrong key,
// stops too). docs/operations.md, "Keys", tells operators what to do.

// keyCheckFile holds, in the data dir, the hex check value of the cluster
// key the node's state was written with.
const keyCheckFile = "cluster-key.check"

// exitKeyMismatch is the exit status of a node whose cluster key does not
// match its data dir or its cluster: distinct from bad flags (2) and other
// failures (1), because restarting it as it is can never help.
const exitKeyMismatch = 3

// keyCheckSamples is how many stored actions the key must open before the
// node records its check value on a state that has none yet.
const keyCheckSamples = 16

// keyCheckRetry is the pause between attempts to record the check value
// while the cluster has no leader, and keyCheckWarn how long those attempts
// go on before each warning.
const (
	keyCheckRetry = 200 * time.Millisecond
	keyCheckWarn  = 30 * time.Second
)

// keyMismatchError reports a cluster key that is not the one the data dir
// or the cluster was written with; the process exits with exitKeyMismatch.
type keyMismatchError struct{ msg string }

func (e *keyMismatchError) Error() string { return e.msg }

// keySource names where the node's cluster key comes from, for messages.
func keySource(cfg *config.Config) string {
	if cfg.ClusterKeySource != "" {
		return cfg.ClusterKeySource
	}
	return filepath.Join(cfg.DataDir, secure.KeyFileName)
}

// loadClusterKey returns the cluster key and its derived keys: the explicit
// key (config) or, for a single node, the key file in the data dir
// (generated on first start). It refuses an explicit key that differs from a
// key file in the data dir, and a key whose check value differs from the
// one the data dir records, before anything else is opened.
func loadClusterKey(cfg *config.Config, log *slog.Logger) ([]byte, *secure.Keys, error) {
	keyPath := filepath.Join(cfg.DataDir, secure.KeyFileName)
	var key []byte
	if cfg.ClusterKey != "" {
		var err error
		if key, err = secure.ParseKey(cfg.ClusterKey); err != nil {
			return nil, nil, &config.UsageError{Err: fmt.Errorf("%s: %w", cfg.ClusterKeySource, err)}
		}
		stored, err := os.ReadFile(keyPath)
		switch {
		case err == nil:
			sk, err := secure.ParseKey(string(stored))
			if err != nil {
				return nil, nil, fmt.Errorf("read %s: %w", keyPath, err)
			}
			if !bytes.Equal(sk, key) {
				return nil, nil, &keyMismatchError{msg: fmt.Sprintf(
					"the cluster key from %s differs from the key kept in %s: this data dir was written with the key in that file. "+
						"Give every node the key in %s (for example: --cluster-key-file %s after moving it out of the data dir), "+
						"or, if %s is stale, check which key the other nodes use before deleting it. Nothing was changed",
					cfg.ClusterKeySource, keyPath, keyPath, keyPath, keyPath)}
			}
			log.Warn("the cluster key is also kept in the data dir; move it out (a stolen data dir then gives up no payloads)",
				"file", keyPath)
		case errors.Is(err, os.ErrNotExist):
		default:
			return nil, nil, fmt.Errorf("read %s: %w", keyPath, err)
		}
	} else {
		k, created, err := secure.LoadOrCreateKey(cfg.DataDir, "")
		if err != nil {
			return nil, nil, fmt.Errorf("cluster key: %w", err)
		}
		if created {
			log.Info("generated a new cluster key for this single node; a node of a multi-node cluster needs the cluster's key (--cluster-key-file)",
				"file", keyPath)
		}
		key = k
	}
	keys, err := secure.NewKeys(key)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster key: %w", err)
	}
	if err := checkDataDirKey(cfg.DataDir, keySource(cfg), keys); err != nil {
		return nil, nil, err
	}
	return key, keys, nil
}

// checkDataDirKey compares keys' check value with the one keyCheckFile
// records; a missing file passes (it is written once the replicated state
// agrees, see verifyClusterKey).
func checkDataDirKey(dataDir, source string, keys *secure.Keys) error {
	path := filepath.Join(dataDir, keyCheckFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	stored, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(stored) == 0 {
		return fmt.Errorf("%s is damaged (want the hex check value of the cluster key): restore it, or delete it to have it written again once the cluster's state agrees", path)
	}
	if got := keys.CheckValue(); !bytes.Equal(stored, got) {
		return &keyMismatchError{msg: fmt.Sprintf(
			"the cluster key from %s (check value %x) is not the key this data dir was written with: %s records check value %x. "+
				"Start the node with the cluster's key, the one the other nodes use (check with `exactonce keygen --check-value FILE`). "+
				"Nothing was opened or changed; with another key this node would consume actions whose payloads it cannot open",
			source, got, path, stored)}
	}
	return nil
}

// writeKeyCheckFile records keys' check value in the data dir.
func writeKeyCheckFile(dataDir string, keys *secure.Keys) error {
	if err := secure.WriteSecretFile(filepath.Join(dataDir, keyCheckFile), hex.EncodeToString(keys.CheckValue())+"\n"); err != nil {
		return fmt.Errorf("keep the key check value: %w", err)
	}
	return nil
}

// verifyClusterKey runs once the node is ready. It compares the node's key
// with the check value recorded in the replicated state, recording it first
// when the state has none (through node.Apply; a follower sees the leader's
// record arrive instead), and then keeps it in the data dir. A mismatch is a
// *keyMismatchError. It retries until ctx ends while no leader can record.
func (s *server) verifyClusterKey(ctx context.Context, node *cluster.Node, state *fsm.FSM) error {
	want := s.keys.CheckValue()
	path := filepath.Join(s.cfg.DataDir, keyCheckFile)
	mismatch := func(recorded []byte) error {
		return &keyMismatchError{msg: fmt.Sprintf(
			"the cluster key from %s (check value %x) is not the cluster's: its replicated state records check value %x. "+
				"Stop this node and start it with the key the other nodes use; until then it would consume actions whose payloads it cannot open",
			keySource(s.cfg), want, recorded)}
	}
	t := time.NewTicker(keyCheckRetry)
	defer t.Stop()
	started := time.Now()
	warned := started
	for {
		var recorded []byte
		var samples []*fsm.Action
		if err := state.View(func(v *fsm.View) error {
			recorded = v.KeyCheck()
			if recorded != nil {
				return nil
			}
			var err error
			samples, err = v.SampleActions(keyCheckSamples)
			return err
		}); err != nil {
			return fmt.Errorf("read the recorded key check value: %w", err)
		}
		if recorded != nil {
			if !bytes.Equal(recorded, want) {
				return mismatch(recorded)
			}
			break
		}
		// A state written before the record existed: the key must open
		// what is stored before it may vouch for itself.
		for _, a := range samples {
			if _, err := s.keys.OpenPayload(a.ID, a.SealedPayload); err != nil {
				return &keyMismatchError{msg: fmt.Sprintf(
					"the cluster key from %s does not open the payloads already stored (action %s): it is not the key this cluster was written with. "+
						"Start the node with the cluster's key", keySource(s.cfg), a.ID)}
			}
		}
		res, err := node.Apply(ctx, &fsm.Command{Type: fsm.CmdRecordKeyCheck, KeyCheck: &fsm.KeyCheck{Value: want}})
		switch {
		case err == nil && res.Code == fsm.CodeOK:
			if !bytes.Equal(res.KeyCheck, want) {
				return mismatch(res.KeyCheck)
			}
			s.log.Info("recorded the cluster key's check value in the replicated state")
		case err == nil && res.Code == fsm.CodeKeyMismatch:
			return mismatch(res.KeyCheck)
		case err == nil:
			return fmt.Errorf("record the key check value: %s %s", res.Code, res.Message)
		default:
			// No leader yet, or this node is a follower: the leader's own
			// record reaches the local state.
			if time.Since(warned) > keyCheckWarn {
				warned = time.Now()
				s.log.Warn("the cluster key is not verified against the cluster yet", "err", err,
					"waiting", time.Since(started).Round(time.Second).String())
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("verify the cluster key: %w", ctx.Err())
			case <-t.C:
			}
			continue
		}
		break
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := writeKeyCheckFile(s.cfg.DataDir, s.keys); err != nil {
			return err
		}
		s.log.Info("kept the cluster key's check value in the data dir", "file", path)
	}
	return nil
}

// tightenDataDir makes the data dir (the state, the Raft log, possibly
// keys) private to the process's user when it was handed one that group or
// others can enter, as a Docker named volume is; it warns when it cannot.
func tightenDataDir(dataDir string, log *slog.Logger) {
	st, err := os.Stat(dataDir)
	if err != nil || st.Mode().Perm()&0o077 == 0 {
		return
	}
	if err := os.Chmod(dataDir, 0o700); err != nil {
		log.Warn("the data dir is accessible by group or others; make it private (chmod 700)",
			"dir", dataDir, "mode", fmt.Sprintf("%04o", st.Mode().Perm()), "err", err)
		return
	}
	log.Info("made the data dir private to this user", "dir", dataDir, "was", fmt.Sprintf("%04o", st.Mode().Perm()))
}
