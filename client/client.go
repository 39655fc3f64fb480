// Package client is the Go SDK of ExactOnce, a replicated store of
// one-time actions (magic links, vouchers, confirmations) that are
// consumed exactly once. It covers the whole HTTP API of docs/api.md:
// actions (create, CSV batch, consume, verify, list, cancel), stats, the
// demo, client administration and cluster operations.
//
// Every call takes a context.Context. A non-2xx answer is an *APIError
// carrying the status, the error code, the message and the body's extra
// fields; it matches its code's sentinel under errors.Is:
//
//	_, err := c.Consume(ctx, id, nil)
//	switch {
//	case errors.Is(err, client.ErrAlreadyUsed): // someone else got it
//	case errors.Is(err, client.ErrExpired):     // too late
//	case client.Temporary(err):                 // outcome unknown: retry with the same Idempotency-Key
//	}
//
// A failure to talk to the node at all wraps ErrConnection. Calls are not
// retried unless asked: ConsumeWithRetry, or WithRetry on any call, retry
// what is safe to retry and keep one Idempotency-Key across the attempts,
// so a consume whose answer was lost is answered, on the next attempt,
// with the first attempt's outcome instead of being done twice. The
// client is safe for concurrent use and pools its connections.
//
// docs/sdk.md is the guide.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
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
// every /v1 call except the demo and the admin calls.
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
// connections per host, so that busy callers reuse them.
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

// CallOption adjusts one call.
type CallOption func(*callOpts)

type callOpts struct {
	idemKey string
	stale   bool
	raw     *[]byte
	status  *int
	header  http.Header
	retry   *RetryPolicy
}

// WithIdempotencyKey sends an Idempotency-Key header (create, consume,
// cancel): for 24 hours the same request with the same key gets the first
// answer replayed instead of being done again (docs/api.md).
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
	body        []byte // nil: no body
	contentType string
	auth        authKind
	// keyed marks the calls that accept an Idempotency-Key (create,
	// consume, cancel): with a key, retrying them is safe whatever
	// happened to the first attempt.
	keyed bool
}

// Do performs a raw call and returns the status and body of a 2xx answer,
// or an error (an *APIError for a non-2xx answer). Path is relative to the
// base URL ("/v1/stats") or a full URL. Body may be nil. It is the escape
// hatch for endpoints without a typed method.
func (c *Client) Do(ctx context.Context, method, path string, body []byte, contentType string, opts ...CallOption) (int, []byte, error) {
	auth := authClient
	if strings.HasPrefix(path, "/v1/admin") || strings.HasPrefix(path, "/v1/cluster") {
		auth = authAdmin
	}
	return c.do(ctx, request{method: method, path: path, body: body, contentType: contentType, auth: auth}, nil, opts)
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

// do sends req, retrying as the call's RetryPolicy allows, and decodes a
// 2xx JSON body into out (when non-nil).
func (c *Client) do(ctx context.Context, req request, out any, opts []CallOption) (int, []byte, error) {
	var o callOpts
	for _, f := range opts {
		f(&o)
	}
	if o.retry == nil {
		return c.once(ctx, req, out, &o)
	}
	if req.keyed && o.idemKey == "" {
		// One key for every attempt: the server answers a repeat with the
		// first attempt's outcome.
		o.idemKey = NewIdempotencyKey()
	}
	p := o.retry.withDefaults()
	for attempt := 1; ; attempt++ {
		status, body, err := c.once(ctx, req, out, &o)
		if err == nil || attempt >= p.MaxAttempts || !retryable(req, o.idemKey != "", err) {
			return status, body, err
		}
		if ctx.Err() != nil {
			return status, body, err
		}
		t := time.NewTimer(p.backoff(attempt, err))
		select {
		case <-ctx.Done():
			t.Stop()
			return status, body, fmt.Errorf("%w; stopped retrying after %d attempts: %w", err, attempt, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// once sends req once.
func (c *Client) once(ctx context.Context, req request, out any, o *callOpts) (int, []byte, error) {
	q := req.query
	if o.stale {
		q = url.Values{}
		for k, v := range req.query {
			q[k] = v
		}
		q.Set("consistency", "stale")
	}
	u, err := c.url(req.path, q)
	if err != nil {
		return 0, nil, err
	}
	var rd io.Reader
	if req.body != nil {
		rd = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u, rd)
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
		return 0, nil, fmt.Errorf("%s %s: %w: %w", req.method, req.path, ErrConnection, err)
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
		return resp.StatusCode, body, fmt.Errorf("%s %s: read response: %w: %w", req.method, req.path, ErrConnection, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, body, newAPIError(resp.StatusCode, resp.Header, body)
	}
	if out != nil && len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, out); err != nil {
			return resp.StatusCode, body, fmt.Errorf("%s %s: decode %d response: %w", req.method, req.path, resp.StatusCode, err)
		}
	}
	return resp.StatusCode, body, nil
}

func jsonBody(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return b, nil
}
