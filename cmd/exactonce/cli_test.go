package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exactonce/exactonce/internal/secure"
)

type seen struct {
	method, path, query, body string
	header                    http.Header
}

func fakeAPI(t *testing.T, h func(w http.ResponseWriter, r *http.Request)) (string, *[]seen) {
	t.Helper()
	var log []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		log = append(log, seen{r.Method, r.URL.Path, r.URL.RawQuery, string(b), r.Header.Clone()})
		r.Body = io.NopCloser(bytes.NewReader(b))
		w.Header().Set("Content-Type", "application/json")
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &log
}

func runCLI(t *testing.T, env map[string]string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code = run(ctx, args, strings.NewReader(stdin), &out, &errb, func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

func TestCreatePrintsPrettyJSONAndSendsFlags(t *testing.T) {
	url, log := fakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(201)
		io.WriteString(w, `{"actionId":"act_1","pinRequired":true}`)
	})
	env := map[string]string{"EXACTONCE_ADDR": "http://127.0.0.1:1", "EXACTONCE_CLIENT_ID": "cl_env", "EXACTONCE_CLIENT_SECRET": "sec_env"}
	code, out, errs := runCLI(t, env, "", "--addr", url, "--client-id", "cl_flag", "--idempotency-key", "k-1",
		"create", "--payload", `{"u":"a"}`, "--pin", "1234", "--expires-at", "2030-01-02T00:00:00Z")
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, errs)
	}
	if out != "{\n  \"actionId\": \"act_1\",\n  \"pinRequired\": true\n}\n" {
		t.Errorf("stdout %q", out)
	}
	r := (*log)[0]
	if r.method != "POST" || r.path != "/v1/actions" {
		t.Errorf("request %s %s", r.method, r.path)
	}
	if r.header.Get("client-id") != "cl_flag" || r.header.Get("client-secret") != "sec_env" {
		t.Errorf("flag should beat env, env should fill in: %v", r.header)
	}
	if r.header.Get("Idempotency-Key") != "k-1" {
		t.Errorf("idempotency key %q", r.header.Get("Idempotency-Key"))
	}
	var body map[string]any
	json.Unmarshal([]byte(r.body), &body)
	if body["pin"] != "1234" || body["expires_at"] != "2030-01-02T00:00:00Z" || body["payload"].(map[string]any)["u"] != "a" {
		t.Errorf("body %s", r.body)
	}
}

func TestAPIErrorExitsFourWithCode(t *testing.T) {
	url, _ := fakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(409)
		io.WriteString(w, `{"error":"already_used","message":"already consumed","consumedAt":"2030-01-01T00:00:00.000Z","consumedReason":"consumed"}`)
	})
	code, out, errs := runCLI(t, nil, "", "--addr", url, "consume", "act_1", "--pin", "1234", "--consumer", `{"ip":"1.2.3.4"}`)
	if code != exitAPI {
		t.Fatalf("exit %d, want %d (API error)", code, exitAPI)
	}
	if out != "" {
		t.Errorf("stdout should be empty on error: %q", out)
	}
	if !strings.Contains(errs, "already_used") || !strings.Contains(errs, "HTTP 409") || !strings.Contains(errs, "already consumed") ||
		!strings.Contains(errs, "consumedReason") {
		t.Errorf("stderr %q", errs)
	}
}

func TestBadInputNeverCallsServer(t *testing.T) {
	url, log := fakeAPI(t, func(w http.ResponseWriter, r *http.Request) {})
	for _, args := range [][]string{
		{"create"},
		{"create", "--payload", "not json"},
		{"create", "--payload", "[1]"},
		{"create", "--payload", "{}", "--expires-at", "tomorrow"},
		{"consume"},
		{"consume", "a", "--consumer", "x"},
	} {
		code, _, errs := runCLI(t, nil, "", append([]string{"--addr", url}, args...)...)
		if code != exitUsage || errs == "" {
			t.Errorf("%v: exit %d stderr %q", args, code, errs)
		}
	}
	if len(*log) != 0 {
		t.Errorf("server was called %d times", len(*log))
	}
}

func TestListAllFollowsPages(t *testing.T) {
	url, log := fakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("nextToken") == "" {
			io.WriteString(w, `{"actions":[{"actionId":"a1","state":"active"}],"nextToken":"p2"}`)
			return
		}
		io.WriteString(w, `{"actions":[{"actionId":"a2","state":"active"}],"nextToken":null}`)
	})
	code, out, errs := runCLI(t, nil, "", "--addr", url, "list", "--all", "--state", "active", "--limit", "1", "--order", "asc")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var got struct {
		Actions []struct {
			ActionID string `json:"actionId"`
		} `json:"actions"`
		NextToken *string `json:"nextToken"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("stdout not JSON: %v\n%s", err, out)
	}
	if len(got.Actions) != 2 || got.Actions[0].ActionID != "a1" || got.Actions[1].ActionID != "a2" || got.NextToken != nil {
		t.Errorf("got %+v", got)
	}
	if len(*log) != 2 || !strings.Contains((*log)[0].query, "state=active") || !strings.Contains((*log)[1].query, "nextToken=p2") {
		t.Errorf("requests %+v", *log)
	}
}

func TestCSVAndAdminAndCluster(t *testing.T) {
	url, log := fakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"ok":true}`)
	})
	csv := filepath.Join(t.TempDir(), "a.csv")
	os.WriteFile(csv, []byte("payload_json,pin,active_at,expires_at\n\"{\"\"a\"\":1}\",,,\n"), 0o600)
	env := map[string]string{"EXACTONCE_ADMIN_TOKEN": "tok"}
	cases := []struct {
		args         []string
		method, path string
	}{
		{[]string{"create", "--csv", csv}, "POST", "/v1/actions"},
		{[]string{"clients", "create", "shop"}, "POST", "/v1/admin/clients"},
		{[]string{"clients", "list"}, "GET", "/v1/admin/clients"},
		{[]string{"clients", "revoke", "cl_x"}, "DELETE", "/v1/admin/clients/cl_x"},
		{[]string{"cluster", "status"}, "GET", "/v1/cluster"},
		{[]string{"cluster", "transfer", "--to", "n2"}, "POST", "/v1/cluster/transfer-leadership"},
		{[]string{"cluster", "remove", "n3"}, "DELETE", "/v1/cluster/servers/n3"},
		{[]string{"get", "act_1", "--stale"}, "GET", "/v1/actions/act_1"},
		{[]string{"cancel", "act_1"}, "DELETE", "/v1/actions/act_1"},
		{[]string{"stats"}, "GET", "/v1/stats"},
		{[]string{"demo"}, "POST", "/v1/demo"},
	}
	for i, tc := range cases {
		code, _, errs := runCLI(t, env, "", append([]string{"--addr", url}, tc.args...)...)
		if code != 0 {
			t.Errorf("%v: exit %d %s", tc.args, code, errs)
			continue
		}
		r := (*log)[i]
		if r.method != tc.method || r.path != tc.path {
			t.Errorf("%v: sent %s %s, want %s %s", tc.args, r.method, r.path, tc.method, tc.path)
		}
		admin := strings.HasPrefix(tc.path, "/v1/admin") || strings.HasPrefix(tc.path, "/v1/cluster")
		if admin && r.header.Get("Authorization") != "Bearer tok" {
			t.Errorf("%v: no admin token", tc.args)
		}
	}
	if (*log)[0].header.Get("Content-Type") != "text/csv" || !strings.HasPrefix((*log)[0].body, "payload_json,") {
		t.Errorf("csv request %+v", (*log)[0])
	}
	if (*log)[5].body != `{"to":"n2"}` {
		t.Errorf("transfer body %q", (*log)[5].body)
	}
	if !strings.Contains((*log)[7].query, "consistency=stale") {
		t.Errorf("--stale not sent: %q", (*log)[7].query)
	}
}

func TestParseTime(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"+10m":                 now.Add(10 * time.Minute),
		"2h":                   now.Add(2 * time.Hour),
		"7d":                   now.Add(7 * 24 * time.Hour),
		"2030-02-01T00:00:00Z": time.Date(2030, 2, 1, 0, 0, 0, 0, time.UTC),
	} {
		got, err := parseTime("x", in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"soon", "7days", "1.5d"} {
		if _, err := parseTime("x", bad, now); err == nil {
			t.Errorf("parseTime(%q) accepted", bad)
		}
	}
}

func TestTLSFlags(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"total":0}`)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	defer srv.Close()
	if code, _, errs := runCLI(t, nil, "", "--addr", srv.URL, "stats"); code != exitUnknown || !strings.Contains(errs, "certificate") {
		t.Errorf("untrusted server: exit %d stderr %q", code, errs)
	}
	if code, out, errs := runCLI(t, nil, "", "--addr", srv.URL, "--insecure", "stats"); code != 0 || !strings.Contains(out, `"total": 0`) {
		t.Errorf("--insecure: exit %d out %q stderr %q", code, out, errs)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCLI(t, map[string]string{"EXACTONCE_CACERT": ca}, "", "--addr", srv.URL, "stats"); code != 0 {
		t.Errorf("EXACTONCE_CACERT: exit %d stderr %q", code, errs)
	}
}

func TestKeygen(t *testing.T) {
	code, out, errs := runCLI(t, nil, "", "keygen")
	if code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, errs)
	}
	key, err := secure.ParseKey(out)
	if err != nil || !strings.HasSuffix(out, "\n") {
		t.Fatalf("keygen printed %q: %v", out, err)
	}
	if _, again, _ := runCLI(t, nil, "", "keygen"); again == out {
		t.Errorf("two keygens printed the same key")
	}
	keys, err := secure.NewKeys(key)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%x\n", keys.CheckValue())
	file := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(file, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, got, errs := runCLI(t, nil, "", "keygen", "--check-value", file); code != 0 || got != want {
		t.Errorf("--check-value FILE: exit %d %q %s, want %q", code, got, errs, want)
	}
	if code, got, errs := runCLI(t, nil, out, "keygen", "--check-value", "-"); code != 0 || got != want {
		t.Errorf("--check-value -: exit %d %q %s, want %q", code, got, errs, want)
	}
	if code, _, _ := runCLI(t, nil, "not a key", "keygen", "--check-value", "-"); code == 0 {
		t.Errorf("--check-value of garbage exited 0")
	}
}
