package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/exactonce/exactonce/client"
)

// ExactOnce drives the ExactOnce HTTP API, either through a pooled
// net/http client or (after UseRaw) through the leaner raw HTTP/1.1
// client. Worker w sends each request to node w.Node(len(URLs)).
type ExactOnce struct {
	URLs         []string
	ClientID     string
	ClientSecret string
	HTTP         *http.Client
	// AdminToken reads the nodes' status (Settle); the cluster's own.
	AdminToken string
	// Payload is the JSON object stored with each created action.
	Payload json.RawMessage
	raw     []*rawPool
	hdr     [][2]string
}

// UseRaw makes the single-action operations (create, consume, verify) use
// the raw HTTP/1.1 client with up to idlePerNode idle connections per
// node. CSV batches keep using net/http.
func (e *ExactOnce) UseRaw(idlePerNode int) error {
	e.raw = nil
	for _, u := range e.URLs {
		pu, err := url.Parse(u)
		if err != nil || pu.Scheme != "http" {
			return fmt.Errorf("raw client needs an http:// node URL, got %q", u)
		}
		e.raw = append(e.raw, newRawPool(pu.Host, idlePerNode))
	}
	e.hdr = [][2]string{{"client-id", e.ClientID}, {"client-secret", e.ClientSecret}}
	return nil
}

// Close closes the raw client's idle connections.
func (e *ExactOnce) Close() {
	for _, p := range e.raw {
		p.close()
	}
}

// NewTransport returns an HTTP/1.1 transport that keeps up to
// idlePerHost connections per node open between requests and opens at
// most maxPerHost (0: unlimited).
func NewTransport(idlePerHost, maxPerHost int) *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: idlePerHost,
		MaxConnsPerHost:     maxPerHost,
		IdleConnTimeout:     2 * time.Minute,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		WriteBufferSize:     16 << 10,
		ReadBufferSize:      16 << 10,
	}
}

// NewExactOnce returns a target for the given node base URLs and client.
func NewExactOnce(urls []string, clientID, clientSecret string, idlePerHost int) *ExactOnce {
	return &ExactOnce{
		URLs:         urls,
		ClientID:     clientID,
		ClientSecret: clientSecret,
		HTTP:         &http.Client{Transport: NewTransport(idlePerHost, 0)},
		Payload:      json.RawMessage(`{"order":"ord_4711","amount":4200,"currency":"EUR","note":"benchmark action"}`),
	}
}

// WithTransport returns a copy of e that sends everything through t.
func (e *ExactOnce) WithTransport(t http.RoundTripper) *ExactOnce {
	c := *e
	c.HTTP = &http.Client{Transport: t}
	c.raw = nil
	return &c
}

// Name implements Target.
func (e *ExactOnce) Name() string { return "exactonce" }

// Nodes implements Target.
func (e *ExactOnce) Nodes() int { return len(e.URLs) }

// NodeOf implements nodeMapper.
func (e *ExactOnce) NodeOf(w *Worker) int { return e.node(w) }

// NodeNames implements nodeMapper: node1, node2, ... as the cluster names them.
func (e *ExactOnce) NodeNames() []string {
	names := make([]string, len(e.URLs))
	for i := range names {
		names[i] = "node" + strconv.Itoa(i+1)
	}
	return names
}

func (e *ExactOnce) node(w *Worker) int {
	if w == nil {
		return 0
	}
	return w.Node(len(e.URLs))
}

// do sends one request to node and returns the status and body.
func (e *ExactOnce) do(ctx context.Context, method string, node int, path, contentType string, body []byte) (int, []byte, error) {
	if e.raw == nil {
		return e.doHTTP(ctx, method, e.URLs[node]+path, contentType, body)
	}
	status, b, err := e.raw[node].roundTrip(ctx, method, path, e.hdr, contentType, body)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, &OpError{Kind: "timeout", Err: err}
		}
		return 0, nil, &OpError{Kind: "transport", Err: err}
	}
	return status, b, nil
}

// doHTTP sends one request through net/http and returns the status and body.
func (e *ExactOnce) doHTTP(ctx context.Context, method, url, contentType string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, fmt.Errorf("build %s %s: %w", method, url, err)
	}
	req.Header["client-id"] = []string{e.ClientID}
	req.Header["client-secret"] = []string{e.ClientSecret}
	if contentType != "" {
		req.Header["Content-Type"] = []string{contentType}
	}
	resp, err := e.HTTP.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, &OpError{Kind: "timeout", Err: err}
		}
		return 0, nil, &OpError{Kind: "transport", Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, &OpError{Kind: "transport", Err: fmt.Errorf("read body: %w", err)}
	}
	return resp.StatusCode, b, nil
}

// statusError describes an unexpected response as "<status> <error code>".
func statusError(status int, body []byte) error {
	var eb struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &eb)
	kind := strconv.Itoa(status)
	if eb.Error != "" {
		kind += " " + eb.Error
	}
	msg := eb.Message
	if msg == "" && eb.Error == "" {
		msg = strings.TrimSpace(string(body[:min(len(body), 200)]))
	}
	return &OpError{Kind: kind, Err: errors.New(msg)}
}

// Create implements Target with POST /v1/actions.
func (e *ExactOnce) Create(ctx context.Context, w *Worker) (string, error) {
	body := make([]byte, 0, 16+len(e.Payload))
	body = append(body, `{"payload":`...)
	body = append(body, e.Payload...)
	body = append(body, '}')
	status, b, err := e.do(ctx, http.MethodPost, e.node(w), "/v1/actions", "application/json", body)
	if err != nil {
		return "", err
	}
	if status != http.StatusCreated {
		return "", statusError(status, b)
	}
	var r struct {
		ActionID string `json:"actionId"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.ActionID == "" {
		return "", &OpError{Kind: "bad_response", Err: fmt.Errorf("create response %q: %v", b, err)}
	}
	return r.ActionID, nil
}

// CSVBody builds a CSV batch-create body of n rows with payload.
func CSVBody(n int, payload json.RawMessage) []byte {
	var buf bytes.Buffer
	buf.Grow(n * (len(payload) + 16))
	cw := csv.NewWriter(&buf)
	_ = cw.Write([]string{"payload_json", "pin", "active_at", "expires_at"})
	p := string(payload)
	for range n {
		_ = cw.Write([]string{p, "", "", ""})
	}
	cw.Flush()
	return buf.Bytes()
}

// CSVResult is the parsed answer to a CSV batch create.
type CSVResult struct {
	Total   int `json:"total"`
	Created int `json:"created"`
	Failed  int `json:"failed"`
	Results []struct {
		Row      int    `json:"row"`
		Status   any    `json:"status"`
		ActionID string `json:"actionId"`
		Error    string `json:"error"`
	} `json:"results"`
}

// CreateCSV sends one CSV batch create to node (index) and returns the ids
// created. A response that did not create every row is an error.
func (e *ExactOnce) CreateCSV(ctx context.Context, node int, body []byte, rows int) ([]string, error) {
	status, b, err := e.doHTTP(ctx, http.MethodPost, e.URLs[node%len(e.URLs)]+"/v1/actions", "text/csv", body)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK && status != http.StatusCreated {
		return nil, statusError(status, b)
	}
	var r CSVResult
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, &OpError{Kind: "bad_response", Err: fmt.Errorf("decode CSV response: %w", err)}
	}
	ids := make([]string, 0, len(r.Results))
	for _, row := range r.Results {
		if row.ActionID != "" {
			ids = append(ids, row.ActionID)
		}
	}
	if r.Created != rows || len(ids) != rows {
		return ids, &OpError{Kind: "csv_partial", Err: fmt.Errorf("created %d (ids %d) of %d rows, failed %d", r.Created, len(ids), rows, r.Failed)}
	}
	return ids, nil
}

// CreateBatch implements Target with CSV batches of up to 10,000 rows.
func (e *ExactOnce) CreateBatch(ctx context.Context, n int) ([]string, error) {
	var ids []string
	for i := 0; len(ids) < n; i++ {
		rows := min(10000, n-len(ids))
		got, err := e.CreateCSV(ctx, i, CSVBody(rows, e.Payload), rows)
		ids = append(ids, got...)
		if err != nil {
			return ids, fmt.Errorf("batch create after %d of %d: %w", len(ids), n, err)
		}
	}
	return ids, nil
}

// Consume implements Target with POST /v1/actions/{id}/consume.
func (e *ExactOnce) Consume(ctx context.Context, w *Worker, id string) (int, error) {
	status, b, err := e.do(ctx, http.MethodPost, e.node(w), "/v1/actions/"+id+"/consume", "", nil)
	if err != nil {
		return 0, err
	}
	switch {
	case status == http.StatusOK:
		return Won, nil
	case status == http.StatusConflict && bytes.Contains(b, []byte(`"already_used"`)):
		return Lost, nil
	default:
		return 0, statusError(status, b)
	}
}

// Verify implements Target with GET /v1/actions/{id}.
func (e *ExactOnce) Verify(ctx context.Context, w *Worker, id string) error {
	status, b, err := e.do(ctx, http.MethodGet, e.node(w), "/v1/actions/"+id, "", nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return statusError(status, b)
	}
	return nil
}

// settledMetric counts consumes a node answered from its own state.
const settledMetric = "exactonce_consumes_settled_locally_total"

// SettledLocally sums settledMetric over the nodes' /metrics.
func (e *ExactOnce) SettledLocally(ctx context.Context) (int, error) {
	total := 0
	for _, u := range e.URLs {
		status, body, err := e.doHTTP(ctx, http.MethodGet, u+"/metrics", "", nil)
		if err != nil {
			return 0, fmt.Errorf("scrape %s: %w", u, err)
		}
		if status != http.StatusOK {
			return 0, fmt.Errorf("scrape %s: status %d", u, status)
		}
		n, err := counterValue(body, settledMetric)
		if err != nil {
			return 0, fmt.Errorf("scrape %s: %w", u, err)
		}
		total += n
	}
	return total, nil
}

// counterValue finds an unlabelled counter in a Prometheus text exposition.
func counterValue(exposition []byte, name string) (int, error) {
	for _, line := range strings.Split(string(exposition), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", name, err)
			}
			return int(f), nil
		}
	}
	return 0, fmt.Errorf("%s not exposed", name)
}

// Settle implements Settler: it waits until every node has applied at
// least what the most advanced node had applied when it was called.
func (e *ExactOnce) Settle(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	applied := func() ([]uint64, error) {
		out := make([]uint64, len(e.URLs))
		for i, u := range e.URLs {
			admin, err := client.New(u, client.WithAdminToken(e.AdminToken), client.WithHTTPClient(e.HTTP), client.WithUserAgent("exactonce-bench"))
			if err != nil {
				return nil, err
			}
			st, err := admin.ClusterStatus(ctx)
			if err != nil {
				return nil, fmt.Errorf("node status %s: %w", u, err)
			}
			out[i] = st.AppliedIndex
		}
		return out, nil
	}
	first, err := applied()
	if err != nil {
		return fmt.Errorf("settle: %w", err)
	}
	target := slices.Max(first)
	for now := first; slices.Min(now) < target; {
		select {
		case <-ctx.Done():
			return fmt.Errorf("settle: nodes at %v, waiting for %d: %w", now, target, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
		if now, err = applied(); err != nil {
			return fmt.Errorf("settle: %w", err)
		}
	}
	return nil
}
