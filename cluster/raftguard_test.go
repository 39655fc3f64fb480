package cluster

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/hashicorp/raft"
)

// snapshotRecorder is a transport that records the snapshots it is asked
// to send and accepts them.
type snapshotRecorder struct {
	raft.Transport
	sent []uint64
}

func (s *snapshotRecorder) InstallSnapshot(_ raft.ServerID, _ raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, _ io.Reader) error {
	s.sent = append(s.sent, args.LastLogIndex)
	resp.Success = true
	return nil
}

// TestGuardWithholdsSnapshotAtOrBelowFollowerLastIndex: with a monotonic
// log store a follower that installs a snapshot at or below its own last
// index panics on the next commit (hashicorp/raft #697, monotonic form),
// so the leader's guard sends a snapshot only above the index the follower
// reports, asks for a newer snapshot otherwise, and sends as before when
// the follower cannot be asked.
func TestGuardWithholdsSnapshotAtOrBelowFollowerLastIndex(t *testing.T) {
	_, inmem := raft.NewInmemTransport("leader")
	rec := &snapshotRecorder{Transport: inmem}
	g := newRaftGuard(rec, slog.New(slog.NewTextHandler(io.Discard, nil)))
	followerLast, known := uint64(3750), true
	g.peerLastIndex = func(raft.ServerID) (uint64, bool) { return followerLast, known }
	send := func(index uint64) error {
		var resp raft.InstallSnapshotResponse
		return g.InstallSnapshot("f1", "f1", &raft.InstallSnapshotRequest{LastLogIndex: index}, &resp, bytes.NewReader(nil))
	}

	for _, index := range []uint64{3711, 3750} {
		if err := send(index); !errors.Is(err, errSnapshotWithheld) {
			t.Fatalf("snapshot at %d to a follower at %d: %v, want it withheld", index, followerLast, err)
		}
	}
	if len(rec.sent) != 0 {
		t.Fatalf("withheld snapshots reached the transport: %v", rec.sent)
	}
	select {
	case <-g.signal:
	default:
		t.Fatal("no newer snapshot asked for")
	}
	if got := g.maxNeed(); got != 3750 {
		t.Fatalf("the new snapshot must go above %d, guard asks above %d", followerLast, got)
	}

	if err := send(3751); err != nil {
		t.Fatalf("snapshot above the follower's last index: %v", err)
	}
	followerLast, known = 9000, false // the follower cannot be asked
	if err := send(3800); err != nil {
		t.Fatalf("snapshot to a follower that cannot be asked: %v", err)
	}
	if len(rec.sent) != 2 || rec.sent[0] != 3751 || rec.sent[1] != 3800 {
		t.Fatalf("sent snapshots %v, want [3751 3800]", rec.sent)
	}
}
