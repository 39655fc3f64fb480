package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/httpapi"
)

// headerClusterForwarded marks an admin cluster call relayed to the leader
// by another node; it is never relayed again (one hop).
const headerClusterForwarded = "X-ExactOnce-Cluster-Forwarded"

// clusterAPI serves the admin cluster endpoints of SPEC.md's operator
// interface on top of a node.
type clusterAPI struct {
	node *cluster.Node
	hc   *http.Client
	log  *slog.Logger
}

// clusterRoutes mounts the node-to-node endpoints (/internal/v1/...) and
// the admin cluster endpoints:
//
//	GET    /v1/cluster                      this node's view of the cluster
//	POST   /v1/cluster/transfer-leadership  {"to": "<node id>" or ""}
//	DELETE /v1/cluster/servers/{id}         remove a server from Raft
//
// Transfer and remove need the leader; another node relays them to it.
func clusterRoutes(node *cluster.Node, adminTokenHash []byte, rt http.RoundTripper, log *slog.Logger) func(r *mux.Router) {
	if rt == nil {
		rt = http.DefaultTransport
	}
	c := &clusterAPI{node: node, hc: &http.Client{Transport: rt}, log: log}
	admin := func(h http.HandlerFunc) http.Handler { return httpapi.RequireAdmin(adminTokenHash, h) }
	return func(r *mux.Router) {
		r.PathPrefix("/internal/v1/").Handler(node.InternalHandler())
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
	if errors.Is(err, cluster.ErrNotLeader) {
		c.relay(w, r, body)
		return
	}
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
	if errors.Is(err, cluster.ErrNotLeader) {
		c.relay(w, r, nil)
		return
	}
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

// relay sends the admin call to the leader and copies its answer back.
func (c *clusterAPI) relay(w http.ResponseWriter, r *http.Request, body []byte) {
	leader := c.node.LeaderHTTP()
	if leader == "" || r.Header.Get(headerClusterForwarded) != "" {
		httpapi.WriteError(w, httpapi.CodeUnavailable, "this node is not the leader and no leader is known", nil)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, strings.TrimRight(leader, "/")+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		httpapi.WriteError(w, string(fsm.CodeInternal), fmt.Sprintf("relay to leader: %v", err), nil)
		return
	}
	req.Header.Set("Authorization", r.Header.Get("Authorization"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(headerClusterForwarded, "1")
	resp, err := c.hc.Do(req)
	if err != nil {
		httpapi.WriteError(w, httpapi.CodeUnavailable, fmt.Sprintf("relay to leader %s: %v", leader, err), nil)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 1<<20))
}
