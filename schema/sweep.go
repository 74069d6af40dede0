package schema

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The governance sweep (docs/governance.md): what a node's sweeper does to the tenants
// homed in its region. Every action is one transaction that re-reads its target, acts
// only if the target still needs it (judged by the database's now()) and writes its
// audit event, actor "system": two sweepers racing on the same tenant act exactly
// once between them, whatever their clocks say.

// Sweep actions, the labels of keyplane_governance_actions_total and the audit actions
// they write.
const (
	SweepDisableExpired = "identity_expire"         // audit "identity.expire"
	SweepExpireCred     = "credential_expire"       // audit "credential.expire"
	SweepFreezeOrphan   = "identity_freeze"         // audit "identity.freeze"
	SweepRotationDue    = "credential_rotation_due" // audit "credential.rotation_due"
)

// SweepReport lists what one sweep of a tenant did: ids per action.
type SweepReport struct {
	Disabled    []string // identities past their expiry, now disabled
	Expired     []string // credentials past their expiry, now revoked
	Frozen      []string // NHIs whose owner is gone, now frozen
	RotationDue []string // credentials whose rotation deadline was announced
}

// Count returns the number of actions per action label.
func (r SweepReport) Count() map[string]int {
	return map[string]int{SweepDisableExpired: len(r.Disabled), SweepExpireCred: len(r.Expired), SweepFreezeOrphan: len(r.Frozen),
		SweepRotationDue: len(r.RotationDue)}
}

// Total is the number of actions taken.
func (r SweepReport) Total() int {
	return len(r.Disabled) + len(r.Expired) + len(r.Frozen) + len(r.RotationDue)
}

// sweepChange is who the sweeper's changes are by.
func sweepChange() Change {
	return Change{Actor: "system", ActorKind: "system", RequestID: "governance-sweep"}
}

// SweepTenant runs one sweep of the tenant: at most limit actions of each kind, in
// this order: identities past their expiry are disabled (their tokens cut as
// disabling does), credentials past their expiry revoked, active NHIs whose owner is
// gone (disabled, offboarded, erased or expired) frozen with their credentials revoked
// and pending elevations denied, and rotation deadlines within the policy's notice
// announced (once per credential and deadline). What it did is reported even when it
// stops on an error.
func (s *Store) SweepTenant(ctx context.Context, sc Scope, limit int) (SweepReport, error) {
	var r SweepReport
	if limit <= 0 {
		return r, nil
	}
	pol, err := s.GetGovernancePolicy(ctx, sc)
	if err != nil {
		return r, err
	}
	steps := []struct {
		candidates string
		args       []any
		act        func(context.Context, Scope, string) (bool, error)
		into       *[]string
	}{
		{`SELECT id::TEXT FROM identities WHERE crdb_region = $1 AND tenant_id = $2 AND expires_at <= now() AND status <> 'disabled'
ORDER BY expires_at, id LIMIT $3`, nil, s.disableExpired, &r.Disabled},
		{`SELECT id::TEXT FROM credentials WHERE crdb_region = $1 AND tenant_id = $2 AND expires_at <= now() AND revoked_at IS NULL
ORDER BY expires_at, id LIMIT $3`, nil, s.expireCredential, &r.Expired},
		{`SELECT i.id::TEXT FROM identities i JOIN identities o ON o.crdb_region = i.crdb_region AND o.tenant_id = i.tenant_id AND o.id = i.owner_id
WHERE i.crdb_region = $1 AND i.tenant_id = $2 AND i.kind <> 'human' AND i.status = 'active' AND ` + ownerGoneSQL + `
ORDER BY i.id LIMIT $3`, nil, s.freezeOrphan, &r.Frozen},
	}
	for _, st := range steps {
		ids, err := collectIDs(s.pool.Query(ctx, st.candidates, append([]any{sc.Region, sc.TenantID, limit}, st.args...)...))
		if err != nil {
			return r, classify(err)
		}
		for _, id := range ids {
			done, err := st.act(ctx, sc, id)
			if err != nil {
				return r, err
			}
			if done {
				*st.into = append(*st.into, id)
			}
		}
	}
	due, err := s.rotationCandidates(ctx, sc, pol, limit)
	if err != nil {
		return r, err
	}
	for _, d := range due {
		done, err := s.announceRotation(ctx, sc, d)
		if err != nil {
			return r, err
		}
		if done {
			r.RotationDue = append(r.RotationDue, d.credentialID)
		}
	}
	return r, nil
}

// ownerGoneSQL is true when owner o (an alias) is gone: disabled (offboarded
// included), erased, or past its expiry.
const ownerGoneSQL = `(o.status <> 'active' OR o.erased_at IS NOT NULL OR o.offboarded_at IS NOT NULL OR (o.expires_at IS NOT NULL AND o.expires_at <= now()))`

// sweepTx runs one sweeper action in a transaction of its own: fn sees the database's
// clock (never the node's) and reports whether it acted; false means the target no
// longer qualifies (another sweeper acted first, or it changed), and nothing is written.
func (s *Store) sweepTx(ctx context.Context, fn func(tx pgx.Tx, now time.Time) (bool, error)) (bool, error) {
	var done bool
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var now time.Time
		if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
			return fmt.Errorf("read clock: %w", err)
		}
		var err error
		done, err = fn(tx, now)
		return err
	})
	return done, err
}

// disableExpired disables identity id if it is past its expiry and not disabled.
func (s *Store) disableExpired(ctx context.Context, sc Scope, id string) (bool, error) {
	return s.sweepTx(ctx, func(tx pgx.Tx, now time.Time) (bool, error) {
		before, err := getIdentity(ctx, tx, sc, id, " FOR UPDATE")
		if err != nil {
			return false, err
		}
		if before.Status == StatusDisabled || before.ExpiresAt.IsZero() || now.Before(before.ExpiresAt) {
			return false, nil
		}
		out, err := scanIdentity(sc.TenantID, tx.QueryRow(ctx, `UPDATE identities SET status = 'disabled', tokens_valid_after = now(), updated_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 RETURNING `+identityColumns, sc.TenantID, sc.Region, id))
		if err != nil {
			return false, fmt.Errorf("disable expired identity: %w", err)
		}
		after := identitySummary(out)
		after["reason"] = "expired"
		if err := s.applyRules(ctx, tx, sc, out, after); err != nil {
			return false, err
		}
		return true, s.writeAudit(ctx, tx, sc, sweepChange(), audit{action: "identity.expire", targetKind: "identity", targetID: id,
			before: identitySummary(before), after: after})
	})
}

// expireCredential revokes credential id if it is past its expiry and unrevoked.
func (s *Store) expireCredential(ctx context.Context, sc Scope, id string) (bool, error) {
	return s.sweepTx(ctx, func(tx pgx.Tx, now time.Time) (bool, error) {
		var params map[string]any
		before, err := lockCredential(ctx, tx, sc, id, &params)
		if err != nil {
			return false, err
		}
		if !before.RevokedAt.IsZero() || before.ExpiresAt.IsZero() || now.Before(before.ExpiresAt) {
			return false, nil
		}
		out, err := scanCredential(tx.QueryRow(ctx, `UPDATE credentials SET revoked_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 RETURNING `+credentialColumns, sc.TenantID, sc.Region, id))
		if err != nil {
			return false, fmt.Errorf("expire credential: %w", err)
		}
		after := credentialSummary(out)
		after["reason"] = "expired"
		return true, s.writeAudit(ctx, tx, sc, sweepChange(), audit{action: "credential.expire", targetKind: "credential", targetID: id,
			before: credentialSummary(before), after: after})
	})
}

// freezeOrphan freezes NHI id if it is active and its owner is gone: its status
// becomes frozen, its tokens-valid-after watermark moves (tokens from before stay
// invalid after an unfreeze), its credentials are revoked (the owner who left may know
// them) and its pending elevations denied — what offboarding does to the NHIs of a
// leaver without a manager. UpdateIdentity giving it an owner unfreezes it.
func (s *Store) freezeOrphan(ctx context.Context, sc Scope, id string) (bool, error) {
	return s.sweepTx(ctx, func(tx pgx.Tx, now time.Time) (bool, error) {
		before, err := getIdentity(ctx, tx, sc, id, " FOR UPDATE")
		if err != nil {
			return false, err
		}
		if before.IsHuman() || before.Status != StatusActive || before.OwnerID == "" {
			return false, nil
		}
		owner, err := getIdentity(ctx, tx, sc, before.OwnerID, "")
		if err != nil {
			return false, err
		}
		state := OwnerState(&owner, now)
		if state == OwnerActive {
			return false, nil
		}
		out, err := scanIdentity(sc.TenantID, tx.QueryRow(ctx, `UPDATE identities SET status = 'frozen', tokens_valid_after = now(), updated_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 RETURNING `+identityColumns, sc.TenantID, sc.Region, id))
		if err != nil {
			return false, fmt.Errorf("freeze identity: %w", err)
		}
		creds, err := revokeCredentialsOf(ctx, tx, sc, id)
		if err != nil {
			return false, err
		}
		denied, err := collectIDs(tx.Query(ctx, `UPDATE elevations SET status = 'denied', decided_at = now()
WHERE crdb_region = $1 AND tenant_id = $2 AND requester_id = $3 AND status = 'pending' RETURNING id::TEXT`, sc.Region, sc.TenantID, id))
		if err != nil {
			return false, fmt.Errorf("deny elevations: %w", err)
		}
		revoked := make([]string, 0, len(creds))
		for _, c := range creds {
			revoked = append(revoked, c.ID)
		}
		after := identitySummary(out)
		after["reason"] = "owner_" + state
		after["credentials_revoked"] = revoked
		after["elevations_denied"] = nonNil(denied)
		return true, s.writeAudit(ctx, tx, sc, sweepChange(), audit{action: "identity.freeze", targetKind: "identity", targetID: id,
			before: identitySummary(before), after: after})
	})
}

// rotationDue is a credential whose rotation deadline is within the notice.
type rotationDue struct {
	credentialID string
	deadline     time.Time
	high         bool
}

// secretKindsSQL are the credential kinds that are static secrets of an NHI.
const secretKindsSQL = `('api_key', 'client_secret')`

// rotationCandidates lists at most limit live secrets (API keys, client secrets; not
// revoked, not rotated, unexpired) of active NHIs whose rotation deadline (creation +
// the policy's rotation days for the NHI's tier) is within the policy's notice and
// not yet announced.
func (s *Store) rotationCandidates(ctx context.Context, sc Scope, pol GovernancePolicy, limit int) ([]rotationDue, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, deadline, high FROM (
  SELECT c.id::TEXT AS id, c.rotation_notice_for AS notice, `+highRiskSQL+` AS high,
    c.created_at + (CASE WHEN `+highRiskSQL+` THEN $3::FLOAT8 ELSE $4::FLOAT8 END) * INTERVAL '1 day' AS deadline
  FROM credentials c JOIN identities i ON i.crdb_region = c.crdb_region AND i.tenant_id = c.tenant_id AND i.id = c.identity_id
  WHERE c.crdb_region = $1 AND c.tenant_id = $2 AND c.kind IN `+secretKindsSQL+` AND c.revoked_at IS NULL AND c.rotated_at IS NULL
    AND (c.expires_at IS NULL OR c.expires_at > now()) AND i.kind <> 'human' AND i.status = 'active'
) x WHERE x.deadline - $5::FLOAT8 * INTERVAL '1 day' <= now() AND (x.notice IS NULL OR x.notice <> x.deadline)
ORDER BY x.deadline, x.id LIMIT $6`, sc.Region, sc.TenantID, pol.RotationDaysHigh, pol.RotationDaysNormal, pol.RotationNoticeDays, limit)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (rotationDue, error) {
		var d rotationDue
		return d, r.Scan(&d.credentialID, &d.deadline, &d.high)
	})
	return out, classify(err)
}

// announceRotation marks credential d as announced for its deadline and writes a
// "credential.rotation_due" event, unless that deadline was announced already.
func (s *Store) announceRotation(ctx context.Context, sc Scope, d rotationDue) (bool, error) {
	return s.sweepTx(ctx, func(tx pgx.Tx, now time.Time) (bool, error) {
		c, err := scanCredential(tx.QueryRow(ctx, `UPDATE credentials SET rotation_notice_for = $4
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 AND revoked_at IS NULL AND rotated_at IS NULL
  AND (rotation_notice_for IS NULL OR rotation_notice_for <> $4) RETURNING `+credentialColumns, sc.TenantID, sc.Region, d.credentialID, d.deadline))
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("mark rotation notice: %w", err)
		}
		tier := TierNormal
		if d.high {
			tier = TierHigh
		}
		after := credentialSummary(c)
		after["rotation_deadline"] = d.deadline.UTC().Format(time.RFC3339)
		after["risk_tier"] = tier
		after["overdue"] = !now.Before(d.deadline)
		return true, s.writeAudit(ctx, tx, sc, sweepChange(), audit{action: "credential.rotation_due", targetKind: "credential", targetID: d.credentialID, after: after})
	})
}
