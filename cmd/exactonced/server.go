package main

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/exactonce/exactonce/cluster"
	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/httpapi"
	"github.com/exactonce/exactonce/internal/buildinfo"
	"github.com/exactonce/exactonce/internal/config"
	"github.com/exactonce/exactonce/internal/logbuf"
	"github.com/exactonce/exactonce/internal/sdnotify"
	"github.com/exactonce/exactonce/internal/secure"
)

// Files kept in the data dir besides the state and Raft storage.
const (
	nodeIDFile     = "node-id"
	adminTokenFile = "admin.token"
	devClientFile  = "dev-client.json"
	stateFile      = "state.db"
)

// Shutdown and startup deadlines.
const (
	httpShutdownTimeout = 10 * time.Second
	nodeCloseTimeout    = 15 * time.Second
	devClientTimeout    = 60 * time.Second
)

// newLogger logs to w through a logbuf.Writer (lines are written in
// batches; warnings and errors at once); the caller runs and flushes it.
func newLogger(cfg *config.Config, w *logbuf.Writer) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	var h slog.Handler
	switch cfg.LogFormat {
	case "json":
		h = slog.NewJSONHandler(w, opts)
	case "text":
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, fmt.Errorf("unknown log format %q", cfg.LogFormat)
	}
	return slog.New(logbuf.NewHandler(h, w)), nil
}

// server is one exactonced process.
type server struct {
	cfg    *config.Config
	log    *slog.Logger
	stdout io.Writer
	// keys are derived from the cluster key (loadClusterKey).
	keys *secure.Keys
	// notify tells systemd (Type=notify) when the node is ready and when
	// it stops; it sends nothing outside systemd.
	notify *sdnotify.Notifier
	// raftMetrics are hashicorp/raft's go-metrics (installRaftMetrics),
	// nil when the process did not install them.
	raftMetrics prometheus.Gatherer
}

// notifyManager sends one state change to the service manager; a failure
// is logged, never fatal.
func (s *server) notifyManager(send func(*sdnotify.Notifier) error) {
	if err := send(s.notify); err != nil {
		s.log.Warn("notify service manager", "err", err)
	}
}

func (s *server) run(ctx context.Context) error {
	cfg := s.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	nodeID, err := loadNodeID(cfg.DataDir, cfg.NodeID)
	if err != nil {
		return err
	}
	baseLog := s.log // the cluster package adds its own node attribute
	s.log = s.log.With("node", nodeID)
	log := s.log

	tightenDataDir(cfg.DataDir, log)
	// Before Raft opens: a key that is not the data dir's touches nothing.
	clusterKey, keys, err := loadClusterKey(cfg, log)
	if err != nil {
		return err
	}
	s.keys = keys
	var seed *cluster.Seed
	if cfg.Restore != "" {
		// Before the state file and Raft are created: a refused restore
		// leaves the data dir as it found it.
		var closeSeed func()
		if seed, closeSeed, err = prepareRestore(cfg, keys, log); err != nil {
			return err
		}
		defer closeSeed()
	}
	gossipKey := cfg.GossipKey
	if gossipKey == nil {
		// Gossip is encrypted by default with a key derived from the cluster
		// key, which every node already shares.
		if gossipKey, err = hkdf.Key(sha256.New, clusterKey, nil, "exactonce gossip v1", 32); err != nil {
			return fmt.Errorf("derive gossip key: %w", err)
		}
	}
	adminToken, tokenPath, err := loadAdminToken(cfg.DataDir, cfg.AdminToken)
	if err != nil {
		return err
	}
	if tokenPath != "" {
		log.Info("admin token is kept in the data dir", "file", tokenPath)
		fmt.Fprintf(s.stdout, "admin-token-file: %s\n", tokenPath)
	}

	if u, err := url.Parse(cfg.HTTPAdvertise); err == nil {
		if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
			log.Warn("the advertised API URL has an unspecified host; clients cannot reach it through the URLs this node gives out: set --http-advertise",
				"http_advertise", cfg.HTTPAdvertise)
		}
	}
	if cfg.TestClockOffset != 0 {
		log.Warn("test clock offset in effect: this node's clock is shifted (chaostest build)", "offset", cfg.TestClockOffset.String(), "env", config.TestClockOffsetEnv)
	}
	if cfg.TestSnapshotThreshold != 0 || cfg.TestTrailingLogs != 0 || cfg.TestSnapshotInterval != 0 {
		log.Warn("test snapshot tuning in effect", "threshold", cfg.TestSnapshotThreshold, "trailing_logs", cfg.TestTrailingLogs, "interval", cfg.TestSnapshotInterval.String())
	}
	apiTLS, err := apiTLSConfig(cfg)
	if err != nil {
		return &config.UsageError{Err: err}
	}
	identity, err := internalIdentity(cfg, clusterKey)
	if err != nil {
		return &config.UsageError{Err: err}
	}

	// Bind the API first so that a taken port fails before Raft starts.
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on --http-addr: %w", err)
	}
	defer ln.Close()
	if cfg.PprofAddr != "" {
		stopPprof, err := pprofListener(cfg.PprofAddr, log.With("component", "pprof"))
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	// The Raft log is fsynced before an entry commits, so the state file
	// is not fsynced per batch (fsm.Options.DeferSync, fsm/durability.go);
	// after a machine crash it is rebuilt from the snapshot and the log.
	state, err := fsm.Open(fsm.Options{Path: filepath.Join(cfg.DataDir, stateFile), DeferSync: true,
		MappedBudget: cfg.MappedStateMiB << 20, Logger: log.With("component", "fsm")})
	if err != nil {
		return fmt.Errorf("open state: %w", err)
	}
	defer func() {
		if err := state.Close(); err != nil {
			log.Error("close state", "err", err)
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	node, err := cluster.Open(ctx, cluster.Config{
		NodeID:          nodeID,
		DataDir:         cfg.DataDir,
		RaftAddr:        cfg.RaftAddr,
		RaftAdvertise:   cfg.RaftAdvertise,
		HTTPAdvertise:   cfg.HTTPAdvertise,
		Version:         buildinfo.Get().Version,
		GossipAddr:      cfg.GossipAddr,
		GossipAdvertise: cfg.GossipAdvertise,
		Join:            cfg.Join,
		BootstrapExpect: cfg.BootstrapExpect,
		GossipKey:       gossipKey,
		Identity:        identity,
		Vet:             payloadVetter(state, keys),
		Registerer:      reg,
		FSM:             state,
		Seed:            seed,
		Now:             cfg.Now,
		Logger:          baseLog,
		// The flags, or the chaos harness's test-only variables.
		SnapshotThreshold: orTest(cfg.SnapshotThreshold, cfg.TestSnapshotThreshold),
		SnapshotInterval:  orTest(cfg.SnapshotInterval, cfg.TestSnapshotInterval),
		SnapshotsRetain:   cfg.SnapshotsRetain,
		TrailingLogs:      cfg.TestTrailingLogs,
	})
	if err != nil {
		return fmt.Errorf("open cluster node: %w", err)
	}
	nodeClosed := false
	closeNode := func() {
		if nodeClosed {
			return
		}
		nodeClosed = true
		cctx, cancel := context.WithTimeout(context.Background(), nodeCloseTimeout)
		defer cancel()
		if err := node.Close(cctx); err != nil {
			log.Error("close cluster node", "err", err)
		}
	}
	defer closeNode()

	reg.MustRegister(nodeGauges(node, state, filepath.Join(cfg.DataDir, stateFile), cfg.DataDir, cfg.Now, log.With("component", "metrics"))...)
	reg.MustRegister(buildinfo.Collector(buildinfo.Get()))
	var gatherer prometheus.Gatherer = reg
	if s.raftMetrics != nil {
		gatherer = prometheus.Gatherers{reg, s.raftMetrics}
	}
	api, err := httpapi.New(httpapi.Config{
		MaxBodyBytes:          cfg.MaxBodyBytes,
		MaxCSVBodyBytes:       cfg.MaxCSVBodyBytes,
		MaxPayloadBytes:       int(cfg.MaxPayloadBytes),
		MaxCSVRows:            cfg.MaxCSVRows,
		DefaultTTL:            cfg.DefaultTTL,
		MaxTTL:                cfg.MaxTTL,
		AdminTokenHash:        secure.HashSecret(adminToken),
		Keys:                  keys,
		Logger:                log.With("component", "http"),
		AccessLog:             cfg.AccessLog,
		PublicURL:             cfg.HTTPAdvertise,
		MaxActionsPerClient:   cfg.MaxActionsPerClient,
		MaxConcurrentRequests: cfg.MaxConcurrentRequests,
		DemoRatePerMinute:     cfg.DemoPerMinute,
		BodyReadTimeout:       cfg.BodyReadTimeout,
		MaxStaleness:          cfg.MaxStaleness,
		Registry:              reg,
		Gatherer:              gatherer,
		Now:                   cfg.Now,
		Extra:                 apiRoutes(cfg, node, secure.HashSecret(adminToken), log),
	}, node)
	if err != nil {
		return fmt.Errorf("build http api: %w", err)
	}
	node.SetLeaderReader(api.LeaderRead)

	hs := &http.Server{
		Handler:           api,
		TLSConfig:         apiTLS,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		// Well above httpapi's own 64 KiB limit, so that the API answers
		// an oversized header in JSON before net/http does in plain text.
		MaxHeaderBytes:               http.DefaultMaxHeaderBytes,
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() {
		var err error
		if apiTLS != nil {
			err = hs.ServeTLS(ln, "", "")
		} else {
			err = hs.Serve(ln)
		}
		serveErr <- err
	}()
	log.Info("exactonced serving", "http", ln.Addr().String(), "advertise", cfg.HTTPAdvertise,
		"raft", cfg.RaftAddr, "gossip", cfg.GossipAddr, "tls", apiTLS != nil, "internal_certs", identityKind(identity),
		"bootstrap_expect", cfg.BootstrapExpect, "join", strings.Join(cfg.Join, ","))

	s.notifyManager(func(n *sdnotify.Notifier) error {
		return n.Status("serving " + ln.Addr().String() + "; waiting for a leader and to catch up")
	})
	startupDone := make(chan error, 1)
	go func() { startupDone <- s.afterStart(ctx, node, state, api, adminToken, tokenPath) }()
	memCtx, stopMem := context.WithCancel(ctx)
	memDone := make(chan struct{})
	go func() { defer close(memDone); releaseMappedMemory(memCtx, state, log) }()
	defer func() { stopMem(); <-memDone }()

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("http server: %w", err)
	case err := <-startupDone:
		if err != nil {
			runErr = err
			break
		}
		select {
		case <-ctx.Done():
		case err := <-serveErr:
			runErr = fmt.Errorf("http server: %w", err)
		}
	}
	if runErr == nil {
		log.Info("shutting down", "reason", context.Cause(ctx))
		s.notifyManager(func(n *sdnotify.Notifier) error {
			return n.Stopping("shutting down: draining requests, handing over leadership")
		})
	} else {
		s.notifyManager(func(n *sdnotify.Notifier) error { return n.Status("failed: " + runErr.Error()) })
	}

	sctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	closeNode()
	if runErr == nil {
		log.Info("stopped")
	}
	return runErr
}

// mappedMemoryInterval is how often the state file's mapped pages are
// handed back when the node's file-backed resident memory is over budget
// (fsm.FSM.TrimMappedMemory): the resident set then holds about what this
// interval's reads and writes touched.
const mappedMemoryInterval = 5 * time.Second

// releaseMappedMemory calls state.TrimMappedMemory every
// mappedMemoryInterval until ctx ends.
func releaseMappedMemory(ctx context.Context, state *fsm.FSM, log *slog.Logger) {
	t := time.NewTicker(mappedMemoryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := state.TrimMappedMemory(); err != nil && !errors.Is(err, fsm.ErrClosed) {
				log.Warn("release mapped state pages", "err", err)
			}
		}
	}
}

// afterStart waits for readiness and, in dev mode, ensures the dev client.
// It returns nil when ctx ends first (shutdown during startup).
// tokenPath is the admin token's file in the data dir ("" when the token
// was given).
func (s *server) afterStart(ctx context.Context, node *cluster.Node, state *fsm.FSM, api http.Handler, adminToken, tokenPath string) error {
	if err := waitReady(ctx, node); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.log.Info("ready", "leader", node.IsLeader(), "leader_http", node.LeaderHTTP())
	if err := s.verifyClusterKey(ctx, node, state); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := s.syncRetention(ctx, node, state); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	// READY=1 only now: a Type=notify unit counts as started once the node
	// knows a leader, has caught up and has checked the cluster key, so
	// `systemctl restart` of one node at a time never takes down a second
	// node before the first serves again.
	s.notifyManager(func(n *sdnotify.Notifier) error {
		return n.Ready(fmt.Sprintf("ready; leader %t, leader API %s", node.IsLeader(), node.LeaderHTTP()))
	})
	if !s.cfg.Dev {
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, devClientTimeout)
	defer cancel()
	dc, err := ensureDevClient(dctx, s.cfg.DataDir, node, state, api, adminToken)
	if err != nil {
		if ctx.Err() == nil {
			// Keep serving: the cluster works, only the convenience is missing.
			s.log.Error("no dev client", "err", err)
		}
		return nil
	}
	fmt.Fprint(s.stdout, devExports(s.cfg.HTTPAdvertise, dc, tokenPath))
	s.log.Info("dev client ready (credentials printed to stdout)", "client_id", dc.ClientID,
		"file", filepath.Join(s.cfg.DataDir, devClientFile))
	return nil
}

// devExports is what a dev node prints once its client is ready: shell
// lines that paste as printed into the README's walkthrough (docs/operations.md).
// The admin token itself is never printed: when it is kept in the data dir
// the line reads it from its file.
func devExports(api string, dc *devClient, tokenPath string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "exactonced dev mode: API at %s; paste these lines into your shell:\n", api)
	fmt.Fprintf(&b, "export API=%s\n", shellQuote(api))
	fmt.Fprintf(&b, "export ID=%s\n", shellQuote(dc.ClientID))
	fmt.Fprintf(&b, "export SECRET=%s\n", shellQuote(dc.ClientSecret))
	if tokenPath != "" {
		if abs, err := filepath.Abs(tokenPath); err == nil {
			tokenPath = abs
		}
		fmt.Fprintf(&b, "export EXACTONCE_ADMIN_TOKEN=\"$(cat %s)\"\n", shellQuote(tokenPath))
	}
	return b.String()
}

// shellQuote quotes s for a POSIX shell when it holds anything but
// characters that never need it.
func shellQuote(s string) string {
	plain := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:@%+=,", r))
	}) < 0
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// waitReady blocks until the node knows a leader and has caught up. It
// never gives up on its own: a node waiting for peers keeps waiting.
func waitReady(ctx context.Context, node *cluster.Node) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !node.Ready() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for readiness: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// loadNodeID returns the node id kept in the data dir, writing given (or a
// generated id) there on first start. A different --node-id on an existing
// data dir is refused: Raft knows the node by its id.
func loadNodeID(dataDir, given string) (string, error) {
	path := filepath.Join(dataDir, nodeIDFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		stored := strings.TrimSpace(string(b))
		if !config.ValidNodeID(stored) {
			return "", fmt.Errorf("node id file %s holds an invalid id %q", path, stored)
		}
		if given != "" && given != stored {
			return "", &config.UsageError{Err: fmt.Errorf("--node-id %q differs from %q kept in %s: a data dir belongs to one node", given, stored, path)}
		}
		return stored, nil
	case errors.Is(err, os.ErrNotExist):
		id := given
		if id == "" {
			id = "node-" + strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(secure.NewRequestID()))
		}
		if err := secure.WriteSecretFile(path, id+"\n"); err != nil {
			return "", fmt.Errorf("keep node id: %w", err)
		}
		return id, nil
	default:
		return "", fmt.Errorf("read node id: %w", err)
	}
}

// loadAdminToken returns the admin token: the given one, or the one kept in
// the data dir (generated on first start). path is the token file when the
// token comes from it, "" when given on the command line.
func loadAdminToken(dataDir, given string) (token, path string, err error) {
	if given != "" {
		return given, "", nil
	}
	path = filepath.Join(dataDir, adminTokenFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		token = strings.TrimSpace(string(b))
		if len(token) < 16 {
			return "", "", fmt.Errorf("admin token file %s is too short", path)
		}
		return token, path, nil
	case errors.Is(err, os.ErrNotExist):
		token = secure.NewToken()
		if err := secure.WriteSecretFile(path, token+"\n"); err != nil {
			return "", "", fmt.Errorf("keep admin token: %w", err)
		}
		return token, path, nil
	default:
		return "", "", fmt.Errorf("read admin token: %w", err)
	}
}

// devClient is the content of data-dir/dev-client.json.
type devClient struct {
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
}

// ensureDevClient returns the dev client kept in dev-client.json when it
// still exists in the replicated state, else creates a new one through the
// node's own admin API (which forwards to the leader, so it works on any
// node) and keeps it in the file. Transient failures (no leader yet) are
// retried until ctx ends.
func ensureDevClient(ctx context.Context, dataDir string, node *cluster.Node, state *fsm.FSM, api http.Handler, adminToken string) (*devClient, error) {
	path := filepath.Join(dataDir, devClientFile)
	var kept *devClient
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		kept = &devClient{}
		if err := json.Unmarshal(b, kept); err != nil || kept.ClientID == "" || kept.ClientSecret == "" {
			return nil, fmt.Errorf("%s is damaged; delete it to create a new dev client", path)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, fmt.Errorf("read dev client: %w", err)
	}

	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var lastErr error
	for {
		dc, err := tryDevClient(ctx, kept, node, state, api, adminToken)
		if err == nil {
			if kept == nil || *kept != *dc {
				out, err := json.MarshalIndent(dc, "", "  ")
				if err != nil {
					return nil, fmt.Errorf("encode dev client: %w", err)
				}
				if err := secure.WriteSecretFile(path, string(out)+"\n"); err != nil {
					return nil, fmt.Errorf("keep dev client: %w", err)
				}
			}
			return dc, nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("create dev client: %w (last error: %v)", ctx.Err(), lastErr)
		case <-t.C:
		}
	}
}

// tryDevClient makes one attempt: the kept client when it exists and is
// usable, else a newly created one.
func tryDevClient(ctx context.Context, kept *devClient, node *cluster.Node, state *fsm.FSM, api http.Handler, adminToken string) (*devClient, error) {
	if kept != nil {
		if err := node.ReadBarrier(ctx); err != nil {
			return nil, fmt.Errorf("read barrier: %w", err)
		}
		var existing *fsm.Client
		if err := state.View(func(v *fsm.View) error {
			var err error
			existing, err = v.Client(kept.ClientID)
			return err
		}); err != nil {
			return nil, fmt.Errorf("look up dev client: %w", err)
		}
		if existing != nil && existing.RevokedAt == 0 && secure.SecretMatches(kept.ClientSecret, existing.SecretHash) {
			return kept, nil
		}
	}
	body := strings.NewReader(`{"name":"dev"}`)
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/admin/clients", body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.RemoteAddr = "127.0.0.1:0"
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated {
		return nil, fmt.Errorf("POST /v1/admin/clients: %d %s", rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	var dc devClient
	if err := json.Unmarshal(rec.Body.Bytes(), &dc); err != nil || dc.ClientID == "" || dc.ClientSecret == "" {
		return nil, fmt.Errorf("POST /v1/admin/clients: unexpected answer %q", rec.Body.String())
	}
	return &dc, nil
}

// apiCipherSuites are the TLS 1.2 suites the API offers: AEAD with
// forward secrecy only (no CBC, no SHA-1 MACs). TLS 1.3's suites are all
// AEAD and not configurable.
var apiCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// apiTLSConfig builds the API server's TLS configuration (nil without
// --tls-cert): TLS 1.2 or later with AEAD suites only, and client
// certificates of --tls-client-ca when given.
func apiTLSConfig(cfg *config.Config) (*tls.Config, error) {
	if !cfg.TLS() {
		return nil, nil
	}
	c, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	api := &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: apiCipherSuites, Certificates: []tls.Certificate{c}}
	if cfg.TLSClientCA != "" {
		pool, err := loadPool(nil, cfg.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		api.ClientCAs = pool
		api.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return api, nil
}

// internalIdentity is how this node authenticates itself and its peers on
// the internal channel: certificates derived from the cluster key, or the
// operator's --internal-tls-* certificates (the cluster key is proved on
// every connection either way; cluster/DESIGN.md).
func internalIdentity(cfg *config.Config, clusterKey []byte) (cluster.PeerIdentity, error) {
	id := cluster.PeerIdentity{ClusterKey: clusterKey}
	if !cfg.InternalTLS() {
		return id, nil
	}
	c, err := tls.LoadX509KeyPair(cfg.InternalTLSCert, cfg.InternalTLSKey)
	if err != nil {
		return id, fmt.Errorf("--internal-tls-cert/--internal-tls-key: %w", err)
	}
	pool, err := loadPool(nil, cfg.InternalTLSCA)
	if err != nil {
		return id, fmt.Errorf("--internal-tls-ca: %w", err)
	}
	id.Certificate, id.CA = &c, pool
	return id, nil
}

// identityKind names the internal certificates in logs.
func identityKind(id cluster.PeerIdentity) string {
	if id.Certificate != nil {
		return "operator"
	}
	return "derived from the cluster key"
}

func loadPool(pool *x509.CertPool, file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	if pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no PEM certificates in %s", file)
	}
	return pool, nil
}

// apiRoutes are the routes this binary mounts on the HTTP API beside
// httpapi's own: the cluster admin endpoints and, in a chaostest build only,
// the test clock.
func apiRoutes(cfg *config.Config, node *cluster.Node, adminTokenHash []byte, log *slog.Logger) func(r *mux.Router) {
	return withRoutes(testRoutes(cfg, adminTokenHash, log.With("component", "test-clock")),
		clusterRoutes(node, adminTokenHash, log.With("component", "cluster-admin")),
		backupRoutes(node, adminTokenHash, time.Now, log.With("component", "backup")))
}

// withRoutes mounts every non-nil route set in order (earlier routes win in
// gorilla/mux).
func withRoutes(sets ...func(r *mux.Router)) func(r *mux.Router) {
	return func(r *mux.Router) {
		for _, set := range sets {
			if set != nil {
				set(r)
			}
		}
	}
}

// orTest is v, or the test-only override t when the chaos harness set one
// (config.TestSnapshotThresholdEnv and the like; the node logs a warning).
func orTest[T comparable](v, t T) T {
	var zero T
	if t != zero {
		return t
	}
	return v
}
