//go:build chaostest

package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"github.com/exactonce/exactonce/internal/config"
	"github.com/exactonce/exactonce/internal/secure"
)

func TestClockEndpointJumpsTheClock(t *testing.T) {
	cfg, err := config.Parse(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	const token = "test-admin-token-0123456789"
	r := mux.NewRouter()
	testRoutes(cfg, secure.HashSecret(token), slog.New(slog.DiscardHandler))(r)
	do := func(auth bool, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, testClockPath, strings.NewReader(body))
		if auth {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		return rec
	}
	if rec := do(false, `{"offset":"30s"}`); rec.Code != http.StatusUnauthorized {
		t.Errorf("without the admin token: %d, want 401", rec.Code)
	}
	if d := time.Until(cfg.Now()); d > time.Second {
		t.Fatalf("an unauthorized call moved the clock by %s", d)
	}
	if rec := do(true, `{"offset":"-45s"}`); rec.Code != http.StatusOK {
		t.Fatalf("set offset: %d %s", rec.Code, rec.Body)
	}
	if d := time.Until(cfg.Now()); d > -44*time.Second || d < -46*time.Second {
		t.Errorf("after a -45s jump Now() is %s from time.Now", d)
	}
	if rec := do(true, `{"offset":"soon"}`); rec.Code != http.StatusBadRequest {
		t.Errorf("bad offset: %d, want 400", rec.Code)
	}
	if rec := do(true, `{"offset":"0s"}`); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"previous":"-45s"`) {
		t.Errorf("reset: %d %s", rec.Code, rec.Body)
	}
}
