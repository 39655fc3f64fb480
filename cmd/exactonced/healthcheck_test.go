package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// probe runs the healthcheck subcommand in-process.
func probe(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), append([]string{"healthcheck"}, args...), func(k string) string { return env[k] }, &out, &errb)
	return code, out.String(), errb.String()
}

// fakeNode answers /readyz with ready's status and /healthz with 200.
func fakeNode(ready *int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			w.WriteHeader(*ready)
		case "/healthz":
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})
}

// TestHealthcheckPlain: exit 0 on a ready node found through
// EXACTONCE_HTTP_ADDR, 1 on a node not ready (unless --live) and on one
// that does not answer.
func TestHealthcheckPlain(t *testing.T) {
	ready := http.StatusServiceUnavailable
	srv := httptest.NewServer(fakeNode(&ready))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	env := map[string]string{"EXACTONCE_HTTP_ADDR": addr}

	if code, _, errOut := probe(t, env); code != 1 || !strings.Contains(errOut, "503") {
		t.Errorf("not ready: exit %d, stderr %q; want 1 naming the 503", code, errOut)
	}
	if code, _, errOut := probe(t, env, "--live"); code != 0 {
		t.Errorf("--live on a serving node: exit %d, stderr %q; want 0", code, errOut)
	}
	ready = http.StatusOK
	if code, out, errOut := probe(t, env); code != 0 || !strings.Contains(out, "/readyz") {
		t.Errorf("ready: exit %d, stdout %q, stderr %q; want 0", code, out, errOut)
	}
	if code, _, _ := probe(t, nil, "--url", srv.URL); code != 0 {
		t.Errorf("--url: exit %d, want 0", code)
	}
	srv.Close()
	if code, _, errOut := probe(t, env); code != 1 || errOut == "" {
		t.Errorf("node gone: exit %d, stderr %q; want 1 with a message", code, errOut)
	}
}

// TestHealthcheckUsage: bad settings exit 2 with a message.
func TestHealthcheckUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"bad url", nil, []string{"--url", "ftp://x"}, "--url"},
		{"bad http addr", map[string]string{"EXACTONCE_HTTP_ADDR": "nowhere"}, nil, "EXACTONCE_HTTP_ADDR"},
		{"https without a way to check the server", nil, []string{"--url", "https://127.0.0.1:1"}, "--server-cert"},
		{"client cert without key", nil, []string{"--client-cert", "c.pem"}, "--client-key"},
		{"unknown flag", nil, []string{"--nope"}, "nope"},
		{"stray argument", nil, []string{"now"}, "unexpected argument"},
		{"zero timeout", nil, []string{"--timeout", "0s"}, "--timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := probe(t, tc.env, tc.args...)
			if code != 2 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 mentioning %q", code, errOut, tc.want)
			}
		})
	}
}

// TestHealthcheckTLS: over HTTPS the probe accepts the node's own
// certificate (EXACTONCE_TLS_CERT) and refuses any other; with --ca it
// verifies the chain instead; a node that requires client certificates is
// reached with --client-cert.
func TestHealthcheckTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := writeCerts(t, dir)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ready := http.StatusOK
	srv := httptest.NewUnstartedServer(fakeNode(&ready))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")
	env := map[string]string{"EXACTONCE_HTTP_ADDR": addr, "EXACTONCE_TLS_CERT": certFile, "EXACTONCE_TLS_KEY": keyFile}

	if code, out, errOut := probe(t, env); code != 0 || !strings.HasPrefix(out, "GET https://") {
		t.Errorf("pinned own certificate: exit %d, stdout %q, stderr %q; want 0 over https", code, out, errOut)
	}
	if code, _, errOut := probe(t, nil, "--url", srv.URL, "--ca", caFile); code != 0 {
		t.Errorf("--ca: exit %d, stderr %q; want 0", code, errOut)
	}
	// Another certificate (same CA, same names) is refused by the pin.
	_, otherCert, _ := writeCerts(t, t.TempDir())
	if code, _, errOut := probe(t, env, "--server-cert", otherCert); code != 1 || !strings.Contains(errOut, "not the one in") {
		t.Errorf("other pinned certificate: exit %d, stderr %q; want 1", code, errOut)
	}
	// A CA that did not sign the server's certificate is refused.
	otherCA, _, _ := writeCerts(t, t.TempDir())
	if code, _, _ := probe(t, nil, "--url", srv.URL, "--ca", otherCA); code != 1 {
		t.Errorf("foreign --ca: exit %d, want 1", code)
	}

	// A node requiring client certificates of the test CA.
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	mtls := httptest.NewUnstartedServer(fakeNode(&ready))
	mtls.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	mtls.StartTLS()
	defer mtls.Close()
	menv := map[string]string{"EXACTONCE_HTTP_ADDR": strings.TrimPrefix(mtls.URL, "https://"), "EXACTONCE_TLS_CERT": certFile}
	if code, _, _ := probe(t, menv); code != 1 {
		t.Errorf("client certificate required, none given: exit %d, want 1", code)
	}
	if code, _, errOut := probe(t, menv, "--client-cert", certFile, "--client-key", keyFile); code != 0 {
		t.Errorf("with --client-cert: exit %d, stderr %q; want 0", code, errOut)
	}
}

func TestLocalURL(t *testing.T) {
	for _, tc := range []struct {
		addr string
		tls  bool
		want string
	}{
		{"", false, "http://127.0.0.1:8080"},
		{"0.0.0.0:8080", false, "http://127.0.0.1:8080"},
		{":9000", true, "https://127.0.0.1:9000"},
		{"[::]:8080", false, "http://[::1]:8080"},
		{"10.0.0.11:8080", true, "https://10.0.0.11:8080"},
	} {
		got, err := localURL(tc.addr, tc.tls)
		if err != nil || got != tc.want {
			t.Errorf("localURL(%q, %v) = %q, %v; want %q", tc.addr, tc.tls, got, err, tc.want)
		}
	}
}

// TestFirstCertificateOfAChain: the pin is the leaf, the first block of a
// chain file, after any non-certificate block.
func TestFirstCertificateOfAChain(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, _ := writeCerts(t, dir)
	leaf, _ := os.ReadFile(certFile)
	ca, _ := os.ReadFile(caFile)
	chain := filepath.Join(dir, "chain.pem")
	junk := pem.EncodeToMemory(&pem.Block{Type: "COMMENT", Bytes: []byte("x")})
	if err := os.WriteFile(chain, append(append(junk, leaf...), ca...), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := firstCertificate(chain)
	blk, _ := pem.Decode(leaf)
	if err != nil || !bytes.Equal(got, blk.Bytes) {
		t.Errorf("firstCertificate: %v, leaf match %v", err, bytes.Equal(got, blk.Bytes))
	}
	if _, err := firstCertificate(caFile + ".none"); err == nil {
		t.Error("a missing file gave no error")
	}
}
