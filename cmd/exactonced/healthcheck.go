package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/exactonce/exactonce/internal/config"
)

// healthcheckCommand is the subcommand that probes a running node:
// `exactonced healthcheck`. A FROM-scratch image has no curl, so the
// binary answers Docker's HEALTHCHECK itself.
const healthcheckCommand = "healthcheck"

// Exit statuses of the healthcheck subcommand, as Docker's HEALTHCHECK
// reads them: 0 healthy, 1 unhealthy; 2 is a usage error (Docker counts it
// as unhealthy too, and the message says what to fix).
const (
	healthOK       = 0
	healthFailed   = 1
	healthBadUsage = 2
)

// healthcheck probes the node this process's settings describe and
// returns the exit status. By default it GETs /readyz (the node knows a
// leader and has caught up) on the node's own --http-addr, read from
// EXACTONCE_HTTP_ADDR like the node does, over HTTPS when EXACTONCE_TLS_CERT
// is set; --live asks /healthz (the process serves) instead.
func healthcheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("exactonced healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		rawURL     = fs.String("url", "", "base URL of the node (default: from EXACTONCE_HTTP_ADDR and EXACTONCE_TLS_CERT, as the node itself reads them; an unspecified host means loopback)")
		live       = fs.Bool("live", false, "ask /healthz (the process serves) instead of /readyz (the node knows a leader and has caught up)")
		timeout    = fs.Duration("timeout", 5*time.Second, "give up after this long")
		serverCert = fs.String("server-cert", "", "over HTTPS, accept only the server presenting this PEM certificate (default: EXACTONCE_TLS_CERT, the node's own)")
		caFile     = fs.String("ca", "", "over HTTPS, verify the server against this PEM CA bundle and the URL's host name instead of pinning --server-cert")
		clientCert = fs.String("client-cert", "", "PEM client certificate, for a node started with --tls-client-ca")
		clientKey  = fs.String("client-key", "", "PEM private key of --client-cert")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: exactonced healthcheck [flags]\n\nExits 0 when the node answers 200, 1 when it does not (or cannot be reached), 2 on a usage error.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return healthOK
		}
		return healthBadUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "exactonced healthcheck: unexpected argument %q\n", fs.Arg(0))
		return healthBadUsage
	}
	env := func(flagName string) string {
		if getenv == nil {
			return ""
		}
		return strings.TrimSpace(getenv(config.EnvName(flagName)))
	}
	base := *rawURL
	if base == "" {
		var err error
		if base, err = localURL(env("http-addr"), env("tls-cert") != ""); err != nil {
			fmt.Fprintf(stderr, "exactonced healthcheck: %v\n", err)
			return healthBadUsage
		}
	}
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "exactonced healthcheck: --url %q: want http(s)://host:port\n", base)
		return healthBadUsage
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "exactonced healthcheck: --timeout %s: must be positive\n", *timeout)
		return healthBadUsage
	}
	if (*clientCert == "") != (*clientKey == "") {
		fmt.Fprintln(stderr, "exactonced healthcheck: --client-cert and --client-key go together")
		return healthBadUsage
	}
	transport := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if u.Scheme == "https" {
		pin := *serverCert
		if pin == "" && *caFile == "" {
			pin = env("tls-cert")
		}
		tc, err := healthTLS(pin, *caFile, *clientCert, *clientKey)
		if err != nil {
			fmt.Fprintf(stderr, "exactonced healthcheck: %v\n", err)
			return healthBadUsage
		}
		transport.TLSClientConfig = tc
	}
	path := "/readyz"
	if *live {
		path = "/healthz"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String()+path, nil)
	if err != nil {
		fmt.Fprintf(stderr, "exactonced healthcheck: %v\n", err)
		return healthBadUsage
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "exactonced healthcheck: GET %s: %v\n", req.URL, err)
		return healthFailed
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "exactonced healthcheck: GET %s: %s %s\n", req.URL, resp.Status, bytes.TrimSpace(body))
		return healthFailed
	}
	fmt.Fprintf(stdout, "GET %s: %s\n", req.URL, resp.Status)
	return healthOK
}

// localURL is the URL of a node listening on httpAddr (--http-addr, default
// 127.0.0.1:8080) as seen from the same host: an unspecified host (0.0.0.0,
// ::, empty) is reached on loopback.
func localURL(httpAddr string, tls bool) (string, error) {
	if httpAddr == "" {
		httpAddr = "127.0.0.1:8080"
	}
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return "", fmt.Errorf("%s %q: want host:port: %w", config.EnvName("http-addr"), httpAddr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}

// healthTLS is the probe's TLS configuration: the server must present the
// certificate in pinFile (the node's own --tls-cert: no host name to match
// on loopback, and no CA needed), or, with caFile, a certificate of that CA
// for the URL's host. The client certificate is for --tls-client-ca.
func healthTLS(pinFile, caFile, certFile, keyFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case caFile != "":
		pool, err := loadPool(nil, caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		tc.RootCAs = pool
	case pinFile != "":
		want, err := firstCertificate(pinFile)
		if err != nil {
			return nil, fmt.Errorf("--server-cert: %w", err)
		}
		// The chain is not verified against a CA: the exact certificate
		// is, which is stronger for a probe of the node's own listener.
		tc.InsecureSkipVerify = true
		tc.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], want) {
				return fmt.Errorf("the server's certificate is not the one in %s", pinFile)
			}
			return nil
		}
	default:
		return nil, errors.New("an https:// URL needs --server-cert, EXACTONCE_TLS_CERT or --ca to check the server")
	}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--client-cert/--client-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}

// firstCertificate returns the DER bytes of the first certificate in a
// PEM file (the leaf of a chain file).
func firstCertificate(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("no PEM certificate in %s", file)
		}
		if blk.Type == "CERTIFICATE" {
			return blk.Bytes, nil
		}
	}
}
