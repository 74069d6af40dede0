package schema

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/cockroach-go/v2/crdb"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config says where the store runs; both values are recorded in every audit event.
type Config struct {
	Region string // the region of the node that uses the store
	Node   string // the node's id
}

// Store is the typed data layer. It is safe for concurrent use by multiple goroutines.
type Store struct {
	pool   *pgxpool.Pool
	region string
	node   string
	rules  RuleMatcher // judges membership rules (rules.go); nil: none

	counts *txCounts // shared by the copies WithRuleMatcher makes; see TxStats
}

type txCounts struct{ retries, exhausted, ambiguous atomic.Int64 }

// TxStats counts what the store's write transactions met since it was made.
type TxStats struct {
	Retries   int64 // attempts retried after a serialization failure or a lost connection
	Exhausted int64 // transactions that still conflicted after every attempt (the caller got unavailable)
	Ambiguous int64 // commits whose outcome is unknown (the connection broke during COMMIT)
}

// TxStats returns the counts so far (for metrics).
func (s *Store) TxStats() TxStats {
	return TxStats{Retries: s.counts.retries.Load(), Exhausted: s.counts.exhausted.Load(), Ambiguous: s.counts.ambiguous.Load()}
}

// New returns a store on pool. The pool should come from [Open].
func New(pool *pgxpool.Pool, cfg Config) *Store {
	return &Store{pool: pool, region: cfg.Region, node: cfg.Node, counts: &txCounts{}}
}

// Pool returns the store's connection pool (for health checks and benchmarks' baselines).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// PoolConfig tunes [Open].
type PoolConfig struct {
	MaxConns       int32         // 0 means 4 per CPU, at least 8
	ConnectTimeout time.Duration // 0 means 3s
	// CancelDelay is how long a statement whose context ended may keep running before
	// PostgreSQL is sent a cancel request for it; 0 means [DefaultCancelDelay]. It is
	// the floor under a caller's deadline for database work: a statement that finishes
	// within it keeps its connection, whatever deadline the client sent.
	CancelDelay time.Duration
	// CancelTimeout is how long after its context ended a statement may still wait for
	// the server (to finish, or to answer the cancel request) before its connection is
	// closed; 0 means [DefaultCancelTimeout]. It must exceed CancelDelay.
	CancelTimeout time.Duration
	// Tracer, when set, is told of every statement, batch and connection acquisition
	// (pgx's QueryTracer, and the BatchTracer and pgxpool.AcquireTracer it may also
	// be); nil traces nothing.
	Tracer pgx.QueryTracer
}

// Defaults of [PoolConfig]'s cancellation settings.
const (
	DefaultCancelDelay   = 100 * time.Millisecond
	DefaultCancelTimeout = 2 * time.Second
)

// Open connects a pool to url with the settings every keyplane process uses:
// transactions default to SERIALIZABLE and connection attempts are bounded, so a dead
// database turns into ErrUnavailable quickly instead of hanging a request.
//
// A statement whose context ends (a client's deadline, a client gone) is not cut off
// at once, which would close its connection (pgx's default): it may finish within
// CancelDelay, then PostgreSQL is sent a cancel request, and only if the server has
// not answered within CancelTimeout is the connection closed. Short client deadlines
// therefore cost requests, not pool connections (issue 12, finding 10).
func Open(ctx context.Context, url string, cfg PoolConfig) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", redactURLError(err))
	}
	delay, timeout := cmp.Or(cfg.CancelDelay, DefaultCancelDelay), cmp.Or(cfg.CancelTimeout, DefaultCancelTimeout)
	if delay < 0 || timeout <= delay {
		return nil, fmt.Errorf("pool config: cancel timeout %s must exceed cancel delay %s", timeout, delay)
	}
	pc.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, CancelRequestDelay: delay, DeadlineDelay: timeout}
	}
	// pgxpool pings a connection idle for over a second before handing it out, under
	// the acquirer's deadline; a failed ping destroys the connection. An acquirer whose
	// deadline has (all but) passed would fail that ping on a healthy connection, so it
	// gets the connection unpinged: its statement is refused before it is sent, and a
	// dead connection still shows itself to the next statement.
	pc.ShouldPing = func(ctx context.Context, p pgxpool.ShouldPingParams) bool {
		deadline, ok := ctx.Deadline()
		return p.IdleDuration > time.Second && ctx.Err() == nil && (!ok || time.Until(deadline) > delay)
	}
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	} else if pc.MaxConns < 8 {
		pc.MaxConns = 8
	}
	pc.ConnConfig.ConnectTimeout = cfg.ConnectTimeout
	if pc.ConnConfig.ConnectTimeout <= 0 {
		pc.ConnConfig.ConnectTimeout = 3 * time.Second
	}
	if pc.ConnConfig.RuntimeParams == nil {
		pc.ConnConfig.RuntimeParams = map[string]string{}
	}
	pc.ConnConfig.RuntimeParams["default_transaction_isolation"] = "serializable"
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "keyplane"
	}
	pc.HealthCheckPeriod = 5 * time.Second
	if cfg.Tracer != nil {
		pc.ConnConfig.Tracer = cfg.Tracer
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open pool: %w", classify(err))
	}
	return pool, nil
}

// redactURLError drops the connection string (and its password) from pgx parse errors.
func redactURLError(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return errors.New("invalid connection string")
	}
	return err
}

// Ping checks that the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := s.pool.Exec(ctx, "SELECT 1")
	return classify(err)
}

// tx runs fn in a SERIALIZABLE transaction and retries it, with a fresh transaction
// each time, on 40001 serialization failures. fn may run many times: it must only do
// database work and must wrap errors with %w so retryable ones stay recognisable.
//
// cockroach-go's retry loop (crdb.ExecuteCtx) is used rather than crdbpgx.ExecuteTx:
// the latter retries with ROLLBACK TO SAVEPOINT inside one transaction and ignores the
// COMMIT error, which is right on CockroachDB but on PostgreSQL loses a transaction
// that fails serialization at COMMIT (see docs/decisions/0003-transactions.md).
//
// Retries wait a jittered, exponentially growing pause first (up to about 100 ms):
// writers contending on one row (every policy change bumps its tenant's revision)
// that retry at once only collide again, and would use up the attempts.
//
// Within an idempotent call (WithIdempotentCall) the first transaction is held open
// on the call instead of committing, and later ones join it: see idempotency.go.
func (s *Store) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	call := idempotentCallFrom(ctx)
	if call != nil {
		if joined, err := call.join(ctx, fn); joined {
			return classify(err)
		}
	}
	n := 0
	err := crdb.ExecuteCtx(ctx, func(ctx context.Context, _ ...any) error {
		if n > 0 {
			s.counts.retries.Add(1)
			pause := time.Duration(rand.Int64N(int64(min(time.Millisecond<<min(n, 7), 100*time.Millisecond)))) + 100*time.Microsecond
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(pause):
			}
		}
		n++
		return s.attempt(ctx, call, fn)
	})
	var tooMany *crdb.MaxRetriesExceededError
	if errors.As(err, &tooMany) {
		s.counts.exhausted.Add(1)
		return fmt.Errorf("%w: the change kept conflicting with concurrent changes (%d attempts); retry", ErrUnavailable, n)
	}
	return classify(err)
}

func (s *Store) attempt(ctx context.Context, call *IdempotentCall, fn func(pgx.Tx) error) (err error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if call != nil {
		return call.hold(tx) // CommitIdempotent commits it with the call's response
	}
	// pgx closes the connection when COMMIT fails unsent (a context already done): the
	// deferred rollback ends the transaction instead, keeping the connection, and the
	// caller learns for certain that nothing was committed.
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.commit(ctx, tx)
}

// commit commits tx. An error the server answered with means it did not commit and is
// returned as is; any other (the connection broke during COMMIT) leaves the outcome
// unknown: AmbiguousCommitError.
func (s *Store) commit(ctx context.Context, tx pgx.Tx) error {
	if err := tx.Commit(ctx); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return err // the server answered: the transaction did not commit
		}
		s.counts.ambiguous.Add(1)
		return &AmbiguousCommitError{Err: err}
	}
	return nil
}

// querier is satisfied by *pgxpool.Pool and pgx.Tx.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}
