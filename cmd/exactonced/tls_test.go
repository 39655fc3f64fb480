package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/exactonce/exactonce/client"
	"github.com/exactonce/exactonce/internal/openapitest"
)

// writeCerts writes a CA and a node certificate for 127.0.0.1 (server and
// client usage) into dir and returns their paths.
func writeCerts(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "exactonce test ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "node"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("node.pem", "CERTIFICATE", der), write("node.key", "EC PRIVATE KEY", keyDER)
}

// TestTLSServer runs one node with the API over HTTPS and the internal
// channel on operator certificates naming the node, and uses it through a
// client trusting only the test CA.
func TestTLSServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	bin := buildServer(t)
	dir := t.TempDir()
	ca, cert, key := writeCerts(t, dir)
	httpAddr := freePort(t)
	p := start(t, bin, "--dev", "--node-id", "node", "--data-dir", filepath.Join(dir, "data"), "--http-addr", httpAddr,
		"--raft-addr", freePort(t), "--gossip-addr", freePort(t),
		"--tls-cert", cert, "--tls-key", key,
		"--internal-tls-cert", cert, "--internal-tls-key", key, "--internal-tls-ca", ca)
	id, secret := p.devCredentials(t, 60*time.Second)

	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := client.NewTransport()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	c, err := client.New("https://"+httpAddr, client.WithCredentials(id, secret),
		client.WithHTTPClient(&http.Client{Transport: openapitest.New(t).Transport(t, tr)}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitHTTPReady(ctx, t, c)
	created, err := c.Create(ctx, client.CreateRequest{Payload: []byte(`{"k":"v"}`), PIN: "1234"})
	if err != nil {
		t.Fatalf("create over https: %v", err)
	}
	if _, err := c.Consume(ctx, created.ActionID, &client.ConsumeRequest{PIN: "1234"}); err != nil {
		t.Fatalf("consume over https: %v", err)
	}

	plain, err := client.New("https://"+httpAddr, client.WithCredentials(id, secret))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Stats(ctx); err == nil {
		t.Errorf("a client without the CA trusted the server certificate")
	}

	// TLS 1.2 offers AEAD suites only: a client that knows only CBC with
	// SHA-1 MACs gets no connection; one with GCM does.
	for _, tc := range []struct {
		suite uint16
		ok    bool
	}{{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, false}, {tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, false},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true}} {
		conn, err := tls.Dial("tcp", httpAddr, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tc.suite}})
		if err == nil {
			conn.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("TLS 1.2 with %s: err = %v, want a connection: %v", tls.CipherSuiteName(tc.suite), err, tc.ok)
		}
	}
	p.stop(t, 30*time.Second)
}
