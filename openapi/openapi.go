// Package openapi holds the OpenAPI 3.1 document of ExactOnce's public HTTP
// API (docs/api.md), embedded so that every binary serves the document of
// its own code at GET /v1/openapi.json.
//
// The document is kept by hand; the HTTP tests validate every request and
// response they make against it (internal/openapitest), so it cannot drift
// from the server.
package openapi

import _ "embed"

//go:embed openapi.json
var document []byte

// Document returns the OpenAPI 3.1 document (JSON). The caller gets its
// own copy and may change it.
func Document() []byte { return append([]byte(nil), document...) }
