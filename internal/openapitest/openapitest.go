// Package openapitest checks HTTP exchanges against ExactOnce's OpenAPI
// document (package openapi) in tests, so that the document cannot drift
// from the server: every test that goes through Handler or Transport fails
// on an answer the document does not describe.
//
// The rules, for each request and its response:
//
//   - A request to a path or method the document does not have must get an
//     error answer (status 400 or more) whose body is the document's Error.
//   - A request the document rejects (a missing credential header, a bad
//     parameter or body) must not succeed: the server must be at least as
//     strict as the document. The server may reject more (a stale page
//     token, a time in the past), since a schema cannot say everything.
//   - Every response must be one the document lists for the operation: its
//     status, its headers and its body schema (typed error codes included).
//
// Validation uses github.com/getkin/kin-openapi, whose openapi3filter
// validates OpenAPI 3.1 documents with JSON Schema 2020-12.
package openapitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/exactonce/exactonce/openapi"
)

// Checker validates exchanges against the document. It is safe for
// concurrent use.
type Checker struct {
	doc    *openapi3.T
	router routers.Router
	// errSchema is components.schemas.Error, for answers to requests the
	// document has no operation for.
	errSchema *openapi3.Schema
}

// load parses and validates the document once per test binary: every
// test of a package builds servers, and the document does not change.
var load = sync.OnceValues(func() (*Checker, error) {
	ctx := context.Background()
	// kin-openapi's text/csv decoder parses the CSV and fails on a row of
	// the wrong width; the document describes the body as a string, and
	// row errors are the server's to report, row by row.
	openapi3filter.RegisterBodyDecoder("text/csv", plainBody)
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openapi.Document())
	if err != nil {
		return nil, fmt.Errorf("load the OpenAPI document: %w", err)
	}
	if doc.OpenAPIMajorMinor() != "3.1" {
		return nil, fmt.Errorf("the document is OpenAPI %s, want 3.1", doc.OpenAPI)
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is invalid: %w", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route the OpenAPI document: %w", err)
	}
	es := doc.Components.Schemas["Error"]
	if es == nil || es.Value == nil {
		return nil, errors.New("the OpenAPI document has no components.schemas.Error")
	}
	return &Checker{doc: doc, router: router, errSchema: es.Value}, nil
})

// plainBody decodes a body as one string.
func plainBody(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	return string(b), nil
}

// New returns the checker of the embedded document, failing tb if the
// document does not load or is not valid OpenAPI 3.1.
func New(tb testing.TB) *Checker {
	tb.Helper()
	c, err := load()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// Doc returns the parsed document (read it, do not change it).
func (c *Checker) Doc() *openapi3.T { return c.doc }

// Operations lists the document's operations as "METHOD /path/{template}",
// sorted.
func (c *Checker) Operations() []string {
	var out []string
	for path, item := range c.doc.Paths.Map() {
		for method := range item.Operations() {
			out = append(out, method+" "+path)
		}
	}
	sort.Strings(out)
	return out
}

// options are the validation options: every status must be documented, and
// security requirements are checked for the presence of their headers (the
// server decides whether the values are right).
func options() *openapi3filter.Options {
	return &openapi3filter.Options{
		IncludeResponseStatus: true,
		MultiError:            true,
		AuthenticationFunc:    authenticate,
	}
}

// authenticate passes a security requirement when the request carries its
// credential exactly once.
func authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	r := in.RequestValidationInput.Request
	s := in.SecurityScheme
	switch {
	case s.Type == "apiKey" && s.In == "header":
		if len(r.Header.Values(s.Name)) != 1 || r.Header.Get(s.Name) == "" {
			return fmt.Errorf("header %s missing or repeated", s.Name)
		}
	case s.Type == "http" && strings.EqualFold(s.Scheme, "bearer"):
		v := r.Header.Values("Authorization")
		if len(v) != 1 || len(v[0]) <= len("bearer ") || !strings.EqualFold(v[0][:len("bearer ")], "bearer ") {
			return errors.New("no single Authorization: Bearer header")
		}
	default:
		return fmt.Errorf("security scheme %q is not checked by openapitest", in.SecuritySchemeName)
	}
	return nil
}

// Check validates one exchange: the request as sent (with its body, since
// r.Body may have been read), and the response's status, header and body.
// It returns a description of every mismatch, nil when there is none.
func (c *Checker) Check(r *http.Request, reqBody []byte, status int, header http.Header, respBody []byte) error {
	ctx := context.Background()
	vr := r.Clone(ctx)
	vr.Body = io.NopCloser(bytes.NewReader(reqBody))
	vr.ContentLength = int64(len(reqBody))
	if vr.Header.Get("Content-Type") == "" && len(bytes.TrimSpace(reqBody)) > 0 {
		// The server reads a body without Content-Type as JSON (the
		// document says so in the create operation's description).
		vr.Header.Set("Content-Type", "application/json")
	}
	route, params, err := c.router.FindRoute(vr)
	if err != nil {
		if status < 400 {
			return fmt.Errorf("%s %s: the document has no such operation (%v), yet the server answered %d", r.Method, r.URL.Path, err, status)
		}
		return c.checkErrorBody(r, status, header, respBody)
	}
	in := &openapi3filter.RequestValidationInput{Request: vr, PathParams: params, Route: route, Options: options()}
	if reqErr := openapi3filter.ValidateRequest(ctx, in); reqErr != nil && status < 400 {
		return fmt.Errorf("%s %s: the server answered %d to a request the document rejects: %v", r.Method, r.URL.Path, status, reqErr)
	}
	// Validate the response whatever the request's fate: an answer to a
	// bad request must be a documented error too. Security and parameters
	// are not the response's business.
	in.Options = options()
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header, Options: options()}
	out.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("%s %s: the answer %d %s does not match the document: %v", r.Method, route.Path, status, clip(respBody), err)
	}
	return nil
}

// checkErrorBody checks the answer to a request the document has no
// operation for: a JSON Error.
func (c *Checker) checkErrorBody(r *http.Request, status int, header http.Header, body []byte) error {
	mt, _, _ := mime.ParseMediaType(header.Get("Content-Type"))
	if mt != "application/json" {
		return fmt.Errorf("%s %s: %d answered with Content-Type %q, want application/json", r.Method, r.URL.Path, status, header.Get("Content-Type"))
	}
	if r.Method == http.MethodHead {
		return nil
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%s %s: %d answer is not JSON: %s", r.Method, r.URL.Path, status, clip(body))
	}
	if err := c.doc.ValidateSchemaJSON(c.errSchema, v, openapi3.EnableJSONSchema2020()); err != nil {
		return fmt.Errorf("%s %s: %d answer is not the document's Error: %s: %v", r.Method, r.URL.Path, status, clip(body), err)
	}
	return nil
}

// clip shortens a body for a failure message.
func clip(b []byte) string {
	const max = 300
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

// Handler wraps h so that every exchange it serves is checked; a mismatch
// fails tb (with Errorf, so that it may be called from any goroutine). The
// request and the answer pass through unchanged, as h reads and writes
// them (streaming, deadlines set through http.ResponseController), and are
// checked when h returns. An exchange whose request body did not arrive
// whole (a test of slow or broken senders) is checked on its answer only.
func (c *Checker) Handler(tb testing.TB, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := &teeBody{}
		if r.Body != nil && r.Body != http.NoBody {
			body.rc = r.Body
			r.Body = body
		}
		tw := &teeWriter{ResponseWriter: w}
		h.ServeHTTP(tw, r)
		if tw.status == 0 {
			tw.WriteHeader(http.StatusOK)
		}
		if body.err != nil && !errors.Is(body.err, io.EOF) {
			if err := c.checkAnswer(r, tw.status, tw.header, tw.buf.Bytes()); err != nil {
				tb.Errorf("openapi: %v", err)
			}
			return
		}
		if err := c.Check(r, body.buf.Bytes(), tw.status, tw.header, tw.buf.Bytes()); err != nil {
			tb.Errorf("openapi: %v", err)
		}
	})
}

// checkAnswer checks an answer on its own: the request is not in question.
func (c *Checker) checkAnswer(r *http.Request, status int, header http.Header, body []byte) error {
	if status < 400 {
		return fmt.Errorf("%s %s: answered %d to a request whose body did not arrive", r.Method, r.URL.Path, status)
	}
	return c.checkErrorBody(r, status, header, body)
}

// teeBody keeps what the handler reads of the request body.
type teeBody struct {
	rc  io.ReadCloser
	buf bytes.Buffer
	err error
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.buf.Write(p[:n])
	if err != nil && b.err == nil {
		b.err = err
	}
	return n, err
}

func (b *teeBody) Close() error { return b.rc.Close() }

// teeWriter keeps the status, the header as sent and the body of an answer
// while writing it through.
type teeWriter struct {
	http.ResponseWriter
	status int
	header http.Header
	buf    bytes.Buffer
}

func (t *teeWriter) WriteHeader(code int) {
	if t.status == 0 && code >= 200 {
		t.status = code
		t.header = t.ResponseWriter.Header().Clone()
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *teeWriter) Write(b []byte) (int, error) {
	if t.status == 0 {
		t.WriteHeader(http.StatusOK)
	}
	t.buf.Write(b)
	return t.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (t *teeWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// Flush passes a flush through.
func (t *teeWriter) Flush() { _ = http.NewResponseController(t.ResponseWriter).Flush() }

// Transport wraps rt (http.DefaultTransport when nil) so that every exchange
// it carries is checked; a mismatch fails tb.
func (c *Checker) Transport(tb testing.TB, rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return roundTripper{c: c, tb: tb, rt: rt}
}

type roundTripper struct {
	c  *Checker
	tb testing.TB
	rt http.RoundTripper
}

func (t roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	var reqBody []byte
	if r.Body != nil {
		b, err := io.ReadAll(r.Body)
		_ = r.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("openapitest: read request body: %w", err)
		}
		reqBody = b
		r = r.Clone(r.Context())
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	resp, err := t.rt.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("openapitest: read response body: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err := t.c.Check(r, reqBody, resp.StatusCode, resp.Header, body); err != nil {
		t.tb.Errorf("openapi: %v", err)
	}
	return resp, nil
}
