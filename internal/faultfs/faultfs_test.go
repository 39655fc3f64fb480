package faultfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// mountT mounts a fresh filesystem for a test, unmounted at the end. The
// tests need a real FUSE mount: they are skipped only where the machine
// has none.
func mountT(t *testing.T) *FS {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("no FUSE on this machine (%v): the fault filesystem cannot be mounted", err)
	}
	dir := t.TempDir()
	f, err := Mount(Options{Dir: filepath.Join(dir, "state"), Mountpoint: filepath.Join(dir, "mnt")})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.Unmount(ctx); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return f
}

func powerLoss(t *testing.T, f *FS) Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := f.PowerLoss(ctx)
	if err != nil {
		t.Fatalf("power loss: %v", err)
	}
	return r
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", dir, err)
	}
}

// writeFile writes data to a new or truncated file, fsyncing it when sync.
func writeFile(t *testing.T, path string, data []byte, sync bool) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.Write(data); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	if sync {
		if err := fh.Sync(); err != nil {
			t.Fatalf("fsync %s: %v", path, err)
		}
	}
}

func appendFile(t *testing.T, path string, data []byte, sync bool) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.Write(data); err != nil {
		t.Fatalf("append %s: %v", path, err)
	}
	if sync {
		if err := fh.Sync(); err != nil {
			t.Fatalf("fsync %s: %v", path, err)
		}
	}
}

func wantContent(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s holds %q, want %q", path, got, want)
	}
}

func wantMissing(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s: want it gone after the power loss, stat says %v", path, err)
	}
}

func TestUnsyncedWritesAreLostOnPowerLoss(t *testing.T) {
	f := mountT(t)
	mnt := f.Mountpoint()
	kept := filepath.Join(mnt, "kept")
	writeFile(t, kept, []byte("synced"), true)
	syncDir(t, mnt)
	appendFile(t, kept, []byte(" and more"), false)
	never := filepath.Join(mnt, "never-synced")
	writeFile(t, never, []byte("lost"), false)
	wantContent(t, kept, []byte("synced and more")) // readable before the power loss

	r := powerLoss(t, f)
	wantContent(t, kept, []byte("synced"))
	wantMissing(t, never)
	if r.Files != 2 || r.Bytes != int64(len(" and more")+len("lost")) || r.Dirs != 1 {
		t.Errorf("report %+v, want 2 files, %d bytes, 1 dir", r, len(" and more")+len("lost"))
	}
}

func TestSyncedWritesSurvivePowerLoss(t *testing.T) {
	f := mountT(t)
	mnt := f.Mountpoint()
	sub := filepath.Join(mnt, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	p := filepath.Join(sub, "log")
	writeFile(t, p, []byte("one"), true)
	syncDir(t, sub)
	appendFile(t, p, []byte(" two"), true)

	powerLoss(t, f)
	wantContent(t, p, []byte("one two"))
	// A second power loss keeps what the first left (it is durable now),
	// and drops a later unsynced write to that file again.
	appendFile(t, p, []byte(" three"), false)
	powerLoss(t, f)
	wantContent(t, p, []byte("one two"))
}

func TestFileFsyncWithoutDirFsyncLosesTheName(t *testing.T) {
	f := mountT(t)
	p := filepath.Join(f.Mountpoint(), "new")
	writeFile(t, p, []byte("data"), true) // the file, not its name
	powerLoss(t, f)
	wantMissing(t, p)
}

func TestRenameWithoutDirFsyncIsUndone(t *testing.T) {
	f := mountT(t)
	mnt := f.Mountpoint()
	cur, tmp := filepath.Join(mnt, "current"), filepath.Join(mnt, "current.tmp")
	writeFile(t, cur, []byte("v1"), true)
	syncDir(t, mnt)
	// The atomic-replace pattern without its last step.
	writeFile(t, tmp, []byte("v2"), true)
	if err := os.Rename(tmp, cur); err != nil {
		t.Fatal(err)
	}
	wantContent(t, cur, []byte("v2"))
	powerLoss(t, f)
	wantContent(t, cur, []byte("v1"))
	wantMissing(t, tmp)

	// With the directory fsync the rename holds.
	writeFile(t, tmp, []byte("v2"), true)
	if err := os.Rename(tmp, cur); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	powerLoss(t, f)
	wantContent(t, cur, []byte("v2"))
	wantMissing(t, tmp)
}

func TestRenameAcrossDirsIsDurableWithEitherDir(t *testing.T) {
	f := mountT(t)
	mnt := f.Mountpoint()
	a, b := filepath.Join(mnt, "a"), filepath.Join(mnt, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	syncDir(t, mnt)
	writeFile(t, filepath.Join(a, "x"), []byte("x"), true)
	syncDir(t, a)
	if err := os.Rename(filepath.Join(a, "x"), filepath.Join(b, "x")); err != nil {
		t.Fatal(err)
	}
	syncDir(t, b) // only the target: the source's side comes with it
	powerLoss(t, f)
	wantContent(t, filepath.Join(b, "x"), []byte("x"))
	wantMissing(t, filepath.Join(a, "x"))
}

func TestUnlinkWithoutDirFsyncIsUndone(t *testing.T) {
	f := mountT(t)
	mnt := f.Mountpoint()
	p := filepath.Join(mnt, "segment")
	writeFile(t, p, []byte("entries"), true)
	syncDir(t, mnt)
	powerLoss(t, f) // now a file that was on disk at mount time
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	powerLoss(t, f)
	wantContent(t, p, []byte("entries"))

	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	syncDir(t, mnt)
	powerLoss(t, f)
	wantMissing(t, p)
}

func TestUnsyncedTruncationIsUndone(t *testing.T) {
	f := mountT(t)
	mnt := f.Mountpoint()
	p := filepath.Join(mnt, "db")
	writeFile(t, p, []byte("0123456789"), true)
	syncDir(t, mnt)
	if err := os.Truncate(p, 3); err != nil {
		t.Fatal(err)
	}
	powerLoss(t, f)
	wantContent(t, p, []byte("0123456789"))
}

// TestRandomWritesMatchLastSync writes, overwrites, truncates and
// extends a file at random, fsyncing now and then; after a power loss the
// file must hold exactly what it held at its last fsync.
func TestRandomWritesMatchLastSync(t *testing.T) {
	f := mountT(t)
	mnt := f.Mountpoint()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	p := filepath.Join(mnt, "random")
	writeFile(t, p, nil, true)
	syncDir(t, mnt)
	for round := range 4 {
		fh, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		model, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var synced []byte
		synced = append(synced, model...)
		for range 200 {
			switch op := rng.IntN(10); {
			case op < 6:
				off := rng.IntN(len(model) + 4096)
				data := make([]byte, 1+rng.IntN(3000))
				for i := range data {
					data[i] = byte(rng.Uint32())
				}
				if _, err := fh.WriteAt(data, int64(off)); err != nil {
					t.Fatal(err)
				}
				if end := off + len(data); end > len(model) {
					model = append(model, make([]byte, end-len(model))...)
				}
				copy(model[off:], data)
			case op < 8:
				size := rng.IntN(len(model) + 2048)
				if err := fh.Truncate(int64(size)); err != nil {
					t.Fatal(err)
				}
				if size < len(model) {
					model = model[:size]
				} else {
					model = append(model, make([]byte, size-len(model))...)
				}
			default:
				if err := fh.Sync(); err != nil {
					t.Fatal(err)
				}
				synced = append(synced[:0], model...)
			}
		}
		if err := fh.Close(); err != nil {
			t.Fatal(err)
		}
		wantContent(t, p, model)
		powerLoss(t, f)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, synced) {
			t.Fatalf("seed %d round %d: after the power loss the file (%d bytes) differs from its last synced content (%d bytes)", seed, round, len(got), len(synced))
		}
	}
}

func TestFullDiskAnswersENOSPCUntilSpaceReturns(t *testing.T) {
	f := mountT(t)
	p := filepath.Join(f.Mountpoint(), "log")
	writeFile(t, p, []byte("0123456789"), true)
	f.SetSpace(4)
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	// The filesystem writes what fits; the kernel may or may not report
	// the short count before the ENOSPC.
	if n, err := fh.WriteAt([]byte("abcdefgh"), 10); !errors.Is(err, syscall.ENOSPC) || n > 4 {
		t.Fatalf("write past the space left: n=%d err=%v, want at most 4 bytes, then ENOSPC", n, err)
	}
	if _, err := fh.WriteAt([]byte("x"), 14); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write on a full disk: %v, want ENOSPC", err)
	}
	if err := fh.Truncate(100); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("growing truncate on a full disk: %v, want ENOSPC", err)
	}
	// Overwriting allocated bytes needs no space.
	if _, err := fh.WriteAt([]byte("AB"), 0); err != nil {
		t.Fatalf("overwrite on a full disk: %v", err)
	}
	f.FreeSpace()
	if _, err := fh.WriteAt([]byte("more"), 14); err != nil {
		t.Fatalf("write after space returned: %v", err)
	}
	wantContent(t, p, []byte("AB23456789abcdmore"))
	if s := f.Stats(); s.NoSpaceWrites < 2 {
		t.Errorf("stats count %d ENOSPC answers, want at least 2", s.NoSpaceWrites)
	}
}

func TestFsyncEIOOnce(t *testing.T) {
	f := mountT(t)
	mnt := f.Mountpoint()
	p := filepath.Join(mnt, "wal")
	writeFile(t, p, []byte("durable"), true)
	syncDir(t, mnt)
	f.FailFsync(Once)
	fh, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write([]byte(" lost")); err != nil {
		t.Fatal(err)
	}
	if err := fh.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync: %v, want EIO", err)
	}
	// The fsyncgate lesson: the next fsync succeeds, yet the write it
	// followed never reached the disk.
	if err := fh.Sync(); err != nil {
		t.Fatalf("second fsync: %v, want success", err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	wantContent(t, p, []byte("durable lost"))
	powerLoss(t, f)
	wantContent(t, p, []byte("durable"))
}

func TestFsyncEIOAlwaysUntilHealed(t *testing.T) {
	f := mountT(t)
	mnt := f.Mountpoint()
	p := filepath.Join(mnt, "wal")
	writeFile(t, p, []byte("x"), true)
	f.FailFsync(Always)
	for i := range 3 {
		if err := syncFile(p); !errors.Is(err, syscall.EIO) {
			t.Fatalf("fsync %d: %v, want EIO", i, err)
		}
	}
	d, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("directory fsync: %v, want EIO", err)
	}
	f.Heal()
	if err := syncFile(p); err != nil {
		t.Fatalf("fsync after healing: %v", err)
	}
	if s := f.Stats(); s.FailedFsyncs != 4 {
		t.Errorf("stats count %d failed fsyncs, want 4", s.FailedFsyncs)
	}
}

func syncFile(p string) error {
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer fh.Close()
	return fh.Sync()
}

func TestWriteEIOOnceAndAlways(t *testing.T) {
	f := mountT(t)
	p := filepath.Join(f.Mountpoint(), "f")
	writeFile(t, p, []byte("abc"), true)
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	f.FailWrites(Once)
	if _, err := fh.WriteAt([]byte("X"), 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("write: %v, want EIO", err)
	}
	if _, err := fh.WriteAt([]byte("Y"), 1); err != nil {
		t.Fatalf("write after a single failure: %v", err)
	}
	f.FailWrites(Always)
	for i := range 3 {
		if _, err := fh.WriteAt([]byte("Z"), 2); !errors.Is(err, syscall.EIO) {
			t.Fatalf("write %d: %v, want EIO", i, err)
		}
	}
	f.Heal()
	wantContent(t, p, []byte("aYc"))
}

func TestSlowFsyncTakesAtLeastTheDelay(t *testing.T) {
	f := mountT(t)
	mnt := f.Mountpoint()
	p := filepath.Join(mnt, "f")
	writeFile(t, p, []byte("abc"), true)
	const delay = 150 * time.Millisecond
	f.SetFsyncDelay(delay)
	start := time.Now()
	if err := syncFile(p); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < delay {
		t.Fatalf("fsync took %v, want at least %v", took, delay)
	}
	start = time.Now()
	syncDir(t, mnt)
	if took := time.Since(start); took < delay {
		t.Fatalf("directory fsync took %v, want at least %v", took, delay)
	}
	f.SetFsyncDelay(0)
	if s := f.Stats(); s.DelayedFsyncs != 2 {
		t.Errorf("stats count %d delayed fsyncs, want 2", s.DelayedFsyncs)
	}
}

func TestSyncAllMakesEverythingDurable(t *testing.T) {
	f := mountT(t)
	p := filepath.Join(f.Mountpoint(), "f")
	writeFile(t, p, []byte("abc"), false)
	if err := f.SyncAll(); err != nil {
		t.Fatal(err)
	}
	powerLoss(t, f)
	wantContent(t, p, []byte("abc"))
}

func TestSpansMerge(t *testing.T) {
	var s spans
	for _, r := range []span{{10, 20}, {30, 40}, {0, 5}, {5, 10}, {18, 31}, {100, 101}, {50, 60}} {
		s = s.add(r.off, r.end)
	}
	want := spans{{0, 40}, {50, 60}, {100, 101}}
	if len(s) != len(want) {
		t.Fatalf("spans %v, want %v", s, want)
	}
	for i := range want {
		if s[i] != want[i] {
			t.Fatalf("spans %v, want %v", s, want)
		}
	}
	if s.bytes() != 51 {
		t.Fatalf("bytes %d, want 51", s.bytes())
	}
}

// TestPowerLossWithACopyInAnotherMountNamespace: a node started by `ip
// netns exec` runs in a mount namespace of its own (a slave copy of the
// mounts, kept while it runs); the power loss of another node's disk must
// still happen, and its files be seen afresh.
func TestPowerLossWithACopyInAnotherMountNamespace(t *testing.T) {
	f := mountT(t)
	if os.Geteuid() != 0 {
		t.Skip("mount namespaces need root")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare(1) to make a mount namespace")
	}
	cmd := exec.Command(unshare, "--mount", "--propagation", "slave", "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// Wait until the namespace exists (its mounts differ from ours).
	deadline := time.Now().Add(5 * time.Second)
	for {
		self, err1 := os.Readlink("/proc/self/ns/mnt")
		other, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid))
		if err1 == nil && err2 == nil && self != other {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare did not make a mount namespace")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p := filepath.Join(f.Mountpoint(), "f")
	writeFile(t, p, []byte("x"), false)
	powerLoss(t, f)
	wantMissing(t, p)
}

// TestPowerLossWaitsForOpenFiles: a power loss of a disk still in use is
// refused once ctx ends (the harness kills the node first).
func TestPowerLossWaitsForOpenFiles(t *testing.T) {
	f := mountT(t)
	fh, err := os.Create(filepath.Join(f.Mountpoint(), "open"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := f.PowerLoss(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("power loss with an open file: %v, want the deadline", err)
	}
	fh.Close()
	powerLoss(t, f)
}

// TestPowerLossShowsNoStaleAttributes: a file the kernel has seen with
// one size is seen with its durable size right after the power loss.
func TestPowerLossShowsNoStaleAttributes(t *testing.T) {
	f := mountT(t)
	mnt := f.Mountpoint()
	p := filepath.Join(mnt, "f")
	writeFile(t, p, []byte("short"), true)
	syncDir(t, mnt)
	appendFile(t, p, bytes.Repeat([]byte("x"), 10000), false)
	if st, err := os.Stat(p); err != nil || st.Size() != 10005 {
		t.Fatalf("stat before: %v %v", st, err)
	}
	powerLoss(t, f)
	st, err := os.Stat(p)
	if err != nil || st.Size() != 5 {
		t.Fatalf("stat after the power loss: size %d (%v), want 5", st.Size(), err)
	}
	wantContent(t, p, []byte("short"))
	// A name created before and lost is free again.
	q := filepath.Join(mnt, "new")
	writeFile(t, q, []byte("n"), false)
	powerLoss(t, f)
	if fh, err := os.OpenFile(q, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err != nil {
		t.Fatalf("create a name lost in the power loss: %v", err)
	} else {
		fh.Close()
	}
}
