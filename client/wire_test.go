package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer records requests and answers from a handler per route.
type fakeServer struct {
	mu   sync.Mutex
	reqs []*http.Request
	body []string
}

func newServer(t *testing.T, h func(w http.ResponseWriter, r *http.Request, body string)) (*fakeServer, *Client) {
	t.Helper()
	fs := &fakeServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fs.mu.Lock()
		fs.reqs = append(fs.reqs, r)
		fs.body = append(fs.body, string(b))
		fs.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		h(w, r, string(b))
	}))
	t.Cleanup(srv.Close)
	c, err := New(srv.URL+"/", WithCredentials("cl_1", "sec_1"), WithAdminToken("admintok"))
	if err != nil {
		t.Fatal(err)
	}
	return fs, c
}

func (fs *fakeServer) last() (*http.Request, string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.reqs[len(fs.reqs)-1], fs.body[len(fs.body)-1]
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestCreateSendsAuthBodyAndIdempotencyKey(t *testing.T) {
	fs, c := newServer(t, func(w http.ResponseWriter, r *http.Request, body string) {
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"actionId":"act_x","activeAt":"2030-01-01T00:00:00.000Z","expiresAt":"2030-01-02T00:00:00.000Z","createdAt":"2030-01-01T00:00:00.000Z","pinRequired":true}`)
	})
	exp := time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)
	var raw []byte
	got, err := c.Create(ctx(t), CreateRequest{Payload: json.RawMessage(`{"a":1}`), PIN: "1234", ExpiresAt: exp},
		WithIdempotencyKey("k1"), CaptureBody(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if got.ActionID != "act_x" || !got.PINRequired || !got.ExpiresAt.Equal(exp) {
		t.Errorf("decoded %+v", got)
	}
	if !strings.Contains(string(raw), `"act_x"`) {
		t.Errorf("CaptureBody got %q", raw)
	}
	r, body := fs.last()
	if r.Method != http.MethodPost || r.URL.Path != "/v1/actions" {
		t.Errorf("request %s %s", r.Method, r.URL.Path)
	}
	if r.Header.Get("client-id") != "cl_1" || r.Header.Get("client-secret") != "sec_1" {
		t.Errorf("auth headers %v", r.Header)
	}
	if r.Header.Get("Authorization") != "" {
		t.Errorf("admin token leaked to a client call")
	}
	if r.Header.Get("Idempotency-Key") != "k1" || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", r.Header)
	}
	var sent map[string]any
	if err := json.Unmarshal([]byte(body), &sent); err != nil {
		t.Fatal(err)
	}
	if sent["pin"] != "1234" || sent["expires_at"] != "2030-01-02T00:00:00Z" {
		t.Errorf("body %s", body)
	}
	if _, ok := sent["active_at"]; ok {
		t.Errorf("unset active_at was sent: %s", body)
	}
}

func TestAPIErrorIsTyped(t *testing.T) {
	_, c := newServer(t, func(w http.ResponseWriter, r *http.Request, body string) {
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, `{"error":"already_used","message":"action already consumed","consumedAt":"2030-01-01T00:00:00.000Z","consumedReason":"consumed"}`)
	})
	_, err := c.Consume(ctx(t), "act_x", &ConsumeRequest{PIN: "1234"})
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want *APIError", err)
	}
	if ae.Status != 409 || ae.Code != "already_used" || ae.Message != "action already consumed" {
		t.Errorf("APIError %+v", ae)
	}
	var reason string
	if !ae.Field("consumedReason", &reason) || reason != "consumed" {
		t.Errorf("Field(consumedReason) = %q", reason)
	}
	if !IsCode(err, "already_used") || ErrorCode(errors.New("x")) != "" {
		t.Errorf("IsCode/ErrorCode wrong")
	}
	if !strings.Contains(err.Error(), "409 already_used") {
		t.Errorf("Error() = %q", err.Error())
	}
}

func TestNonJSONError(t *testing.T) {
	_, c := newServer(t, func(w http.ResponseWriter, r *http.Request, body string) {
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, "upstream broke")
	})
	_, err := c.Stats(ctx(t))
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 502 || ae.Code != "" || ae.Message != "upstream broke" {
		t.Fatalf("err = %#v", err)
	}
}

func TestConsumeGetCancelPaths(t *testing.T) {
	fs, c := newServer(t, func(w http.ResponseWriter, r *http.Request, body string) {
		switch {
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/consume"):
			io.WriteString(w, `{"actionId":"act_x","state":"consumed","payload":{"u":"a@b"},"consumedAt":"2030-01-01T00:00:00.000Z"}`)
		case r.Method == http.MethodGet:
			io.WriteString(w, `{"actionId":"act_x","state":"consumed","consumedReason":"consumed","failedPinAttempts":1,"consumer":{"ip":"1.2.3.4"}}`)
		case r.Method == http.MethodDelete:
			io.WriteString(w, `{"actionId":"act_x","state":"canceled","canceledAt":"2030-01-01T00:00:00.000Z"}`)
		}
	})
	cons, err := c.Consume(ctx(t), "act_x", nil)
	if err != nil || string(cons.Payload) != `{"u":"a@b"}` {
		t.Fatalf("consume %+v %v", cons, err)
	}
	r, body := fs.last()
	if r.URL.Path != "/v1/actions/act_x/consume" || body != "" {
		t.Errorf("consume sent %s body %q", r.URL.Path, body)
	}
	a, err := c.Get(ctx(t), "act_x", Stale())
	if err != nil || a.FailedPINAttempts != 1 || a.ConsumedReason != "consumed" {
		t.Fatalf("get %+v %v", a, err)
	}
	r, _ = fs.last()
	if r.URL.Query().Get("consistency") != "stale" {
		t.Errorf("Stale() not sent: %s", r.URL.RawQuery)
	}
	cn, err := c.Cancel(ctx(t), "act_x")
	if err != nil || cn.State != "canceled" {
		t.Fatalf("cancel %+v %v", cn, err)
	}
}

func TestListAllFollowsNextToken(t *testing.T) {
	fs, c := newServer(t, func(w http.ResponseWriter, r *http.Request, body string) {
		switch r.URL.Query().Get("nextToken") {
		case "":
			io.WriteString(w, `{"actions":[{"actionId":"a1"},{"actionId":"a2"}],"nextToken":"t1"}`)
		case "t1":
			io.WriteString(w, `{"actions":[{"actionId":"a3"}],"nextToken":null}`)
		default:
			w.WriteHeader(400)
		}
	})
	from := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var ids []string
	err := c.ListAll(ctx(t), ListQuery{State: "active", CreatedFrom: from, Limit: 2, OrderBy: "activeAt", Order: "asc"}, func(p *ListPage) error {
		for _, a := range p.Actions {
			ids = append(ids, a.ActionID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ids, ",") != "a1,a2,a3" {
		t.Errorf("ids = %v", ids)
	}
	r, _ := fs.last()
	q := r.URL.Query()
	if q.Get("state") != "active" || q.Get("created_from") != "2030-01-01T00:00:00Z" || q.Get("limit") != "2" ||
		q.Get("order_by") != "activeAt" || q.Get("order") != "asc" || q.Get("nextToken") != "t1" {
		t.Errorf("query %s", r.URL.RawQuery)
	}
}

func TestCSVAndAdminCalls(t *testing.T) {
	fs, c := newServer(t, func(w http.ResponseWriter, r *http.Request, body string) {
		switch r.URL.Path {
		case "/v1/actions":
			io.WriteString(w, `{"total":2,"created":1,"failed":1,"results":[{"row":2,"status":"created","actionId":"act_1"},{"row":3,"status":"failed","error":"invalid_request","message":"payload_json"}]}`)
		case "/v1/admin/clients":
			w.WriteHeader(201)
			io.WriteString(w, `{"clientId":"cl_n","clientSecret":"sec_n"}`)
		default:
			io.WriteString(w, `{}`)
		}
	})
	res, err := c.CreateCSV(ctx(t), strings.NewReader("payload_json,pin,active_at,expires_at\n{},,,\nbad,,,\n"))
	if err != nil || res.Created != 1 || res.Results[1].Error != "invalid_request" {
		t.Fatalf("csv %+v %v", res, err)
	}
	r, _ := fs.last()
	if r.Header.Get("Content-Type") != "text/csv" {
		t.Errorf("csv content type %q", r.Header.Get("Content-Type"))
	}
	nc, err := c.CreateClient(ctx(t), "shop")
	if err != nil || nc.ClientID != "cl_n" || nc.ClientSecret != "sec_n" {
		t.Fatalf("create client %+v %v", nc, err)
	}
	r, body := fs.last()
	if r.Header.Get("Authorization") != "Bearer admintok" || r.Header.Get("client-secret") != "" || body != `{"name":"shop"}` {
		t.Errorf("admin call headers %v body %q", r.Header, body)
	}
	if _, err := c.TransferLeadership(ctx(t), "n2"); err != nil {
		t.Fatal(err)
	}
	r, body = fs.last()
	if r.URL.Path != "/v1/cluster/transfer-leadership" || body != `{"to":"n2"}` {
		t.Errorf("transfer %s %q", r.URL.Path, body)
	}
	if _, err := c.RemoveServer(ctx(t), "n3"); err != nil {
		t.Fatal(err)
	}
	r, _ = fs.last()
	if r.Method != http.MethodDelete || r.URL.Path != "/v1/cluster/servers/n3" || r.Header.Get("Authorization") != "Bearer admintok" {
		t.Errorf("remove %s %s", r.Method, r.URL.Path)
	}
}

func TestDemoHasNoAuth(t *testing.T) {
	fs, c := newServer(t, func(w http.ResponseWriter, r *http.Request, body string) {
		w.WriteHeader(201)
		io.WriteString(w, `{"actionId":"act_d","revealUrl":"http://example.invalid/r/act_d","expiresAt":"2030-01-01T00:05:00.000Z"}`)
	})
	d, err := c.Demo(ctx(t))
	if err != nil || d.ActionID != "act_d" {
		t.Fatalf("demo %+v %v", d, err)
	}
	r, _ := fs.last()
	if r.Header.Get("client-id") != "" || r.Header.Get("Authorization") != "" {
		t.Errorf("demo sent credentials: %v", r.Header)
	}
}

func TestContextCancel(t *testing.T) {
	block := make(chan struct{})
	_, c := newServer(t, func(w http.ResponseWriter, r *http.Request, body string) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	})
	defer close(block)
	cx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Stats(cx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestNewRejectsBadURL(t *testing.T) {
	for _, u := range []string{"127.0.0.1:8080", "ftp://x", "http://"} {
		if _, err := New(u); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}
