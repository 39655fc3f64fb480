package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// pprofListener serves Go's profiling endpoints (/debug/pprof/) on addr, a
// loopback address (--pprof-addr; config refuses any other, since the
// endpoints have no authentication). It binds before returning, so a taken
// port fails the start; stop shuts it down.
func pprofListener(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --pprof-addr: %w", err)
	}
	// Its own mux: importing net/http/pprof also registers on
	// http.DefaultServeMux, which nothing here serves.
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{
		Handler: mux,
		// No WriteTimeout: a CPU profile or trace streams for as many
		// seconds as asked (?seconds=N).
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof listener stopped", "err", err)
		}
	}()
	log.Warn("profiling endpoints served without authentication on a loopback address", "pprof", ln.Addr().String())
	return func() {
		// Close, not Shutdown: a profile in progress must not hold up the
		// node's exit.
		_ = hs.Close()
		<-done
	}, nil
}
