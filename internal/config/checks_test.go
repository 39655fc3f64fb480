package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeFile writes content with mode and returns its path.
func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// caPEM makes a self-signed CA certificate, PEM-encoded.
func caPEM(t *testing.T, cn string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestContradictions: every pair of settings that cannot work together
// stops the start with a *UsageError (exit code 2) naming the settings.
func TestContradictions(t *testing.T) {
	dir := t.TempDir()
	keyFile := writeFile(t, dir, "cluster.key", testKey+"\n", 0o600)
	openKey := writeFile(t, dir, "open.key", testKey, 0o644)
	groupKey := writeFile(t, dir, "group.key", testKey, 0o640)
	badKey := writeFile(t, dir, "bad.key", "c2hvcnQ=", 0o600)
	tokenFile := writeFile(t, dir, "admin.token", "0123456789abcdef0123\n", 0o600)
	openToken := writeFile(t, dir, "open.token", "0123456789abcdef0123", 0o604)
	shortToken := writeFile(t, dir, "short.token", "short", 0o600)
	ca := caPEM(t, "api clients")
	apiCA := writeFile(t, dir, "api-ca.pem", ca, 0o644)
	sameCA := writeFile(t, dir, "copy-of-api-ca.pem", ca, 0o644)
	bundle := writeFile(t, dir, "bundle.pem", caPEM(t, "other")+ca, 0o644)
	multi := []string{"--join", "10.0.0.2:8400", "--bootstrap-expect", "3"}
	tls := []string{"--tls-cert", "c.pem", "--tls-key", "k.pem"}
	internal := func(caFile string) []string {
		return []string{"--internal-tls-cert", "n.pem", "--internal-tls-key", "n.key", "--internal-tls-ca", caFile}
	}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"https advertise without tls", []string{"--http-advertise", "https://10.0.0.1:8080"}, nil,
			[]string{"https://", "--tls-cert"}},
		{"https advertise from env without tls", nil, map[string]string{"EXACTONCE_HTTP_ADVERTISE": "https://10.0.0.1:8080"},
			[]string{"https://", "--tls-cert"}},
		{"http advertise with tls", cat(tls, []string{"--http-advertise", "http://10.0.0.1:8080"}), nil,
			[]string{"http://", "advertise https://"}},
		{"advertise with a path", []string{"--http-advertise", "http://10.0.0.1:8080/api"}, nil, []string{"without a path"}},
		{"advertise without a host", []string{"--http-advertise", "http://"}, nil, []string{"--http-advertise"}},
		{"internal ca is the api client ca", cat(tls, []string{"--tls-client-ca", apiCA}, internal(sameCA)), nil,
			[]string{"--internal-tls-ca", "--tls-client-ca", "api clients"}},
		{"internal ca bundle holds the api client ca", cat(tls, []string{"--tls-client-ca", apiCA}, internal(bundle)), nil,
			[]string{"same CA"}},
		{"multi-node without a key", multi, nil,
			[]string{"--cluster-key-file", "EXACTONCE_CLUSTER_KEY", "--cluster-key", "exactonce keygen"}},
		{"joining without a key", []string{"--join", "10.0.0.2:8400"}, nil, []string{"exactonce keygen"}},
		{"restore without a key", []string{"--restore", "backup.snap"}, nil,
			[]string{"--restore", "--cluster-key-file", "snapshot inspect"}},
		{"multi-node without an admin token", cat(multi, []string{"--cluster-key", testKey}), nil,
			[]string{"admin token", "--admin-token-file", "EXACTONCE_ADMIN_TOKEN", "differ from node to node"}},
		{"joining without an admin token", []string{"--join", "10.0.0.2:8400", "--cluster-key-file", keyFile}, nil,
			[]string{"admin token"}},
		{"pprof on every interface", []string{"--pprof-addr", "0.0.0.0:6060"}, nil, []string{"--pprof-addr", "loopback", "127.0.0.1:6060"}},
		{"pprof on a private address from env", nil, map[string]string{"EXACTONCE_PPROF_ADDR": "10.0.0.1:6060"},
			[]string{"EXACTONCE_PPROF_ADDR", "loopback"}},
		{"pprof on a name", []string{"--pprof-addr", "localhost:6060"}, nil, []string{"loopback"}},
		{"pprof without a host", []string{"--pprof-addr", ":6060"}, nil, []string{"loopback"}},
		{"pprof without a port", []string{"--pprof-addr", "127.0.0.1"}, nil, []string{"--pprof-addr"}},
		{"expecting three without a key", []string{"--bootstrap-expect", "3"}, nil, []string{"exactonce keygen"}},
		{"key and key file", []string{"--cluster-key", testKey, "--cluster-key-file", keyFile}, nil,
			[]string{"--cluster-key and --cluster-key-file"}},
		{"key env and key file", []string{"--cluster-key-file", keyFile}, map[string]string{"EXACTONCE_CLUSTER_KEY": testKey},
			[]string{"EXACTONCE_CLUSTER_KEY and --cluster-key-file"}},
		{"world-readable key file", []string{"--cluster-key-file", openKey}, nil, []string{"--cluster-key-file", "chmod 600"}},
		{"group-readable key file", nil, map[string]string{"EXACTONCE_CLUSTER_KEY_FILE": groupKey},
			[]string{"EXACTONCE_CLUSTER_KEY_FILE", "chmod 600"}},
		{"missing key file", []string{"--cluster-key-file", filepath.Join(dir, "none")}, nil, []string{"--cluster-key-file"}},
		{"short key in file", []string{"--cluster-key-file", badKey}, nil, []string{"--cluster-key-file", badKey, "bytes"}},
		{"token and token file", []string{"--admin-token", "0123456789abcdef", "--admin-token-file", tokenFile}, nil,
			[]string{"--admin-token and --admin-token-file"}},
		{"world-readable token file", []string{"--admin-token-file", openToken}, nil, []string{"chmod 600"}},
		{"short token in file", []string{"--admin-token-file", shortToken}, nil, []string{"16 characters"}},
		{"multi-node advertising every interface", cat(multi, []string{"--cluster-key", testKey, "--admin-token-file", tokenFile, "--http-addr", "0.0.0.0:8080",
			"--raft-advertise", "10.0.0.1:8300"}), nil, []string{"--http-advertise", "reach"}},
		{"multi-node raft on every interface without advertise", cat(multi, []string{"--cluster-key", testKey, "--admin-token-file", tokenFile,
			"--http-advertise", "http://10.0.0.1:8080", "--raft-addr", "0.0.0.0:8300"}), nil, []string{"--raft-advertise"}},
		{"http and raft on one address", []string{"--http-addr", "127.0.0.1:9000", "--raft-addr", "127.0.0.1:9000"}, nil,
			[]string{"--http-addr and --raft-addr"}},
		{"raft and gossip on one port of every interface", []string{"--raft-addr", "0.0.0.0:9001", "--gossip-addr", "127.0.0.1:9001"}, nil,
			[]string{"--raft-addr and --gossip-addr"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.args, env(tc.env), io.Discard)
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want a *UsageError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

// TestAccepted: the consistent forms of the same settings start.
func TestAccepted(t *testing.T) {
	dir := t.TempDir()
	keyFile := writeFile(t, dir, "cluster.key", testKey+"\n", 0o600)
	roKey := writeFile(t, dir, "ro.key", testKey, 0o400)
	tokenFile := writeFile(t, dir, "admin.token", "0123456789abcdef0123\n", 0o600)
	apiCA := writeFile(t, dir, "api-ca.pem", caPEM(t, "api clients"), 0o644)
	internalCA := writeFile(t, dir, "internal-ca.pem", caPEM(t, "nodes"), 0o644)
	multi := []string{"--join", "10.0.0.2:8400", "--bootstrap-expect", "3", "--http-advertise", "http://10.0.0.1:8080",
		"--admin-token-file", tokenFile}
	cases := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c *Config)
	}{
		{"single node without a key", nil, nil, func(t *testing.T, c *Config) {
			if c.ClusterKey != "" || c.MultiNode() {
				t.Errorf("key %q multi %v", c.ClusterKey, c.MultiNode())
			}
		}},
		{"multi-node with a key file", append([]string{"--cluster-key-file", keyFile}, multi...), nil, func(t *testing.T, c *Config) {
			if c.ClusterKey != testKey || c.ClusterKeySource != "--cluster-key-file "+keyFile || !c.MultiNode() {
				t.Errorf("key %q from %q", c.ClusterKey, c.ClusterKeySource)
			}
		}},
		{"multi-node with a read-only key file from env", multi, map[string]string{"EXACTONCE_CLUSTER_KEY_FILE": roKey}, func(t *testing.T, c *Config) {
			if c.ClusterKey != testKey || !strings.HasPrefix(c.ClusterKeySource, "EXACTONCE_CLUSTER_KEY_FILE") {
				t.Errorf("key %q from %q", c.ClusterKey, c.ClusterKeySource)
			}
		}},
		{"multi-node with a key in env", multi, map[string]string{"EXACTONCE_CLUSTER_KEY": testKey}, func(t *testing.T, c *Config) {
			if c.ClusterKeySource != "EXACTONCE_CLUSTER_KEY" {
				t.Errorf("source %q", c.ClusterKeySource)
			}
		}},
		{"token file", []string{"--admin-token-file", tokenFile}, nil, func(t *testing.T, c *Config) {
			if c.AdminToken != "0123456789abcdef0123" {
				t.Errorf("token %q", c.AdminToken)
			}
		}},
		{"https advertise with tls", []string{"--tls-cert", "c.pem", "--tls-key", "k.pem", "--http-advertise", "https://10.0.0.1:8080/"}, nil,
			func(t *testing.T, c *Config) {
				if c.HTTPAdvertise != "https://10.0.0.1:8080" {
					t.Errorf("advertise %q", c.HTTPAdvertise)
				}
			}},
		{"separate internal and api client CAs", []string{"--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", apiCA,
			"--internal-tls-cert", "n.pem", "--internal-tls-key", "n.key", "--internal-tls-ca", internalCA}, nil, nil},
		{"single node on every interface", []string{"--http-addr", "0.0.0.0:8080", "--raft-addr", "0.0.0.0:8300"}, nil, nil},
		{"pprof on loopback", []string{"--pprof-addr", "127.0.0.1:6060"}, nil, func(t *testing.T, c *Config) {
			if c.PprofAddr != "127.0.0.1:6060" {
				t.Errorf("pprof addr %q", c.PprofAddr)
			}
		}},
		{"pprof on IPv6 loopback from env", nil, map[string]string{"EXACTONCE_PPROF_ADDR": "[::1]:0"}, nil},
		{"pprof off by default", nil, nil, func(t *testing.T, c *Config) {
			if c.PprofAddr != "" {
				t.Errorf("pprof addr %q, want off", c.PprofAddr)
			}
		}},
		{"free ports", []string{"--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0"}, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.args, env(tc.env), io.Discard)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}
