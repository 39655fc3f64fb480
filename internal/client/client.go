// Package client is a small typed Go client for the ExactOnce HTTP API
// (SPEC.md): actions, stats, the demo, client administration and cluster
// operations. It is used by the exactonce CLI, the benchmark and the chaos
// harness.
//
// Every call takes a context and returns a *APIError for any non-2xx
// status, carrying the status, the typed error code, the message and the
// raw body. Connections are pooled. The client never retries on its own:
// a write is only safe to retry with the same Idempotency-Key.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client talks to one ExactOnce node (any node answers any call).
// It is safe for concurrent use.
type Client struct {
	base         *url.URL
	hc           *http.Client
	clientID     string
	clientSecret string
	adminToken   string
	userAgent    string
}

// Option configures a Client.
type Option func(*Client)

// WithCredentials sets the client-id and client-secret headers sent on
// every /v1 call except the demo.
func WithCredentials(clientID, clientSecret string) Option {
	return func(c *Client) { c.clientID, c.clientSecret = clientID, clientSecret }
}

// WithAdminToken sets the bearer token sent on admin and cluster calls.
func WithAdminToken(token string) Option {
	return func(c *Client) { c.adminToken = token }
}

// WithHTTPClient replaces the pooled default HTTP client.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.hc = hc }
}

// WithTLSConfig sets the TLS configuration of the default transport (for a
// private CA or client certificates). Ignored with WithHTTPClient.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *Client) {
		if t, ok := c.hc.Transport.(*http.Transport); ok {
			t.TLSClientConfig = cfg
		}
	}
}

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option {
	return func(c *Client) { c.userAgent = ua }
}

// NewTransport returns the pooled transport New uses by default: many idle
// connections per host, so that benchmarks reuse them.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// New returns a client for the node at baseURL (e.g. "http://127.0.0.1:8080").
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("parse base url %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("base url %q: scheme must be http or https", baseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("base url %q: no host", baseURL)
	}
	c := &Client{base: u, hc: &http.Client{Transport: NewTransport()}, userAgent: "exactonce-go-client"}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// BaseURL returns the node's base URL.
func (c *Client) BaseURL() string { return c.base.String() }

// APIError is a non-2xx answer from the server.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the "error" field, e.g. "already_used"; empty when the body
	// was not a JSON error.
	Code string
	// Message is the "message" field.
	Message string
	// Body is the raw response body.
	Body []byte
	// Fields holds every field of the JSON error body (consumedAt,
	// attemptsRemaining, ...).
	Fields map[string]json.RawMessage
}

func (e *APIError) Error() string {
	code := e.Code
	if code == "" {
		code = http.StatusText(e.Status)
	}
	if e.Message != "" {
		return fmt.Sprintf("%d %s: %s", e.Status, code, e.Message)
	}
	return fmt.Sprintf("%d %s", e.Status, code)
}

// Field decodes one extra field of the error body into v; it reports
// whether the field was present and decoded.
func (e *APIError) Field(name string, v any) bool {
	raw, ok := e.Fields[name]
	if !ok {
		return false
	}
	return json.Unmarshal(raw, v) == nil
}

// ErrorCode returns err's API error code, or "" when err is not an *APIError.
func ErrorCode(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// IsCode reports whether err is an *APIError with the given code.
func IsCode(err error, code string) bool { return code != "" && ErrorCode(err) == code }

// CallOption adjusts one call.
type CallOption func(*callOpts)

type callOpts struct {
	idemKey string
	stale   bool
	raw     *[]byte
	status  *int
	header  http.Header
}

// WithIdempotencyKey sends an Idempotency-Key header (create, consume, cancel).
func WithIdempotencyKey(key string) CallOption {
	return func(o *callOpts) { o.idemKey = key }
}

// Stale asks for a possibly stale local read (consistency=stale) instead of
// the default linearizable read.
func Stale() CallOption { return func(o *callOpts) { o.stale = true } }

// CaptureBody stores the raw response body (success or error) in dst.
func CaptureBody(dst *[]byte) CallOption { return func(o *callOpts) { o.raw = dst } }

// CaptureStatus stores the response's HTTP status in dst.
func CaptureStatus(dst *int) CallOption { return func(o *callOpts) { o.status = dst } }

// WithHeader adds a request header to one call.
func WithHeader(key, value string) CallOption {
	return func(o *callOpts) {
		if o.header == nil {
			o.header = http.Header{}
		}
		o.header.Add(key, value)
	}
}

type authKind int

const (
	authNone authKind = iota
	authClient
	authAdmin
)

// request describes one API call.
type request struct {
	method      string
	path        string // absolute path, or a full URL
	query       url.Values
	body        io.Reader
	contentType string
	auth        authKind
}

// Do performs a raw call and returns the status and body of a 2xx answer,
// or an *APIError. Path is relative to the base URL ("/v1/stats") or a
// full URL. Body may be nil. It is the escape hatch for endpoints without
// a typed method.
func (c *Client) Do(ctx context.Context, method, path string, body []byte, contentType string, opts ...CallOption) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	auth := authClient
	if strings.HasPrefix(path, "/v1/admin") || strings.HasPrefix(path, "/v1/cluster") {
		auth = authAdmin
	}
	return c.do(ctx, request{method: method, path: path, body: r, contentType: contentType, auth: auth}, nil, opts)
}

func (c *Client) url(path string, q url.Values) (string, error) {
	var u *url.URL
	if strings.HasPrefix(path, "http://") || strings.HasPrefix(path, "https://") {
		p, err := url.Parse(path)
		if err != nil {
			return "", fmt.Errorf("parse url %q: %w", path, err)
		}
		u = p
	} else {
		p, err := url.Parse(path)
		if err != nil {
			return "", fmt.Errorf("parse path %q: %w", path, err)
		}
		u = c.base.ResolveReference(&url.URL{Path: c.base.Path + p.Path, RawQuery: p.RawQuery})
	}
	if len(q) > 0 {
		merged := u.Query()
		for k, vs := range q {
			for _, v := range vs {
				merged.Add(k, v)
			}
		}
		u.RawQuery = merged.Encode()
	}
	return u.String(), nil
}

// do sends req and decodes a 2xx JSON body into out (when non-nil).
func (c *Client) do(ctx context.Context, req request, out any, opts []CallOption) (int, []byte, error) {
	var o callOpts
	for _, f := range opts {
		f(&o)
	}
	q := req.query
	if o.stale {
		if q == nil {
			q = url.Values{}
		}
		q.Set("consistency", "stale")
	}
	u, err := c.url(req.path, q)
	if err != nil {
		return 0, nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u, req.body)
	if err != nil {
		return 0, nil, fmt.Errorf("build %s %s: %w", req.method, req.path, err)
	}
	if req.body != nil {
		ct := req.contentType
		if ct == "" {
			ct = "application/json"
		}
		hr.Header.Set("Content-Type", ct)
	}
	hr.Header.Set("Accept", "application/json")
	if c.userAgent != "" {
		hr.Header.Set("User-Agent", c.userAgent)
	}
	switch req.auth {
	case authClient:
		if c.clientID != "" {
			hr.Header.Set("client-id", c.clientID)
		}
		if c.clientSecret != "" {
			hr.Header.Set("client-secret", c.clientSecret)
		}
	case authAdmin:
		if c.adminToken != "" {
			hr.Header.Set("Authorization", "Bearer "+c.adminToken)
		}
	}
	if o.idemKey != "" {
		hr.Header.Set("Idempotency-Key", o.idemKey)
	}
	for k, vs := range o.header {
		for _, v := range vs {
			hr.Header.Add(k, v)
		}
	}
	resp, err := c.hc.Do(hr)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", req.method, req.path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if o.status != nil {
		*o.status = resp.StatusCode
	}
	if o.raw != nil {
		*o.raw = body
	}
	if err != nil {
		return resp.StatusCode, body, fmt.Errorf("%s %s: read response: %w", req.method, req.path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, body, newAPIError(resp.StatusCode, body)
	}
	if out != nil && len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, out); err != nil {
			return resp.StatusCode, body, fmt.Errorf("%s %s: decode %d response: %w", req.method, req.path, resp.StatusCode, err)
		}
	}
	return resp.StatusCode, body, nil
}

func newAPIError(status int, body []byte) *APIError {
	e := &APIError{Status: status, Body: body}
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) == nil {
		e.Fields = fields
		_ = json.Unmarshal(fields["error"], &e.Code)
		_ = json.Unmarshal(fields["message"], &e.Message)
	} else {
		e.Message = strings.TrimSpace(string(body))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "..."
		}
	}
	return e
}

func jsonBody(v any) (io.Reader, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return bytes.NewReader(b), nil
}
