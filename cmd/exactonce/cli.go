package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/exactonce/exactonce/client"
	"github.com/exactonce/exactonce/internal/buildinfo"
)

// globals are the persistent flags shared by every command.
type globals struct {
	addr           string
	clientID       string
	clientSecret   string
	adminToken     string
	idempotencyKey string
	cacert         string
	insecure       bool
	stale          bool
	timeout        time.Duration
	// output is -o: formatDefault, formatJSON or formatTable.
	output string
}

// app is one CLI invocation.
type app struct {
	g      globals
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

// run executes the CLI and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		a.printError(err)
		return exitCode(err)
	}
	return exitOK
}

// envOr fills a string flag from the environment when not given.
func (a *app) envOr(cmd *cobra.Command, flag, env string, dst *string) {
	if !cmd.Flags().Changed(flag) {
		if v := a.getenv(env); v != "" {
			*dst = v
		}
	}
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "exactonce",
		Short: "Command-line client for ExactOnce, the one-time action service",
		Long: "Command-line client for ExactOnce, the one-time action service.\n\n" +
			"It prints the server's answer on stdout: pretty JSON, or with -o table as text tables.\n" +
			"An error goes to stderr with its code and the error body.\n\n" + exitCodesHelp,
		Version:       buildinfo.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch a.g.output {
			case formatDefault, formatJSON, formatTable:
			default:
				return fmt.Errorf("-o %q: want json or table", a.g.output)
			}
			a.envOr(cmd, "addr", "EXACTONCE_ADDR", &a.g.addr)
			a.envOr(cmd, "client-id", "EXACTONCE_CLIENT_ID", &a.g.clientID)
			a.envOr(cmd, "client-secret", "EXACTONCE_CLIENT_SECRET", &a.g.clientSecret)
			a.envOr(cmd, "admin-token", "EXACTONCE_ADMIN_TOKEN", &a.g.adminToken)
			a.envOr(cmd, "cacert", "EXACTONCE_CACERT", &a.g.cacert)
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.g.addr, "addr", "http://127.0.0.1:8080", "server base URL (env EXACTONCE_ADDR)")
	pf.StringVar(&a.g.clientID, "client-id", "", "client id (env EXACTONCE_CLIENT_ID)")
	pf.StringVar(&a.g.clientSecret, "client-secret", "", "client secret (env EXACTONCE_CLIENT_SECRET)")
	pf.StringVar(&a.g.adminToken, "admin-token", "", "admin bearer token (env EXACTONCE_ADMIN_TOKEN)")
	pf.StringVar(&a.g.idempotencyKey, "idempotency-key", "", "Idempotency-Key header for create, consume and cancel")
	pf.StringVar(&a.g.cacert, "cacert", "", "PEM CA bundle to verify the server's certificate (env EXACTONCE_CACERT)")
	pf.BoolVar(&a.g.insecure, "insecure", false, "skip TLS certificate verification (testing only)")
	pf.BoolVar(&a.g.stale, "stale", false, "allow a possibly stale local read (consistency=stale) for get, list and stats")
	pf.DurationVar(&a.g.timeout, "timeout", 30*time.Second, "deadline of the whole command")
	pf.StringVarP(&a.g.output, "output", "o", formatDefault, "output format: json or table (default: pretty JSON; plain text for keygen and version)")

	root.SetVersionTemplate("exactonce {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	root.AddCommand(a.createCmd(), a.consumeCmd(), a.getCmd(), a.listCmd(), a.cancelCmd(),
		a.statsCmd(), a.clientsCmd(), a.clusterCmd(), a.demoCmd(), a.keygenCmd(), a.versionCmd(), a.snapshotCmd())
	return root
}

// client builds the API client from the global flags.
func (a *app) client() (*client.Client, error) {
	opts := []client.Option{
		client.WithCredentials(a.g.clientID, a.g.clientSecret),
		client.WithAdminToken(a.g.adminToken),
		client.WithUserAgent("exactonce-cli"),
	}
	if a.g.cacert != "" || a.g.insecure {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: a.g.insecure} //nolint:gosec // opt-in flag
		if a.g.cacert != "" {
			pem, err := os.ReadFile(a.g.cacert)
			if err != nil {
				return nil, fmt.Errorf("--cacert: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--cacert %s: no PEM certificates", a.g.cacert)
			}
			tc.RootCAs = pool
		}
		opts = append(opts, client.WithTLSConfig(tc))
	}
	c, err := client.New(a.g.addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("--addr: %w", err)
	}
	return c, nil
}

// call runs fn with the API client, a deadline and a body capture, then
// prints the captured body in the -o format. An error of the call carries
// its exit status (apiFailure).
func (a *app) call(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client, opts []client.CallOption) error, extra ...client.CallOption) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), a.g.timeout)
	defer cancel()
	var raw []byte
	opts := append([]client.CallOption{client.CaptureBody(&raw)}, extra...)
	if err := fn(ctx, c, opts); err != nil {
		return apiFailure(err)
	}
	return a.print(raw)
}

// print writes a JSON answer in the -o format.
func (a *app) print(raw []byte) error {
	var err error
	if a.g.output == formatTable && len(bytes.TrimSpace(raw)) > 0 {
		err = writeTable(a.stdout, raw)
	} else {
		err = a.printJSON(raw)
	}
	if err != nil {
		return &exitError{exitFailure, err}
	}
	return nil
}

func (a *app) writeOpts() []client.CallOption {
	if a.g.idempotencyKey != "" {
		return []client.CallOption{client.WithIdempotencyKey(a.g.idempotencyKey)}
	}
	return nil
}

func (a *app) readOpts() []client.CallOption {
	if a.g.stale {
		return []client.CallOption{client.Stale()}
	}
	return nil
}

// printJSON pretty-prints a JSON body (or prints it as is).
func (a *app) printJSON(raw []byte) error {
	var buf bytes.Buffer
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		buf.Reset()
		buf.Write(raw)
	}
	if buf.Len() > 0 && buf.Bytes()[buf.Len()-1] != '\n' {
		buf.WriteByte('\n')
	}
	_, err := a.stdout.Write(buf.Bytes())
	return err
}

// printError writes the error: for an API error its code, status and
// message, then the whole error body.
func (a *app) printError(err error) {
	var ae *client.APIError
	if !errors.As(err, &ae) {
		fmt.Fprintf(a.stderr, "error: %v\n", err)
		return
	}
	code := ae.Code
	if code == "" {
		code = strings.ToLower(strings.ReplaceAll(http.StatusText(ae.Status), " ", "_"))
	}
	if ae.Message != "" {
		fmt.Fprintf(a.stderr, "error: %s (HTTP %d): %s\n", code, ae.Status, ae.Message)
	} else {
		fmt.Fprintf(a.stderr, "error: %s (HTTP %d)\n", code, ae.Status)
	}
	if len(ae.Fields) > 0 {
		var buf bytes.Buffer
		if json.Indent(&buf, ae.Body, "", "  ") == nil {
			fmt.Fprintln(a.stderr, strings.TrimRight(buf.String(), "\n"))
		}
	}
}

// parseTime accepts RFC 3339 or a duration from now ("+10m", "2h", "7d").
func parseTime(flag, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d := strings.TrimPrefix(s, "+")
	var dur time.Duration
	var err error
	if days, ok := strings.CutSuffix(d, "d"); ok {
		var n int
		if _, err = fmt.Sscanf(days, "%d", &n); err == nil && fmt.Sprint(n) == days {
			dur = time.Duration(n) * 24 * time.Hour
		} else {
			err = errors.New("bad days")
		}
	} else {
		dur, err = time.ParseDuration(d)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s %q: want RFC 3339 (2030-01-02T15:04:05Z) or a duration from now (+10m, 2h, 7d)", flag, s)
	}
	return now.Add(dur), nil
}

// jsonArg reads a JSON object argument: inline, @file or @- for stdin.
func (a *app) jsonArg(flag, s string) (json.RawMessage, error) {
	if s == "" {
		return nil, nil
	}
	var b []byte
	switch {
	case s == "@-":
		var err error
		if b, err = io.ReadAll(a.stdin); err != nil {
			return nil, fmt.Errorf("--%s: read stdin: %w", flag, err)
		}
	case strings.HasPrefix(s, "@"):
		var err error
		if b, err = os.ReadFile(s[1:]); err != nil {
			return nil, fmt.Errorf("--%s: %w", flag, err)
		}
	default:
		b = []byte(s)
	}
	b = bytes.TrimSpace(b)
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("--%s: want a JSON object like '{\"k\":\"v\"}' (or @file)", flag)
	}
	return b, nil
}
