package openapitest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The document loads, is valid OpenAPI 3.1 and has operations.
func TestDocumentIsValidOpenAPI31(t *testing.T) {
	c := New(t)
	if got := c.Doc().OpenAPI; got != "3.1.0" {
		t.Fatalf("openapi %q, want 3.1.0", got)
	}
	if len(c.Operations()) < 10 {
		t.Fatalf("only %d operations: %v", len(c.Operations()), c.Operations())
	}
}

// The checker catches the drifts it exists for: an undocumented status, a
// body of the wrong shape, an unknown error code, a success for a request
// the document rejects, and a success on a path the document lacks.
func TestCheckerCatchesDrift(t *testing.T) {
	c := New(t)
	auth := func(r *http.Request) *http.Request {
		r.Header.Set("client-id", "cl_x")
		r.Header.Set("client-secret", "sec_x")
		return r
	}
	hdr := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"r1"}}
	ok := `{"total":0,"byState":{"pending":0,"active":0,"consumed":0,"expired":0,"canceled":0},"burned":0,"createdLast24h":0,"consumedLast24h":0,"purged":0}`
	if err := c.Check(auth(httptest.NewRequest("GET", "/v1/stats", nil)), nil, 200, hdr, []byte(ok)); err != nil {
		t.Fatalf("a documented exchange fails: %v", err)
	}
	for name, tc := range map[string]struct {
		r      *http.Request
		status int
		body   string
		want   string
	}{
		"undocumented status": {auth(httptest.NewRequest("GET", "/v1/stats", nil)), 418, `{"error":"internal","message":"x"}`, "418"},
		"missing field":       {auth(httptest.NewRequest("GET", "/v1/stats", nil)), 200, `{"total":0}`, "byState"},
		"unknown error code":  {auth(httptest.NewRequest("GET", "/v1/stats", nil)), 401, `{"error":"nope","message":"x"}`, "does not match"},
		"no credentials":      {httptest.NewRequest("GET", "/v1/stats", nil), 200, ok, "rejects"},
		"undocumented path":   {httptest.NewRequest("GET", "/v1/nope", nil), 200, `{}`, "no such operation"},
		"404 not an Error":    {httptest.NewRequest("GET", "/v1/nope", nil), 404, `{"oops":1}`, "Error"},
	} {
		err := c.Check(tc.r, nil, tc.status, hdr, []byte(tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", name, err, tc.want)
		}
	}
}
