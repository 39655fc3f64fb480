//go:build chaostest

package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/httpapi"
	"github.com/exactonce/exactonce/internal/config"
)

// testClockPath is the test-only endpoint that makes this node's clock jump
// (chaos harness, clock nemesis). It exists only in a "chaostest" build.
const testClockPath = "/internal/v1/test/clock"

// testRoutes mounts, in a "chaostest" build only, the admin-authenticated
// test clock endpoint:
//
//	GET  /internal/v1/test/clock                 {"offset": "-30s"}
//	POST /internal/v1/test/clock {"offset": "-30s"}  set it; answers the old and new offset
//
// It must be mounted before the /internal/v1/ prefix of the node's own
// handler.
func testRoutes(cfg *config.Config, adminTokenHash []byte, log *slog.Logger) func(r *mux.Router) {
	get := func(w http.ResponseWriter, _ *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"offset": cfg.TestClockOffsetNow().String()})
	}
	set := func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 4096))
		if err != nil {
			httpapi.WriteError(w, string(fsm.CodeInvalidRequest), "cannot read body", nil)
			return
		}
		var req struct {
			Offset string `json:"offset"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			httpapi.WriteError(w, string(fsm.CodeInvalidRequest), `body must be {"offset": "<Go duration>"}`, nil)
			return
		}
		d, err := time.ParseDuration(req.Offset)
		if err != nil {
			httpapi.WriteError(w, string(fsm.CodeInvalidRequest), "offset: "+err.Error(), nil)
			return
		}
		prev := cfg.SetTestClockOffset(d)
		log.Warn("test clock jumped: this node's clock is shifted", "from", prev.String(), "to", d.String())
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"previous": prev.String(), "offset": d.String()})
	}
	return func(r *mux.Router) {
		r.Handle(testClockPath, httpapi.RequireAdmin(adminTokenHash, http.HandlerFunc(get))).Methods(http.MethodGet)
		r.Handle(testClockPath, httpapi.RequireAdmin(adminTokenHash, http.HandlerFunc(set))).Methods(http.MethodPost)
	}
}
