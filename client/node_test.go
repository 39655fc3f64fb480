package client_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactonce/exactonce/client"
	"github.com/exactonce/exactonce/httpapi"
	"github.com/exactonce/exactonce/internal/testnode"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newSDK(t *testing.T, url string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantCode checks that err matches sentinel under errors.Is and is an
// *APIError with that status.
func wantCode(t *testing.T, what string, err, sentinel error, status int) *client.APIError {
	t.Helper()
	var ae *client.APIError
	if !errors.Is(err, sentinel) || !errors.As(err, &ae) || ae.Status != status {
		t.Fatalf("%s: err = %v, want %v with HTTP %d", what, err, sentinel, status)
	}
	for _, other := range []error{client.ErrAlreadyUsed, client.ErrExpired, client.ErrInvalidRequest, client.ErrUnauthorized} {
		if other != sentinel && errors.Is(err, other) {
			t.Errorf("%s: %v also matches %v", what, err, other)
		}
	}
	return ae
}

func TestActionsAgainstARealNode(t *testing.T) {
	node := testnode.Start(t, testnode.Options{})
	ctx := testCtx(t)
	c := newSDK(t, node.URL, client.WithCredentials(node.ClientID, node.ClientSecret))

	exp := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	created, err := c.Create(ctx, client.CreateRequest{Payload: []byte(`{"email":"a@example.com"}`), PIN: "4711", ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	if !created.PINRequired || !created.ExpiresAt.Equal(exp) || !strings.HasPrefix(created.ActionID, "act_") {
		t.Errorf("created %+v, want a PIN action expiring at %v", created, exp)
	}
	wantCode(t, "consume without PIN", must(c.Consume(ctx, created.ActionID, nil)), client.ErrPINRequired, 401)
	ae := wantCode(t, "wrong PIN", must(c.Consume(ctx, created.ActionID, &client.ConsumeRequest{PIN: "0000"})), client.ErrInvalidPIN, 401)
	var left int
	if !ae.Field("attemptsRemaining", &left) || left != 2 {
		t.Errorf("attemptsRemaining = %d, want 2 (%s)", left, ae.Body)
	}
	consumed, err := c.Consume(ctx, created.ActionID, &client.ConsumeRequest{PIN: "4711", Consumer: []byte(`{"ip":"203.0.113.9"}`)})
	if err != nil || string(consumed.Payload) != `{"email":"a@example.com"}` || consumed.State != "consumed" {
		t.Fatalf("consume: %+v %v", consumed, err)
	}
	ae = wantCode(t, "second consume", must(c.Consume(ctx, created.ActionID, &client.ConsumeRequest{PIN: "4711"})), client.ErrAlreadyUsed, 409)
	var reason string
	if !ae.Field("consumedReason", &reason) || reason != "consumed" {
		t.Errorf("consumedReason = %q (%s)", reason, ae.Body)
	}
	a, err := c.Get(ctx, created.ActionID)
	if err != nil || a.State != "consumed" || a.ConsumedAt == nil || a.FailedPINAttempts != 1 || string(a.Consumer) != `{"ip":"203.0.113.9"}` {
		t.Fatalf("get: %+v %v", a, err)
	}
	if _, err := c.Get(ctx, created.ActionID, client.Stale()); err != nil {
		t.Errorf("stale get: %v", err)
	}

	later, err := c.Create(ctx, client.CreateRequest{Payload: []byte(`{}`), ActiveAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, "consume before activeAt", must(c.Consume(ctx, later.ActionID, nil)), client.ErrNotActive, 409)
	canceled, err := c.Cancel(ctx, later.ActionID)
	if err != nil || canceled.State != "canceled" {
		t.Fatalf("cancel: %+v %v", canceled, err)
	}
	wantCode(t, "consume canceled", must(c.Consume(ctx, later.ActionID, nil)), client.ErrCanceled, 410)
	wantCode(t, "unknown action", must(c.Get(ctx, "act_nosuchaction")), client.ErrActionNotFound, 404)
	wantCode(t, "payload not an object", must(c.Create(ctx, client.CreateRequest{Payload: []byte(`[1]`)})), client.ErrInvalidRequest, 400)
	wantCode(t, "payload over 16 KiB", must(c.Create(ctx, client.CreateRequest{Payload: []byte(`{"x":"` + strings.Repeat("a", 17<<10) + `"}`)})), client.ErrPayloadTooLarge, 413)

	_, err = c.Create(ctx, client.CreateRequest{Payload: []byte(`{"k":1}`)}, client.WithIdempotencyKey("order-1"))
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, "key reused", must(c.Create(ctx, client.CreateRequest{Payload: []byte(`{"k":2}`)}, client.WithIdempotencyKey("order-1"))),
		client.ErrIdempotencyKeyReused, 422)

	res, err := c.CreateCSV(ctx, strings.NewReader("payload_json,pin,active_at,expires_at\n\"{\"\"v\"\":1}\",,,\nnot json,,,\n"))
	if err != nil || res.Total != 2 || res.Created != 1 || res.Failed != 1 || res.Results[1].Error != "invalid_request" {
		t.Fatalf("csv: %+v %v", res, err)
	}
	var ids []string
	err = c.ListAll(ctx, client.ListQuery{Limit: 2, Order: "asc"}, func(p *client.ListPage) error {
		for _, a := range p.Actions {
			ids = append(ids, a.ActionID)
		}
		return nil
	})
	if err != nil || len(ids) != 4 || ids[0] != created.ActionID {
		t.Errorf("list all: %v %v, want the 4 actions oldest first", ids, err)
	}
	st, err := c.Stats(ctx)
	if err != nil || st.Total != 4 || st.ByState["consumed"] != 1 || st.ByState["canceled"] != 1 || st.ConsumedLast24h != 1 {
		t.Errorf("stats: %+v %v", st, err)
	}

	bad := newSDK(t, node.URL, client.WithCredentials(node.ClientID, "sec_wrong"))
	wantCode(t, "wrong secret", must(bad.Stats(ctx)), client.ErrUnauthorized, 401)
	_, _, err = c.Do(ctx, http.MethodPut, "/v1/stats", nil, "")
	wantCode(t, "wrong method", err, client.ErrMethodNotAllowed, 405)
	_, _, err = c.Do(ctx, http.MethodGet, "/v1/nothing-here", nil, "")
	wantCode(t, "unknown route", err, client.ErrNotFound, 404)
}

// must drops a typed result and keeps the error.
func must[T any](_ T, err error) error { return err }

func TestQuotaAgainstARealNode(t *testing.T) {
	node := testnode.Start(t, testnode.Options{HTTP: func(c *httpapi.Config) { c.MaxActionsPerClient = 1 }})
	ctx := testCtx(t)
	c := newSDK(t, node.URL, client.WithCredentials(node.ClientID, node.ClientSecret))
	if _, err := c.Create(ctx, client.CreateRequest{Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "over quota", must(c.Create(ctx, client.CreateRequest{Payload: []byte(`{}`)})), client.ErrQuotaExceeded, 429)
}

func TestAdminAndDemoAgainstARealNode(t *testing.T) {
	node := testnode.Start(t, testnode.Options{})
	ctx := testCtx(t)
	admin := newSDK(t, node.URL, client.WithAdminToken(node.AdminToken))
	nc, err := admin.CreateClient(ctx, "shop")
	if err != nil || nc.Name != "shop" || !strings.HasPrefix(nc.ClientSecret, "sec_") || nc.CreatedAt.IsZero() {
		t.Fatalf("create client: %+v %v", nc, err)
	}
	shop := newSDK(t, node.URL, client.WithCredentials(nc.ClientID, nc.ClientSecret))
	if _, err := shop.Stats(ctx); err != nil {
		t.Fatalf("the new client's credentials: %v", err)
	}
	list, err := admin.ListClients(ctx)
	if err != nil || len(list.Clients) != 2 {
		t.Fatalf("list clients: %+v %v", list, err)
	}
	rev, err := admin.RevokeClient(ctx, nc.ClientID)
	if err != nil || rev.ClientID != nc.ClientID || rev.RevokedAt.IsZero() {
		t.Fatalf("revoke: %+v %v", rev, err)
	}
	wantCode(t, "revoked client", must(shop.Stats(ctx)), client.ErrUnauthorized, 401)
	wantCode(t, "revoke unknown", must(admin.RevokeClient(ctx, "cl_nosuch")), client.ErrClientNotFound, 404)
	wantCode(t, "admin call with a client's credentials", must(shop.ListClients(ctx)), client.ErrUnauthorized, 401)

	anon := newSDK(t, node.URL)
	d, err := anon.Demo(ctx)
	if err != nil || !strings.HasPrefix(d.RevealURL, node.URL+"/") {
		t.Fatalf("demo: %+v %v", d, err)
	}
	body, err := anon.Reveal(ctx, d.RevealURL)
	if err != nil || !strings.Contains(string(body), `"payload"`) {
		t.Fatalf("reveal: %s %v", body, err)
	}
	wantCode(t, "second reveal", must(anon.Reveal(ctx, d.RevealURL)), client.ErrAlreadyUsed, 409)
	if ok, err := anon.Ready(ctx); !ok || err != nil {
		t.Errorf("ready: %v %v", ok, err)
	}
}

func TestConnectionFailureIsTemporary(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	c := newSDK(t, url)
	_, err := c.Stats(testCtx(t))
	if !errors.Is(err, client.ErrConnection) || !client.Temporary(err) || client.ErrorCode(err) != "" {
		t.Fatalf("err = %v, want ErrConnection, Temporary", err)
	}
}

// flakyProxy stands between the SDK and a node. For each request it takes
// the next fault from its plan ("" once the plan is used up):
//   - "drop": forward the request, then close the connection without an
//     answer (the write happened, its answer is lost);
//   - "503": answer 503 overloaded without forwarding (nothing done).
type flakyProxy struct {
	t      *testing.T
	target string

	mu   sync.Mutex
	plan []string
	keys []string
}

func newFlakyProxy(t *testing.T, target string, plan ...string) (*flakyProxy, string) {
	p := &flakyProxy{t: t, target: target, plan: plan}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv.URL
}

func (p *flakyProxy) attempts() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.keys...)
}

func (p *flakyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.keys = append(p.keys, r.Header.Get("Idempotency-Key"))
	fault := ""
	if len(p.plan) > 0 {
		fault, p.plan = p.plan[0], p.plan[1:]
	}
	p.mu.Unlock()
	if fault == "503" {
		w.Header().Set("Retry-After", "0")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":"overloaded","message":"busy"}`)
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), r.Body)
	if err != nil {
		p.t.Errorf("proxy: %v", err)
		return
	}
	out.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(out)
	if err != nil {
		p.t.Errorf("proxy: %v", err)
		return
	}
	defer resp.Body.Close()
	if fault == "drop" {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			p.t.Errorf("proxy: hijack: %v", err)
			return
		}
		conn.Close()
		return
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	bw := bufio.NewWriter(w)
	io.Copy(bw, resp.Body)
	bw.Flush()
}

var fastRetry = client.RetryPolicy{MaxAttempts: 4, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}

func TestConsumeWithRetryKeepsItsKeyAcrossALostAnswer(t *testing.T) {
	node := testnode.Start(t, testnode.Options{})
	ctx := testCtx(t)
	direct := newSDK(t, node.URL, client.WithCredentials(node.ClientID, node.ClientSecret))
	created, err := direct.Create(ctx, client.CreateRequest{Payload: []byte(`{"n":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	proxy, url := newFlakyProxy(t, node.URL, "drop", "503")
	c := newSDK(t, url, client.WithCredentials(node.ClientID, node.ClientSecret))
	consumed, err := c.ConsumeWithRetry(ctx, created.ActionID, nil, fastRetry)
	if err != nil || string(consumed.Payload) != `{"n":1}` {
		t.Fatalf("ConsumeWithRetry: %+v %v, want the payload although the first answer was lost", consumed, err)
	}
	keys := proxy.attempts()
	if len(keys) != 3 || keys[0] == "" || keys[1] != keys[0] || keys[2] != keys[0] {
		t.Errorf("attempts sent keys %q: want 3 attempts with one key", keys)
	}
	// The first attempt consumed the action: a consume with another key
	// is refused, so the retry was a replay, not a second consume.
	wantCode(t, "consume after the retried one", must(direct.Consume(ctx, created.ActionID, nil)), client.ErrAlreadyUsed, 409)
}

func TestConsumeWithRetryStopsAtADefiniteAnswer(t *testing.T) {
	node := testnode.Start(t, testnode.Options{})
	ctx := testCtx(t)
	direct := newSDK(t, node.URL, client.WithCredentials(node.ClientID, node.ClientSecret))
	created, err := direct.Create(ctx, client.CreateRequest{Payload: []byte(`{}`), PIN: "4711"})
	if err != nil {
		t.Fatal(err)
	}
	proxy, url := newFlakyProxy(t, node.URL)
	c := newSDK(t, url, client.WithCredentials(node.ClientID, node.ClientSecret))
	_, err = c.ConsumeWithRetry(ctx, created.ActionID, &client.ConsumeRequest{PIN: "0000"}, fastRetry, client.WithIdempotencyKey("mine-1"))
	wantCode(t, "wrong PIN", err, client.ErrInvalidPIN, 401)
	if client.Temporary(err) {
		t.Errorf("a wrong PIN counted as temporary")
	}
	if keys := proxy.attempts(); len(keys) != 1 || keys[0] != "mine-1" {
		t.Errorf("attempts %q: want one, with the caller's key", keys)
	}
}

func TestRetryIsBounded(t *testing.T) {
	node := testnode.Start(t, testnode.Options{})
	ctx := testCtx(t)
	proxy, url := newFlakyProxy(t, node.URL, "drop", "drop", "drop", "drop", "drop", "drop")
	c := newSDK(t, url, client.WithCredentials(node.ClientID, node.ClientSecret))
	_, err := c.Stats(ctx, client.WithRetry(fastRetry))
	if !errors.Is(err, client.ErrConnection) || !client.Temporary(err) {
		t.Fatalf("err = %v, want the last connection failure", err)
	}
	if n := len(proxy.attempts()); n != fastRetry.MaxAttempts {
		t.Errorf("%d attempts, want MaxAttempts = %d", n, fastRetry.MaxAttempts)
	}
	// A write without an Idempotency-Key (the demo) is not sent again
	// after a lost answer: it might have been done.
	proxy2, url2 := newFlakyProxy(t, node.URL, "drop", "drop")
	if _, err := newSDK(t, url2).Demo(ctx, client.WithRetry(fastRetry)); !errors.Is(err, client.ErrConnection) {
		t.Fatalf("demo: %v, want ErrConnection", err)
	}
	if n := len(proxy2.attempts()); n != 1 {
		t.Errorf("demo sent %d times after a lost answer, want 1", n)
	}
}
