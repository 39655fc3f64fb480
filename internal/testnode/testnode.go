// Package testnode starts a real single-node ExactOnce in the test's
// process: the replicated state machine (fsm), a Raft node of one voter
// (cluster) and the HTTP API (httpapi) served on a loopback port. Tests of
// API clients (the public Go SDK, the CLI) run against it instead of a
// hand-written fake, so they see the server's real answers.
//
// The admin cluster endpoints (/v1/cluster...) are mounted by exactonced
// itself and are not served here; its own tests cover them.
package testnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/httpapi"
	"github.com/exactonce/exactonce/internal/buildinfo"
	"github.com/exactonce/exactonce/internal/secure"
	"github.com/exactonce/exactonce/internal/testport"
)

// AdminToken is the admin bearer token of every test node.
const AdminToken = "testnode-admin-token-0123456789"

// clusterKey is the fixed cluster key of test nodes (tests only).
var clusterKey = bytes.Repeat([]byte{0x5e}, secure.KeySize)

// Node is a running single-node cluster with one API client.
type Node struct {
	// URL is the API's base URL, e.g. "http://127.0.0.1:40123".
	URL string
	// ClientID and ClientSecret are the credentials of a client created
	// at start.
	ClientID, ClientSecret string
	// AdminToken is the admin bearer token.
	AdminToken string
	// Raft is the cluster node, for tests that look behind the API.
	Raft *cluster.Node
}

// Options adjusts the node; the zero value is the server's defaults.
type Options struct {
	// HTTP changes the API's configuration before the server is built.
	HTTP func(*httpapi.Config)
}

// T is the part of testing.TB a node needs; Standalone provides one
// outside tests.
type T interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

var _ T = testing.TB(nil)

// Start opens a node in t.TempDir, waits until it is ready and creates
// one client. Everything is closed when the test ends.
func Start(t T, opts Options) *Node {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	state, err := fsm.Open(fsm.Options{Path: filepath.Join(dir, "state.db"), NoSync: true})
	if err != nil {
		t.Fatalf("testnode: open state: %v", err)
	}
	t.Cleanup(func() { _ = state.Close() })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testnode: listen: %v", err)
	}
	url := "http://" + ln.Addr().String()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	node, err := cluster.Open(ctx, cluster.Config{
		NodeID:        "testnode",
		DataDir:       dir,
		RaftAddr:      testport.Free(t),
		HTTPAdvertise: url,
		Identity:      cluster.PeerIdentity{ClusterKey: clusterKey},
		FSM:           state,
		Logger:        log,
		NoSync:        true,
		// Short timeouts: a single voter elects itself sooner.
		HeartbeatTimeout: 100 * time.Millisecond,
		ElectionTimeout:  100 * time.Millisecond,
	})
	if err != nil {
		_ = ln.Close()
		t.Fatalf("testnode: open node: %v", err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if err := node.Close(cctx); err != nil {
			t.Errorf("testnode: close node: %v", err)
		}
	})

	keys, err := secure.NewKeys(clusterKey)
	if err != nil {
		t.Fatalf("testnode: keys: %v", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(buildinfo.Collector(buildinfo.Get()))
	cfg := httpapi.Config{
		AdminTokenHash: secure.HashSecret(AdminToken),
		Keys:           keys,
		Logger:         log,
		PublicURL:      url,
		Registry:       reg,
		Gatherer:       reg,
	}
	if opts.HTTP != nil {
		opts.HTTP(&cfg)
	}
	api, err := httpapi.New(cfg, node)
	if err != nil {
		t.Fatalf("testnode: http api: %v", err)
	}
	node.SetLeaderReader(api.LeaderRead)
	hs := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = hs.Shutdown(sctx)
	})

	for !node.Ready() {
		select {
		case <-ctx.Done():
			t.Fatalf("testnode: not ready: %v", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	n := &Node{URL: url, AdminToken: AdminToken, Raft: node}
	n.ClientID, n.ClientSecret = n.NewClient(t, "testnode-client")
	return n
}

// NewClient registers an API client through Raft (as the admin API does)
// and returns its id and secret.
func (n *Node) NewClient(t T, name string) (id, secret string) {
	t.Helper()
	id, secret = secure.NewClientID(), secure.NewSecret()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.Raft.Apply(ctx, &fsm.Command{Type: fsm.CmdCreateClient,
		CreateClient: &fsm.CreateClient{ID: id, Name: name, SecretHash: secure.HashSecret(secret)}})
	if err != nil {
		t.Fatalf("testnode: create client: %v", err)
	}
	if res.Code != fsm.CodeOK {
		t.Fatalf("testnode: create client: %s", res.Code)
	}
	return id, secret
}

// String names the node in test messages.
func (n *Node) String() string { return fmt.Sprintf("testnode %s", n.URL) }

// Standalone starts a node outside a test, for runnable examples: stop
// closes it and removes its files.
func Standalone(opts Options) (n *Node, stop func(), err error) {
	st := &standaloneT{}
	stop = func() {
		for i := len(st.cleanups) - 1; i >= 0; i-- {
			st.cleanups[i]()
		}
	}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(standaloneFailure)
			if !ok {
				panic(r)
			}
			stop()
			n, stop, err = nil, nil, errors.New(string(f))
		}
	}()
	return Start(st, opts), stop, nil
}

// standaloneFailure is the panic that ends a Standalone start.
type standaloneFailure string

// standaloneT is a T outside tests: a fatal error panics (recovered by
// Standalone), cleanups run at stop.
type standaloneT struct{ cleanups []func() }

func (*standaloneT) Helper()           {}
func (*standaloneT) Fatal(args ...any) { panic(standaloneFailure(fmt.Sprint(args...))) }
func (*standaloneT) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
func (*standaloneT) Fatalf(format string, args ...any) {
	panic(standaloneFailure(fmt.Sprintf(format, args...)))
}
func (s *standaloneT) Cleanup(f func()) { s.cleanups = append(s.cleanups, f) }
func (s *standaloneT) TempDir() string {
	dir, err := os.MkdirTemp("", "exactonce-testnode")
	if err != nil {
		s.Fatalf("testnode: temp dir: %v", err)
	}
	s.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
