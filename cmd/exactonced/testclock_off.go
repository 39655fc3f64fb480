//go:build !chaostest

package main

import (
	"log/slog"

	"github.com/gorilla/mux"

	"github.com/exactonce/exactonce/internal/config"
)

// testRoutes mounts nothing: only a "chaostest" build has test endpoints.
func testRoutes(*config.Config, []byte, *slog.Logger) func(r *mux.Router) { return nil }
