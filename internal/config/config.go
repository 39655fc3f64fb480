// Package config parses exactonced's settings from command-line flags and
// EXACTONCE_* environment variables. A flag given on the command line beats
// the environment; the environment beats the built-in default.
package config

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// EnvPrefix is prepended to a flag's upper-cased name (with - as _) to give
// its environment variable, e.g. --data-dir is EXACTONCE_DATA_DIR.
const EnvPrefix = "EXACTONCE_"

// Config is exactonced's validated configuration.
type Config struct {
	DataDir string

	HTTPAddr string
	// HTTPAdvertise is the API base URL other nodes use to reach this node.
	HTTPAdvertise   string
	RaftAddr        string
	RaftAdvertise   string
	GossipAddr      string
	GossipAdvertise string

	// NodeID is empty when not given; the server then uses the id kept in
	// the data dir (generated on first start).
	NodeID string
	Join   []string
	// BootstrapExpect is 1 by default without Join and 0 (join an existing
	// cluster, never bootstrap) by default with Join.
	BootstrapExpect int

	// AdminToken is empty when not given (a single node only: a node of a
	// multi-node cluster is refused without one); the server then uses the
	// token kept in the data dir (generated on first start).
	// --admin-token-file fills it from a file.
	AdminToken string
	// AdminTokenFile is the file the admin token was read from, "" when none.
	AdminTokenFile string
	Dev            bool

	// ClusterKey is the base64 cluster key given explicitly (--cluster-key,
	// its environment variable, or read from --cluster-key-file), empty for
	// the key file kept in the data dir (a single node only).
	ClusterKey string
	// ClusterKeyFile is the file the cluster key was read from, "" when none.
	ClusterKeyFile string
	// ClusterKeySource names where ClusterKey came from, for messages
	// ("--cluster-key-file /etc/exactonce/cluster.key", "EXACTONCE_CLUSTER_KEY").
	ClusterKeySource string
	// GossipKey is the decoded gossip encryption key, nil when not given.
	GossipKey []byte

	TLSCert     string
	TLSKey      string
	TLSClientCA string

	InternalTLSCert string
	InternalTLSKey  string
	InternalTLSCA   string

	MaxBodyBytes    int64
	MaxCSVBodyBytes int64
	MaxPayloadBytes int64
	MaxCSVRows      int
	DefaultTTL      time.Duration
	MaxTTL          time.Duration
	// Retention is how long a terminal action is kept before the state
	// machine deletes it (docs/api.md, "Retention"); the cluster keeps
	// one value, and a node proposes its own when the cluster's differs.
	Retention time.Duration
	// MaxActionsPerClient is the quota of stored actions per client
	// (httpapi.Config.MaxActionsPerClient); negative means no quota.
	MaxActionsPerClient int64
	// DemoPerMinute is how many demo actions one address may create per
	// minute (httpapi.Config.DemoRatePerMinute); -1 turns the demo off.
	DemoPerMinute int
	// MaxConcurrentRequests caps the requests a node serves at once
	// (httpapi.Config.MaxConcurrentRequests); -1: no cap.
	MaxConcurrentRequests int
	// BodyReadTimeout bounds the reading of one request body.
	BodyReadTimeout time.Duration
	// MaxStaleness bounds ?consistency=stale reads on a node cut off from
	// the leader; negative: no bound.
	MaxStaleness time.Duration

	LogLevel  slog.Level
	LogFormat string
	// AccessLog logs every client request at Info (httpapi.Config.AccessLog).
	AccessLog bool
	// MappedStateMiB is the file-backed resident memory, in MiB, above which
	// the node hands the state file's mapped pages back
	// (fsm.Options.MappedBudget).
	MappedStateMiB int64
	// SnapshotThreshold is how many log entries since the last snapshot
	// make Raft take the next one; SnapshotInterval is how often it checks;
	// SnapshotsRetain is how many snapshot files stay in raft/snapshots
	// (docs/operations.md, "Snapshots and disk").
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	SnapshotsRetain   int
	// Restore is a backup file (`exactonce snapshot save`) this node's
	// first start begins from; "" for none. See docs/operations.md,
	// "Backups".
	Restore string
	// PprofAddr is the loopback host:port of the opt-in net/http/pprof
	// listener; "" (the default) serves none.
	PprofAddr string

	// TestClockOffset is the initial shift of this node's clock (leader
	// stamps and read states). A fault-injection hook for the chaos harness,
	// set only by the environment variable TestClockOffsetEnv and only in a
	// build with the "chaostest" tag (see testclock_chaostest.go); a normal
	// build refuses the variable. Never use it in production.
	TestClockOffset time.Duration

	// clock holds the live clock offset in a "chaostest" build (it can jump
	// at runtime, SetTestClockOffset); nil in a normal build.
	clock *testClock

	// TestSnapshotThreshold, TestTrailingLogs and TestSnapshotInterval make
	// Raft snapshot and compact its log often, so that the chaos harness can
	// force a lagging node to catch up through InstallSnapshot. Set only by
	// the environment variables TestSnapshotThresholdEnv, TestTrailingLogsEnv
	// and TestSnapshotIntervalEnv; zero keeps the production defaults.
	TestSnapshotThreshold uint64
	TestTrailingLogs      uint64
	TestSnapshotInterval  time.Duration
}

// TestClockOffsetEnv is the environment variable of Config.TestClockOffset
// (a Go duration, may be negative). It has no flag on purpose, and only a
// build with the "chaostest" tag reads it: any other build refuses to start
// when it is set (a *UsageError), so that a test hook never goes unnoticed.
const TestClockOffsetEnv = "EXACTONCE_TEST_CLOCK_OFFSET"

// Environment variables of the test-only snapshot tuning (no flags on
// purpose): a whole number of entries, and a Go duration.
const (
	TestSnapshotThresholdEnv = "EXACTONCE_TEST_SNAPSHOT_THRESHOLD"
	TestTrailingLogsEnv      = "EXACTONCE_TEST_TRAILING_LOGS"
	TestSnapshotIntervalEnv  = "EXACTONCE_TEST_SNAPSHOT_INTERVAL"
)

// testClock is the live test-only clock offset, read on every Now.
type testClock struct{ offset atomic.Int64 }

// Now returns the node's clock: time.Now, shifted by the live test clock
// offset in a "chaostest" build.
func (c *Config) Now() time.Time {
	if c.clock == nil {
		return time.Now()
	}
	return time.Now().Add(time.Duration(c.clock.offset.Load()))
}

// TLS reports whether the HTTP API is served over HTTPS.
func (c *Config) TLS() bool { return c.TLSCert != "" }

// MultiNode reports whether this node belongs to a cluster of several nodes:
// it joins others or waits for more than itself to bootstrap.
func (c *Config) MultiNode() bool { return len(c.Join) > 0 || c.BootstrapExpect > 1 }

// InternalTLS reports whether node-to-node traffic uses operator-issued
// certificates (--internal-tls-*) instead of ones derived from the cluster key.
func (c *Config) InternalTLS() bool { return c.InternalTLSCert != "" }

// Defaults for the limits, shared with the documentation.
const (
	DefaultMaxBodyBytes    = 1 << 20
	DefaultMaxCSVBodyBytes = 16 << 20
	DefaultMaxPayloadBytes = 16 << 10
	DefaultMaxCSVRows      = 10000
	// DefaultMappedStateMiB is fsm.DefaultMappedBudget in MiB.
	DefaultMappedStateMiB = 256
	DefaultDefaultTTL     = 24 * time.Hour
	DefaultMaxTTL         = 366 * 24 * time.Hour
	DefaultRetention      = 30 * 24 * time.Hour
	// DefaultMaxConcurrentRequests, DefaultBodyReadTimeout and
	// DefaultMaxStaleness are httpapi's defaults.
	DefaultMaxConcurrentRequests = 1024
	DefaultDemoPerMinute         = 10
	DefaultBodyReadTimeout       = 10 * time.Second
	DefaultMaxStaleness          = 5 * time.Second
	// DefaultMaxActionsPerClient is httpapi.DefaultMaxActionsPerClient.
	DefaultMaxActionsPerClient = 1_000_000
	// DefaultSnapshotThreshold and DefaultSnapshotInterval are
	// hashicorp/raft's defaults; DefaultSnapshotsRetain is how many
	// snapshots a node kept before the setting existed.
	DefaultSnapshotThreshold = 8192
	DefaultSnapshotInterval  = 2 * time.Minute
	DefaultSnapshotsRetain   = 2
)

// raw holds flag values before validation.
type raw struct {
	bootstrapExpect string
	join            string
	gossipKey       string
	defaultTTL      string
	maxTTL          string
	retention       string
	logLevel        string
	// snapshotThreshold is parsed as a signed number, so that a negative
	// value gets the flag's own message rather than a parse error.
	snapshotThreshold int64
	// origin names where a flag's value came from: "--flag" or its
	// environment variable.
	origin func(name string) string
}

// UsageError is returned for a bad flag or environment value; the server
// exits with status 2 on it.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// ErrVersion is returned by Parse for --version: the caller prints the
// version and exits 0.
var ErrVersion = errors.New("version requested")

// printUsage writes the help: each flag spelled --name as in the docs,
// with its kind of value, what it does and its default.
func printUsage(out io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(out, "Usage: exactonced [flags]\n       exactonced healthcheck [flags]  (probe a running node; -h for its flags)\n       exactonced compact [--data-dir DIR]  (give a stopped node's freed state file space back)\n\nRuns one ExactOnce node. Every flag is also an environment variable\n%s<FLAG> (upper case, - as _); a flag on the command line wins.\n\n", EnvPrefix)
	fs.VisitAll(func(f *flag.Flag) {
		kind, zero := "", ""
		if g, ok := f.Value.(flag.Getter); ok {
			switch g.Get().(type) {
			case bool:
				zero = "false"
			case string:
				kind = " string"
			case int, int64:
				kind, zero = " int", "0"
			case time.Duration:
				kind, zero = " duration", "0s"
			}
		}
		fmt.Fprintf(out, "  --%s%s\n    \t%s", f.Name, kind, f.Usage)
		if f.DefValue != "" && f.DefValue != zero {
			if kind == " string" {
				fmt.Fprintf(out, " (default %q)", f.DefValue)
			} else {
				fmt.Fprintf(out, " (default %s)", f.DefValue)
			}
		}
		fmt.Fprintln(out)
	})
}

// flagNameRe finds a flag named in one of the flag package's messages
// ("flag provided but not defined: -nope", "invalid value ... for flag -x").
var flagNameRe = regexp.MustCompile(`(^|[\s:])-([A-Za-z0-9])`)

// doubleDash rewrites the flag package's -name into --name.
func doubleDash(msg string) string {
	return flagNameRe.ReplaceAllString(msg, "$1--$2")
}

// EnvName returns the environment variable for a flag name.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse parses args (without the program name) and the environment read
// through getenv. It returns flag.ErrHelp for -h/--help (after printing the
// usage to out) and a *UsageError for any invalid value.
func Parse(args []string, getenv func(string) string, out io.Writer) (*Config, error) {
	c := &Config{}
	var r raw
	fs := flag.NewFlagSet("exactonced", flag.ContinueOnError)
	// The flag package's own messages spell flags -name; Parse prints the
	// usage itself and rewrites the errors, so that every message shows
	// --name as the docs do.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var version bool
	fs.BoolVar(&version, "version", false, "print the version and exit")

	fs.StringVar(&c.DataDir, "data-dir", "./data", "directory for state, Raft log, keys and tokens")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "HTTP API listen address")
	fs.StringVar(&c.HTTPAdvertise, "http-advertise", "", "API base URL other nodes use (default http(s)://<http-addr>)")
	fs.StringVar(&c.RaftAddr, "raft-addr", "127.0.0.1:8300", "Raft listen address")
	fs.StringVar(&c.RaftAdvertise, "raft-advertise", "", "Raft address other nodes dial (default --raft-addr)")
	fs.StringVar(&c.GossipAddr, "gossip-addr", "127.0.0.1:8400", "memberlist gossip listen address")
	fs.StringVar(&c.GossipAdvertise, "gossip-advertise", "", "gossip address other nodes use (default --gossip-addr)")
	fs.StringVar(&c.NodeID, "node-id", "", "stable node id (default generated once and kept in the data dir)")
	fs.StringVar(&r.join, "join", "", "comma-separated gossip addresses of existing members")
	fs.StringVar(&r.bootstrapExpect, "bootstrap-expect", "", "number of nodes forming the first cluster (default 1 without --join, 0 with it: join an existing cluster)")
	fs.StringVar(&c.AdminToken, "admin-token", "", "admin bearer token (default generated once into <data-dir>/admin.token); prefer --admin-token-file")
	fs.StringVar(&c.AdminTokenFile, "admin-token-file", "", "file holding the admin bearer token (mode 0600 or stricter)")
	fs.BoolVar(&c.Dev, "dev", false, "development mode: create a client and print its id and secret")
	fs.StringVar(&c.ClusterKey, "cluster-key", "", "base64 32-byte cluster key, the same on every node (default for a single node: generated into <data-dir>/cluster.key); prefer --cluster-key-file")
	fs.StringVar(&c.ClusterKeyFile, "cluster-key-file", "", "file holding the base64 cluster key (mode 0600 or stricter; make one with `exactonce keygen`)")
	fs.StringVar(&r.gossipKey, "gossip-key", "", "base64 16/24/32-byte gossip encryption key (default derived from the cluster key)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate: serve the API over HTTPS")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key for --tls-cert")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "", "PEM CA bundle: require API clients to present a certificate signed by it")
	fs.StringVar(&c.InternalTLSCert, "internal-tls-cert", "", "PEM certificate of this node for the internal (node-to-node) channel; default: issued from the cluster key")
	fs.StringVar(&c.InternalTLSKey, "internal-tls-key", "", "PEM private key for --internal-tls-cert")
	fs.StringVar(&c.InternalTLSCA, "internal-tls-ca", "", "PEM CA bundle of the internal channel (must not be the API client CA)")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", DefaultMaxBodyBytes, "largest JSON request body accepted")
	fs.Int64Var(&c.MaxCSVBodyBytes, "max-csv-body-bytes", DefaultMaxCSVBodyBytes, "largest text/csv create body accepted")
	fs.Int64Var(&c.MaxPayloadBytes, "max-payload-bytes", DefaultMaxPayloadBytes, "largest encoded action payload")
	fs.IntVar(&c.MaxCSVRows, "max-csv-rows", DefaultMaxCSVRows, "most data rows in one CSV create")
	fs.StringVar(&r.defaultTTL, "default-ttl", "24h", "expiry of an action created without expires_at (Go duration or Nd)")
	fs.StringVar(&r.maxTTL, "max-ttl", "366d", "longest allowed time from now to expires_at (Go duration or Nd)")
	fs.StringVar(&r.retention, "retention", "30d", "how long a consumed, burned, canceled or expired action is kept before it is deleted (Go duration or Nd; 1s to 36500d)")
	fs.Int64Var(&c.MaxActionsPerClient, "max-actions-per-client", DefaultMaxActionsPerClient, "most actions one client may store (creates beyond get 429 quota_exceeded); -1: no quota")
	fs.IntVar(&c.DemoPerMinute, "demo-per-minute", DefaultDemoPerMinute, "demo actions one remote address may create per minute, reveals five times as many (-1: no demo; POST /v1/demo and reveals answer 404)")
	fs.IntVar(&c.MaxConcurrentRequests, "max-concurrent-requests", DefaultMaxConcurrentRequests, "requests one node serves at once; more get 503 overloaded with Retry-After (-1: no cap)")
	fs.DurationVar(&c.BodyReadTimeout, "body-read-timeout", DefaultBodyReadTimeout, "longest time a request body may take to arrive (408 request_timeout beyond)")
	fs.DurationVar(&c.MaxStaleness, "max-staleness", DefaultMaxStaleness, "a ?consistency=stale read on a node that has not heard from a leader for longer answers 503 (negative: no bound)")
	fs.StringVar(&r.logLevel, "log-level", "info", "debug|info|warn|error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text|json")
	fs.BoolVar(&c.AccessLog, "access-log", false, "log every client request at info (default: only failed ones; the rest at debug)")
	fs.StringVar(&c.PprofAddr, "pprof-addr", "", "loopback host:port for Go's profiling endpoints (/debug/pprof/), unauthenticated, so refused on any other address (default: off)")
	fs.Int64Var(&r.snapshotThreshold, "snapshot-threshold", DefaultSnapshotThreshold, "log entries since the last snapshot that make the node take the next one (and so let it compact its Raft log)")
	fs.DurationVar(&c.SnapshotInterval, "snapshot-interval", DefaultSnapshotInterval, "how often the node checks whether --snapshot-threshold is reached (at least 1s)")
	fs.IntVar(&c.SnapshotsRetain, "snapshots-retain", DefaultSnapshotsRetain, "snapshot files kept in <data-dir>/raft/snapshots, each a full copy of the state (1 to 100)")
	fs.StringVar(&c.Restore, "restore", "", "first start of a fresh node (empty data dir) from this backup file (`exactonce snapshot save`); the other nodes join it and receive the state; needs the cluster key the backup was saved under")
	fs.Int64Var(&c.MappedStateMiB, "mapped-state-mib", DefaultMappedStateMiB, "MiB of the state file a node keeps mapped before handing its pages back (more: faster reads and writes of a large state, more resident memory)")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(out, fs)
			return nil, err
		}
		return nil, &UsageError{Err: fmt.Errorf("%s (exactonced --help lists the flags)", doubleDash(err.Error()))}
	}
	if version {
		// Before the environment and the checks: --version answers even
		// where the settings would not start a node.
		return nil, ErrVersion
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q", fs.Arg(0))
	}
	// Environment fills in every flag not given on the command line.
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fromEnv := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		if envErr != nil || given[f.Name] || getenv == nil {
			return
		}
		if v := getenv(EnvName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = usagef("%s=%q: %v", EnvName(f.Name), v, err)
			}
			fromEnv[f.Name] = true
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	r.origin = func(name string) string {
		if fromEnv[name] {
			return EnvName(name)
		}
		return "--" + name
	}
	if err := c.finish(&r); err != nil {
		return nil, err
	}
	if getenv != nil {
		if err := c.parseTestClock(strings.TrimSpace(getenv(TestClockOffsetEnv))); err != nil {
			return nil, err
		}
		for _, u := range []struct {
			env string
			dst *uint64
		}{{TestSnapshotThresholdEnv, &c.TestSnapshotThreshold}, {TestTrailingLogsEnv, &c.TestTrailingLogs}} {
			if v := strings.TrimSpace(getenv(u.env)); v != "" {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil || n == 0 {
					return nil, usagef("%s=%q: want a positive whole number", u.env, v)
				}
				*u.dst = n
			}
		}
		if v := strings.TrimSpace(getenv(TestSnapshotIntervalEnv)); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, usagef("%s=%q: want a positive duration", TestSnapshotIntervalEnv, v)
			}
			c.TestSnapshotInterval = d
		}
	}
	return c, nil
}

var nodeIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidNodeID reports whether id is acceptable as a node id.
func ValidNodeID(id string) bool { return nodeIDRe.MatchString(id) }

func (c *Config) finish(r *raw) error {
	if strings.TrimSpace(c.DataDir) == "" {
		return usagef("--data-dir must not be empty")
	}
	for _, a := range []struct{ name, v string }{
		{"http-addr", c.HTTPAddr}, {"raft-addr", c.RaftAddr}, {"gossip-addr", c.GossipAddr},
	} {
		if err := checkHostPort(a.v); err != nil {
			return usagef("--%s %q: %v", a.name, a.v, err)
		}
	}
	for _, a := range []struct{ name, v string }{
		{"raft-advertise", c.RaftAdvertise}, {"gossip-advertise", c.GossipAdvertise},
	} {
		if a.v == "" {
			continue
		}
		if err := checkHostPort(a.v); err != nil {
			return usagef("--%s %q: %v", a.name, a.v, err)
		}
		if host, _, _ := net.SplitHostPort(a.v); host == "" || isUnspecified(host) {
			return usagef("--%s %q: needs a host other nodes can reach", a.name, a.v)
		}
	}
	if c.NodeID != "" && !ValidNodeID(c.NodeID) {
		return usagef("--node-id %q: use 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit", c.NodeID)
	}
	for _, j := range strings.Split(r.join, ",") {
		if j = strings.TrimSpace(j); j == "" {
			continue
		}
		if err := checkHostPort(j); err != nil {
			return usagef("--join %q: %v", j, err)
		}
		c.Join = append(c.Join, j)
	}
	be := -1
	if r.bootstrapExpect != "" {
		n, err := strconv.Atoi(strings.TrimSpace(r.bootstrapExpect))
		if err != nil || n < 0 {
			return usagef("--bootstrap-expect %q: want a number, 0 or more", r.bootstrapExpect)
		}
		be = n
	}
	switch {
	case be == -1 && len(c.Join) == 0:
		c.BootstrapExpect = 1
	case be == -1:
		c.BootstrapExpect = 0
	case be == 0 && len(c.Join) == 0:
		return usagef("--bootstrap-expect 0 needs --join: a lone node must bootstrap")
	default:
		c.BootstrapExpect = be
	}
	if err := c.secrets(r.origin); err != nil {
		return err
	}
	if r.gossipKey != "" {
		k, err := decodeKey(r.gossipKey, 16, 24, 32)
		if err != nil {
			return usagef("--gossip-key: %v", err)
		}
		c.GossipKey = k
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		return usagef("--tls-client-ca needs --tls-cert and --tls-key")
	}
	nRaft := 0
	for _, v := range []string{c.InternalTLSCert, c.InternalTLSKey, c.InternalTLSCA} {
		if v != "" {
			nRaft++
		}
	}
	if nRaft != 0 && nRaft != 3 {
		return usagef("--internal-tls-cert, --internal-tls-key and --internal-tls-ca go together")
	}
	if c.HTTPAdvertise == "" {
		scheme := "http"
		if c.TLS() {
			scheme = "https"
		}
		c.HTTPAdvertise = scheme + "://" + c.HTTPAddr
	} else if !strings.HasPrefix(c.HTTPAdvertise, "http://") && !strings.HasPrefix(c.HTTPAdvertise, "https://") {
		return usagef("--http-advertise %q: must be an http:// or https:// URL", c.HTTPAdvertise)
	}
	c.HTTPAdvertise = strings.TrimRight(c.HTTPAdvertise, "/")
	if err := c.contradictions(); err != nil {
		return err
	}
	if c.MaxBodyBytes < 1024 {
		return usagef("--max-body-bytes %d: at least 1024", c.MaxBodyBytes)
	}
	if c.MaxCSVBodyBytes < 1024 {
		return usagef("--max-csv-body-bytes %d: at least 1024", c.MaxCSVBodyBytes)
	}
	if c.MaxPayloadBytes < 2 || c.MaxPayloadBytes > c.MaxBodyBytes {
		return usagef("--max-payload-bytes %d: between 2 and --max-body-bytes", c.MaxPayloadBytes)
	}
	if c.DemoPerMinute == 0 || c.DemoPerMinute < -1 {
		return usagef("--demo-per-minute %d: a positive count, or -1 for no demo", c.DemoPerMinute)
	}
	if c.MaxConcurrentRequests == 0 || c.MaxConcurrentRequests < -1 {
		return usagef("--max-concurrent-requests %d: a positive count, or -1 for no cap", c.MaxConcurrentRequests)
	}
	if c.BodyReadTimeout <= 0 {
		return usagef("--body-read-timeout %s: must be positive", c.BodyReadTimeout)
	}
	if c.MaxStaleness == 0 {
		return usagef("--max-staleness 0: every stale read would be refused; give a bound, or a negative value for none")
	}
	if c.MappedStateMiB < 16 {
		return usagef("--mapped-state-mib %d: at least 16", c.MappedStateMiB)
	}
	if r.snapshotThreshold < 1 {
		return usagef("%s %d: a positive number of log entries", r.origin("snapshot-threshold"), r.snapshotThreshold)
	}
	c.SnapshotThreshold = uint64(r.snapshotThreshold)
	if c.SnapshotInterval < time.Second {
		return usagef("%s %s: at least 1s", r.origin("snapshot-interval"), c.SnapshotInterval)
	}
	if c.SnapshotsRetain < 1 || c.SnapshotsRetain > 100 {
		// Raft needs the newest snapshot; more than a handful of full
		// copies of the state is most likely a typo.
		return usagef("%s %d: from 1 to 100 snapshot files", r.origin("snapshots-retain"), c.SnapshotsRetain)
	}
	if c.MaxActionsPerClient == 0 || c.MaxActionsPerClient < -1 {
		// 0 would read as "none allowed" to some and "unlimited" to others.
		return usagef("--max-actions-per-client %d: a positive count, or -1 for no quota", c.MaxActionsPerClient)
	}
	if c.MaxCSVRows < DefaultMaxCSVRows {
		return usagef("--max-csv-rows %d: at least %d", c.MaxCSVRows, DefaultMaxCSVRows)
	}
	var err error
	if c.DefaultTTL, err = ParseDuration(r.defaultTTL); err != nil || c.DefaultTTL <= 0 {
		return usagef("--default-ttl %q: want a positive duration like 24h or 7d", r.defaultTTL)
	}
	if c.MaxTTL, err = ParseDuration(r.maxTTL); err != nil || c.MaxTTL <= 0 {
		return usagef("--max-ttl %q: want a positive duration like 8784h or 366d", r.maxTTL)
	}
	if c.Retention, err = ParseDuration(r.retention); err != nil || c.Retention < time.Second || c.Retention > 36500*24*time.Hour {
		return usagef("--retention %q: want a duration from 1s to 36500d, like 30d or 720h", r.retention)
	}
	if c.DefaultTTL > c.MaxTTL {
		return usagef("--default-ttl %s is longer than --max-ttl %s", c.DefaultTTL, c.MaxTTL)
	}
	if err := c.LogLevel.UnmarshalText([]byte(r.logLevel)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", r.logLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return usagef("--log-format %q: want text or json", c.LogFormat)
	}
	if c.PprofAddr != "" {
		if err := checkLoopback(c.PprofAddr); err != nil {
			return usagef("%s %q: %v", r.origin("pprof-addr"), c.PprofAddr, err)
		}
	}
	return nil
}

// checkLoopback accepts a host:port whose host is a loopback IP literal
// (127.0.0.0/8, ::1). A name such as "localhost" is refused: what it
// resolves to is up to /etc/hosts, and the profiling endpoints have no
// authentication, so they must never be reachable from another machine.
func checkLoopback(hostPort string) error {
	if err := checkHostPort(hostPort); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(hostPort)
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return errors.New("the profiling endpoints are unauthenticated: give a loopback address such as 127.0.0.1:6060 or [::1]:6060")
	}
	return nil
}

// ParseDuration is time.ParseDuration that also accepts whole days ("7d").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(d, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("parse days %q: %w", s, err)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("parse duration: %w", err)
	}
	return d, nil
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

func isUnspecified(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

func decodeKey(s string, sizes ...int) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		for _, n := range sizes {
			if len(b) == n {
				return b, nil
			}
		}
		return nil, fmt.Errorf("decodes to %d bytes, want %v", len(b), sizes)
	}
	return nil, errors.New("not valid base64")
}
