package schema

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Idempotency keys (docs/decisions/0018-idempotency-keys.md). A call made with an
// Idempotency-Key runs with an [IdempotentCall] in its context. The first write
// transaction of the call (Store.tx) does not commit when its function returns: the
// transaction stays open on the call, later write transactions of the same call join
// it, and [IdempotentCall.Commit] records the call's response in it and commits. The
// change and its recorded response are one transaction: a retry finds both or neither.

// IdempotencyTTL is how long a recorded response is kept, and so how long a retry with
// the same key is answered from it.
const IdempotencyTTL = 24 * time.Hour

// ErrIdempotencyConflict: another call with the same key committed first while this
// one ran; its response is recorded (read it with LookupIdempotency).
var ErrIdempotencyConflict = errors.New("a call with this Idempotency-Key was completed concurrently")

// IdempotentCall is one call made with an Idempotency-Key. Safe for concurrent use,
// though a call's write transactions run one after another.
type IdempotentCall struct {
	// Scope is the tenant and its home region. A call that creates its tenant
	// (CreateTenant) has no region yet: its record goes to the home region the call
	// gave the tenant, read in the call's transaction.
	Scope       Scope
	Key         string // the client's key
	RequestHash []byte // what the key stands for: procedure, caller and body

	mu     sync.Mutex
	tx     pgx.Tx // the open transaction holding the call's changes; nil before the first
	broken bool   // a joined transaction failed: the call must not commit
	retry  bool   // it failed on a serialization conflict: running the call again may succeed
}

type idempotentCallKey struct{}

// WithIdempotentCall returns ctx carrying call: the store's write transactions made
// with it hold their changes for call.Commit.
func WithIdempotentCall(ctx context.Context, call *IdempotentCall) context.Context {
	return context.WithValue(ctx, idempotentCallKey{}, call)
}

// WithoutIdempotentCall returns ctx without an idempotent call, for work started by a
// call that is not part of its change (a shared key load, a background write).
func WithoutIdempotentCall(ctx context.Context) context.Context {
	if ctx.Value(idempotentCallKey{}) == nil {
		return ctx
	}
	return context.WithValue(ctx, idempotentCallKey{}, (*IdempotentCall)(nil))
}

func idempotentCallFrom(ctx context.Context) *IdempotentCall {
	c, _ := ctx.Value(idempotentCallKey{}).(*IdempotentCall)
	return c
}

// Changed reports whether the call has made a change (holds an open transaction).
func (c *IdempotentCall) Changed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tx != nil
}

// Retryable reports whether the call failed on a serialization conflict, so that
// running it again (after Rollback) may succeed.
func (c *IdempotentCall) Retryable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.retry
}

// join runs fn in the call's open transaction, if it has one. ok is false when it has
// none yet (the caller runs its own, which hold opens).
func (c *IdempotentCall) join(ctx context.Context, fn func(pgx.Tx) error) (ok bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tx == nil {
		return false, nil
	}
	if c.broken {
		return true, fmt.Errorf("%w: an earlier statement of this call failed", ErrUnavailable)
	}
	if err := fn(c.tx); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			c.broken = true // PostgreSQL aborts the transaction on any statement error
			c.retry = c.retry || pgErr.Code == "40001"
		}
		return true, err
	}
	return true, nil
}

// hold keeps tx open on the call instead of committing it. The connection stays
// checked out until CommitIdempotent or Rollback. A call holds one transaction: a
// second, run concurrently by the same call, is refused (the caller rolls it back).
func (c *IdempotentCall) hold(tx pgx.Tx) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tx != nil {
		return errors.New("idempotent call: two write transactions ran concurrently")
	}
	c.tx = tx
	return nil
}

// Rollback ends the call's open transaction, if any, without committing: none of the
// call's changes happened. It is safe to call more than once.
func (c *IdempotentCall) Rollback(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.end(ctx)
}

func (c *IdempotentCall) end(ctx context.Context) {
	if c.tx != nil {
		_ = c.tx.Rollback(context.WithoutCancel(ctx))
	}
	c.tx, c.broken = nil, false
}

// IdempotentResponse is a recorded response: the HTTP status and the sealed body
// (headers and body as the caller's protocol wrote them, sealed by the region).
type IdempotentResponse struct {
	RequestHash []byte
	Status      int
	Sealed      []byte
	CreatedAt   time.Time
}

// CommitIdempotent records the call's response (sealed by the caller) in the call's open
// transaction and commits it. It returns ErrIdempotencyConflict when another call
// with the key committed first (nothing of this call was committed), and
// AmbiguousCommitError when the commit's outcome is unknown.
func (s *Store) CommitIdempotent(ctx context.Context, c *IdempotentCall, status int, sealed []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tx == nil {
		return errors.New("idempotent call: nothing to commit")
	}
	defer c.end(ctx)
	if c.broken {
		return fmt.Errorf("%w: a statement of this call failed", ErrUnavailable)
	}
	tx := c.tx
	ttl := fmt.Sprintf("%d seconds", int(IdempotencyTTL.Seconds()))
	var tag pgconn.CommandTag
	var err error
	if c.Scope.Region == "" {
		tag, err = tx.Exec(ctx, `
INSERT INTO idempotency_keys (tenant_id, key, crdb_region, request_hash, status, response, expires_at)
SELECT id, $2::TEXT, home_region::crdb_internal_region, $3::BYTEA, $4::INT, $5::BYTEA, now() + $6::INTERVAL FROM tenants WHERE id = $1::TEXT`,
			c.Scope.TenantID, c.Key, c.RequestHash, status, sealed, ttl)
	} else {
		tag, err = tx.Exec(ctx, `
INSERT INTO idempotency_keys (tenant_id, key, crdb_region, request_hash, status, response, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, now() + $7::INTERVAL)`,
			c.Scope.TenantID, c.Key, c.Scope.Region, c.RequestHash, status, sealed, ttl)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return ErrIdempotencyConflict
	}
	if err != nil {
		c.retry = c.retry || (errors.As(err, &pgErr) && pgErr.Code == "40001")
		return classify(fmt.Errorf("record idempotency key: %w", err))
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("record idempotency key: the call did not create tenant %q", c.Scope.TenantID)
	}
	if err := ctx.Err(); err != nil {
		return classify(err)
	}
	err = s.commit(ctx, tx)
	c.retry = c.retry || (errors.As(err, &pgErr) && pgErr.Code == "40001")
	return classify(err)
}

// CommitUnrecorded commits the call's open transaction without recording a response:
// for a call that answered with an error after writing (a failed login's throttle
// count, a reused refresh token's revoked family), whose writes stand as they would
// without a key, and whose retry runs again.
func (s *Store) CommitUnrecorded(ctx context.Context, c *IdempotentCall) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tx == nil {
		return nil
	}
	defer c.end(ctx)
	if c.broken {
		return fmt.Errorf("%w: a statement of this call failed", ErrUnavailable)
	}
	return classify(s.commit(ctx, c.tx))
}

// LookupIdempotency returns the recorded response of the tenant's key, or ErrNotFound
// (never recorded, or expired).
func (s *Store) LookupIdempotency(ctx context.Context, sc Scope, key string) (IdempotentResponse, error) {
	var r IdempotentResponse
	err := s.pool.QueryRow(ctx, `SELECT request_hash, status, response, created_at FROM idempotency_keys
WHERE crdb_region = $1 AND tenant_id = $2 AND key = $3 AND expires_at > now()`, sc.Region, sc.TenantID, key).
		Scan(&r.RequestHash, &r.Status, &r.Sealed, &r.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, fmt.Errorf("%w: idempotency key", ErrNotFound)
	}
	if err != nil {
		return r, classify(fmt.Errorf("read idempotency key: %w", err))
	}
	return r, nil
}

// SameRequest reports, in constant time, whether hash is the recorded request's.
func (r IdempotentResponse) SameRequest(hash []byte) bool {
	return subtle.ConstantTimeCompare(r.RequestHash, hash) == 1
}

// PruneIdempotencyKeys deletes up to limit of the tenant's expired keys and returns
// how many it deleted.
func (s *Store) PruneIdempotencyKeys(ctx context.Context, sc Scope, limit int) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE crdb_region = $1 AND tenant_id = $2 AND key IN (
  SELECT key FROM idempotency_keys WHERE crdb_region = $1 AND tenant_id = $2 AND expires_at <= now() ORDER BY expires_at LIMIT $3)`,
		sc.Region, sc.TenantID, limit)
	if err != nil {
		return 0, classify(fmt.Errorf("prune idempotency keys: %w", err))
	}
	return int(tag.RowsAffected()), nil
}
