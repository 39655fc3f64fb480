package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// start opens storage and transport, guards the FSM against a newer
// snapshot, starts Raft, bootstraps when called for, then starts the
// background goroutines (leadership observer, gossip).
func (n *Node) start(ctx context.Context, trans raft.Transport) error {
	cfg := n.cfg
	dir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cluster: create raft dir: %w", err)
	}
	hlog := newHCLogger(n.log)
	store, err := openRaftStore(dir, cfg.NoSync, hlog.Named("raft-store"),
		walObservers{fsync: n.metrics.logFsync, collector: n.metrics.wal})
	if err != nil {
		return fmt.Errorf("cluster: open raft log store: %w", err)
	}
	n.store = store
	retain := cfg.SnapshotsRetain
	if retain <= 0 {
		retain = DefaultSnapshotsRetain
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, retain, hlog.Named("snapshot"))
	if err != nil {
		return fmt.Errorf("cluster: open snapshot store: %w", err)
	}
	n.snaps = snaps
	if !cfg.NoSync {
		n.snaps = &durableSnapshots{SnapshotStore: snaps, dir: filepath.Join(dir, "snapshots")}
	}
	// raft/, raft/wal/ and raft/snapshots/ are durable names only once
	// their parent directories are fsynced: without this a power loss
	// after the first start could take the whole log away, and the node
	// came back empty (the chaos harness's power-loss scenario;
	// TestRaftLogSurvivesPowerLoss).
	for _, d := range []string{dir, cfg.DataDir} {
		if cfg.NoSync {
			break
		}
		if err := syncDir(d); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}

	if err := n.listen(); err != nil {
		return err
	}
	if trans == nil {
		trans = n.newTransport(hlog)
	}
	n.transport = trans
	n.guard = newRaftGuard(trans, n.log)
	n.guard.peerLastIndex = n.peerLastIndex

	rc := n.raftConfig(hlog)
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("cluster: raft config: %w", err)
	}

	existing, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		return fmt.Errorf("cluster: check existing raft state: %w", err)
	}
	if cfg.Seed != nil {
		if err := n.seed(existing, trans); err != nil {
			return err
		}
		existing = true
	}
	if !existing && n.sm.AppliedIndex() > 0 {
		// The FSM would skip the new log's first entries as "already
		// applied": refuse rather than silently diverge.
		return fmt.Errorf("cluster: state machine has applied index %d but the raft log in %s is empty; remove the state file or restore the raft directory", n.sm.AppliedIndex(), dir)
	}
	if err := n.restoreNewerSnapshot(); err != nil {
		return err
	}
	if cfg.Seed != nil && n.sm.AppliedIndex() != cfg.Seed.Index {
		return fmt.Errorf("cluster: seed: the restored state has applied index %d, the seed says %d", n.sm.AppliedIndex(), cfg.Seed.Index)
	}
	n.hasState.Store(existing)

	var logStore raft.LogStore = store
	if cfg.wrapLog != nil {
		logStore = cfg.wrapLog(store)
	}
	n.plog, err = newParallelLog(logStore, n.logEarly, n.logWriteFailed)
	if err != nil {
		return err
	}
	n.guard.commitCap = n.plog.Durable
	logs, err := newRecentLog(n.plog)
	if err != nil {
		return err
	}
	r, err := raft.NewRaft(rc, gatedFSM{stateMachine: n.sm, log: n.plog, metrics: n.metrics}, logs, store, n.snaps, n.guard.raftTransport())
	if err != nil {
		return fmt.Errorf("cluster: start raft: %w", err)
	}
	n.raft = r
	r.RegisterObserver(n.leaderObserver())
	n.guard.raft.Store(r)
	n.rpc = n.startRPC(n.mux.rpc)

	n.wg.Add(2)
	go n.observeLeadership()
	go n.breakSnapshotLivelocks()

	if !existing && cfg.BootstrapExpect <= 1 && len(cfg.Join) == 0 {
		if err := n.bootstrap([]raft.Server{{Suffrage: raft.Voter, ID: n.nodeID, Address: trans.LocalAddr()}}); err != nil {
			n.abortStart()
			return err
		}
	}

	if cfg.GossipAddr != "" {
		if err := n.startGossip(); err != nil {
			n.abortStart()
			return err
		}
	}
	_ = ctx // Open does not block on the network; WaitLeader does.
	return nil
}

// logEarly reports whether a Raft log write may return before it is
// durable (parallelLog): only the leader's own. Raft's main goroutine,
// which issues every StoreLogs, is also the one that changes the state, so
// the answer matches the caller.
func (n *Node) logEarly() bool {
	r := n.guard.raft.Load()
	return r != nil && r.State() == raft.Leader
}

// logWriteFailed ends the process: Raft was told a leader write succeeded
// that did not (disk full, I/O error), and the node cannot tell which of
// its entries are on disk. A restart reads the log as it is.
func (n *Node) logWriteFailed(err error) {
	n.log.Error("raft log write failed; stopping", "err", err)
	panic(err)
}

// abortStart stops what start already started (Raft, gossip, goroutines)
// when a later step fails. The caller closes the stores.
func (n *Node) abortStart() {
	n.cancel()
	n.rpc.close()
	if err := n.raft.Shutdown().Error(); err != nil {
		n.log.Warn("raft shutdown after failed start", "err", err)
	}
	if n.ml != nil {
		if err := n.ml.Shutdown(); err != nil {
			n.log.Warn("gossip shutdown after failed start", "err", err)
		}
	}
	n.wg.Wait()
}

// raftConfig builds the Raft configuration from the node config.
func (n *Node) raftConfig(hlog *hcLogger) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = n.nodeID
	rc.Logger = hlog.Named("raft")
	rc.NotifyCh = n.notifyCh
	// The FSM is persistent: its state file already holds everything up to
	// its applied index (>= the newest snapshot's index, see
	// restoreNewerSnapshot), and it skips entries it already has.
	rc.NoSnapshotRestoreOnStart = true
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = maxAppendEntries
	// A follower learns the new commit index only with the leader's next
	// AppendEntries, which an idle leader sends after CommitTimeout
	// (randomized up to twice it). A linearizable read on a follower that
	// has not caught up within 1 ms goes to the leader instead
	// (ReadBarrierWithin), so a short timeout only saves that detour (about
	// 1.5 ms) for reads 10-100 ms after a write on an idle follower, while
	// 5 ms cost an idle three-node cluster three times the CPU of 50 ms
	// (an empty AppendEntries per follower every 5-10 ms). See DESIGN.md,
	// "Commit timeout".
	rc.CommitTimeout = commitTimeout
	if d := n.cfg.HeartbeatTimeout; d > 0 {
		rc.HeartbeatTimeout = d
	}
	if d := n.cfg.ElectionTimeout; d > 0 {
		rc.ElectionTimeout = d
	}
	if rc.ElectionTimeout < rc.HeartbeatTimeout {
		rc.ElectionTimeout = rc.HeartbeatTimeout
	}
	if rc.LeaderLeaseTimeout > rc.HeartbeatTimeout {
		rc.LeaderLeaseTimeout = rc.HeartbeatTimeout
	}
	if n.cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	}
	if n.cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = n.cfg.SnapshotInterval
	}
	if n.cfg.TrailingLogs > 0 {
		rc.TrailingLogs = n.cfg.TrailingLogs
	}
	return rc
}

// listen binds the internal port (Raft and the cluster service).
func (n *Node) listen() error {
	if n.cfg.RaftAddr == "" {
		return errors.New("cluster: RaftAddr (the internal address) is empty")
	}
	adv, err := net.ResolveTCPAddr("tcp", n.cfg.RaftAdvertise)
	if err != nil {
		return fmt.Errorf("cluster: resolve the internal advertise address %q: %w", n.cfg.RaftAdvertise, err)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		return fmt.Errorf("cluster: the internal advertise address %q is not dialable; set RaftAdvertise", n.cfg.RaftAdvertise)
	}
	m, err := listenInternal(n.cfg.RaftAddr, adv, n.peer, n.log.With("component", "internal-port"))
	if err != nil {
		return err
	}
	if adv.Port == 0 {
		// Port 0 (tests): peers dial the port actually bound.
		bound := m.Addr().(*net.TCPAddr)
		adv = &net.TCPAddr{IP: adv.IP, Port: bound.Port, Zone: adv.Zone}
		m.raft.addr, m.rpc.addr = adv, adv
	}
	n.mux = m
	return nil
}

// newTransport creates the Raft transport over the internal port.
func (n *Node) newTransport(hlog *hcLogger) raft.Transport {
	stream := &raftStream{connQueue: n.mux.raft, peer: n.peer,
		idAt: func(a raft.ServerAddress) string { return n.idAtRaftAddr(string(a)) }}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hlog.Named("raft-net"),
	})
}

// restoreNewerSnapshot guards NoSnapshotRestoreOnStart: when the FSM's
// applied index is below the newest snapshot's (its state file was lost or
// replaced), Raft would never replay the entries the snapshot covers, so
// the snapshot is restored into the FSM before Raft starts.
func (n *Node) restoreNewerSnapshot() error {
	list, err := n.snaps.List()
	if err != nil {
		return fmt.Errorf("cluster: list snapshots: %w", err)
	}
	if len(list) == 0 || list[0].Index <= n.sm.AppliedIndex() {
		return nil
	}
	meta := list[0]
	n.log.Warn("state machine is behind the newest snapshot; restoring it",
		"applied", n.sm.AppliedIndex(), "snapshot", meta.ID, "snapshotIndex", meta.Index)
	_, rc, err := n.snaps.Open(meta.ID)
	if err != nil {
		return fmt.Errorf("cluster: open snapshot %s: %w", meta.ID, err)
	}
	if err := n.sm.Restore(rc); err != nil {
		return fmt.Errorf("cluster: restore snapshot %s into the state machine: %w", meta.ID, err)
	}
	if got := n.sm.AppliedIndex(); got < meta.Index {
		return fmt.Errorf("cluster: state machine applied index %d after restoring snapshot at %d", got, meta.Index)
	}
	return nil
}

// bootstrap writes the initial configuration. servers is sorted by id so
// every node that bootstraps the same member set writes identical bytes.
func (n *Node) bootstrap(servers []raft.Server) error {
	servers = sortServers(servers)
	n.log.Info("bootstrapping cluster", "servers", len(servers))
	if err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		if errors.Is(err, raft.ErrCantBootstrap) {
			// Raft found state after all: never bootstrap twice.
			n.hasState.Store(true)
			return nil
		}
		return fmt.Errorf("cluster: bootstrap: %w", err)
	}
	n.hasState.Store(true)
	return nil
}

// sortServers returns a copy of servers sorted by id.
func sortServers(servers []raft.Server) []raft.Server {
	out := slices.Clone(servers)
	slices.SortFunc(out, func(a, b raft.Server) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}

// syncDir fsyncs a directory, so that the names in it are durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s for fsync: %w", dir, err)
	}
	serr := f.Sync()
	if cerr := f.Close(); serr == nil {
		serr = cerr
	}
	if serr != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, serr)
	}
	return nil
}
