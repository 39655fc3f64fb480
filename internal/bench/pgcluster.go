package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// The name the standby gives itself (its cluster_name, which a walreceiver
// uses as application_name) and the primary's synchronous_standby_names.
const pgStandbyName = "standby1"

// pgUser is the database superuser the harness connects as.
const pgUser = "postgres"

// PGClusterConfig says how to run PostgreSQL.
type PGClusterConfig struct {
	// BinDir holds postgres, initdb and pg_basebackup (FindPGBinDir).
	BinDir string
	// TempBase is the parent of the fresh data directory ("" for $TMPDIR).
	TempBase string
	// Port is the primary's port; the standby listens on StandbyPort
	// (0: Port+1).
	Port        int
	StandbyPort int
	// Standby adds a streaming standby that the primary waits for on
	// every commit; false runs the primary alone.
	Standby bool
	// MaxConnections is the server's max_connections.
	MaxConnections int
	// OSUser runs the servers when the harness runs as root (PostgreSQL
	// refuses root); Debian's package creates "postgres".
	OSUser string
	Log    *slog.Logger
}

// PGCluster is a PostgreSQL primary, and optionally its synchronous
// streaming standby, on loopback with fresh data directories.
type PGCluster struct {
	Dir     string
	Primary *Proc
	Standby *Proc
	// DSN connects to the primary as the superuser (its password
	// inside: keep it in memory).
	DSN string
	Log *slog.Logger
}

// pgMinMajor is the oldest PostgreSQL the harness runs (the issue's
// figures come from 15).
const pgMinMajor = 15

// FindPGBinDir returns the directory of the newest PostgreSQL server
// binaries, at least version 15: where initdb on PATH points (Debian
// keeps them in /usr/lib/postgresql/<major>/bin, off PATH), else the
// newest /usr/lib/postgresql/<major>/bin.
func FindPGBinDir() (string, error) {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(r))
		}
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(found, func(a, b string) int { return pgMajorOfDir(b) - pgMajorOfDir(a) })
	dirs = append(dirs, found...)
	var seen []string
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err != nil {
			continue
		}
		major, err := pgMajor(filepath.Join(d, "postgres"))
		if err != nil {
			seen = append(seen, d+": "+err.Error())
			continue
		}
		if major >= pgMinMajor {
			return d, nil
		}
		seen = append(seen, fmt.Sprintf("%s: version %d", d, major))
	}
	return "", fmt.Errorf("no PostgreSQL %d or newer found (apt-get install postgresql, or -no-postgres) %v", pgMinMajor, seen)
}

func pgMajorOfDir(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

var pgVersion = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// pgMajor runs `postgres --version` and returns the major version.
func pgMajor(bin string) (int, error) {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", bin, err)
	}
	m := pgVersion.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("%s --version: unexpected answer %q", bin, out)
	}
	return strconv.Atoi(string(m[1]))
}

// pgCred returns the credential to run PostgreSQL with: none when the
// harness is not root, else osUser's.
func pgCred(osUser string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(osUser)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root and there is no user %q to run it as (Debian's postgresql package creates it): %w", osUser, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %q: uid %q gid %q", osUser, u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// StartPGCluster initializes a primary (and a standby), starts them and,
// with a standby, waits until the primary reports it as synchronous.
func StartPGCluster(ctx context.Context, cfg PGClusterConfig) (*PGCluster, error) {
	cred, err := pgCred(cfg.OSUser)
	if err != nil {
		return nil, err
	}
	dir, err := mkTemp(cfg.TempBase, "postgres-bench-")
	if err != nil {
		return nil, err
	}
	c := &PGCluster{Dir: dir, Log: cfg.Log}
	if cfg.StandbyPort == 0 {
		cfg.StandbyPort = cfg.Port + 1
	}
	ports := []int{cfg.Port}
	if cfg.Standby {
		ports = append(ports, cfg.StandbyPort)
	}
	for _, port := range ports {
		if err := portFree("127.0.0.1:" + strconv.Itoa(port)); err != nil {
			return c, err
		}
	}
	if cred != nil {
		// The servers' user owns the session directory (mode 0700 from
		// MkdirTemp): nobody else reads the data, the password files or the logs.
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return c, fmt.Errorf("hand %s to %s: %w", dir, cfg.OSUser, err)
		}
	}
	password := randToken(24)
	// The password reaches initdb and pg_basebackup through files only
	// readable by the servers' user, never through argv.
	pwFile := filepath.Join(dir, "pwfile")
	passFile := filepath.Join(dir, "pgpass")
	if err := writeOwned(pwFile, password+"\n", cred); err != nil {
		return c, err
	}
	if err := writeOwned(passFile, fmt.Sprintf("127.0.0.1:%d:*:%s:%s\n", cfg.Port, pgUser, password), cred); err != nil {
		return c, err
	}
	primaryDir := filepath.Join(dir, "primary")
	if err := pgRun(ctx, cfg, cred, dir, nil, "initdb", "-D", primaryDir, "-U", pgUser, "-E", "UTF8", "--locale=C",
		"--auth-local=peer", "--auth-host=scram-sha-256", "--pwfile="+pwFile); err != nil {
		return c, err
	}
	_ = os.Remove(pwFile)
	settings := []string{
		"listen_addresses=127.0.0.1",
		"unix_socket_directories=", // TCP on loopback only, with the password
		"fsync=on",
		"synchronous_commit=on",
		"max_connections=" + strconv.Itoa(cfg.MaxConnections),
	}
	sync := ""
	if cfg.Standby {
		sync = "synchronous_standby_names=" + pgStandbyName
	}
	c.Primary = &Proc{Name: "primary", Bin: filepath.Join(cfg.BinDir, "postgres"), Dir: dir, Cred: cred,
		LogPath: filepath.Join(dir, "primary.log"), StopSignal: syscall.SIGINT, Tree: true,
		Args: pgArgs(primaryDir, cfg.Port, settings, sync, "cluster_name=primary")}
	if err := c.Primary.Start(); err != nil {
		return c, err
	}
	c.DSN = fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=postgres sslmode=disable", cfg.Port, pgUser, password)
	if err := c.waitAccepting(ctx, c.Primary, c.DSN); err != nil {
		return c, err
	}
	if cfg.Standby {
		standbyDir := filepath.Join(dir, pgStandbyName)
		// -R writes primary_conninfo and standby.signal; -X stream copies
		// the WAL written meanwhile.
		if err := pgRun(ctx, cfg, cred, dir, []string{"PGPASSFILE=" + passFile}, "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(cfg.Port), "-U", pgUser,
			"-D", standbyDir, "-R", "-X", "stream", "-c", "fast", "--no-password"); err != nil {
			return c, err
		}
		c.Standby = &Proc{Name: pgStandbyName, Bin: filepath.Join(cfg.BinDir, "postgres"), Dir: dir, Cred: cred,
			LogPath: filepath.Join(dir, pgStandbyName+".log"), StopSignal: syscall.SIGINT, Tree: true,
			Args: pgArgs(standbyDir, cfg.StandbyPort, settings, "cluster_name="+pgStandbyName, "hot_standby=on")}
		if err := c.Standby.Start(); err != nil {
			return c, err
		}
		if err := c.waitSync(ctx); err != nil {
			return c, err
		}
	}
	if err := c.createSchema(ctx); err != nil {
		return c, err
	}
	return c, nil
}

func pgArgs(dataDir string, port int, settings []string, extra ...string) []string {
	args := []string{"-D", dataDir, "-c", "port=" + strconv.Itoa(port)}
	for _, s := range append(slices.Clone(settings), extra...) {
		if s != "" {
			args = append(args, "-c", s)
		}
	}
	return args
}

// writeOwned writes a 0600 file owned by cred's user (the harness's own
// when cred is nil).
func writeOwned(path, content string, cred *syscall.Credential) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if cred != nil {
		if err := os.Chown(path, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("chown %s: %w", path, err)
		}
	}
	return nil
}

// pgRun runs one of PostgreSQL's tools as the servers' user, with env
// added to its environment.
func pgRun(ctx context.Context, cfg PGClusterConfig, cred *syscall.Credential, dir string, env []string, tool string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(cfg.BinDir, tool), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true, Credential: cred}
	cfg.Log.Info("postgres setup", "run", tool)
	out, err := cmd.CombinedOutput()
	if errors.Is(err, os.ErrPermission) && cred != nil {
		return fmt.Errorf("%s as uid %d: %w (every parent of %s must be searchable by that user: use a -tmp under /tmp)", tool, cred.Uid, err, dir)
	}
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", tool, err, out)
	}
	return nil
}

// waitAccepting waits until the server p accepts a connection with dsn.
func (c *PGCluster) waitAccepting(ctx context.Context, p *Proc, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			return conn.Close(ctx)
		}
		if !p.Running() {
			return fmt.Errorf("postgres %s exited while starting:\n%s", p.Name, tailFile(p.LogPath, 20))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres %s not accepting connections (last: %v): %w\n%s", p.Name, err, ctx.Err(), tailFile(p.LogPath, 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitSync waits until the primary lists the standby as synchronous: from
// then on every commit waits for the standby to have flushed it.
func (c *PGCluster) waitSync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN)
	if err != nil {
		return fmt.Errorf("connect to the primary: %w", err)
	}
	defer conn.Close(context.Background())
	last := "not connected"
	for {
		var state string
		err := conn.QueryRow(ctx, `SELECT sync_state FROM pg_stat_replication WHERE application_name = $1`, pgStandbyName).Scan(&state)
		switch {
		case err == nil && state == "sync":
			return nil
		case err == nil:
			last = "sync_state " + state
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("read pg_stat_replication: %w", err)
		}
		if !c.Standby.Running() {
			return fmt.Errorf("postgres standby exited while starting:\n%s", tailFile(c.Standby.LogPath, 20))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("standby not synchronous (%s): %w\n%s", last, ctx.Err(), tailFile(c.Standby.LogPath, 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pgSchema is the table a team would write for one-time actions.
const pgSchema = `CREATE TABLE actions (
	id          text PRIMARY KEY,
	payload     jsonb NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now(),
	consumed_at timestamptz
)`

func (c *PGCluster) createSchema(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.DSN)
	if err != nil {
		return fmt.Errorf("connect to the primary: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, pgSchema); err != nil {
		return fmt.Errorf("create table actions: %w", err)
	}
	return nil
}

// Procs lists the server processes: the primary, then the standby.
func (c *PGCluster) Procs() []*Proc {
	if c.Standby != nil {
		return []*Proc{c.Primary, c.Standby}
	}
	return []*Proc{c.Primary}
}

// Stop stops the servers (fast shutdown: open sessions are ended).
func (c *PGCluster) Stop() {
	var procs []*Proc
	for _, p := range []*Proc{c.Primary, c.Standby} {
		if p != nil {
			procs = append(procs, p)
		}
	}
	stopAll(c.Log, procs, 15*time.Second)
}
