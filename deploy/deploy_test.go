// Package deploy_test checks that the files in deploy/ hold together: the
// environment template and the systemd unit start a node that config
// accepts, the unit's Documentation= is installed by `make install`, the
// unit's sandbox rates 2.5 or lower, the image runs as a non-root user with
// a health check the binary answers, and the compose file needs no
// variable (so `down` works from a new shell).
package deploy_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/exactonce/exactonce/internal/config"
)

// unitFile and envFile are the shipped files, relative to this directory.
const (
	unitFile = "exactonced.service"
	envFile  = "exactonced.env"
)

// readEnvFile returns the KEY=VALUE settings of a systemd environment file
// (comments and blank lines skipped).
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", path, line)
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// unitValues returns every value of key in the unit file, in order.
func unitValues(t *testing.T, key string) []string {
	t.Helper()
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

// writeCert writes a self-signed server certificate and its key.
func writeCert(t *testing.T, certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("10.0.0.11")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o400); err != nil {
		t.Fatal(err)
	}
}

// nodeEnv is the environment the unit gives the node: the env file's
// settings under the unit's Environment= lines (systemd: the file wins),
// with %d the credentials directory holding the LoadCredential= files, as
// systemd copies them (mode 0400). drop names credentials left out, with
// the Environment= lines that point at them.
func nodeEnv(t *testing.T, drop ...string) map[string]string {
	t.Helper()
	creds := t.TempDir()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	loaded := map[string]bool{}
	for _, lc := range unitValues(t, "LoadCredential") {
		name, _, _ := strings.Cut(lc, ":")
		loaded[name] = true
	}
	for _, d := range drop {
		delete(loaded, d)
	}
	files := map[string]string{"cluster.key": base64.StdEncoding.EncodeToString(key), "admin.token": "0123456789abcdef0123456789abcdef"}
	for name, v := range files {
		if loaded[name] {
			if err := os.WriteFile(filepath.Join(creds, name), []byte(v+"\n"), 0o400); err != nil {
				t.Fatal(err)
			}
		}
	}
	if loaded["api.crt"] && loaded["api.key"] {
		writeCert(t, filepath.Join(creds, "api.crt"), filepath.Join(creds, "api.key"))
	}
	env := map[string]string{}
	for _, e := range unitValues(t, "Environment") {
		k, v, _ := strings.Cut(e, "=")
		if name, ok := strings.CutPrefix(v, "%d/"); ok && !loaded[name] {
			continue
		}
		env[k] = strings.ReplaceAll(v, "%d", creds)
	}
	for k, v := range readEnvFile(t, envFile) {
		env[k] = v
	}
	env["EXACTONCE_DATA_DIR"] = t.TempDir()
	return env
}

// TestEnvFileAndUnitStartANode: the template with the unit's credentials
// is a configuration config accepts: HTTPS with an https:// advertise
// address, a multi-node cluster with the cluster key and admin token read
// from the credential files. Without the API's certificate, or without the
// token, the same settings are refused, never silently changed.
func TestEnvFileAndUnitStartANode(t *testing.T) {
	env := nodeEnv(t)
	for _, secret := range []string{"EXACTONCE_CLUSTER_KEY", "EXACTONCE_ADMIN_TOKEN", "EXACTONCE_GOSSIP_KEY"} {
		if _, ok := readEnvFile(t, envFile)[secret]; ok {
			t.Errorf("%s holds the secret %s: it belongs in a 0600 file handed over by LoadCredential=", envFile, secret)
		}
	}
	c, err := config.Parse(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("the shipped env file and unit are refused: %v", err)
	}
	if !c.TLS() || !strings.HasPrefix(c.HTTPAdvertise, "https://") {
		t.Errorf("TLS %v, advertise %q: want HTTPS throughout", c.TLS(), c.HTTPAdvertise)
	}
	if !c.MultiNode() || c.ClusterKey == "" || c.AdminToken == "" {
		t.Errorf("multi-node %v, key given %v, token given %v: want all", c.MultiNode(), c.ClusterKey != "", c.AdminToken != "")
	}
	if c.PprofAddr != "" {
		t.Errorf("the template turns the pprof listener on (%q): it is opt-in", c.PprofAddr)
	}

	for _, tc := range []struct {
		drop []string
		want string
	}{
		{[]string{"api.crt", "api.key"}, "https://"},
		{[]string{"admin.token"}, "--admin-token-file"},
		{[]string{"cluster.key"}, "--cluster-key-file"},
	} {
		env := nodeEnv(t, tc.drop...)
		_, err := config.Parse(nil, func(k string) string { return env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("without %v: err = %v, want a refusal naming %q", tc.drop, err, tc.want)
		}
	}
}

// TestUnitReadinessAndRestarts: the unit waits for the node's own
// readiness and does not restart a node whose settings are wrong.
func TestUnitReadinessAndRestarts(t *testing.T) {
	if got := unitValues(t, "Type"); len(got) != 1 || got[0] != "notify" {
		t.Errorf("Type=%v, want notify (the node sends READY=1)", got)
	}
	prevent := strings.Fields(strings.Join(unitValues(t, "RestartPreventExitStatus"), " "))
	for _, code := range []string{"2", "3"} {
		found := false
		for _, p := range prevent {
			found = found || p == code
		}
		if !found {
			t.Errorf("RestartPreventExitStatus=%v lacks %s: a bad setting would restart in a loop", prevent, code)
		}
	}
	if len(unitValues(t, "StartLimitBurst")) == 0 {
		t.Error("no StartLimitBurst=: a node failing for another reason restarts forever")
	}
}

// TestUnitDocumentationIsInstalled: `make install` puts every file the
// unit's Documentation= and ExecStart= name where the unit looks.
func TestUnitDocumentationIsInstalled(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	dest, bin := t.TempDir(), t.TempDir()
	for _, b := range []string{"exactonced", "exactonce"} {
		if err := os.WriteFile(filepath.Join(bin, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("make", "-s", "install", "DESTDIR="+dest, "BIN="+bin)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	docs := unitValues(t, "Documentation")
	if len(docs) == 0 {
		t.Fatal("the unit has no Documentation=")
	}
	paths := unitValues(t, "ExecStart")
	for _, d := range docs {
		for _, uri := range strings.Fields(d) {
			p, ok := strings.CutPrefix(uri, "file://")
			if !ok {
				t.Errorf("Documentation=%s: want a file:// path that make install provides (no network needed)", uri)
				continue
			}
			paths = append(paths, p)
		}
	}
	for _, p := range paths {
		if _, err := os.Stat(filepath.Join(dest, p)); err != nil {
			t.Errorf("the unit names %s, which make install does not install: %v", p, err)
		}
	}
	st, err := os.Stat(filepath.Join(dest, "etc/exactonce/exactonced.env"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("installed env file has mode %04o, want 0600", st.Mode().Perm())
	}
}

// maxExposure is the highest `systemd-analyze security` exposure the unit
// may have (0 safest, 10 most exposed).
const maxExposure = 2.5

// TestUnitSecurityScore: systemd-analyze rates the unit's sandbox 2.5 or
// lower. docs/deploy.md gives the command and the score.
func TestUnitSecurityScore(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd)")
	}
	out, err := exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager", unitFile).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure in:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security exposure: %.1f", score)
	if score > maxExposure {
		t.Errorf("exposure %.1f, want %.1f or lower:\n%s", score, maxExposure, out)
	}
	doc, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.FormatFloat(score, 'f', 1, 64) + " OK"; !strings.Contains(string(doc), want) {
		t.Errorf("docs/deploy.md does not give the current score %q", want)
	}
}

// TestImageRunsAsNonRootWithHealthcheck: the scratch image names a numeric
// non-root user (no /etc/passwd in it) and a HEALTHCHECK the binary runs.
func TestImageRunsAsNonRootWithHealthcheck(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var user, health, from string
	lines := strings.Split(strings.ReplaceAll(string(b), "\\\n", " "), "\n")
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "FROM":
			from = f[1]
		case "USER":
			user = f[1]
		case "HEALTHCHECK":
			health = line
		}
	}
	if from != "scratch" {
		t.Errorf("FROM %s, want scratch", from)
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %q: want a numeric non-root uid", user)
	}
	if !strings.Contains(health, `"/exactonced", "healthcheck"`) {
		t.Errorf("HEALTHCHECK %q: want the binary's own healthcheck subcommand", health)
	}
}

// TestComposeNeedsNoVariable: the compose file resolves with no EXACTONCE_*
// variable set, so `docker-compose down` works from a new shell.
func TestComposeNeedsNoVariable(t *testing.T) {
	compose, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Skip("docker-compose is not installed")
	}
	cmd := exec.Command(compose, "-p", "exactoncedeploytest", "-f", "docker-compose.yml", "config", "-q")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("docker-compose config with no variables: %v\n%s", err, out)
	}
}
