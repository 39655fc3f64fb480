// Command exactonce is the ExactOnce command-line client. It prints the
// server's JSON answer (pretty) on stdout and exits 0, or prints the typed
// error code and message (and the error body) on stderr and exits 1.
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
