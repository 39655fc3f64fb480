package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestTransferBodyIsStrictJSON: the transfer body is decoded under the
// API's strict JSON rules, so "To" does not stand in for "to", and a
// duplicate key is refused; both before the node is asked anything.
func TestTransferBodyIsStrictJSON(t *testing.T) {
	c := &clusterAPI{} // no node: a bad body must be answered before it is used
	for body, want := range map[string]string{
		`{"To":"n2"}`:           `unknown field "To"`,
		`{"to":"n2","to":"n3"}`: `duplicate field "to"`,
	} {
		w := httptest.NewRecorder()
		c.transfer(w, httptest.NewRequest(http.MethodPost, "/v1/cluster/transfer-leadership", strings.NewReader(body)))
		var got struct{ Error, Message string }
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatalf("%s: answer is not JSON: %q", body, w.Body.Bytes())
		}
		if w.Code != http.StatusBadRequest || got.Error != "invalid_request" || !strings.Contains(got.Message, want) {
			t.Fatalf("%s: %d %+v, want 400 invalid_request naming %s", body, w.Code, got, want)
		}
	}
}
