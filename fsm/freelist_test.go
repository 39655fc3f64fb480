package fsm

import (
	"github.com/hashicorp/raft"

	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// syncedFreelist reads the state file's current meta page (bbolt's layout:
// a 16-byte page header, then magic, version, page size, flags, the root
// bucket (16 bytes), the free list's page id, the high-water page id and
// the transaction id) and reports whether it names a free-list page.
func syncedFreelist(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := int(binary.LittleEndian.Uint32(b[16+8:]))
	var best, freelist uint64
	for _, off := range []int{0, pageSize} {
		m := b[off+16:]
		if txid := binary.LittleEndian.Uint64(m[48:]); txid >= best {
			best, freelist = txid, binary.LittleEndian.Uint64(m[32:])
		}
	}
	return freelist != ^uint64(0)
}

// TestCleanCloseKeepsTheFreeList: a running state file keeps no free list
// (a page write per commit saved), and a clean Close writes one, so that
// the next Open need not walk every page of the file to rebuild it.
func TestCleanCloseKeepsTheFreeList(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f := openFSM(t, path)
	f.ApplyBatch(randomLog(t, testSeed(t), 300))
	if syncedFreelist(t, path) {
		t.Fatal("a running state file holds a free list: every commit writes it")
	}
	want := hashOf(t, f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !syncedFreelist(t, path) {
		t.Fatal("a cleanly closed state file holds no free list: the next open walks every page")
	}
	g := openFSM(t, path)
	if hashOf(t, g) != want {
		t.Fatal("the state changed across the close")
	}
	g.ApplyBatch([]*raft.Log{entry(t, g.AppliedIndex()+1, noopCmd(g.LastTime()))})
	if syncedFreelist(t, path) {
		t.Fatal("the first commit after the open kept the free list")
	}
}
