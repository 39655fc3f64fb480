package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"
)

// CreateRequest is the body of a JSON create. Zero times are left out, so
// the server applies its defaults (active now, expiry after the default TTL).
type CreateRequest struct {
	// Payload is the action's JSON object (required).
	Payload json.RawMessage
	// PIN, when set, must be given to consume (4 to 12 characters).
	PIN       string
	ActiveAt  time.Time
	ExpiresAt time.Time
}

// MarshalJSON renders the wire form (snake_case, omitted when unset).
func (r CreateRequest) MarshalJSON() ([]byte, error) {
	w := struct {
		Payload   json.RawMessage `json:"payload"`
		PIN       string          `json:"pin,omitempty"`
		ActiveAt  string          `json:"active_at,omitempty"`
		ExpiresAt string          `json:"expires_at,omitempty"`
	}{Payload: r.Payload, PIN: r.PIN}
	if !r.ActiveAt.IsZero() {
		w.ActiveAt = r.ActiveAt.UTC().Format(time.RFC3339Nano)
	}
	if !r.ExpiresAt.IsZero() {
		w.ExpiresAt = r.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	return json.Marshal(w)
}

// Created is the 201 answer of a JSON create.
type Created struct {
	ActionID    string    `json:"actionId"`
	ActiveAt    time.Time `json:"activeAt"`
	ExpiresAt   time.Time `json:"expiresAt"`
	CreatedAt   time.Time `json:"createdAt"`
	PINRequired bool      `json:"pinRequired"`
}

// CSVResult is the 200 answer of a CSV batch create.
type CSVResult struct {
	Total   int            `json:"total"`
	Created int            `json:"created"`
	Failed  int            `json:"failed"`
	Results []CSVRowResult `json:"results"`
}

// CSVRowResult is one row's outcome; Row counts the header as row 1.
type CSVRowResult struct {
	Row      int    `json:"row"`
	Status   string `json:"status"`
	ActionID string `json:"actionId,omitempty"`
	Error    string `json:"error,omitempty"`
	Message  string `json:"message,omitempty"`
}

// ConsumeRequest is the optional body of a consume.
type ConsumeRequest struct {
	PIN string `json:"pin,omitempty"`
	// Consumer is a free-form JSON object kept in the audit record.
	Consumer json.RawMessage `json:"consumer,omitempty"`
}

// Consumed is the 200 answer of a consume.
type Consumed struct {
	ActionID   string          `json:"actionId"`
	State      string          `json:"state"`
	Payload    json.RawMessage `json:"payload"`
	ConsumedAt time.Time       `json:"consumedAt"`
}

// Action is the verify view of an action (never the payload or PIN).
type Action struct {
	ActionID          string          `json:"actionId"`
	State             string          `json:"state"`
	ActiveAt          time.Time       `json:"activeAt"`
	ExpiresAt         time.Time       `json:"expiresAt"`
	CreatedAt         time.Time       `json:"createdAt"`
	PINRequired       bool            `json:"pinRequired"`
	ConsumedAt        *time.Time      `json:"consumedAt,omitempty"`
	ConsumedReason    string          `json:"consumedReason,omitempty"`
	Consumer          json.RawMessage `json:"consumer,omitempty"`
	CanceledAt        *time.Time      `json:"canceledAt,omitempty"`
	FailedPINAttempts int             `json:"failedPinAttempts"`
}

// Canceled is the 200 answer of a cancel.
type Canceled struct {
	ActionID   string    `json:"actionId"`
	State      string    `json:"state"`
	CanceledAt time.Time `json:"canceledAt"`
}

// ListQuery filters a list; zero values are left out.
type ListQuery struct {
	State          string
	ConsumedReason string
	CreatedFrom    time.Time
	CreatedTo      time.Time
	ActiveFrom     time.Time
	ActiveTo       time.Time
	// OrderBy is createdAt, activeAt or expiresAt.
	OrderBy string
	// Order is asc or desc.
	Order     string
	Limit     int
	NextToken string
}

// Values renders the query string.
func (q ListQuery) Values() url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	setTime := func(k string, t time.Time) {
		if !t.IsZero() {
			v.Set(k, t.UTC().Format(time.RFC3339Nano))
		}
	}
	set("state", q.State)
	set("consumed_reason", q.ConsumedReason)
	setTime("created_from", q.CreatedFrom)
	setTime("created_to", q.CreatedTo)
	setTime("active_from", q.ActiveFrom)
	setTime("active_to", q.ActiveTo)
	set("order_by", q.OrderBy)
	set("order", q.Order)
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	set("nextToken", q.NextToken)
	return v
}

// ListPage is one page of a list; NextToken is nil on the last page.
type ListPage struct {
	Actions   []Action `json:"actions"`
	NextToken *string  `json:"nextToken"`
}

// Stats are the calling client's counts.
type Stats struct {
	Total           int64            `json:"total"`
	ByState         map[string]int64 `json:"byState"`
	Burned          int64            `json:"burned"`
	CreatedLast24h  int64            `json:"createdLast24h"`
	ConsumedLast24h int64            `json:"consumedLast24h"`
	// Purged counts the actions retention deleted.
	Purged int64 `json:"purged"`
}

// Demo is the 201 answer of POST /v1/demo.
type Demo struct {
	ActionID  string    `json:"actionId"`
	RevealURL string    `json:"revealUrl"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// NewClient is the 201 answer of creating a client; the secret is shown only once.
type NewClient struct {
	ClientID     string    `json:"clientId"`
	ClientSecret string    `json:"clientSecret"`
	Name         string    `json:"name,omitempty"`
	CreatedAt    time.Time `json:"createdAt"`
}

// ClientInfo is one client in the admin list (never its secret).
type ClientInfo struct {
	ClientID  string     `json:"clientId"`
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"createdAt"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
}

// ClientList is the answer of GET /v1/admin/clients.
type ClientList struct {
	Clients []ClientInfo `json:"clients"`
}

// RevokedClient is the answer of revoking a client.
type RevokedClient struct {
	ClientID  string    `json:"clientId"`
	RevokedAt time.Time `json:"revokedAt"`
}

// ClusterStatus is a node's view of itself and the cluster (GET /v1/cluster).
type ClusterStatus struct {
	NodeID string `json:"nodeId"`
	// Version is the node's build version.
	Version string `json:"version,omitempty"`
	// State is Raft's state: Follower, Candidate, Leader or Shutdown.
	State        string `json:"state"`
	Ready        bool   `json:"ready"`
	IsLeader     bool   `json:"isLeader"`
	LeaderID     string `json:"leaderId"`
	LeaderRaft   string `json:"leaderRaftAddress"`
	LeaderHTTP   string `json:"leaderHttp"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commitIndex"`
	LastIndex    uint64 `json:"lastIndex"`
	AppliedIndex uint64 `json:"appliedIndex"`
	// StateHash is set only by ClusterStatusWithHash.
	StateHash string `json:"stateHash,omitempty"`
	// LastContact is when a follower last heard from the leader (zero on
	// the leader).
	LastContact      time.Time       `json:"lastContact,omitzero"`
	LeadershipRounds uint64          `json:"leadershipRounds"`
	ReadIndexRounds  uint64          `json:"readIndexRounds"`
	Members          []ClusterMember `json:"members"`
}

// ClusterMember is one server of the cluster.
type ClusterMember struct {
	ID string `json:"id"`
	// Suffrage is voter, nonvoter, staging, or none (a gossip member not
	// in the Raft configuration yet).
	Suffrage    string `json:"suffrage"`
	RaftAddress string `json:"raftAddress"`
	HTTP        string `json:"http,omitempty"`
	// Gossip is alive, gone or unknown.
	Gossip string `json:"gossip"`
	Leader bool   `json:"leader"`
	// Version is the member's build version, "" when not known.
	Version string `json:"version,omitempty"`
}

// LeadershipTransfer is the answer of a leadership transfer.
type LeadershipTransfer struct {
	Transferred bool   `json:"transferred"`
	To          string `json:"to"`
	LeaderHTTP  string `json:"leaderHttp"`
}

// RemovedServer is the answer of removing a server.
type RemovedServer struct {
	Removed string `json:"removed"`
}

func actionPath(id string) string { return "/v1/actions/" + url.PathEscape(id) }

// Create creates one action. With WithIdempotencyKey (or WithRetry) a
// repeat of the same create is answered with the first one's action.
func (c *Client) Create(ctx context.Context, req CreateRequest, opts ...CallOption) (*Created, error) {
	body, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	var out Created
	if _, _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/actions", body: body, auth: authClient, keyed: true}, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateCSV creates a batch from CSV (header payload_json,pin,active_at,expires_at).
// The answer is 200 even when rows failed: check CSVResult.Failed.
func (c *Client) CreateCSV(ctx context.Context, csv io.Reader, opts ...CallOption) (*CSVResult, error) {
	body, err := io.ReadAll(csv)
	if err != nil {
		return nil, fmt.Errorf("read csv: %w", err)
	}
	var out CSVResult
	if _, _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/actions", body: body, contentType: "text/csv", auth: authClient, keyed: true}, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// Consume consumes an action; req may be nil for no body. Of any number of
// concurrent consumes of one action, on any nodes, exactly one succeeds;
// the others get ErrAlreadyUsed. See ConsumeWithRetry for a consume that
// survives a lost answer.
func (c *Client) Consume(ctx context.Context, id string, req *ConsumeRequest, opts ...CallOption) (*Consumed, error) {
	r := request{method: http.MethodPost, path: actionPath(id) + "/consume", auth: authClient, keyed: true}
	if req != nil {
		body, err := jsonBody(req)
		if err != nil {
			return nil, err
		}
		r.body = body
	}
	var out Consumed
	if _, _, err := c.do(ctx, r, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// Get verifies an action (read-only; never the payload or the PIN).
func (c *Client) Get(ctx context.Context, id string, opts ...CallOption) (*Action, error) {
	var out Action
	if _, _, err := c.do(ctx, request{method: http.MethodGet, path: actionPath(id), auth: authClient}, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// List returns one page of the client's actions.
func (c *Client) List(ctx context.Context, q ListQuery, opts ...CallOption) (*ListPage, error) {
	var out ListPage
	if _, _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/actions", query: q.Values(), auth: authClient}, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListAll follows nextToken from q onwards and calls fn with every page
// until the last one, fn returns an error or ctx ends. A page may hold
// fewer actions than the limit, even none, before the last one.
func (c *Client) ListAll(ctx context.Context, q ListQuery, fn func(*ListPage) error, opts ...CallOption) error {
	for {
		page, err := c.List(ctx, q, opts...)
		if err != nil {
			return err
		}
		if err := fn(page); err != nil {
			return err
		}
		if page.NextToken == nil || *page.NextToken == "" {
			return nil
		}
		if *page.NextToken == q.NextToken {
			return fmt.Errorf("list: server returned the same nextToken %q twice", q.NextToken)
		}
		q.NextToken = *page.NextToken
	}
}

// Cancel cancels an action; canceling again answers the same.
func (c *Client) Cancel(ctx context.Context, id string, opts ...CallOption) (*Canceled, error) {
	var out Canceled
	if _, _, err := c.do(ctx, request{method: http.MethodDelete, path: actionPath(id), auth: authClient, keyed: true}, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// Stats returns the client's counts.
func (c *Client) Stats(ctx context.Context, opts ...CallOption) (*Stats, error) {
	var out Stats
	if _, _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/stats", auth: authClient}, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// Demo creates a demo action (no auth).
func (c *Client) Demo(ctx context.Context, opts ...CallOption) (*Demo, error) {
	var out Demo
	if _, _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/demo", auth: authNone}, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// Reveal opens a demo's revealUrl (absolute, or a path on this node) and
// returns the raw body; the first call consumes the demo action.
func (c *Client) Reveal(ctx context.Context, revealURL string, opts ...CallOption) ([]byte, error) {
	_, body, err := c.do(ctx, request{method: http.MethodGet, path: revealURL, auth: authNone}, nil, opts)
	return body, err
}

// CreateClient registers an API client (admin); its secret is in the
// answer only.
func (c *Client) CreateClient(ctx context.Context, name string, opts ...CallOption) (*NewClient, error) {
	body, err := jsonBody(map[string]string{"name": name})
	if err != nil {
		return nil, err
	}
	var out NewClient
	if _, _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admin/clients", body: body, auth: authAdmin}, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListClients lists the API clients (admin).
func (c *Client) ListClients(ctx context.Context, opts ...CallOption) (*ClientList, error) {
	var out ClientList
	if _, _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/clients", auth: authAdmin}, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeClient revokes a client at once on every node (admin); revoking
// again answers the first revokedAt.
func (c *Client) RevokeClient(ctx context.Context, clientID string, opts ...CallOption) (*RevokedClient, error) {
	var out RevokedClient
	if _, _, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/admin/clients/" + url.PathEscape(clientID), auth: authAdmin}, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// ClusterStatus returns the node's view of the cluster (admin).
func (c *Client) ClusterStatus(ctx context.Context, opts ...CallOption) (*ClusterStatus, error) {
	var out ClusterStatus
	if _, _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/cluster", auth: authAdmin}, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// ClusterStatusWithHash is ClusterStatus with the node's state hash
// (StateHash), which costs the node a read of its whole state (admin).
func (c *Client) ClusterStatusWithHash(ctx context.Context, opts ...CallOption) (*ClusterStatus, error) {
	var out ClusterStatus
	if _, _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/cluster", query: url.Values{"stateHash": {"true"}}, auth: authAdmin}, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// TransferLeadership asks the leader to hand over leadership, to the node
// with id to, or to any voter when to is empty (admin).
func (c *Client) TransferLeadership(ctx context.Context, to string, opts ...CallOption) (*LeadershipTransfer, error) {
	body, err := jsonBody(map[string]string{"to": to})
	if err != nil {
		return nil, err
	}
	var out LeadershipTransfer
	if _, _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/cluster/transfer-leadership", body: body, auth: authAdmin}, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveServer removes a node from the Raft configuration (admin).
func (c *Client) RemoveServer(ctx context.Context, nodeID string, opts ...CallOption) (*RemovedServer, error) {
	var out RemovedServer
	if _, _, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/cluster/servers/" + url.PathEscape(nodeID), auth: authAdmin}, &out, opts); err != nil {
		return nil, err
	}
	return &out, nil
}

// Ready reports whether the node answers GET /readyz with 200: it knows a
// leader and has caught up. A node that answers otherwise is not ready
// (false, nil); a node that cannot be reached is an error.
func (c *Client) Ready(ctx context.Context) (bool, error) {
	status, _, err := c.do(ctx, request{method: http.MethodGet, path: "/readyz", auth: authNone}, nil, nil)
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) {
			return false, nil
		}
		return false, err
	}
	return status == http.StatusOK, nil
}

// buildInfoRe finds the version label of exactonce_build_info on /metrics.
var buildInfoRe = regexp.MustCompile(`(?m)^exactonce_build_info\{[^}]*\bversion="([^"]*)"`)

// ServerVersion returns the build version of the node: from GET
// /v1/cluster when the client has an admin token, otherwise from the
// exactonce_build_info series of GET /metrics (which needs no credentials).
func (c *Client) ServerVersion(ctx context.Context) (string, error) {
	if c.adminToken != "" {
		st, err := c.ClusterStatus(ctx)
		if err != nil {
			return "", err
		}
		if st.Version == "" {
			return "", errors.New("the node's GET /v1/cluster carries no version (a release before versions were reported)")
		}
		return st.Version, nil
	}
	_, body, err := c.do(ctx, request{method: http.MethodGet, path: "/metrics", auth: authNone}, nil, nil)
	if err != nil {
		return "", err
	}
	m := buildInfoRe.FindSubmatch(body)
	if m == nil {
		return "", errors.New("the node's /metrics has no exactonce_build_info (a release before versions were reported)")
	}
	return string(m[1]), nil
}
