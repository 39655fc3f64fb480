package main

import (
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// TestSeriesRoundTrip: the CSV a run writes reads back as the same series
// and settings, and -plot-only draws a PNG from it.
func TestSeriesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	m := meta{Nodes: 2, Retention: "30s", Workers: 8, Payload: 100}
	series := []sample{
		{Elapsed: 0, Stored: 0, DataDir: 64 << 20, StateFile: 16 << 20, RSS: []int64{20 << 20, 21 << 20}},
		{Elapsed: 10 * time.Second, Created: 5000, Consumed: 4990, Errors: 1, Stored: 5000, Purged: 0, DataDir: 70 << 20, StateFile: 16 << 20, RSS: []int64{40 << 20, 41 << 20}},
		{Elapsed: 20 * time.Second, Created: 9000, Consumed: 8990, Errors: 1, Stored: -1, Purged: -1, DataDir: 71 << 20, StateFile: 32 << 20, RSS: []int64{42 << 20, 40 << 20}},
	}
	csvPath := filepath.Join(dir, "soak.csv")
	if err := writeCSV(csvPath, m, series); err != nil {
		t.Fatal(err)
	}
	gotMeta, got, err := readCSV(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	if gotMeta != m {
		t.Errorf("settings read back %+v, want %+v", gotMeta, m)
	}
	if !reflect.DeepEqual(got, series) {
		t.Errorf("series read back\n%+v\nwant\n%+v", got, series)
	}
	pngPath := filepath.Join(dir, "soak.png")
	if code := run(t.Context(), []string{"-plot-only", csvPath, "-png", pngPath}, os.Stdout, os.Stderr); code != 0 {
		t.Fatalf("-plot-only: exit %d", code)
	}
	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("plot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 600 || b.Dy() < 400 {
		t.Errorf("plot is %dx%d pixels, want at least 600x400", b.Dx(), b.Dy())
	}
}

// TestRSS: the resident memory of this process is read from /proc.
func TestRSS(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	if r := rss(os.Getpid()); r < 1<<20 {
		t.Errorf("rss of this process = %d bytes, want at least 1 MiB", r)
	}
	if r := rss(-1); r != 0 {
		t.Errorf("rss of no process = %d, want 0", r)
	}
}
