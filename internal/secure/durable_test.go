package secure

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/exactonce/exactonce/internal/faultfs"
)

// TestWriteSecretFileSurvivesPowerLoss: a secret file (the node id, the
// cluster key, its check value) written just before a power loss is
// whole afterwards. Without the fsyncs the name survived a later fsync of
// the directory but the content did not: the node found an empty node-id
// file and refused to start (the chaos harness's power-loss scenario).
func TestWriteSecretFileSurvivesPowerLoss(t *testing.T) {
	if err := faultfs.Available(); err != nil {
		t.Skipf("no FUSE on this machine (%v): the power loss cannot be simulated", err)
	}
	dir := t.TempDir()
	fs, err := faultfs.Mount(faultfs.Options{Dir: filepath.Join(dir, "state"), Mountpoint: filepath.Join(dir, "mnt")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	defer func() {
		if err := fs.Unmount(ctx); err != nil {
			t.Errorf("unmount: %v", err)
		}
	}()
	path := filepath.Join(fs.Mountpoint(), "node-id")
	if err := WriteSecretFile(path, "node1\n"); err != nil {
		t.Fatal(err)
	}
	// Another writer in the data dir fsyncs the directory (the state
	// file's open marker does, moments after the node id is written).
	d, err := os.Open(fs.Mountpoint())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := fs.PowerLoss(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("after a power loss: %v", err)
	}
	if string(got) != "node1\n" {
		t.Fatalf("after a power loss the file holds %q, want %q", got, "node1\n")
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("the temporary file survived: %v", err)
	}
}
