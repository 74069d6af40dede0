package schema

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Elevation states.
const (
	ElevationPending = "pending"
	ElevationActive  = "active"
	ElevationDenied  = "denied"
	ElevationEnded   = "ended"
)

// Bounds of an elevation's duration.
const (
	MinElevation = time.Minute
	MaxElevation = 12 * time.Hour
)

// Elevation is a just-in-time request for a role on a scope, for a while.
type Elevation struct {
	ID            string
	RequesterID   string
	RoleID        string
	Scope         string
	Duration      time.Duration
	Justification string
	Status        string
	ApproverID    string
	BindingID     string
	CreatedAt     time.Time
	DecidedAt     time.Time
	EndsAt        time.Time
}

const elevationColumns = `id::TEXT, requester_id::TEXT, role_id::TEXT, scope, duration_s, justification, status,
 coalesce(approver_id::TEXT, ''), coalesce(binding_id::TEXT, ''), created_at, coalesce(decided_at, 'epoch'), coalesce(ends_at, 'epoch')`

func scanElevation(r pgx.Row) (Elevation, error) {
	var e Elevation
	var secs int64
	err := r.Scan(&e.ID, &e.RequesterID, &e.RoleID, &e.Scope, &secs, &e.Justification, &e.Status, &e.ApproverID, &e.BindingID,
		&e.CreatedAt, &e.DecidedAt, &e.EndsAt)
	e.Duration = time.Duration(secs) * time.Second
	e.DecidedAt, e.EndsAt = zeroEpoch(e.DecidedAt), zeroEpoch(e.EndsAt)
	return e, err
}

func elevationSummary(e Elevation) map[string]any {
	m := map[string]any{"requester_id": e.RequesterID, "role_id": e.RoleID, "scope": e.Scope, "duration": e.Duration.String(),
		"justification": e.Justification, "status": e.Status}
	if e.ApproverID != "" {
		m["approver_id"] = e.ApproverID
	}
	if e.BindingID != "" {
		m["binding_id"] = e.BindingID
	}
	return m
}

// RequestElevation records a pending request. The scope must already be validated.
func (s *Store) RequestElevation(ctx context.Context, c Change, sc Scope, e Elevation) (Elevation, error) {
	if _, err := parseID("role_id", e.RoleID); err != nil {
		return Elevation{}, err
	}
	if e.Duration < MinElevation || e.Duration > MaxElevation || e.Duration%time.Second != 0 {
		return Elevation{}, fieldErr("duration", "whole seconds between %s and %s", MinElevation, MaxElevation)
	}
	if err := checkText("justification", e.Justification, true, 1000); err != nil {
		return Elevation{}, err
	}
	var out Elevation
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := ensureBuiltinRole(ctx, tx, sc, e.RoleID); err != nil {
			return err
		}
		// No foreign key since migration 0010 (a deleted role's elevations stay as
		// history): the role must exist now, read in this transaction.
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM roles WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3)`,
			sc.Region, sc.TenantID, e.RoleID).Scan(&exists); err != nil {
			return fmt.Errorf("read role: %w", err)
		}
		if !exists {
			return fieldErr("role_id", "no role %s in tenant %q", e.RoleID, sc.TenantID)
		}
		var err error
		out, err = scanElevation(tx.QueryRow(ctx, `INSERT INTO elevations (tenant_id, crdb_region, requester_id, role_id, scope, duration_s, justification)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING `+elevationColumns,
			sc.TenantID, sc.Region, e.RequesterID, e.RoleID, e.Scope, int64(e.Duration/time.Second), e.Justification))
		if err != nil {
			return fmt.Errorf("insert elevation: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "elevation.request", targetKind: "elevation", targetID: out.ID, after: elevationSummary(out)})
	})
	return out, err
}

// GetElevation reads one elevation.
func (s *Store) GetElevation(ctx context.Context, sc Scope, id string) (Elevation, error) {
	if _, err := parseID("elevation_id", id); err != nil {
		return Elevation{}, err
	}
	e, err := scanElevation(s.pool.QueryRow(ctx, `SELECT `+elevationColumns+` FROM elevations WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`,
		sc.Region, sc.TenantID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Elevation{}, fmt.Errorf("%w: elevation %s", ErrNotFound, id)
	}
	return e, classify(err)
}

// ListElevations pages through the tenant's elevations, oldest first: those of
// status ("" for all) and, when party is set, only those party requested or approved.
func (s *Store) ListElevations(ctx context.Context, sc Scope, status, party string, p Page) ([]Elevation, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	switch status {
	case "", ElevationPending, ElevationActive, ElevationDenied, ElevationEnded:
	default:
		return nil, "", fieldErr("status", "must be pending, active, denied or ended, got %q", status)
	}
	after, err := p.timeKeyed()
	if err != nil {
		return nil, "", err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+elevationColumns+` FROM elevations
WHERE crdb_region = $1 AND tenant_id = $2 AND (created_at, id) > ($3, $4::UUID) AND ($5 = '' OR status = $5)
  AND ($6 = '' OR requester_id::TEXT = $6 OR approver_id::TEXT = $6)
ORDER BY created_at, id LIMIT $7`, sc.Region, sc.TenantID, after.At, after.ID, status, party, limit+1)
	if err != nil {
		return nil, "", classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Elevation, error) { return scanElevation(r) })
	if err != nil {
		return nil, "", classify(err)
	}
	out, next := pageOf(out, limit, func(e Elevation) timeKey { return timeKey{e.CreatedAt, e.ID} })
	return out, next, nil
}

// DecideElevation approves (creating the expiring binding) or denies a pending
// elevation. The approver must differ from the requester; the caller has checked that
// the approver may decide it, judged on the policy at revision atRevision: an approval
// with atRevision > 0 is refused (ErrPrecondition) if the policy has changed since.
func (s *Store) DecideElevation(ctx context.Context, c Change, sc Scope, id, approverID string, approve bool, atRevision int64) (Elevation, int64, error) {
	if _, err := parseID("elevation_id", id); err != nil {
		return Elevation{}, 0, err
	}
	var out Elevation
	var rev int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		e, err := lockElevation(ctx, tx, sc, id)
		if err != nil {
			return err
		}
		if e.Status != ElevationPending {
			return fmt.Errorf("%w: elevation_id: elevation %s is %s, not pending", ErrPrecondition, id, e.Status)
		}
		if e.RequesterID == approverID {
			return fmt.Errorf("%w: elevation_id: a requester cannot approve their own elevation", ErrPrecondition)
		}
		action, status := "elevation.deny", ElevationDenied
		var bindingID *string
		var ends *time.Time
		if approve {
			// A requester frozen or disabled since asking gets nothing new (a frozen
			// NHI's pending elevations are denied when it is frozen; this closes the
			// window between the two).
			requester, err := getIdentity(ctx, tx, sc, e.RequesterID, "")
			if err != nil {
				return err
			}
			if requester.Status != StatusActive {
				return inactiveIdentity("elevation_id", requester)
			}
			action, status = "elevation.approve", ElevationActive
			var bid string
			var end time.Time
			if err := tx.QueryRow(ctx, `INSERT INTO bindings (tenant_id, crdb_region, effect, principal_kind, principal_id, role_id, scope,
  expires_at, granted_by, justification)
VALUES ($1, $2, 'allow', 'identity', $3, $4, $5, now() + $6 * INTERVAL '1 second', $7, $8) RETURNING id::TEXT, expires_at`,
				sc.TenantID, sc.Region, e.RequesterID, e.RoleID, e.Scope, int64(e.Duration/time.Second), "identity:"+approverID,
				"elevation "+e.ID+": "+e.Justification).Scan(&bid, &end); err != nil {
				return fmt.Errorf("insert elevation binding: %w", err)
			}
			bindingID, ends = &bid, &end
			if rev, err = bumpRevision(ctx, tx, sc.TenantID); err != nil {
				return err
			}
			if atRevision > 0 && rev != atRevision+1 {
				return fmt.Errorf("%w: elevation_id: the policy changed (revision %d) since the approval was judged at revision %d; retry",
					ErrPrecondition, rev-1, atRevision)
			}
		}
		out, err = scanElevation(tx.QueryRow(ctx, `UPDATE elevations SET status = $4, approver_id = $5, decided_at = now(), binding_id = $6, ends_at = $7
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3 RETURNING `+elevationColumns, sc.Region, sc.TenantID, id, status, approverID, bindingID, ends))
		if err != nil {
			return fmt.Errorf("update elevation: %w", err)
		}
		after := elevationSummary(out)
		if rev > 0 {
			after["policy_revision"] = rev
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: action, targetKind: "elevation", targetID: id, before: elevationSummary(e), after: after})
	})
	return out, rev, err
}

// EndElevation ends an active elevation early: its binding is removed at once.
func (s *Store) EndElevation(ctx context.Context, c Change, sc Scope, id string) (Elevation, int64, error) {
	if _, err := parseID("elevation_id", id); err != nil {
		return Elevation{}, 0, err
	}
	var out Elevation
	var rev int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		e, err := lockElevation(ctx, tx, sc, id)
		if err != nil {
			return err
		}
		if e.Status != ElevationActive {
			return fmt.Errorf("%w: elevation_id: elevation %s is %s, not active", ErrPrecondition, id, e.Status)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM bindings WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`, sc.Region, sc.TenantID, e.BindingID); err != nil {
			return fmt.Errorf("delete elevation binding: %w", err)
		}
		if rev, err = bumpRevision(ctx, tx, sc.TenantID); err != nil {
			return err
		}
		out, err = scanElevation(tx.QueryRow(ctx, `UPDATE elevations SET status = 'ended', ends_at = least(ends_at, now())
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3 RETURNING `+elevationColumns, sc.Region, sc.TenantID, id))
		if err != nil {
			return fmt.Errorf("end elevation: %w", err)
		}
		after := elevationSummary(out)
		after["policy_revision"] = rev
		return s.writeAudit(ctx, tx, sc, c, audit{action: "elevation.end", targetKind: "elevation", targetID: id, before: elevationSummary(e), after: after})
	})
	return out, rev, err
}

// lockElevation reads an elevation of the tenant for update.
func lockElevation(ctx context.Context, tx pgx.Tx, sc Scope, id string) (Elevation, error) {
	e, err := scanElevation(tx.QueryRow(ctx, `SELECT `+elevationColumns+` FROM elevations
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3 FOR UPDATE`, sc.Region, sc.TenantID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Elevation{}, fmt.Errorf("%w: elevation %s", ErrNotFound, id)
	}
	if err != nil {
		return Elevation{}, fmt.Errorf("read elevation: %w", err)
	}
	return e, nil
}
