package fsm

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// mappedRSS returns the resident kilobytes of this process's mappings of
// path, from /proc/self/smaps.
func mappedRSS(t *testing.T, path string) int {
	t.Helper()
	fh, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	defer fh.Close()
	total, in := 0, false
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = len(fields) >= 6 && fields[5] == path
			continue
		}
		if in && len(fields) >= 2 && fields[0] == "Rss:" {
			kb, err := strconv.Atoi(fields[1])
			if err != nil {
				t.Fatal(err)
			}
			total += kb
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return total
}

// TestReleaseMappedMemory: after every page of the state file was read
// through the mapping, ReleaseMappedMemory returns them (the mapping's RSS
// falls to almost nothing) and the state reads back unchanged.
func TestReleaseMappedMemory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f := openFSM(t, path)
	logs := withoutRetention(t, randomLog(t, testSeed(t), 3000))
	f.ApplyBatch(logs)
	want := hashOf(t, f) // reads every page through the mapping
	before := mappedRSS(t, path)
	if before < 256 {
		t.Fatalf("the state file's mapping holds only %d KiB after a full read; the test needs more data", before)
	}
	if err := f.ReleaseMappedMemory(); err != nil {
		t.Fatal(err)
	}
	after := mappedRSS(t, path)
	t.Logf("mapping RSS %d KiB before, %d KiB after", before, after)
	if after > before/10 {
		t.Fatalf("mapping RSS %d KiB after release, %d KiB before", after, before)
	}
	if got := hashOf(t, f); got != want {
		t.Fatal("state differs after releasing the mapping")
	}
	// Writes go on as before.
	more := withoutRetention(t, randomLog(t, testSeed(t)+1, 3100)[3000:])
	f.ApplyBatch(more)
	if f.AppliedIndex() != 3100 {
		t.Fatalf("applied %d after release, want 3100", f.AppliedIndex())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.ReleaseMappedMemory(); err != ErrClosed {
		t.Fatalf("release after close: %v, want %v", err, ErrClosed)
	}
}

// TestTrimMappedMemoryKeepsPagesWithinBudget: a trim under the budget keeps
// the state file mapped (no fault on the next read); over it, the trim
// releases the mapping like ReleaseMappedMemory.
func TestTrimMappedMemoryKeepsPagesWithinBudget(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(Options{Path: path, NoSync: true, InitialMmapSize: 1 << 24, MappedBudget: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.ApplyBatch(withoutRetention(t, randomLog(t, testSeed(t), 3000)))
	want := hashOf(t, f)
	before := mappedRSS(t, path)
	if before < 256 {
		t.Fatalf("the state file's mapping holds only %d KiB after a full read; the test needs more data", before)
	}
	released, err := f.TrimMappedMemory()
	if err != nil || released {
		t.Fatalf("trim within budget: released %v, err %v; want neither", released, err)
	}
	if kept := mappedRSS(t, path); kept < before*9/10 {
		t.Fatalf("mapping RSS %d KiB after a trim within budget, %d KiB before", kept, before)
	}

	// A budget below what is resident (the test binary alone maps more
	// than a page) releases.
	f.opts.MappedBudget = 1
	released, err = f.TrimMappedMemory()
	if err != nil || !released {
		t.Fatalf("trim over budget: released %v, err %v; want a release", released, err)
	}
	if after := mappedRSS(t, path); after > before/10 {
		t.Fatalf("mapping RSS %d KiB after a trim over budget, %d KiB before", after, before)
	}
	if got := hashOf(t, f); got != want {
		t.Fatal("state differs after trimming the mapping")
	}
}
