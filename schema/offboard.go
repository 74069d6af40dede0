package schema

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Offboarding (issue 15): a leaver loses every way in, in one transaction, and the
// non-human identities they own get another accountable owner or are frozen. Erasure
// then removes their personal data and leaves an audit tombstone. See
// docs/lifecycle.md and docs/decisions/0012-offboarding-and-erasure.md.

// ErasedDisplayName replaces an erased identity's display name (the column is
// required).
const ErasedDisplayName = "erased"

// HandOver is a non-human identity given to the leaver's manager.
type HandOver struct {
	IdentityID string
	NewOwnerID string
	Status     string // its status, unchanged (a frozen one is active again)
}

// Orphan is a non-human identity the leaver owned that no one could take over: its
// credentials were revoked and it was frozen (Status StatusFrozen), or, already
// disabled, it stays disabled.
type Orphan struct {
	IdentityID string
	Status     string
}

// OffboardReport lists what an offboarding removed, revoked, handed over and froze.
// Every list holds only what this offboarding changed.
type OffboardReport struct {
	Bindings             []Binding    // bindings that named the leaver, removed (elevation bindings included)
	GroupIDs             []string     // groups the leaver was removed from
	Credentials          []Credential // revoked: the leaver's and the orphaned NHIs'
	Sessions             int          // the leaver's sessions revoked (with their refresh-token families)
	EndedElevations      []string     // the leaver's active elevations, ended
	DeniedElevations     []string     // the leaver's pending elevation requests, denied
	DeniedChangeRequests []string     // the leaver's pending change requests, denied
	HandedOver           []HandOver
	Orphaned             []Orphan
}

// Empty reports whether the offboarding changed nothing beyond the identity itself.
func (r OffboardReport) Empty() bool {
	return len(r.Bindings) == 0 && len(r.GroupIDs) == 0 && len(r.Credentials) == 0 && r.Sessions == 0 &&
		len(r.EndedElevations) == 0 && len(r.DeniedElevations) == 0 && len(r.DeniedChangeRequests) == 0 &&
		len(r.HandedOver) == 0 && len(r.Orphaned) == 0
}

// Offboarding is the outcome of OffboardIdentity.
type Offboarding struct {
	Identity Identity
	Report   OffboardReport
	// AlreadyOffboarded: the identity had been offboarded before; Report lists only
	// what was left to remove (usually nothing).
	AlreadyOffboarded bool
	// Revision is the tenant's policy revision after the change, 0 when no policy
	// (binding, membership) changed.
	Revision int64
}

// inactiveIdentity is the error for granting to, or minting for, an identity that is
// not active; a frozen one says how to unfreeze it.
func inactiveIdentity(field string, i Identity) error {
	if i.Status == StatusFrozen {
		return fmt.Errorf("%w: %s: identity %s is frozen (its owner was offboarded): give it an owner with UpdateIdentity owner_id first",
			ErrPrecondition, field, i.ID)
	}
	return fmt.Errorf("%w: %s: identity %s is %s", ErrPrecondition, field, i.ID, i.Status)
}

// OffboardIdentity offboards identity id in one transaction: it is disabled (its
// tokens-valid-after watermark moved to the commit), every session (and so every
// refresh-token family) and every credential of it revoked, every binding naming it
// and every group membership removed, its active elevations ended and its pending
// elevations and change requests denied; each non-human identity it owns goes to its
// manager (an active human) or, with none, is frozen with its credentials revoked.
// One "identity.offboard" audit event lists all of it. The change is refused, and
// nothing written, if it would leave the tenant without an active tenant admin.
//
// Offboarding an offboarded identity removes whatever was granted to it since (usually
// nothing) and writes no event when nothing changed. reason is recorded in the event.
func (s *Store) OffboardIdentity(ctx context.Context, c Change, sc Scope, id, reason string) (Offboarding, error) {
	if _, err := parseID("identity_id", id); err != nil {
		return Offboarding{}, err
	}
	if err := checkText("reason", reason, false, 500); err != nil {
		return Offboarding{}, err
	}
	var out Offboarding
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = s.offboardTx(ctx, tx, c, sc, id, reason)
		return err
	})
	return out, err
}

// offboardTx is OffboardIdentity inside tx (also the SCIM leaver path, which offboards
// in the transaction of the SCIM write).
func (s *Store) offboardTx(ctx context.Context, tx pgx.Tx, c Change, sc Scope, id, reason string) (Offboarding, error) {
	out := Offboarding{}
	before, err := getIdentity(ctx, tx, sc, id, " FOR UPDATE")
	if errors.Is(err, ErrNotFound) {
		return out, fmt.Errorf("%w: identity_id: identity %s in tenant %q", ErrNotFound, id, sc.TenantID)
	}
	if err != nil {
		return out, err
	}
	out.AlreadyOffboarded = !before.OffboardedAt.IsZero()
	err = keepsTenantAdmin(ctx, tx, sc, func() error {
		var err error
		out.Identity, out.Report, err = offboard(ctx, tx, sc, before)
		return err
	})
	if err != nil {
		return out, err
	}
	if out.AlreadyOffboarded && out.Report.Empty() && out.Identity.Status == before.Status {
		return out, nil // nothing new: no event
	}
	// The NHIs frozen (no rule memberships while frozen) or unfrozen by the hand-over
	// (theirs again) have their rule memberships recomputed in the same transaction.
	var changed []string
	for _, h := range out.Report.HandedOver {
		changed = append(changed, h.IdentityID)
	}
	for _, o := range out.Report.Orphaned {
		changed = append(changed, o.IdentityID)
	}
	for _, id := range changed {
		nhi, err := getIdentity(ctx, tx, sc, id, "")
		if err != nil {
			return out, err
		}
		if _, err := s.reconcileIdentity(ctx, tx, sc.GuardMemberships(nil), nhi); err != nil {
			return out, err
		}
	}
	if len(out.Report.Bindings) > 0 || len(out.Report.GroupIDs) > 0 {
		if out.Revision, err = bumpRevision(ctx, tx, sc.TenantID); err != nil {
			return out, err
		}
	}
	after := offboardSummary(out.Report)
	after["status"] = out.Identity.Status
	if reason != "" {
		after["reason"] = reason
	}
	if out.Revision > 0 {
		after["policy_revision"] = out.Revision
	}
	if out.AlreadyOffboarded {
		after["already_offboarded"] = true
	}
	return out, s.writeAudit(ctx, tx, sc, c, audit{action: "identity.offboard", targetKind: "identity", targetID: id,
		before: map[string]any{"status": before.Status}, after: after})
}

// offboard does the work of OffboardIdentity inside tx for the locked identity i.
func offboard(ctx context.Context, tx pgx.Tx, sc Scope, i Identity) (Identity, OffboardReport, error) {
	var r OffboardReport
	out, err := scanIdentity(sc.TenantID, tx.QueryRow(ctx, `UPDATE identities SET status = 'disabled',
  tokens_valid_after = CASE WHEN offboarded_at IS NULL OR status <> 'disabled' THEN now() ELSE tokens_valid_after END,
  offboarded_at = coalesce(offboarded_at, now()), updated_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 RETURNING `+identityColumns, sc.TenantID, sc.Region, i.ID))
	if err != nil {
		return Identity{}, r, fmt.Errorf("disable identity: %w", err)
	}
	if err := tx.QueryRow(ctx, `WITH revoked AS (UPDATE sessions SET revoked_at = now()
  WHERE tenant_id = $1 AND crdb_region = $2 AND identity_id = $3 AND revoked_at IS NULL RETURNING 1)
SELECT count(*) FROM revoked`, sc.TenantID, sc.Region, i.ID).Scan(&r.Sessions); err != nil {
		return Identity{}, r, fmt.Errorf("revoke sessions: %w", err)
	}
	if r.Credentials, err = revokeCredentialsOf(ctx, tx, sc, i.ID); err != nil {
		return Identity{}, r, err
	}
	if r.EndedElevations, r.DeniedElevations, err = closeElevationsOf(ctx, tx, sc, i.ID); err != nil {
		return Identity{}, r, err
	}
	rows, err := tx.Query(ctx, `DELETE FROM bindings
WHERE crdb_region = $1 AND tenant_id = $2 AND principal_kind = 'identity' AND principal_id = $3 RETURNING `+bindingColumns,
		sc.Region, sc.TenantID, i.ID)
	if err != nil {
		return Identity{}, r, fmt.Errorf("remove bindings: %w", err)
	}
	if r.Bindings, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Binding, error) { return scanBinding(row) }); err != nil {
		return Identity{}, r, fmt.Errorf("remove bindings: %w", err)
	}
	if r.GroupIDs, err = collectIDs(tx.Query(ctx, `DELETE FROM group_members
WHERE crdb_region = $1 AND tenant_id = $2 AND identity_id = $3 RETURNING group_id::TEXT`, sc.Region, sc.TenantID, i.ID)); err != nil {
		return Identity{}, r, fmt.Errorf("remove memberships: %w", err)
	}
	if r.DeniedChangeRequests, err = collectIDs(tx.Query(ctx, `UPDATE change_requests SET status = 'denied', decided_by = 'system', decided_at = now()
WHERE crdb_region = $1 AND tenant_id = $2 AND requester_id = $3 AND status = 'pending' AND expires_at > now() RETURNING id::TEXT`,
		sc.Region, sc.TenantID, i.ID)); err != nil {
		return Identity{}, r, fmt.Errorf("deny change requests: %w", err)
	}
	if r.HandedOver, r.Orphaned, err = handOverOwned(ctx, tx, sc, i); err != nil {
		return Identity{}, r, err
	}
	for _, o := range r.Orphaned {
		cs, err := revokeCredentialsOf(ctx, tx, sc, o.IdentityID)
		if err != nil {
			return Identity{}, r, err
		}
		r.Credentials = append(r.Credentials, cs...)
	}
	return out, r, nil
}

// revokeCredentialsOf revokes every unrevoked credential of identity id and returns
// them.
func revokeCredentialsOf(ctx context.Context, tx pgx.Tx, sc Scope, id string) ([]Credential, error) {
	rows, err := tx.Query(ctx, `UPDATE credentials SET revoked_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND identity_id = $3 AND revoked_at IS NULL RETURNING `+credentialColumns,
		sc.TenantID, sc.Region, id)
	if err != nil {
		return nil, fmt.Errorf("revoke credentials: %w", err)
	}
	cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Credential, error) { return scanCredential(r) })
	if err != nil {
		return nil, fmt.Errorf("revoke credentials: %w", err)
	}
	return cs, nil
}

// closeElevationsOf ends the active elevations requester id holds (removing their
// bindings) and denies its pending ones.
func closeElevationsOf(ctx context.Context, tx pgx.Tx, sc Scope, id string) (ended, denied []string, err error) {
	ended, err = collectIDs(tx.Query(ctx, `UPDATE elevations SET status = 'ended', ends_at = least(coalesce(ends_at, now()), now())
WHERE crdb_region = $1 AND tenant_id = $2 AND requester_id = $3 AND status = 'active' RETURNING id::TEXT`, sc.Region, sc.TenantID, id))
	if err != nil {
		return nil, nil, fmt.Errorf("end elevations: %w", err)
	}
	// Their bindings name the leaver, so the removal of its bindings takes them.
	denied, err = collectIDs(tx.Query(ctx, `UPDATE elevations SET status = 'denied', decided_at = now()
WHERE crdb_region = $1 AND tenant_id = $2 AND requester_id = $3 AND status = 'pending' RETURNING id::TEXT`, sc.Region, sc.TenantID, id))
	if err != nil {
		return nil, nil, fmt.Errorf("deny elevations: %w", err)
	}
	return ended, denied, nil
}

// handOverOwned gives the non-human identities leaver owns to its manager when it has
// an active human one; otherwise it freezes the active ones (their watermark moves, so
// tokens from before stay invalid after an unfreeze) and reports them, and the
// disabled ones, as orphaned. Frozen ones were reported by an earlier offboarding.
func handOverOwned(ctx context.Context, tx pgx.Tx, sc Scope, leaver Identity) ([]HandOver, []Orphan, error) {
	if leaver.ManagerID != "" {
		err := checkManager(ctx, tx, sc, leaver.ManagerID)
		var fe *FieldError
		switch {
		case err == nil:
			// A frozen identity handed to an owner is unfrozen, as UpdateIdentity would.
			rows, err := tx.Query(ctx, `UPDATE identities SET owner_id = $4,
  status = CASE WHEN status = 'frozen' THEN 'active' ELSE status END, updated_at = now()
WHERE crdb_region = $1 AND tenant_id = $2 AND owner_id = $3 RETURNING id::TEXT, owner_id::TEXT, status`,
				sc.Region, sc.TenantID, leaver.ID, leaver.ManagerID)
			if err != nil {
				return nil, nil, fmt.Errorf("hand over owned identities: %w", err)
			}
			out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (HandOver, error) {
				var h HandOver
				return h, r.Scan(&h.IdentityID, &h.NewOwnerID, &h.Status)
			})
			if err != nil {
				return nil, nil, fmt.Errorf("hand over owned identities: %w", err)
			}
			return out, nil, nil
		case !errors.As(err, &fe):
			return nil, nil, err
		}
		// The manager cannot take them (gone, disabled, not a human): freeze them.
	}
	rows, err := tx.Query(ctx, `UPDATE identities SET status = CASE WHEN status = 'active' THEN 'frozen' ELSE status END,
  tokens_valid_after = CASE WHEN status = 'active' THEN now() ELSE tokens_valid_after END, updated_at = now()
WHERE crdb_region = $1 AND tenant_id = $2 AND owner_id = $3 AND status <> 'frozen' RETURNING id::TEXT, status`,
		sc.Region, sc.TenantID, leaver.ID)
	if err != nil {
		return nil, nil, fmt.Errorf("freeze owned identities: %w", err)
	}
	orphans, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Orphan, error) {
		var o Orphan
		return o, r.Scan(&o.IdentityID, &o.Status)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("freeze owned identities: %w", err)
	}
	return nil, orphans, nil
}

func collectIDs(rows pgx.Rows, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// offboardSummary is the audit record of an offboarding: ids, roles and scopes only,
// never names or emails (docs/decisions/0012).
func offboardSummary(r OffboardReport) map[string]any {
	bindings := make([]map[string]any, 0, len(r.Bindings))
	for _, b := range r.Bindings {
		m := map[string]any{"id": b.ID, "effect": b.Effect, "role_id": b.RoleID, "scope": b.Scope}
		if b.Condition != "" {
			m["condition"] = b.Condition
		}
		if !b.ExpiresAt.IsZero() {
			m["expires_at"] = b.ExpiresAt.UTC().Format(time.RFC3339)
		}
		bindings = append(bindings, m)
	}
	creds := make([]map[string]any, 0, len(r.Credentials))
	for _, c := range r.Credentials {
		m := map[string]any{"id": c.ID, "identity_id": c.IdentityID, "kind": c.Kind}
		if c.KeyID != "" {
			m["key_id"] = c.KeyID
		}
		creds = append(creds, m)
	}
	handed := make([]map[string]any, 0, len(r.HandedOver))
	for _, h := range r.HandedOver {
		handed = append(handed, map[string]any{"identity_id": h.IdentityID, "new_owner_id": h.NewOwnerID})
	}
	orphaned := make([]map[string]any, 0, len(r.Orphaned))
	for _, o := range r.Orphaned {
		orphaned = append(orphaned, map[string]any{"identity_id": o.IdentityID, "status": o.Status})
	}
	return map[string]any{
		"bindings_removed":       bindings,
		"groups_left":            nonNil(r.GroupIDs),
		"credentials_revoked":    creds,
		"sessions_revoked":       r.Sessions,
		"elevations_ended":       nonNil(r.EndedElevations),
		"elevations_denied":      nonNil(r.DeniedElevations),
		"change_requests_denied": nonNil(r.DeniedChangeRequests),
		"identities_handed_over": handed,
		"identities_orphaned":    orphaned,
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Erasure is the outcome of EraseIdentity.
type Erasure struct {
	Identity      Identity
	AlreadyErased bool
	// AuditEventsRedacted counts the earlier audit events of the identity whose
	// personal fields were removed.
	AuditEventsRedacted int
}

// redactedAuditFields are the keys of audit before/after summaries that may hold
// personal data of the identity the event is about: its name and email
// (identitySummary), its SCIM userName and externalId (scimUserSummary) and the source
// address of its failed logins.
var redactedAuditFields = []string{"display_name", "email", "user_name", "external_id", "source"}

// EraseIdentity removes the personal data of an offboarded identity (GDPR Art. 17) in
// one transaction: see erasePersonalData. Earlier audit events about the identity
// keep their ids but lose their personal fields; an "identity.erase" tombstone
// records the erasure with the SHA-256 of the email, never the email. Erasing an
// erased identity changes nothing.
func (s *Store) EraseIdentity(ctx context.Context, c Change, sc Scope, id string) (Erasure, error) {
	if _, err := parseID("identity_id", id); err != nil {
		return Erasure{}, err
	}
	var out Erasure
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out = Erasure{}
		before, err := getIdentity(ctx, tx, sc, id, " FOR UPDATE")
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%w: identity_id: identity %s in tenant %q", ErrNotFound, id, sc.TenantID)
		}
		if err != nil {
			return err
		}
		if !before.ErasedAt.IsZero() {
			out.Identity, out.AlreadyErased = before, true
			return nil
		}
		if before.OffboardedAt.IsZero() || before.Status != StatusDisabled {
			return fmt.Errorf("%w: identity_id: identity %s has not been offboarded: call OffboardIdentity first, so nothing of it is left active when its data goes",
				ErrPrecondition, id)
		}
		erased, err := erasePersonalData(ctx, tx, sc, before)
		if err != nil {
			return err
		}
		if out.AuditEventsRedacted, err = redactAuditEvents(ctx, tx, sc, id); err != nil {
			return err
		}
		if out.Identity, err = getIdentity(ctx, tx, sc, id, ""); err != nil {
			return err
		}
		after := map[string]any{"erased": erased, "audit_events_redacted": out.AuditEventsRedacted}
		if before.Email != "" {
			after["email_sha256"] = EmailHash(before.Email)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "identity.erase", targetKind: "identity", targetID: id, after: after})
	})
	return out, err
}

// EmailHash is the hex SHA-256 of the lower-cased email: what the erasure tombstone
// keeps, so that a later request about the same address can be matched to it.
func EmailHash(email string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(email)))
	return hex.EncodeToString(sum[:])
}

// erasePersonalData removes the personal data of identity i inside tx and returns the
// names of what it erased, for the tombstone: the display name (replaced by
// ErasedDisplayName), email, attributes (which may hold names, phone numbers,
// departments), the secrets of its credentials (password hash, TOTP seed, recovery
// codes; they are all revoked by offboarding) and the login-throttle rows keyed by the
// hash of its email. Stored SCIM payloads belong here too: whoever adds a column with
// personal data to an identity's rows extends this function.
func erasePersonalData(ctx context.Context, tx pgx.Tx, sc Scope, i Identity) ([]string, error) {
	// The SCIM columns (user_name, external_id, the stored payload) are personal data
	// too: a SCIM client's view of the person goes with the rest.
	if _, err := tx.Exec(ctx, `UPDATE identities SET display_name = $4, email = NULL, attributes = '{}', user_name = NULL, external_id = NULL,
  scim = NULL, erased_at = now(), updated_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`, sc.TenantID, sc.Region, i.ID, ErasedDisplayName); err != nil {
		return nil, fmt.Errorf("erase identity: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE credentials SET secret_hash = NULL, secret_encrypted = NULL, params = '{}', name = ''
WHERE tenant_id = $1 AND crdb_region = $2 AND identity_id = $3`, sc.TenantID, sc.Region, i.ID); err != nil {
		return nil, fmt.Errorf("erase credential secrets: %w", err)
	}
	// Access review items name their subject and reviewer (schema/campaign.go).
	if _, err := tx.Exec(ctx, `UPDATE review_items SET subject_name = CASE WHEN subject_id = $3 THEN $4 ELSE subject_name END,
  reviewer_name = CASE WHEN reviewer_id = $3 THEN $4 ELSE reviewer_name END
WHERE tenant_id = $1 AND crdb_region = $2 AND (subject_id = $3 OR reviewer_id = $3)`, sc.TenantID, sc.Region, i.ID, ErasedDisplayName); err != nil {
		return nil, fmt.Errorf("erase review item names: %w", err)
	}
	// The analytics baseline holds the identity's networks and hours (migration 0020).
	if _, err := tx.Exec(ctx, `DELETE FROM analytics_features WHERE tenant_id = $1 AND crdb_region = $2 AND identity_id = $3`,
		sc.TenantID, sc.Region, i.ID); err != nil {
		return nil, fmt.Errorf("erase analytics baseline: %w", err)
	}
	if i.Email != "" {
		for _, table := range []string{"login_throttle", "login_throttle_sources"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE tenant_id = $1 AND crdb_region = $2 AND subject = $3`,
				sc.TenantID, sc.Region, LoginSubject(i.Email)); err != nil {
				return nil, fmt.Errorf("erase login throttle: %w", err)
			}
		}
	}
	return []string{"display_name", "email", "attributes", "scim_user_name", "scim_external_id", "scim_payload", "credential_secrets", "login_throttle", "review_item_names", "analytics_baseline"}, nil
}

// redactAuditEvents removes redactedAuditFields from the before and after summaries
// of the tenant's audit events about identity id, marking each event it changes with
// "redacted": "identity.erase", and returns how many it changed.
func redactAuditEvents(ctx context.Context, tx pgx.Tx, sc Scope, id string) (int, error) {
	// The keys are constants of this file, never input: spliced as SQL literals
	// because "jsonb - text[]" is PostgreSQL's alone.
	strip, list := "", make([]string, 0, len(redactedAuditFields))
	for _, k := range redactedAuditFields {
		strip += " - '" + k + "'"
		list = append(list, "'"+k+"'")
	}
	strip += `) || '{"redacted": "identity.erase"}'::JSONB END`
	keys := "ARRAY[" + strings.Join(list, ", ") + "]"
	tag, err := tx.Exec(ctx, `UPDATE audit_events SET
  before = CASE WHEN before IS NULL THEN NULL ELSE (before`+strip+`,
  after = CASE WHEN after IS NULL THEN NULL ELSE (after`+strip+`
WHERE tenant_id = $1 AND crdb_region = $2 AND target_kind = 'identity' AND target_id = $3
  AND (coalesce(before ?| `+keys+`, false) OR coalesce(after ?| `+keys+`, false))`,
		sc.TenantID, sc.Region, id)
	if err != nil {
		return 0, fmt.Errorf("redact audit events: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
