package httpapi

import (
	"slices"
	"sort"
	"strconv"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/exactonce/exactonce/internal/openapitest"
)

// errorCodesOf returns the error codes a response schema allows: the const
// of "error" in the schema or in each of its oneOf branches.
func errorCodesOf(s *openapi3.Schema) []string {
	if s == nil {
		return nil
	}
	var out []string
	if p := s.Properties["error"]; p != nil && p.Value != nil {
		if c, ok := p.Value.Const.(string); ok {
			out = append(out, c)
		}
	}
	for _, b := range s.OneOf {
		out = append(out, errorCodesOf(b.Value)...)
	}
	return out
}

// TestOpenAPIErrorCodes: the document's error codes are the server's, each
// at the status the server answers it with, and every code appears in some
// operation's answers.
func TestOpenAPIErrorCodes(t *testing.T) {
	doc := openapitest.New(t).Doc()
	var enum []string
	for _, v := range doc.Components.Schemas["ErrorCode"].Value.Enum {
		enum = append(enum, v.(string))
	}
	var server []string
	for code := range statusOf {
		server = append(server, code)
	}
	sort.Strings(enum)
	sort.Strings(server)
	if !slices.Equal(enum, server) {
		t.Errorf("ErrorCode enum %q,\nthe server's codes %q", enum, server)
	}
	used := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			for status, r := range op.Responses.Map() {
				n, err := strconv.Atoi(status)
				if err != nil || r.Value == nil {
					t.Errorf("%s %s: response %q is not a status", method, path, status)
					continue
				}
				mt := r.Value.Content.Get("application/json")
				if n < 400 || mt == nil || mt.Schema == nil {
					continue
				}
				codes := errorCodesOf(mt.Schema.Value)
				if len(codes) == 0 {
					t.Errorf("%s %s %d: no typed error code", method, path, n)
				}
				for _, c := range codes {
					used[c] = true
					if StatusForCode(c) != n {
						t.Errorf("%s %s: %s listed under %d, the server answers it with %d", method, path, c, n, StatusForCode(c))
					}
				}
			}
		}
	}
	for _, c := range server {
		// method_not_allowed and not_found on unknown paths answer no
		// operation; not_found is also the cluster's unknown server.
		if !used[c] && c != CodeMethodNotAllowed {
			t.Errorf("error code %s appears in no operation's answers", c)
		}
	}
}
