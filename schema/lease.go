package schema

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Leases let one node at a time do a job that every node runs (the governance
// sweeper, docs/decisions/0013-sweeper-lease.md): a row per (region partition, tenant,
// name) names its holder until expires_at. Only the database's clock (now()) is
// compared with expires_at, so a node whose clock is off neither steals a lease early
// nor keeps one late. A holder that stops renewing loses the lease once its TTL has
// passed. A lease is a scheduling aid, not a lock: work done under it must still be
// idempotent (two nodes may both believe they hold it around an expiry).

// Lease is one lease row.
type Lease struct {
	Region     string
	TenantID   string // "" for a region-wide lease
	Name       string
	Holder     string
	AcquiredAt time.Time // when the current holder took it
	RenewedAt  time.Time
	ExpiresAt  time.Time
}

// Bounds of a lease.
const (
	MinLeaseTTL = 10 * time.Millisecond
	MaxLeaseTTL = 24 * time.Hour
)

func checkLease(sc Scope, name, holder string, ttl time.Duration) error {
	if sc.Region == "" {
		return fieldErr("region", "required")
	}
	if err := checkText("name", name, true, 100); err != nil {
		return err
	}
	if err := checkText("holder", holder, true, 200); err != nil {
		return err
	}
	if ttl < MinLeaseTTL || ttl > MaxLeaseTTL {
		return fieldErr("ttl", "must be between %s and %s, got %s", MinLeaseTTL, MaxLeaseTTL, ttl)
	}
	return nil
}

// AcquireLease takes or renews the lease name of sc (sc.TenantID "" for a lease of the
// whole region sc.Region) for holder, for ttl from the database's now(), and reports
// whether holder holds it now. It succeeds when the lease is free, expired (by the
// database's clock) or already holder's; another holder's live lease is left alone.
func (s *Store) AcquireLease(ctx context.Context, sc Scope, name, holder string, ttl time.Duration) (bool, error) {
	if err := checkLease(sc, name, holder, ttl); err != nil {
		return false, err
	}
	var got bool
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var h string
		err := tx.QueryRow(ctx, `
INSERT INTO leases (crdb_region, tenant, name, holder, acquired_at, renewed_at, expires_at)
VALUES ($1, $2, $3, $4, now(), now(), now() + $5 * INTERVAL '1 microsecond')
ON CONFLICT (crdb_region, tenant, name) DO UPDATE SET
  holder = excluded.holder,
  acquired_at = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > now() THEN leases.acquired_at ELSE now() END,
  renewed_at = now(), expires_at = excluded.expires_at
WHERE leases.holder = excluded.holder OR leases.expires_at <= now()
RETURNING holder`, sc.Region, sc.TenantID, name, holder, ttl.Microseconds()).Scan(&h)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			got = false
			return nil
		case err != nil:
			return fmt.Errorf("acquire lease %s: %w", name, err)
		}
		got = h == holder
		return nil
	})
	return got, err
}

// ReleaseLease gives up holder's lease name of sc at once (a node shutting down), so
// another node need not wait for the TTL. Releasing a lease one does not hold changes
// nothing.
func (s *Store) ReleaseLease(ctx context.Context, sc Scope, name, holder string) error {
	if err := checkLease(sc, name, holder, MinLeaseTTL); err != nil {
		return err
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE leases SET expires_at = now() WHERE crdb_region = $1 AND tenant = $2 AND name = $3 AND holder = $4 AND expires_at > now()`,
			sc.Region, sc.TenantID, name, holder)
		if err != nil {
			return fmt.Errorf("release lease %s: %w", name, err)
		}
		return nil
	})
}

// GetLease reads the lease name of sc; ErrNotFound when it was never taken.
func (s *Store) GetLease(ctx context.Context, sc Scope, name string) (Lease, error) {
	l := Lease{Region: sc.Region, TenantID: sc.TenantID, Name: name}
	err := s.pool.QueryRow(ctx, `SELECT holder, acquired_at, renewed_at, expires_at FROM leases WHERE crdb_region = $1 AND tenant = $2 AND name = $3`,
		sc.Region, sc.TenantID, name).Scan(&l.Holder, &l.AcquiredAt, &l.RenewedAt, &l.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Lease{}, fmt.Errorf("%w: lease %s in %s", ErrNotFound, name, sc.Region)
	}
	return l, classify(err)
}

// DatabaseNow returns the database's clock: what leases and the sweeper judge by.
func (s *Store) DatabaseNow(ctx context.Context) (time.Time, error) {
	var t time.Time
	err := s.pool.QueryRow(ctx, `SELECT now()`).Scan(&t)
	return t, classify(err)
}
