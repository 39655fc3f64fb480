package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// The cluster service: the calls nodes make to each other besides Raft,
// served over the internal port's RPC protocol (mux.go). The framing is
// HTTP/1.1 on connections that are already mutually authenticated, so
// pooling, deadlines and limits come from net/http; what travels is the
// cluster's own commands and answers, never a client's HTTP request.

// RPC paths; the version is part of the path.
const (
	rpcApply     = "/rpc/v1/apply"
	rpcReadIndex = "/rpc/v1/read-index"
	rpcStatus    = "/rpc/v1/node-status"
	rpcTransfer  = "/rpc/v1/transfer-leadership"
	rpcRemove    = "/rpc/v1/remove-server"
	rpcRead      = "/rpc/v1/leader-read"
)

// Limits of the cluster service.
const (
	// maxRPCBody bounds a request body the service reads: a batch of
	// forwarded commands (maxForwardPayload plus framing) or one large
	// command (a CSV create of up to 64 MiB).
	maxRPCBody = 80 << 20
	// maxRPCAnswer bounds an answer a caller reads.
	maxRPCAnswer = 80 << 20
	// rpcCallTimeout bounds one call without a deadline of its own.
	rpcCallTimeout = 10 * time.Second
)

// headerRPCError carries a typed refusal of the cluster service: the
// answer's body is then {"error": code, "message": text}.
const headerRPCError = "X-ExactOnce-RPC-Error"

// RPC error codes.
const (
	rpcErrNotLeader   = "not_leader"
	rpcErrUnavailable = "unavailable"
	rpcErrBadRequest  = "bad_request"
	rpcErrFailed      = "failed"
	rpcErrUnknownPeer = "unknown_server"
)

// rpcError is the body of a refused call.
type rpcError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// rpcServer serves the cluster service on the internal port.
type rpcServer struct {
	hs   *http.Server
	done chan struct{}
}

// startRPC serves the cluster service on ln.
func (n *Node) startRPC(ln net.Listener) *rpcServer {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+rpcApply, n.serveApply)
	mux.HandleFunc("GET "+rpcReadIndex, n.serveReadIndex)
	mux.HandleFunc("GET "+rpcStatus, n.serveNodeStatus)
	mux.HandleFunc("POST "+rpcTransfer, n.serveOperator("leadership transfer", n.transferHere))
	mux.HandleFunc("POST "+rpcRemove, n.serveOperator("server removal", n.removeHere))
	mux.HandleFunc("POST "+rpcRead, n.serveLeaderRead)
	s := &rpcServer{
		hs: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       5 * time.Minute,
			MaxHeaderBytes:    16 << 10,
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				if pc, ok := c.(*peerConn); ok {
					return context.WithValue(ctx, peerKey{}, pc.peer)
				}
				return ctx
			},
			ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			n.log.Warn("cluster service stopped", "err", err)
		}
	}()
	return s
}

// close stops the service and its connections.
func (s *rpcServer) close() {
	if s == nil {
		return
	}
	_ = s.hs.Close()
	<-s.done
}

// peerKey holds the calling node's id in an RPC's context.
type peerKey struct{}

// peerOf names the node that made an RPC (from its verified certificate).
func peerOf(r *http.Request) string {
	id, _ := r.Context().Value(peerKey{}).(string)
	return id
}

// writeRPCError answers a refused call.
func writeRPCError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set(headerRPCError, code)
	writeJSON(w, status, rpcError{Error: code, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// readIndexResponse is the answer of rpcReadIndex.
type readIndexResponse struct {
	Index uint64 `json:"index"`
}

// nodeStatusResponse is the answer of rpcStatus.
type nodeStatusResponse struct {
	ID           string `json:"id"`
	AppliedIndex uint64 `json:"appliedIndex"`
	// LastIndex is Raft's last index on the node (its last log entry or
	// snapshot, as Raft's own state says), which the leader's guard
	// compares with a snapshot before sending it (raftguard.go).
	LastIndex uint64 `json:"lastIndex"`
}

func (n *Node) serveReadIndex(w http.ResponseWriter, r *http.Request) {
	index, err := n.leaderReadIndex(r.Context())
	if err != nil {
		code := rpcErrUnavailable
		if errors.Is(err, ErrNotLeader) {
			code = rpcErrNotLeader
		}
		writeRPCError(w, http.StatusServiceUnavailable, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, readIndexResponse{Index: index})
}

func (n *Node) serveNodeStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, nodeStatusResponse{ID: string(n.nodeID), AppliedIndex: n.sm.AppliedIndex(), LastIndex: n.raft.LastIndex()})
}

// serverRequest names a server in rpcTransfer ("" for any) and rpcRemove.
type serverRequest struct {
	ID string `json:"id"`
}

// serveOperator serves an operator call a peer carries to this node (the
// leader): what names it in the log, here runs it.
func (n *Node) serveOperator(what string, here func(context.Context, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req serverRequest
		if !readJSONBody(w, r, &req) {
			return
		}
		n.log.Info(what+" requested by a peer", "peer", peerOf(r), "server", req.ID)
		n.answerOperator(w, here(r.Context(), req.ID))
	}
}

// answerOperator answers an operator call run here.
func (n *Node) answerOperator(w http.ResponseWriter, err error) {
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, struct{}{})
	case errors.Is(err, ErrNotLeader):
		writeRPCError(w, http.StatusServiceUnavailable, rpcErrNotLeader, err.Error())
	case errors.Is(err, ErrUnknownServer):
		writeRPCError(w, http.StatusNotFound, rpcErrUnknownPeer, err.Error())
	case errors.Is(err, ErrUnavailable):
		writeRPCError(w, http.StatusServiceUnavailable, rpcErrUnavailable, err.Error())
	default:
		writeRPCError(w, http.StatusConflict, rpcErrFailed, err.Error())
	}
}

// readJSONBody decodes a small JSON request body; on failure it answered.
func readJSONBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeRPCError(w, http.StatusBadRequest, rpcErrBadRequest, fmt.Sprintf("bad body: %v", err))
		return false
	}
	return true
}

// peerClients holds one HTTP client per peer node id. A client dials only
// its node: the peer's certificate must name that id.
type peerClients struct {
	peer *peerTLS
	mu   sync.Mutex
	m    map[string]*http.Client
}

func newPeerClients(p *peerTLS) *peerClients {
	return &peerClients{peer: p, m: map[string]*http.Client{}}
}

// get returns the client for node id.
func (c *peerClients) get(id string) *http.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if hc, ok := c.m[id]; ok {
		return hc
	}
	tr := &http.Transport{
		Proxy: nil,
		DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return c.peer.dial(ctx, addr, protoRPC, id)
		},
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // calls are bounded by their contexts
		ForceAttemptHTTP2:     false,
	}
	hc := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	c.m[id] = hc
	return hc
}

// closeIdle closes every idle pooled connection.
func (c *peerClients) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, hc := range c.m {
		hc.CloseIdleConnections()
	}
}

// rpcAddr returns the internal address of node id: from gossip, else from
// the Raft configuration; "" when unknown.
func (n *Node) rpcAddr(id string) string {
	if m, ok := n.members.get(id); ok && m.RPC != "" {
		return m.RPC
	}
	if r := n.guard.raft.Load(); r != nil {
		for _, s := range r.GetConfiguration().Configuration().Servers {
			if string(s.ID) == id {
				return string(s.Address)
			}
		}
	}
	return ""
}

// idAtRaftAddr names the node at a Raft address from the configuration or
// gossip ("" when unknown: any node of the cluster is then accepted).
func (n *Node) idAtRaftAddr(addr string) string {
	if r := n.guard.raft.Load(); r != nil {
		for _, s := range r.GetConfiguration().Configuration().Servers {
			if string(s.Address) == addr {
				return string(s.ID)
			}
		}
	}
	for _, m := range n.members.all() {
		if m.Raft == addr {
			return m.ID
		}
	}
	return ""
}

// callPeer makes one RPC to node id and decodes a 200 JSON answer into
// out. A typed refusal comes back as *peerError.
func (n *Node) callPeer(ctx context.Context, id, method, path string, in, out any) error {
	addr := n.rpcAddr(id)
	if addr == "" {
		return fmt.Errorf("no internal address known for %s", id)
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = strings.NewReader(string(b))
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rpcCallTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	res, err := n.peers.get(id).Do(req)
	if err != nil {
		return fmt.Errorf("call %s %s: %w", id, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read answer of %s: %w", id, err)
	}
	if code := res.Header.Get(headerRPCError); code != "" {
		var e rpcError
		_ = json.Unmarshal(b, &e)
		return &peerError{Code: code, Message: e.Message}
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: status %d", id, path, res.StatusCode)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode answer of %s: %w", id, err)
	}
	return nil
}

// peerError is a typed refusal from a peer's cluster service.
type peerError struct {
	Code    string
	Message string
}

func (e *peerError) Error() string { return e.Code + ": " + e.Message }

// Is maps a refusal to the package's errors.
func (e *peerError) Is(target error) bool {
	switch e.Code {
	case rpcErrNotLeader:
		return target == ErrNotLeader
	case rpcErrUnavailable:
		return target == ErrUnavailable
	case rpcErrUnknownPeer:
		return target == ErrUnknownServer
	}
	return false
}
