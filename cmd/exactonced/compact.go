package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/config"
)

// compactCommand rewrites a stopped node's state file densely:
// `exactonced compact --data-dir DIR` (docs/operations.md, "Compacting the
// state file").
const compactCommand = "compact"

// compactLockWait is how long compact waits for the state file's lock
// before it concludes that a node holds it.
const compactLockWait = time.Second

// compact runs the compact subcommand and returns the exit status: 0 done,
// 1 failed (the node runs, or the copy did not check out; the original is
// kept), 2 usage error.
func compact(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("exactonced compact", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := "./data"
	if getenv != nil {
		if v := strings.TrimSpace(getenv(config.EnvName("data-dir"))); v != "" {
			def = v
		}
	}
	dataDir := fs.String("data-dir", def, "data dir of the stopped node (default: EXACTONCE_DATA_DIR, else ./data)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: exactonced compact [--data-dir DIR]\n\nWith the node stopped, rewrites <data-dir>/%s densely so that the space retention freed goes back to the file system; checks the copy against the original before replacing it.\n\n", stateFile)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "exactonced compact: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if strings.TrimSpace(*dataDir) == "" {
		fmt.Fprintln(stderr, "exactonced compact: --data-dir must not be empty")
		return 2
	}
	path := filepath.Join(*dataDir, stateFile)
	res, err := fsm.Compact(path, compactLockWait)
	if err != nil {
		fmt.Fprintf(stderr, "exactonced compact: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "compacted %s: %.1f MiB -> %.1f MiB (applied index %d, state hash checked)\n",
		path, float64(res.SizeBefore)/(1<<20), float64(res.SizeAfter)/(1<<20), res.AppliedIndex)
	return 0
}
