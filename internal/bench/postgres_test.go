package bench

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/exactonce/exactonce/internal/testport"
)

func freePort(t *testing.T) int {
	t.Helper()
	addr := testport.Free(t)
	p, err := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPostgresWithSyncStandby starts the harness's PostgreSQL primary and
// standby: the primary reports the standby as synchronous, the target's
// consume wins once and then loses, an unknown id is an error, and Stop
// leaves no server process behind.
func TestPostgresWithSyncStandby(t *testing.T) {
	bin, err := FindPGBinDir()
	if err != nil {
		t.Skipf("PostgreSQL is not installed: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// The servers' user must reach the data directory: under $TMPDIR, not
	// t.TempDir() (root's, mode 0700, when the tests run as root).
	pc, err := StartPGCluster(ctx, PGClusterConfig{BinDir: bin, Port: freePort(t), StandbyPort: freePort(t),
		Standby: true, MaxConnections: 20, OSUser: "postgres", Log: log})
	if pc != nil {
		defer func() {
			pc.Stop()
			if err := os.RemoveAll(pc.Dir); err != nil {
				t.Error(err)
			}
		}()
	}
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// The harness's temp dir is root's; the servers' user owns its own.
		if st, err := os.Stat(pc.Dir); err != nil || st.Mode().Perm() != 0o700 {
			t.Fatalf("session dir %s: %v %v, want mode 0700", pc.Dir, st.Mode(), err)
		}
	}
	conn, err := pgx.Connect(ctx, pc.DSN)
	if err != nil {
		t.Fatal(err)
	}
	var names, state string
	if err := conn.QueryRow(ctx, `SHOW synchronous_standby_names`).Scan(&names); err != nil || names != pgStandbyName {
		t.Fatalf("synchronous_standby_names = %q, %v", names, err)
	}
	if err := conn.QueryRow(ctx, `SELECT sync_state FROM pg_stat_replication WHERE application_name = $1`, pgStandbyName).Scan(&state); err != nil || state != "sync" {
		t.Fatalf("standby sync_state = %q, %v", state, err)
	}
	for _, setting := range []string{"fsync", "synchronous_commit"} {
		var v string
		if err := conn.QueryRow(ctx, "SHOW "+setting).Scan(&v); err != nil || v != "on" {
			t.Fatalf("%s = %q, %v", setting, v, err)
		}
	}
	_ = conn.Close(ctx)

	p, err := NewPostgres(ctx, SysPostgres, pc.DSN, 4, "t", json.RawMessage(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ids, err := p.CreateBatch(ctx, 3)
	if err != nil || len(ids) != 3 {
		t.Fatalf("CreateBatch = %v, %v", ids, err)
	}
	id, err := p.Create(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range append(ids, id) {
		if err := p.Verify(ctx, nil, id); err != nil {
			t.Fatalf("verify %s: %v", id, err)
		}
		if out, err := p.Consume(ctx, nil, id); err != nil || out != Won {
			t.Fatalf("first consume of %s = %v, %v", id, out, err)
		}
		if out, err := p.Consume(ctx, nil, id); err != nil || out != Lost {
			t.Fatalf("second consume of %s = %v, %v", id, out, err)
		}
	}
	var oe *OpError
	if _, err := p.Consume(ctx, nil, "nope"); !errors.As(err, &oe) || oe.Kind != "not_found" {
		t.Fatalf("consume of an unknown id: %v", err)
	}
	if cpu := pc.Primary.CPUTime(); cpu <= 0 {
		t.Fatalf("primary's CPU time (with its backends) = %v", cpu)
	}
	pids := []int{pc.Primary.Pid(), pc.Standby.Pid()}
	p.Close()
	pc.Stop()
	for _, pid := range pids {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			t.Fatalf("postmaster %d still runs after Stop", pid)
		}
	}
}
