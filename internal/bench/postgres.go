package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres drives the table a team would otherwise write for one-time
// actions, through pgx's connection pool on the primary. Consume is the
// conditional UPDATE ... RETURNING; a loser reads the winner's
// consumed_at in a second statement, as an application answering "already
// used" would.
type Postgres struct {
	name   string
	pool   *pgxpool.Pool
	prefix string
	seq    atomic.Uint64
	// Payload is the JSON stored with each action (ExactOnce's).
	Payload json.RawMessage
}

// The statements, prepared once per connection by pgx's statement cache.
const (
	pgInsert  = `INSERT INTO actions (id, payload) VALUES ($1, $2)`
	pgConsume = `UPDATE actions SET consumed_at = now() WHERE id = $1 AND consumed_at IS NULL RETURNING payload`
	pgWinner  = `SELECT consumed_at FROM actions WHERE id = $1`
	pgVerify  = `SELECT payload, consumed_at FROM actions WHERE id = $1`
)

// NewPostgres opens a pool of conns connections to dsn, all of them
// before it returns, so that no run pays for a connection's start (a new
// backend process). name is the system's name in reports; prefix makes
// this session's ids unique (pass something seeded).
func NewPostgres(ctx context.Context, name, dsn string, conns int, prefix string, payload json.RawMessage) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres pool config: %w", err)
	}
	cfg.MaxConns = int32(max(conns, 1))
	cfg.MinConns = cfg.MaxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres pool: %w", err)
	}
	p := &Postgres{name: name, pool: pool, prefix: prefix + "-", Payload: payload}
	// Acquire every connection at once: the pool dials them all.
	held := make([]*pgxpool.Conn, 0, cfg.MaxConns)
	defer func() {
		for _, c := range held {
			c.Release()
		}
	}()
	for range cfg.MaxConns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("postgres connect: %w", err)
		}
		held = append(held, c)
	}
	return p, nil
}

// Close closes the pool.
func (p *Postgres) Close() { p.pool.Close() }

// Name implements Target.
func (p *Postgres) Name() string { return p.name }

// Nodes implements Target: every statement goes to the primary.
func (p *Postgres) Nodes() int { return 1 }

// NodeOf implements nodeMapper.
func (p *Postgres) NodeOf(*Worker) int { return 0 }

// NodeNames implements nodeMapper.
func (p *Postgres) NodeNames() []string { return []string{"primary"} }

func (p *Postgres) newID() string {
	return p.prefix + strconv.FormatUint(p.seq.Add(1), 36)
}

func pgErr(ctx context.Context, err error) error {
	var pe *pgconn.PgError
	switch {
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		return &OpError{Kind: "timeout", Err: err}
	case errors.As(err, &pe):
		return &OpError{Kind: "postgres " + pe.Code, Err: err}
	default:
		return &OpError{Kind: "postgres", Err: err}
	}
}

// Create implements Target with one INSERT.
func (p *Postgres) Create(ctx context.Context, _ *Worker) (string, error) {
	id := p.newID()
	if _, err := p.pool.Exec(ctx, pgInsert, id, []byte(p.Payload)); err != nil {
		return "", pgErr(ctx, err)
	}
	return id, nil
}

// CreateBatch implements Target with COPY, 10,000 rows per statement,
// four at a time.
func (p *Postgres) CreateBatch(ctx context.Context, n int) ([]string, error) {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = p.newID()
	}
	const chunk = 10000
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for lo := 0; lo < n; lo += chunk {
		part := ids[lo:min(n, lo+chunk)]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			_, err := p.pool.CopyFrom(ctx, pgx.Identifier{"actions"}, []string{"id", "payload"},
				pgx.CopyFromSlice(len(part), func(i int) ([]any, error) { return []any{part[i], []byte(p.Payload)}, nil }))
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("postgres batch create: %w", err)
	}
	return ids, nil
}

// Consume implements Target: the conditional UPDATE wins when it returns
// the payload; otherwise a second statement tells a loser (the action
// exists and was consumed) from an unknown id.
func (p *Postgres) Consume(ctx context.Context, _ *Worker, id string) (int, error) {
	var payload []byte
	err := p.pool.QueryRow(ctx, pgConsume, id).Scan(&payload)
	if err == nil {
		return Won, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, pgErr(ctx, err)
	}
	var consumedAt *time.Time
	switch err := p.pool.QueryRow(ctx, pgWinner, id).Scan(&consumedAt); {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, &OpError{Kind: "not_found", Err: fmt.Errorf("action %s", id)}
	case err != nil:
		return 0, pgErr(ctx, err)
	case consumedAt == nil:
		return 0, &OpError{Kind: "not_consumed", Err: fmt.Errorf("action %s: the update matched nothing, yet consumed_at is null", id)}
	}
	return Lost, nil
}

// Verify implements Target with a SELECT on the primary.
func (p *Postgres) Verify(ctx context.Context, _ *Worker, id string) error {
	var payload []byte
	var consumedAt *time.Time
	err := p.pool.QueryRow(ctx, pgVerify, id).Scan(&payload, &consumedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return &OpError{Kind: "not_found", Err: fmt.Errorf("action %s", id)}
	}
	if err != nil {
		return pgErr(ctx, err)
	}
	return nil
}
