package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const csvCT = "text/csv; charset=utf-8"

// csvResults decodes a CSV create response.
func csvResults(t *testing.T, r resp) csvResponse {
	t.Helper()
	var out csvResponse
	if err := json.Unmarshal(r.raw, &out); err != nil {
		t.Fatalf("csv response: %v: %s", err, r.raw)
	}
	return out
}

func TestCSVCreate(t *testing.T) {
	e := newEnv(t, nil)
	body := "\xef\xbb\xbfPayload_JSON , PIN,active_at,Expires_At\r\n" +
		`"{""to"":""a, b"",` + "\n" + `""note"":""q\""x""}",,,` + "\r\n" + // row 2: quotes, comma, newline
		`"{""n"":2}",1234,2030-02-01T00:00:00Z,2030-02-02T00:00:00Z` + "\r\n" + // row 3: pin and times
		`not json,,,` + "\r\n" + // row 4: bad JSON
		`[1],,,` + "\r\n" + // row 5: not an object
		`"{}",12,,` + "\r\n" + // row 6: pin too short
		`"{}",,yesterday,` + "\r\n" + // row 7: bad time
		`"{}",,` + "\r\n" + // row 8: wrong column count
		`"{}",,,2030-01-01T00:00:00Z` + "\r\n" + // row 9: expires in the past (FSM)
		`"{""x"":""` + strings.Repeat("a", 17<<10) + `""}",,,` + "\r\n" + // row 10: payload too large
		`,,,` + "\r\n" // row 11: payload missing
	r := e.do(req{method: "POST", path: "/v1/actions", ctype: csvCT, body: body})
	expect(t, r, 200, "")
	out := csvResults(t, r)
	if out.Total != 10 || out.Created != 2 || out.Failed != 8 || len(out.Results) != 10 {
		t.Fatalf("counts: %s", r.raw)
	}
	for i, res := range out.Results {
		if res.Row != i+2 {
			t.Fatalf("result %d has row %d", i, res.Row)
		}
		wantOK := res.Row == 2 || res.Row == 3
		if wantOK != (res.Status == "created") || (wantOK && !strings.HasPrefix(res.ActionID, "act_")) {
			t.Fatalf("row %d: %+v", res.Row, res)
		}
		if !wantOK && (res.Status != "failed" || res.Error != "invalid_request" || res.Message == "") {
			t.Fatalf("row %d: %+v", res.Row, res)
		}
	}
	if !strings.Contains(out.Results[8].Message, "payload_json") {
		t.Fatalf("row 10 message: %q", out.Results[8].Message)
	}
	c := e.consume(out.Results[0].ActionID, "")
	expect(t, c, 200, "")
	if p, _ := c.body["payload"].(map[string]any); p["to"] != "a, b" || p["note"] != `q"x` {
		t.Fatalf("csv payload: %s", c.raw)
	}
	v := e.do(req{method: "GET", path: "/v1/actions/" + out.Results[1].ActionID})
	if v.body["pinRequired"] != true || v.str("activeAt") != "2030-02-01T00:00:00.000Z" || v.str("state") != "pending" {
		t.Fatalf("row 3 action: %s", v.raw)
	}

	// Header-only CSV: nothing to do.
	r = e.do(req{method: "POST", path: "/v1/actions", ctype: csvCT, body: "payload_json,pin,active_at,expires_at\n"})
	expect(t, r, 200, "")
	if string(r.raw) != `{"total":0,"created":0,"failed":0,"results":[]}`+"\n" {
		t.Fatalf("empty csv: %s", r.raw)
	}
}

func TestCSVRejects(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxCSVRows = 10000 })
	hdr := "payload_json,pin,active_at,expires_at\n"
	over := hdr + strings.Repeat("\"{}\",,,\n", 10001)
	cases := []struct {
		name, body, code string
		status           int
	}{
		{"empty body", "", "invalid_request", 400},
		{"missing column", "payload_json,pin,active_at\n\"{}\",,\n", "invalid_request", 400},
		{"extra column", "payload_json,pin,active_at,expires_at,x\n", "invalid_request", 400},
		{"wrong names", "payload,pin,active_at,expires_at\n", "invalid_request", 400},
		{"bare quote", hdr + "a\"b,,,\n", "invalid_request", 400},
		{"too many rows", over, "payload_too_large", 413},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.stateHash()
			r := e.do(req{method: "POST", path: "/v1/actions", ctype: csvCT, body: c.body})
			expect(t, r, c.status, c.code)
			if e.stateHash() != before {
				t.Fatal("rejected CSV changed state")
			}
		})
	}
}

// csvRowsBody is a CSV create of n valid rows with payloads {"i":0}...
func csvRowsBody(n int) string {
	var sb strings.Builder
	sb.WriteString("payload_json,pin,active_at,expires_at\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, "\"{\"\"i\"\":%d}\",,,\n", i)
	}
	return sb.String()
}

func TestCSV10000Rows(t *testing.T) {
	e := newEnv(t, nil)
	applies := e.b.applies.Load()
	r := e.do(req{method: "POST", path: "/v1/actions", ctype: csvCT, body: csvRowsBody(10000)})
	expect(t, r, 200, "")
	out := csvResults(t, r)
	if out.Total != 10000 || out.Created != 10000 || out.Failed != 0 {
		t.Fatalf("counts %d/%d/%d", out.Total, out.Created, out.Failed)
	}
	if n := e.b.applies.Load() - applies; n != 1 {
		t.Fatalf("%d applies, want 1", n)
	}
	// The ids sort in row order (secure.ActionIDs): the batch lands on
	// adjacent pages of the state's B+tree.
	for i := 1; i < len(out.Results); i++ {
		if a, b := out.Results[i-1].ActionID, out.Results[i].ActionID; a >= b {
			t.Fatalf("row %d id %q does not sort after row %d id %q", out.Results[i].Row, b, out.Results[i-1].Row, a)
		}
	}
	st := e.do(req{method: "GET", path: "/v1/stats"})
	if st.body["total"] != float64(10000) {
		t.Fatalf("stats: %s", st.raw)
	}
}

func listURL(params url.Values) string {
	if len(params) == 0 {
		return "/v1/actions"
	}
	return "/v1/actions?" + params.Encode()
}

func TestListFiltersAndErrors(t *testing.T) {
	e := newEnv(t, nil)
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, e.create(`{"payload":{}}`))
		e.clock.Advance(time.Second)
	}
	pending := e.create(`{"payload":{},"active_at":"2030-06-01T00:00:00Z"}`)
	expect(t, e.consume(ids[0], ""), 200, "")
	expect(t, e.do(req{method: "DELETE", path: "/v1/actions/" + ids[1]}), 200, "")
	oid, osec := e.newClient("other")
	expect(t, e.do(req{method: "POST", path: "/v1/actions", ctype: jsonCT, body: `{"payload":{}}`, client: [2]string{oid, osec}}), 201, "")

	r := e.do(req{method: "GET", path: "/v1/actions"})
	expect(t, r, 200, "")
	var page listResponse
	if err := json.Unmarshal(r.raw, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Actions) != 6 || page.NextToken != nil {
		t.Fatalf("list all: %s", r.raw)
	}
	if page.Actions[0].ActionID != pending || page.Actions[5].ActionID != ids[0] {
		t.Fatalf("default order is createdAt desc: %s", r.raw)
	}
	if !strings.Contains(string(r.raw), `"nextToken":null`) {
		t.Fatalf("nextToken must be null at the end: %s", r.raw)
	}
	for _, c := range []struct {
		q    url.Values
		want int
	}{
		{url.Values{"state": {"consumed"}}, 1},
		{url.Values{"state": {"canceled"}}, 1},
		{url.Values{"state": {"pending"}}, 1},
		{url.Values{"state": {"active"}}, 3},
		{url.Values{"consumed_reason": {"consumed"}}, 1},
		{url.Values{"created_from": {"2030-01-02T03:04:07Z"}}, 4},
		{url.Values{"created_to": {"2030-01-02T03:04:07Z"}}, 2},
		{url.Values{"active_from": {"2030-05-01T00:00:00Z"}}, 1},
		{url.Values{"active_to": {"2030-05-01T00:00:00Z"}}, 5},
		{url.Values{"order_by": {"expiresAt"}, "order": {"asc"}}, 6},
		{url.Values{"consistency": {"stale"}}, 6},
	} {
		r := e.do(req{method: "GET", path: listURL(c.q)})
		expect(t, r, 200, "")
		var p listResponse
		_ = json.Unmarshal(r.raw, &p)
		if len(p.Actions) != c.want {
			t.Errorf("%v: %d actions, want %d", c.q, len(p.Actions), c.want)
		}
	}
	before := e.stateHash()
	for _, c := range []struct {
		q     url.Values
		param string
	}{
		{url.Values{"state": {"done"}}, "state"},
		{url.Values{"consumed_reason": {"x"}}, "consumed_reason"},
		{url.Values{"created_from": {"2030"}}, "created_from"},
		{url.Values{"created_to": {"x"}}, "created_to"},
		{url.Values{"active_from": {"x"}}, "active_from"},
		{url.Values{"active_to": {"x"}}, "active_to"},
		{url.Values{"order_by": {"name"}}, "order_by"},
		{url.Values{"order": {"up"}}, "order"},
		{url.Values{"limit": {"0"}}, "limit"},
		{url.Values{"limit": {"1001"}}, "limit"},
		{url.Values{"limit": {"ten"}}, "limit"},
		{url.Values{"nextToken": {"!!!"}}, "nextToken"},
		{url.Values{"nextToken": {"AQID"}}, "nextToken"},
		{url.Values{"bogus": {"1"}}, "bogus"},
	} {
		r := e.do(req{method: "GET", path: listURL(c.q)})
		expect(t, r, 400, "invalid_request")
		if !strings.Contains(r.str("message"), c.param) {
			t.Errorf("%v: message %q does not name %s", c.q, r.str("message"), c.param)
		}
	}
	// A token is bound to its filters and order.
	r = e.do(req{method: "GET", path: listURL(url.Values{"limit": {"2"}})})
	_ = json.Unmarshal(r.raw, &page)
	if page.NextToken == nil {
		t.Fatalf("expected a next page: %s", r.raw)
	}
	r = e.do(req{method: "GET", path: listURL(url.Values{"limit": {"2"}, "order": {"asc"}, "nextToken": {*page.NextToken}})})
	expect(t, r, 400, "invalid_request")
	r = e.do(req{method: "GET", path: listURL(url.Values{"limit": {"2"}, "state": {"active"}, "nextToken": {*page.NextToken}})})
	expect(t, r, 400, "invalid_request")
	// ...but not to its limit.
	r = e.do(req{method: "GET", path: listURL(url.Values{"limit": {"3"}, "nextToken": {*page.NextToken}})})
	expect(t, r, 200, "")
	// ...nor usable by another client.
	r = e.do(req{method: "GET", path: listURL(url.Values{"limit": {"2"}, "nextToken": {*page.NextToken}}), client: [2]string{oid, osec}})
	expect(t, r, 400, "invalid_request")
	if e.stateHash() != before {
		t.Fatal("reads changed state")
	}
	expect(t, e.do(req{method: "GET", path: "/v1/actions", noAuth: true}), 401, "unauthorized")
}

// TestListPagingWhileCreating pages through a list while another goroutine
// creates matching actions: every action that existed at the start is seen
// exactly once and no action is seen twice.
func TestListPagingWhileCreating(t *testing.T) {
	for _, order := range []string{"asc", "desc"} {
		t.Run(order, func(t *testing.T) {
			e := newEnv(t, nil)
			initial := map[string]bool{}
			for i := 0; i < 120; i++ {
				initial[e.create(`{"payload":{}}`)] = true
				if i%7 == 0 {
					e.clock.Advance(time.Millisecond)
				}
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					e.clock.Advance(time.Millisecond)
					r := e.do(req{method: "POST", path: "/v1/actions", ctype: jsonCT, body: `{"payload":{}}`})
					if r.status != http.StatusCreated {
						t.Errorf("create while paging: %d %s", r.status, r.raw)
						return
					}
				}
			}()
			seen := map[string]int{}
			token := ""
			for pages := 0; ; pages++ {
				q := url.Values{"limit": {"7"}, "order": {order}}
				if token != "" {
					q.Set("nextToken", token)
				}
				r := e.do(req{method: "GET", path: listURL(q)})
				expect(t, r, 200, "")
				var p listResponse
				if err := json.Unmarshal(r.raw, &p); err != nil {
					t.Fatal(err)
				}
				for _, a := range p.Actions {
					seen[a.ActionID]++
				}
				if p.NextToken == nil {
					break
				}
				token = *p.NextToken
				if order == "asc" && pages > 40 {
					break // asc keeps finding new actions; enough
				}
			}
			close(stop)
			wg.Wait()
			for id, n := range seen {
				if n != 1 {
					t.Fatalf("%s seen %d times", id, n)
				}
			}
			for id := range initial {
				if seen[id] != 1 {
					t.Fatalf("initial action %s seen %d times", id, seen[id])
				}
			}
		})
	}
}

// TestQuotaHTTP: a CSV create that would take the client over
// MaxActionsPerClient is refused whole with 429 quota_exceeded; stats
// count what is stored.
func TestQuotaHTTP(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxActionsPerClient = 3 })
	rows := func(n int) string {
		return "payload_json,pin,active_at,expires_at\n" + strings.Repeat(`"{}",,,`+"\n", n)
	}
	expect(t, e.do(req{method: "POST", path: "/v1/actions", ctype: csvCT, body: rows(2)}), 200, "")
	r := e.do(req{method: "POST", path: "/v1/actions", ctype: csvCT, body: rows(2)})
	expect(t, r, http.StatusTooManyRequests, "quota_exceeded")
	if !strings.Contains(r.str("message"), "at most 3") {
		t.Fatalf("message %q", r.str("message"))
	}
	expect(t, e.do(req{method: "POST", path: "/v1/actions", ctype: csvCT, body: rows(1)}), 200, "")
	st := e.do(req{method: "GET", path: "/v1/stats"})
	expect(t, st, 200, "")
	if st.body["total"] != float64(3) {
		t.Fatalf("stats %s", st.raw)
	}
	def, err := (&Config{Keys: e.keys}).withDefaults()
	if err != nil || def.MaxActionsPerClient != DefaultMaxActionsPerClient {
		t.Fatalf("default quota %d %v", def.MaxActionsPerClient, err)
	}
}
