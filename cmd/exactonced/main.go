// Command exactonced is the ExactOnce server: one node of a Raft-replicated
// service for one-time actions (see SPEC.md). Every flag is also an
// environment variable EXACTONCE_<FLAG>; run with -h for the list.
// `exactonced healthcheck` probes a running node (the image's HEALTHCHECK);
// `exactonced compact` rewrites a stopped node's state file densely.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exactonce/exactonce/internal/buildinfo"
	"github.com/exactonce/exactonce/internal/config"
	"github.com/exactonce/exactonce/internal/logbuf"
	"github.com/exactonce/exactonce/internal/sdnotify"
)

func main() {
	restrictUmask()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal starts a graceful shutdown, a second one
		// gets the default behaviour: exit at once.
		<-ctx.Done()
		stop()
	}()
	raftMetrics, err := installRaftMetrics()
	if err != nil {
		fmt.Fprintf(os.Stderr, "exactonced: %v\n", err)
		os.Exit(1)
	}
	code := runWith(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, raftMetrics)
	stop()
	os.Exit(code)
}

// run is the whole server; it returns the process exit status: 0 after a
// graceful shutdown, 2 for bad or contradicting flags, 3 when the cluster
// key is not the one of the data dir or of the cluster (exitKeyMismatch),
// 1 for any other failure. `exactonced healthcheck ...` probes a running
// node instead (healthcheck), `exactonced compact ...` compacts a stopped
// node's state file (compact).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, getenv, stdout, stderr, nil)
}

// runWith is run serving raftMetrics, when not nil, on /metrics beside the
// node's own metrics (installRaftMetrics; only main installs them).
func runWith(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, raftMetrics prometheus.Gatherer) int {
	if len(args) > 0 && args[0] == healthcheckCommand {
		return healthcheck(ctx, args[1:], getenv, stdout, stderr)
	}
	if len(args) > 0 && args[0] == compactCommand {
		return compact(args[1:], getenv, stdout, stderr)
	}
	cfg, err := config.Parse(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if errors.Is(err, config.ErrVersion) {
			fmt.Fprintf(stdout, "exactonced %s\n", buildinfo.Get())
			return 0
		}
		fmt.Fprintf(stderr, "exactonced: %v\n", err)
		return 2
	}
	logOut := logbuf.New(stderr)
	logger, err := newLogger(cfg, logOut)
	if err != nil {
		fmt.Fprintf(stderr, "exactonced: %v\n", err)
		return 2
	}
	flushCtx, stopFlush := context.WithCancel(context.Background())
	flushed := make(chan struct{})
	go func() { logOut.Run(flushCtx); close(flushed) }()
	defer func() { stopFlush(); <-flushed }()
	notify, err := sdnotify.New(getenv(sdnotify.EnvSocket))
	if err != nil {
		// The node serves all the same; only the service manager's view of
		// its readiness is missing.
		logger.Warn("no readiness notifications", "err", err)
	}
	srv := &server{cfg: cfg, log: logger, stdout: stdout, notify: notify, raftMetrics: raftMetrics}
	if err := srv.run(ctx); err != nil {
		var km *keyMismatchError
		if errors.As(err, &km) {
			fmt.Fprintf(stderr, "exactonced: %v\n", err)
			return exitKeyMismatch
		}
		var ue *config.UsageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "exactonced: %v\n", err)
			return 2
		}
		srv.log.Error("exactonced failed", "err", err)
		return 1
	}
	return 0
}
