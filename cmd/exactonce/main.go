// Command exactonce is the ExactOnce command-line client, built on the
// public Go SDK (package client). It prints the server's answer on stdout
// (pretty JSON, or text tables with -o table) and exits 0, or prints the
// typed error code and message (and the error body) on stderr and exits
// with a status that tells usage errors (2), no definite answer (3), API
// errors (4) and partly failed CSV batches (5) apart (exit.go).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
