package cluster

import (
	"fmt"
	"path/filepath"

	"github.com/hashicorp/raft"
)

// durableSnapshots makes each new snapshot's directory durable before Raft
// relies on it. raft.FileSnapshotSink.Close fsyncs the snapshot's files,
// renames its directory into place and fsyncs the parent, but never the
// snapshot directory itself, so its names (meta.json, state.bin) were not
// durable: a power loss right after left an empty snapshot directory; Raft
// had compacted its log behind the snapshot, could read neither, and
// panicked at every start (`log not found`; the chaos harness's power-loss
// scenario with a compacted log, TestSnapshotSurvivesPowerLoss).
type durableSnapshots struct {
	raft.SnapshotStore
	// dir holds the snapshot directories (<raft dir>/snapshots).
	dir string
}

// Create implements raft.SnapshotStore.
func (s *durableSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &durableSink{SnapshotSink: sink, dir: filepath.Join(s.dir, sink.ID())}, nil
}

// durableSink fsyncs the snapshot's directory once Close has put it in
// place, before Close returns (and Raft compacts its log).
type durableSink struct {
	raft.SnapshotSink
	dir string
}

// Close implements raft.SnapshotSink.
func (s *durableSink) Close() error {
	if err := s.SnapshotSink.Close(); err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("cluster: snapshot %s: %w", s.dir, err)
	}
	return nil
}
