package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// Reads served on the leader for a lagging follower (cluster.Node.
// ReadOnLeader). The follower has already authenticated the client; the
// query names the client and what to read, never a client's request.

// Query kinds: a verify, and the answer to a consume of a settled action
// (answerSettledOnLeader; an open or unknown action answers status 0).
const (
	queryVerify         = "verify"
	querySettledConsume = "settledConsume"
)

// leaderQuery is a read the leader runs for a follower.
type leaderQuery struct {
	Kind     string `json:"kind"`
	ClientID string `json:"clientId"`
	ActionID string `json:"actionId"`
}

// leaderAnswer is the rendered answer: status and JSON body (and, for a
// settled consume, its error code, for the follower's metrics).
type leaderAnswer struct {
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body"`
	Code   string          `json:"code,omitempty"`
}

// LeaderRead runs a follower's read query on this node (the leader, after
// its read barrier). Install it with cluster.Node.SetLeaderReader.
func (s *Server) LeaderRead(ctx context.Context, query []byte) ([]byte, error) {
	var q leaderQuery
	dec := json.NewDecoder(bytes.NewReader(query))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		return nil, fmt.Errorf("httpapi: leader read: bad query: %w", err)
	}
	if q.Kind != queryVerify && q.Kind != querySettledConsume || q.ClientID == "" || q.ActionID == "" {
		return nil, fmt.Errorf("httpapi: leader read: unknown query %q", q.Kind)
	}
	rec := &bufferWriter{header: http.Header{}}
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
	if err != nil {
		return nil, fmt.Errorf("httpapi: leader read: %w", err)
	}
	// The follower checked the credentials; the client may have been
	// revoked since, which the leader's state (after its barrier) shows.
	var code string
	switch ok := s.stillAllowed(rec, r, q.ClientID); {
	case ok && q.Kind == queryVerify:
		s.verifyHere(rec, r, q.ClientID, q.ActionID)
	case ok:
		if ans, settled := s.settledAnswerHere(q.ClientID, q.ActionID); settled {
			writeJSONBytes(rec, ans.status, ans.body)
			code = ans.code
		}
	}
	out, err := json.Marshal(leaderAnswer{Status: rec.status, Body: bytes.TrimSpace(rec.body.Bytes()), Code: code})
	if err != nil {
		return nil, fmt.Errorf("httpapi: leader read: encode answer: %w", err)
	}
	return out, nil
}

// bufferWriter is an http.ResponseWriter into memory.
type bufferWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferWriter) Header() http.Header { return b.header }

func (b *bufferWriter) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}
