package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/httpapi"
	"github.com/exactonce/exactonce/internal/config"
	"github.com/exactonce/exactonce/internal/openapitest"
	"github.com/exactonce/exactonce/internal/secure"
	"github.com/exactonce/exactonce/openapi"
)

// testAPI builds the HTTP API with this binary's routes, as server.run
// does, over a node that is never called: for tests of routing only.
func testAPI(t *testing.T) *httpapi.Server {
	t.Helper()
	keys, err := secure.NewKeys(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	var node *cluster.Node
	api, err := httpapi.New(httpapi.Config{
		Keys:           keys,
		AdminTokenHash: secure.HashSecret("admin-token-for-tests"),
		Logger:         slog.New(slog.DiscardHandler),
		Registry:       reg,
		Gatherer:       reg,
		Extra:          apiRoutes(&config.Config{}, node, secure.HashSecret("admin-token-for-tests"), slog.New(slog.DiscardHandler)),
	}, node)
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// TestOpenAPIDocumentsEveryRoute: the routes the server serves and the
// operations of the OpenAPI document are the same set, so a route cannot
// be added without its description, nor a description outlive its route.
// (The test clock of a chaostest build is not public API.)
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	routes, err := testAPI(t).Routes()
	if err != nil {
		t.Fatal(err)
	}
	routes = slices.DeleteFunc(routes, func(r string) bool { return strings.Contains(r, " /internal/") })
	ops := openapitest.New(t).Operations()
	for _, r := range routes {
		if !slices.Contains(ops, r) {
			t.Errorf("the server serves %s, which the OpenAPI document does not describe", r)
		}
	}
	for _, op := range ops {
		if !slices.Contains(routes, op) {
			t.Errorf("the OpenAPI document describes %s, which the server does not serve", op)
		}
	}
	if t.Failed() {
		t.Logf("server routes: %q", routes)
	}
}

// TestOpenAPIServedWithoutCredentials: GET /v1/openapi.json answers the
// embedded document, byte for byte, to a caller with no credentials.
func TestOpenAPIServedWithoutCredentials(t *testing.T) {
	api := testAPI(t)
	w := httptest.NewRecorder()
	api.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/openapi.json", nil))
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/openapi.json: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	if !bytes.Equal(w.Body.Bytes(), openapi.Document()) {
		t.Fatal("the served document is not the embedded one")
	}
	var doc struct {
		OpenAPI string `json:"openapi"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("served document: openapi %q, %v", doc.OpenAPI, err)
	}
}
