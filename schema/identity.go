package schema

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Identity kinds.
const (
	KindHuman          = "human"
	KindServiceAccount = "service_account"
	KindWorkload       = "workload"
	KindDevice         = "device"
	KindAgent          = "agent"
)

// StatusFrozen is the status of a non-human identity whose owner was offboarded with
// no manager to take it over (OffboardIdentity): its tokens are inactive and nothing
// new is granted to it until UpdateIdentity gives it an owner, which unfreezes it.
const StatusFrozen = "frozen"

// Limits on identity fields.
const (
	MaxIdentityLifetime = 5 * 365 * 24 * time.Hour // longest expiry a non-human may get
	MaxAttributesBytes  = 16 << 10                 // attributes, as JSON
	maxAttributeKeys    = 128
	maxPurpose          = 500
)

// Identity is a human or non-human principal of a tenant.
type Identity struct {
	TenantID         string
	ID               string
	Kind             string
	DisplayName      string
	Email            string
	Attributes       map[string]any
	OwnerID          string
	ManagerID        string // the human this identity reports to; "" when none
	Purpose          string
	Status           string    // StatusActive, StatusDisabled or StatusFrozen
	ExpiresAt        time.Time // zero: never
	TokensValidAfter time.Time // zero: no watermark
	CreatedAt        time.Time
	UpdatedAt        time.Time
	OffboardedAt     time.Time // zero: not offboarded (or enabled again since)
	ErasedAt         time.Time // zero: personal data not erased
}

// IsHuman reports whether the identity is a person.
func (i Identity) IsHuman() bool { return i.Kind == KindHuman }

// NewIdentity is the input of CreateIdentity.
type NewIdentity struct {
	Kind        string
	DisplayName string
	Email       string
	Attributes  map[string]any
	OwnerID     string    // required for non-humans: an active human of the tenant
	ManagerID   string    // humans only, optional: an active human of the tenant
	Purpose     string    // required for non-humans
	ExpiresAt   time.Time // required for non-humans; zero means never for humans
}

const identityColumns = `id::TEXT, kind, display_name, coalesce(email, ''), attributes, coalesce(owner_id::TEXT, ''), purpose, status,
 coalesce(expires_at, 'epoch'::TIMESTAMPTZ), coalesce(tokens_valid_after, 'epoch'::TIMESTAMPTZ), created_at, updated_at,
 coalesce(manager_id::TEXT, ''), coalesce(offboarded_at, 'epoch'::TIMESTAMPTZ), coalesce(erased_at, 'epoch'::TIMESTAMPTZ)`

func scanIdentity(tenantID string, r pgx.Row) (Identity, error) {
	i := Identity{TenantID: tenantID}
	err := r.Scan(&i.ID, &i.Kind, &i.DisplayName, &i.Email, &i.Attributes, &i.OwnerID, &i.Purpose, &i.Status,
		&i.ExpiresAt, &i.TokensValidAfter, &i.CreatedAt, &i.UpdatedAt, &i.ManagerID, &i.OffboardedAt, &i.ErasedAt)
	i.ExpiresAt, i.TokensValidAfter = zeroEpoch(i.ExpiresAt), zeroEpoch(i.TokensValidAfter)
	i.OffboardedAt, i.ErasedAt = zeroEpoch(i.OffboardedAt), zeroEpoch(i.ErasedAt)
	if i.Attributes == nil {
		i.Attributes = map[string]any{}
	}
	return i, err
}

func isKind(k string) bool {
	switch k {
	case KindHuman, KindServiceAccount, KindWorkload, KindDevice, KindAgent:
		return true
	}
	return false
}

// checkIdentity validates the fields every identity must satisfy, whether new or
// updated. It does not look at the owner row; checkOwner does.
func checkIdentity(i Identity, now time.Time) error {
	if !isKind(i.Kind) {
		return fieldErr("kind", "must be one of human, service_account, workload, device, agent")
	}
	if err := checkText("display_name", i.DisplayName, true, 200); err != nil {
		return err
	}
	if err := checkEmail("email", i.Email); err != nil {
		return err
	}
	if err := checkAttributes(i.Attributes); err != nil {
		return err
	}
	if !i.IsHuman() && i.OwnerID == "" {
		return fieldErr("owner_id", "required for non-human identities (the accountable human)")
	}
	if i.OwnerID != "" {
		if _, err := parseID("owner_id", i.OwnerID); err != nil {
			return err
		}
		if i.OwnerID == i.ID {
			return fieldErr("owner_id", "an identity cannot own itself")
		}
	}
	if i.ManagerID != "" {
		if !i.IsHuman() {
			return fieldErr("manager_id", "only humans have a manager; a non-human identity has an owner (owner_id)")
		}
		if _, err := parseID("manager_id", i.ManagerID); err != nil {
			return err
		}
		if i.ManagerID == i.ID {
			return fieldErr("manager_id", "an identity cannot be its own manager")
		}
	}
	if !i.IsHuman() && i.ExpiresAt.IsZero() {
		return fieldErr("expire_time", "required for non-human identities")
	}
	if err := checkText("purpose", i.Purpose, !i.IsHuman(), maxPurpose); err != nil {
		if i.Purpose == "" {
			return fieldErr("purpose", "required for non-human identities (what is it for?)")
		}
		return err
	}
	if !i.ExpiresAt.IsZero() {
		if !i.ExpiresAt.After(now) {
			return fieldErr("expire_time", "must be in the future")
		}
		if !i.IsHuman() && i.ExpiresAt.Sub(now) > MaxIdentityLifetime {
			return fieldErr("expire_time", "at most %d days ahead for non-human identities", int(MaxIdentityLifetime/(24*time.Hour)))
		}
	}
	return nil
}

func checkAttributes(a map[string]any) error {
	if len(a) > maxAttributeKeys {
		return fieldErr("attributes", "at most %d keys", maxAttributeKeys)
	}
	for k := range a {
		if k == "" || len(k) > 64 || !utf8.ValidString(k) {
			return fieldErr("attributes", "keys must be 1 to 64 bytes of UTF-8")
		}
	}
	b, err := json.Marshal(a)
	if err != nil {
		return fieldErr("attributes", "not representable as JSON")
	}
	if len(b) > MaxAttributesBytes {
		return fieldErr("attributes", "at most %d bytes as JSON, got %d", MaxAttributesBytes, len(b))
	}
	return nil
}

// checkOwner verifies that ownerID names an active human of the same tenant.
func checkOwner(ctx context.Context, q querier, sc Scope, ownerID string) error {
	return checkActiveHuman(ctx, q, sc, "owner_id", "owner", ownerID)
}

// checkManager verifies that managerID names an active human of the same tenant.
func checkManager(ctx context.Context, q querier, sc Scope, managerID string) error {
	return checkActiveHuman(ctx, q, sc, "manager_id", "manager", managerID)
}

func checkActiveHuman(ctx context.Context, q querier, sc Scope, field, role, id string) error {
	var kind, status string
	err := q.QueryRow(ctx, `SELECT kind, status FROM identities WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`,
		sc.TenantID, sc.Region, id).Scan(&kind, &status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fieldErr(field, "no identity %s in tenant %q", id, sc.TenantID)
	case err != nil:
		return fmt.Errorf("read %s: %w", role, err)
	case kind != KindHuman:
		return fieldErr(field, "the %s must be a human identity, %s is a %s", role, id, kind)
	case status != StatusActive:
		return fieldErr(field, "the %s %s is %s", role, id, status)
	}
	return nil
}

// CreateIdentity creates an identity in the tenant's home partition.
func (s *Store) CreateIdentity(ctx context.Context, c Change, sc Scope, in NewIdentity) (Identity, error) {
	if in.Attributes == nil {
		in.Attributes = map[string]any{}
	}
	draft := Identity{TenantID: sc.TenantID, Kind: in.Kind, DisplayName: in.DisplayName, Email: in.Email,
		Attributes: in.Attributes, OwnerID: in.OwnerID, ManagerID: in.ManagerID, Purpose: in.Purpose, ExpiresAt: in.ExpiresAt}
	if err := checkIdentity(draft, time.Now()); err != nil {
		return Identity{}, err
	}
	var out Identity
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if in.OwnerID != "" {
			if err := checkOwner(ctx, tx, sc, in.OwnerID); err != nil {
				return err
			}
		}
		if in.ManagerID != "" {
			if err := checkManager(ctx, tx, sc, in.ManagerID); err != nil {
				return err
			}
		}
		var err error
		out, err = scanIdentity(sc.TenantID, tx.QueryRow(ctx, `
INSERT INTO identities (tenant_id, crdb_region, kind, display_name, email, attributes, owner_id, purpose, expires_at, manager_id)
VALUES ($1, $2, $3, $4, nullif($5, ''), $6, nullif($7, '')::UUID, $8, $9, nullif($10, '')::UUID)
RETURNING `+identityColumns,
			sc.TenantID, sc.Region, in.Kind, in.DisplayName, in.Email, in.Attributes, in.OwnerID, in.Purpose, nullTime(in.ExpiresAt), in.ManagerID))
		if err != nil {
			return fmt.Errorf("insert identity: %w", identityConflict(err, in.Email))
		}
		after := identitySummary(out)
		if err := s.applyRules(ctx, tx, sc, out, after); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "identity.create", targetKind: "identity", targetID: out.ID, after: after})
	})
	return out, err
}

// identityConflict names the email in a unique violation so the caller learns which
// field clashed.
func identityConflict(err error, email string) error {
	if cerr := classify(err); errors.Is(cerr, ErrConflict) {
		return fieldErrConflict("email", "another identity of this tenant has the email %q", email)
	}
	return err
}

// ConflictError is ErrConflict with the field that clashed.
type ConflictError struct{ FieldError }

func (e *ConflictError) Unwrap() error { return ErrConflict }

func fieldErrConflict(field, format string, args ...any) error {
	return &ConflictError{FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}}
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func identitySummary(i Identity) map[string]any {
	m := map[string]any{"kind": i.Kind, "display_name": i.DisplayName, "status": i.Status}
	if i.Email != "" {
		m["email"] = i.Email
	}
	if i.OwnerID != "" {
		m["owner_id"] = i.OwnerID
	}
	if i.ManagerID != "" {
		m["manager_id"] = i.ManagerID
	}
	if i.Purpose != "" {
		m["purpose"] = i.Purpose
	}
	if !i.ExpiresAt.IsZero() {
		m["expires_at"] = i.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if len(i.Attributes) > 0 {
		keys := make([]string, 0, len(i.Attributes))
		for k := range i.Attributes {
			keys = append(keys, k)
		}
		m["attribute_keys"] = keys // values may be personal data: keep them out of the log
	}
	return m
}

// GetIdentity reads one identity of the tenant.
func (s *Store) GetIdentity(ctx context.Context, sc Scope, id string) (Identity, error) {
	if _, err := parseID("id", id); err != nil {
		return Identity{}, err
	}
	return getIdentity(ctx, s.pool, sc, id, "")
}

func getIdentity(ctx context.Context, q querier, sc Scope, id, lock string) (Identity, error) {
	i, err := scanIdentity(sc.TenantID, q.QueryRow(ctx, `SELECT `+identityColumns+`
FROM identities WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`+lock, sc.TenantID, sc.Region, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Identity{}, fmt.Errorf("%w: identity %s in tenant %q", ErrNotFound, id, sc.TenantID)
	}
	if err != nil {
		return Identity{}, classify(fmt.Errorf("read identity: %w", err))
	}
	return i, nil
}

// GetIdentities reads the identities of the tenant with the given ids in one
// statement; ids that are not UUIDs or name no identity are absent from the result.
func (s *Store) GetIdentities(ctx context.Context, sc Scope, ids []string) (map[string]Identity, error) {
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if _, err := parseID("id", id); err == nil {
			valid = append(valid, id)
		}
	}
	out := make(map[string]Identity, len(valid))
	if len(valid) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT `+identityColumns+`
FROM identities WHERE crdb_region = $1 AND tenant_id = $2 AND id = ANY($3::UUID[])`, sc.Region, sc.TenantID, valid)
	if err != nil {
		return nil, classify(err)
	}
	is, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Identity, error) { return scanIdentity(sc.TenantID, r) })
	if err != nil {
		return nil, classify(err)
	}
	for _, i := range is {
		out[i.ID] = i
	}
	return out, nil
}

// ListIdentities pages through the tenant's identities ordered by id.
func (s *Store) ListIdentities(ctx context.Context, sc Scope, p Page) ([]Identity, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	after := uuid.Nil.String()
	if err := p.decode(&after); err != nil {
		return nil, "", err
	}
	if _, err := uuid.Parse(after); err != nil {
		return nil, "", fieldErr("page_token", "not a token returned by this listing")
	}
	rows, err := s.pool.Query(ctx, `SELECT `+identityColumns+`
FROM identities WHERE tenant_id = $1 AND crdb_region = $2 AND id > $3::UUID ORDER BY id LIMIT $4`,
		sc.TenantID, sc.Region, after, limit+1)
	if err != nil {
		return nil, "", classify(err)
	}
	is, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Identity, error) { return scanIdentity(sc.TenantID, r) })
	if err != nil {
		return nil, "", classify(err)
	}
	next := ""
	if len(is) > limit {
		is = is[:limit]
		next = encodeToken(is[limit-1].ID)
	}
	return is, next, nil
}

// IdentityUpdate lists the fields to change; nil fields stay as they are.
type IdentityUpdate struct {
	DisplayName *string
	Email       *string // "" clears it
	Attributes  map[string]any
	OwnerID     *string // giving a frozen identity an owner unfreezes it
	ManagerID   *string // "" clears it
	Purpose     *string
	ExpiresAt   *time.Time
}

// UpdateIdentity changes an identity's descriptive and governance fields. An erased
// identity cannot be changed. A frozen identity given an active owner becomes active
// (its credentials stay revoked and its earlier tokens invalid: the new owner mints
// new ones).
func (s *Store) UpdateIdentity(ctx context.Context, c Change, sc Scope, id string, u IdentityUpdate) (Identity, error) {
	if _, err := parseID("id", id); err != nil {
		return Identity{}, err
	}
	return s.changeIdentity(ctx, c, sc, id, "identity.update", func(i *Identity) error {
		if u.DisplayName != nil {
			i.DisplayName = *u.DisplayName
		}
		if u.Email != nil {
			i.Email = *u.Email
		}
		if u.Attributes != nil {
			i.Attributes = u.Attributes
		}
		if u.OwnerID != nil {
			i.OwnerID = *u.OwnerID
			if i.Status == StatusFrozen && i.OwnerID != "" {
				i.Status = StatusActive
			}
		}
		if u.ManagerID != nil {
			i.ManagerID = *u.ManagerID
		}
		if u.Purpose != nil {
			i.Purpose = *u.Purpose
		}
		if u.ExpiresAt != nil {
			i.ExpiresAt = *u.ExpiresAt
		}
		return nil
	})
}

// SetIdentityStatus disables or re-enables an identity. Disabling also moves the
// identity's tokens-valid-after watermark to the commit's time, so tokens issued
// before it stay invalid even after a later re-enable. Setting the status the identity
// already has changes nothing and writes no audit event. Enabling an offboarded
// identity (a rehire) clears its offboarding mark; a frozen identity is enabled by
// giving it an owner (UpdateIdentity), an erased one never.
func (s *Store) SetIdentityStatus(ctx context.Context, c Change, sc Scope, id, status string) (Identity, error) {
	if _, err := parseID("id", id); err != nil {
		return Identity{}, err
	}
	if status != StatusActive && status != StatusDisabled {
		return Identity{}, fieldErr("status", "must be %q or %q", StatusActive, StatusDisabled)
	}
	action := "identity.enable"
	if status == StatusDisabled {
		action = "identity.disable"
	}
	return s.changeIdentity(ctx, c, sc, id, action, func(i *Identity) error {
		if status == StatusActive && i.Status == StatusFrozen {
			return fmt.Errorf("%w: id: identity %s is frozen (its owner was offboarded): give it an owner with UpdateIdentity owner_id, which unfreezes it",
				ErrPrecondition, i.ID)
		}
		i.Status = status
		return nil
	})
}

func (s *Store) changeIdentity(ctx context.Context, c Change, sc Scope, id, action string, edit func(*Identity) error) (Identity, error) {
	var out Identity
	err := s.tx(ctx, func(tx pgx.Tx) error {
		before, err := getIdentity(ctx, tx, sc, id, " FOR UPDATE")
		if err != nil {
			return err
		}
		if !before.ErasedAt.IsZero() {
			return fmt.Errorf("%w: id: identity %s was erased (EraseIdentity); it cannot be changed", ErrPrecondition, id)
		}
		after := before
		after.Attributes = before.Attributes
		if err := edit(&after); err != nil {
			return err
		}
		if identityEqual(before, after) {
			out = before
			return nil
		}
		if err := checkIdentity(after, time.Now()); err != nil {
			return err
		}
		if after.OwnerID != "" && after.OwnerID != before.OwnerID {
			if err := checkOwner(ctx, tx, sc, after.OwnerID); err != nil {
				return err
			}
		}
		if after.ManagerID != "" && after.ManagerID != before.ManagerID {
			if err := checkManager(ctx, tx, sc, after.ManagerID); err != nil {
				return err
			}
		}
		if before.IsHuman() && after.Status == StatusDisabled && before.Status != StatusDisabled {
			if err := checkNotOwnerOfActive(ctx, tx, sc, id); err != nil {
				return err
			}
		}
		// Disabling or expiring the last tenant admin is refused (keepsTenantAdmin).
		err = keepsTenantAdmin(ctx, tx, sc, func() error {
			var err error
			out, err = scanIdentity(sc.TenantID, tx.QueryRow(ctx, `
UPDATE identities SET display_name = $4, email = nullif($5, ''), attributes = $6, owner_id = nullif($7, '')::UUID,
  purpose = $8, expires_at = $9, status = $10, manager_id = nullif($11, '')::UUID,
  tokens_valid_after = CASE WHEN $10 = 'disabled' AND status <> 'disabled' THEN now() ELSE tokens_valid_after END,
  offboarded_at = CASE WHEN $10 = 'active' THEN NULL ELSE offboarded_at END,
  updated_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3
RETURNING `+identityColumns,
				sc.TenantID, sc.Region, id, after.DisplayName, after.Email, after.Attributes, after.OwnerID, after.Purpose,
				nullTime(after.ExpiresAt), after.Status, after.ManagerID))
			if err != nil {
				return fmt.Errorf("update identity: %w", identityConflict(err, after.Email))
			}
			return nil
		})
		if err != nil {
			return err
		}
		summary := identitySummary(out)
		if err := s.applyRules(ctx, tx, sc, out, summary); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: action, targetKind: "identity", targetID: id,
			before: identitySummary(before), after: summary})
	})
	return out, err
}

// checkNotOwnerOfActive refuses to disable a human who still owns active non-human
// identities: every NHI must keep an accountable owner. Reassign them first.
func checkNotOwnerOfActive(ctx context.Context, q querier, sc Scope, id string) error {
	var n int
	err := q.QueryRow(ctx, `SELECT count(*) FROM identities
WHERE tenant_id = $1 AND crdb_region = $2 AND owner_id = $3 AND status = 'active'`, sc.TenantID, sc.Region, id).Scan(&n)
	if err != nil {
		return fmt.Errorf("count owned identities: %w", err)
	}
	if n > 0 {
		return fmt.Errorf("%w: id: identity %s owns %d active non-human identities; give them another owner or disable them first, or call OffboardIdentity, which hands them to the leaver's manager (or freezes them) in the same transaction",
			ErrPrecondition, id, n)
	}
	return nil
}

func identityEqual(a, b Identity) bool {
	ja, _ := json.Marshal(a.Attributes)
	jb, _ := json.Marshal(b.Attributes)
	return a.DisplayName == b.DisplayName && a.Email == b.Email && string(ja) == string(jb) && a.OwnerID == b.OwnerID &&
		a.ManagerID == b.ManagerID && a.Purpose == b.Purpose && a.ExpiresAt.Equal(b.ExpiresAt) && a.Status == b.Status
}
