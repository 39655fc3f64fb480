package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/httpapi"
)

// clusterAPI serves the admin cluster endpoints of the operator interface
// (docs/api.md) on top of a node.
type clusterAPI struct {
	node *cluster.Node
	log  *slog.Logger
}

// clusterRoutes mounts the admin cluster endpoints:
//
//	GET    /v1/cluster                      this node's view of the cluster
//	POST   /v1/cluster/transfer-leadership  {"to": "<node id>" or ""}
//	DELETE /v1/cluster/servers/{id}         remove a server from Raft
//
// Transfer and remove need the leader; on another node the cluster package
// carries them there over the internal channel.
func clusterRoutes(node *cluster.Node, adminTokenHash []byte, log *slog.Logger) func(r *mux.Router) {
	c := &clusterAPI{node: node, log: log}
	admin := func(h http.HandlerFunc) http.Handler { return httpapi.RequireAdmin(adminTokenHash, h) }
	return func(r *mux.Router) {
		r.Handle("/v1/cluster", admin(c.status)).Methods(http.MethodGet)
		r.Handle("/v1/cluster/transfer-leadership", admin(c.transfer)).Methods(http.MethodPost)
		r.Handle("/v1/cluster/servers/{id}", admin(c.remove)).Methods(http.MethodDelete)
	}
}

// status answers GET /v1/cluster; ?stateHash=true adds the state hash.
func (c *clusterAPI) status(w http.ResponseWriter, r *http.Request) {
	withHash := false
	for k, v := range r.URL.Query() {
		if k != "stateHash" || len(v) != 1 || (v[0] != "true" && v[0] != "false") {
			httpapi.WriteError(w, string(fsm.CodeInvalidRequest), "the only query parameter is stateHash=true|false", nil)
			return
		}
		withHash = v[0] == "true"
	}
	st, err := c.node.Status(r.Context(), withHash)
	if err != nil {
		httpapi.WriteError(w, httpapi.CodeUnavailable, err.Error(), nil)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, st)
}

func (c *clusterAPI) transfer(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4096))
	if err != nil {
		httpapi.WriteError(w, string(fsm.CodeInvalidRequest), "cannot read body", nil)
		return
	}
	var req struct {
		To string `json:"to"`
	}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := httpapi.DecodeStrictJSON(body, &req); err != nil {
			httpapi.WriteError(w, string(fsm.CodeInvalidRequest), err.Error()+`; the body is {"to": "<node id>"}`, nil)
			return
		}
	}
	err = c.node.TransferLeadership(r.Context(), req.To)
	if err != nil {
		if errors.Is(err, cluster.ErrUnknownServer) || errors.Is(err, cluster.ErrUnavailable) || r.Context().Err() != nil {
			c.writeErr(w, err)
			return
		}
		// Raft refused (no other voter, a transfer already running...).
		httpapi.WriteError(w, string(fsm.CodeConflict), err.Error(), nil)
		return
	}
	c.log.Info("leadership transferred on admin request", "to", req.To)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"transferred": true, "to": req.To, "leaderHttp": c.node.LeaderHTTP()})
}

func (c *clusterAPI) remove(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	err := c.node.RemoveServer(r.Context(), id)
	if err != nil {
		c.writeErr(w, err)
		return
	}
	c.log.Info("server removed on admin request", "member", id)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"removed": id})
}

func (c *clusterAPI) writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, cluster.ErrUnknownServer):
		httpapi.WriteError(w, httpapi.CodeNotFound, err.Error(), nil)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, cluster.ErrUnavailable), errors.Is(err, cluster.ErrNotLeader):
		httpapi.WriteError(w, httpapi.CodeUnavailable, err.Error(), nil)
	default:
		httpapi.WriteError(w, string(fsm.CodeInternal), err.Error(), nil)
	}
}
