package schema

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// NHI governance (issue 17, docs/governance.md): the tenant's governance policy, the
// rows of the NHI inventory, and the use of grants read from the decision log.

// GovernancePolicy is a tenant's governance thresholds. Days are whole days.
type GovernancePolicy struct {
	ExpiringDays       int // an NHI expiring within this many days is "expiring"
	UnusedDays         int // an NHI not used for this many days is "unused"
	RotationDaysHigh   int // a secret of a high-risk NHI is due for rotation at this age
	RotationDaysNormal int // … of a normal-risk NHI
	RotationNoticeDays int // the sweeper announces a rotation deadline this many days ahead
	LeastPrivilegeDays int // the decision-log window least privilege is measured over
	// MinLeastPrivilegePercent: an NHI using fewer than this percent of its granted
	// permissions over the window is "over_privileged".
	MinLeastPrivilegePercent int
	UpdatedAt                time.Time // zero: never set (the defaults)
}

// DefaultGovernancePolicy is the policy of a tenant that never set one (the column
// defaults of migration 0018).
func DefaultGovernancePolicy() GovernancePolicy {
	return GovernancePolicy{ExpiringDays: 14, UnusedDays: 30, RotationDaysHigh: 30, RotationDaysNormal: 90, RotationNoticeDays: 7,
		LeastPrivilegeDays: 90, MinLeastPrivilegePercent: 50}
}

// MaxGovernanceDays bounds every day count of a governance policy.
const MaxGovernanceDays = 3650

// Validate reports the first bad field, named as in the API.
func (p GovernancePolicy) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"expiring_days", p.ExpiringDays}, {"unused_days", p.UnusedDays}, {"rotation_days_high", p.RotationDaysHigh},
		{"rotation_days_normal", p.RotationDaysNormal}, {"rotation_notice_days", p.RotationNoticeDays}, {"least_privilege_days", p.LeastPrivilegeDays}} {
		if f.v < 1 || f.v > MaxGovernanceDays {
			return fieldErr(f.name, "must be between 1 and %d days, got %d", MaxGovernanceDays, f.v)
		}
	}
	if p.RotationDaysHigh > p.RotationDaysNormal {
		return fieldErr("rotation_days_high", "must not exceed rotation_days_normal (%d): high-risk secrets rotate at least as often, got %d",
			p.RotationDaysNormal, p.RotationDaysHigh)
	}
	if p.RotationNoticeDays >= p.RotationDaysHigh {
		return fieldErr("rotation_notice_days", "must be less than rotation_days_high (%d), got %d", p.RotationDaysHigh, p.RotationNoticeDays)
	}
	if p.MinLeastPrivilegePercent < 0 || p.MinLeastPrivilegePercent > 100 {
		return fieldErr("min_least_privilege_percent", "must be between 0 and 100, got %d", p.MinLeastPrivilegePercent)
	}
	return nil
}

// RotationDays is the rotation age of a secret of an NHI of the given tier.
func (p GovernancePolicy) RotationDays(high bool) int {
	if high {
		return p.RotationDaysHigh
	}
	return p.RotationDaysNormal
}

func (p GovernancePolicy) summary() map[string]any {
	return map[string]any{"expiring_days": p.ExpiringDays, "unused_days": p.UnusedDays, "rotation_days_high": p.RotationDaysHigh,
		"rotation_days_normal": p.RotationDaysNormal, "rotation_notice_days": p.RotationNoticeDays,
		"least_privilege_days": p.LeastPrivilegeDays, "min_least_privilege_percent": p.MinLeastPrivilegePercent}
}

const governanceColumns = `expiring_days, unused_days, rotation_days_high, rotation_days_normal, rotation_notice_days,
 least_privilege_days, min_least_privilege_percent, updated_at`

func getGovernancePolicy(ctx context.Context, q querier, sc Scope, lock string) (GovernancePolicy, bool, error) {
	var p GovernancePolicy
	err := q.QueryRow(ctx, `SELECT `+governanceColumns+` FROM governance_policies WHERE crdb_region = $1 AND tenant_id = $2`+lock,
		sc.Region, sc.TenantID).Scan(&p.ExpiringDays, &p.UnusedDays, &p.RotationDaysHigh, &p.RotationDaysNormal, &p.RotationNoticeDays,
		&p.LeastPrivilegeDays, &p.MinLeastPrivilegePercent, &p.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return DefaultGovernancePolicy(), false, nil
	}
	if err != nil {
		return GovernancePolicy{}, false, fmt.Errorf("read governance policy: %w", err)
	}
	return p, true, nil
}

// GetGovernancePolicy reads the tenant's governance policy (the defaults when it never
// set one).
func (s *Store) GetGovernancePolicy(ctx context.Context, sc Scope) (GovernancePolicy, error) {
	p, _, err := getGovernancePolicy(ctx, s.pool, sc, "")
	return p, classify(err)
}

// UpdateGovernancePolicy replaces the tenant's governance policy with p (validated
// here) and writes a "governance.policy.update" audit event; setting the policy the
// tenant already has changes nothing and writes no event.
func (s *Store) UpdateGovernancePolicy(ctx context.Context, c Change, sc Scope, p GovernancePolicy) (GovernancePolicy, error) {
	if err := p.Validate(); err != nil {
		return GovernancePolicy{}, err
	}
	var out GovernancePolicy
	err := s.tx(ctx, func(tx pgx.Tx) error {
		before, exists, err := getGovernancePolicy(ctx, tx, sc, " FOR UPDATE")
		if err != nil {
			return err
		}
		p.UpdatedAt = before.UpdatedAt
		if p == before {
			out = before
			return nil
		}
		q := `INSERT INTO governance_policies (tenant_id, crdb_region, expiring_days, unused_days, rotation_days_high, rotation_days_normal,
  rotation_notice_days, least_privilege_days, min_least_privilege_percent, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now()) RETURNING ` + governanceColumns
		if exists {
			q = `UPDATE governance_policies SET expiring_days = $3, unused_days = $4, rotation_days_high = $5, rotation_days_normal = $6,
  rotation_notice_days = $7, least_privilege_days = $8, min_least_privilege_percent = $9, updated_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 RETURNING ` + governanceColumns
		}
		if err := tx.QueryRow(ctx, q, sc.TenantID, sc.Region, p.ExpiringDays, p.UnusedDays, p.RotationDaysHigh, p.RotationDaysNormal,
			p.RotationNoticeDays, p.LeastPrivilegeDays, p.MinLeastPrivilegePercent).Scan(&out.ExpiringDays, &out.UnusedDays, &out.RotationDaysHigh,
			&out.RotationDaysNormal, &out.RotationNoticeDays, &out.LeastPrivilegeDays, &out.MinLeastPrivilegePercent, &out.UpdatedAt); err != nil {
			return fmt.Errorf("write governance policy: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "governance.policy.update", targetKind: "tenant", targetID: sc.TenantID,
			before: before.summary(), after: out.summary()})
	})
	return out, err
}

// Owner states of an NHI's owner, judged at one instant (OwnerState).
const (
	OwnerActive     = "active"
	OwnerDisabled   = "disabled"
	OwnerFrozen     = "frozen"
	OwnerOffboarded = "offboarded"
	OwnerErased     = "erased"
	OwnerExpired    = "expired"
	OwnerMissing    = "missing" // no owner row (cannot happen while the foreign key holds)
)

// OwnerState is the state of owner at now: erased, else offboarded, else disabled
// or frozen, else expired (its expiry passed), else active. A nil owner is missing.
func OwnerState(owner *Identity, now time.Time) string {
	switch {
	case owner == nil:
		return OwnerMissing
	case !owner.ErasedAt.IsZero():
		return OwnerErased
	case !owner.OffboardedAt.IsZero():
		return OwnerOffboarded
	case owner.Status == StatusDisabled:
		return OwnerDisabled
	case owner.Status == StatusFrozen:
		return OwnerFrozen
	case !owner.ExpiresAt.IsZero() && !now.Before(owner.ExpiresAt):
		return OwnerExpired
	}
	return OwnerActive
}

// Risk tiers of an NHI (docs/governance.md): high when its attribute "risk_tier" says
// "high", or, unless that attribute says "normal", when it holds an unexpired allow
// binding (directly or through a group) of a sensitive or privileged role; normal
// otherwise.
const (
	TierHigh   = "high"
	TierNormal = "normal"
	// RiskTierAttribute is the identity attribute that sets the tier explicitly.
	RiskTierAttribute = "risk_tier"
)

// Sources of a tier.
const (
	TierFromAttribute = "attribute"
	TierFromRole      = "sensitive_role"
	TierFromDefault   = "default"
)

// holdsSensitiveRoleSQL is true when identity i (an alias in the enclosing query, of
// partition $1 and tenant $2) holds an unexpired allow binding, directly or through a
// group, of a sensitive or privileged role.
const holdsSensitiveRoleSQL = `EXISTS (SELECT 1 FROM bindings b JOIN roles r ON r.crdb_region = b.crdb_region AND r.tenant_id = b.tenant_id AND r.id = b.role_id
  WHERE b.crdb_region = $1 AND b.tenant_id = $2 AND b.effect = 'allow' AND (b.expires_at IS NULL OR b.expires_at > now())
    AND (r.sensitive OR r.privileged)
    AND ((b.principal_kind = 'identity' AND b.principal_id = i.id)
      OR (b.principal_kind = 'group' AND EXISTS (SELECT 1 FROM group_members m
        WHERE m.crdb_region = $1 AND m.tenant_id = $2 AND m.group_id = b.principal_id AND m.identity_id = i.id))))`

// highRiskSQL is true when identity i is of tier high (see TierHigh).
const highRiskSQL = `(coalesce(i.attributes->>'risk_tier', '') = 'high' OR (coalesce(i.attributes->>'risk_tier', '') <> 'normal' AND ` + holdsSensitiveRoleSQL + `))`

// tierOf is the tier of identity i, given whether it holds a sensitive role.
func tierOf(i Identity, sensitive bool) (tier, source string) {
	switch i.Attributes[RiskTierAttribute] {
	case TierHigh:
		return TierHigh, TierFromAttribute
	case TierNormal:
		return TierNormal, TierFromAttribute
	}
	if sensitive {
		return TierHigh, TierFromRole
	}
	return TierNormal, TierFromDefault
}

// InventoryFilter narrows ListInventory; zero fields match every NHI.
type InventoryFilter struct {
	Kind    string // an NHI kind
	OwnerID string
}

// InventoryEntry is one NHI of the inventory with what its findings are judged on.
type InventoryEntry struct {
	Identity   Identity
	Owner      *Identity // nil when the owner row is missing
	OwnerState string
	// Credentials are the NHI's unrevoked credentials (expired ones included, until
	// the sweeper revokes them), oldest first.
	Credentials []Credential
	Federated   bool // a trust policy maps to it
	RiskTier    string
	TierSource  string
}

// Inventory is one page of ListInventory.
type Inventory struct {
	Entries []InventoryEntry
	Next    string    // the next page's token; "" on the last page
	Now     time.Time // the database's clock, which the entries are judged at
}

// ListInventory pages through the tenant's non-human identities matching f, ordered by
// id, with their owner, unrevoked credentials, federation and risk tier, judged at the
// database's now(), in one read-only transaction.
func (s *Store) ListInventory(ctx context.Context, sc Scope, f InventoryFilter, p Page) (Inventory, error) {
	limit, err := p.limit()
	if err != nil {
		return Inventory{}, err
	}
	if f.Kind != "" && (f.Kind == KindHuman || !isKind(f.Kind)) {
		return Inventory{}, fieldErr("kind", "must be a non-human kind: service_account, workload, device or agent")
	}
	if f.OwnerID != "" {
		if _, err := parseID("owner_id", f.OwnerID); err != nil {
			return Inventory{}, err
		}
	}
	after := uuid.Nil.String()
	if err := p.decode(&after); err != nil {
		return Inventory{}, err
	}
	if _, err := uuid.Parse(after); err != nil {
		return Inventory{}, fieldErr("page_token", "not a token returned by this listing")
	}
	var out Inventory
	err = s.readTx(ctx, func(tx pgx.Tx) error {
		out = Inventory{}
		if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&out.Now); err != nil {
			return fmt.Errorf("read clock: %w", err)
		}
		rows, err := tx.Query(ctx, `SELECT `+identityColumns+`, `+highRiskSQL+` FROM identities i
WHERE i.crdb_region = $1 AND i.tenant_id = $2 AND i.kind <> 'human' AND i.id > $3::UUID
  AND ($4 = '' OR i.kind = $4) AND ($5 = '' OR i.owner_id = nullif($5, '')::UUID)
ORDER BY i.id LIMIT $6`, sc.Region, sc.TenantID, after, f.Kind, f.OwnerID, limit+1)
		if err != nil {
			return fmt.Errorf("read identities: %w", err)
		}
		var sensitive []bool
		is, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Identity, error) {
			var hi bool
			i, err := scanIdentityExtra(sc.TenantID, r, &hi)
			sensitive = append(sensitive, hi)
			return i, err
		})
		if err != nil {
			return fmt.Errorf("read identities: %w", err)
		}
		if len(is) > limit {
			is, sensitive = is[:limit], sensitive[:limit]
			out.Next = encodeToken(is[limit-1].ID)
		}
		if len(is) == 0 {
			return nil
		}
		ids, owners := make([]string, len(is)), make([]string, 0, len(is))
		for k, i := range is {
			ids[k] = i.ID
			if i.OwnerID != "" {
				owners = append(owners, i.OwnerID)
			}
		}
		ownerRows, err := tx.Query(ctx, `SELECT `+identityColumns+` FROM identities
WHERE crdb_region = $1 AND tenant_id = $2 AND id = ANY($3::UUID[])`, sc.Region, sc.TenantID, owners)
		if err != nil {
			return fmt.Errorf("read owners: %w", err)
		}
		os, err := pgx.CollectRows(ownerRows, func(r pgx.CollectableRow) (Identity, error) { return scanIdentity(sc.TenantID, r) })
		if err != nil {
			return fmt.Errorf("read owners: %w", err)
		}
		byID := map[string]*Identity{}
		for k := range os {
			byID[os[k].ID] = &os[k]
		}
		credRows, err := tx.Query(ctx, `SELECT `+credentialColumns+` FROM credentials
WHERE crdb_region = $1 AND tenant_id = $2 AND identity_id = ANY($3::UUID[]) AND revoked_at IS NULL ORDER BY created_at, id`,
			sc.Region, sc.TenantID, ids)
		if err != nil {
			return fmt.Errorf("read credentials: %w", err)
		}
		cs, err := pgx.CollectRows(credRows, func(r pgx.CollectableRow) (Credential, error) { return scanCredential(r) })
		if err != nil {
			return fmt.Errorf("read credentials: %w", err)
		}
		fed, err := collectIDs(tx.Query(ctx, `SELECT DISTINCT identity_id::TEXT FROM federation_policies
WHERE crdb_region = $1 AND tenant_id = $2 AND identity_id = ANY($3::UUID[])`, sc.Region, sc.TenantID, ids))
		if err != nil {
			return fmt.Errorf("read trust policies: %w", err)
		}
		for k, i := range is {
			e := InventoryEntry{Identity: i, Owner: byID[i.OwnerID], Federated: slices.Contains(fed, i.ID)}
			e.OwnerState = OwnerState(e.Owner, out.Now)
			e.RiskTier, e.TierSource = tierOf(i, sensitive[k])
			for _, c := range cs {
				if c.IdentityID == i.ID {
					e.Credentials = append(e.Credentials, c)
				}
			}
			out.Entries = append(out.Entries, e)
		}
		return nil
	})
	return out, err
}

func scanIdentityExtra(tenantID string, r pgx.Row, extra ...any) (Identity, error) {
	i := Identity{TenantID: tenantID}
	dest := append([]any{&i.ID, &i.Kind, &i.DisplayName, &i.Email, &i.Attributes, &i.OwnerID, &i.Purpose, &i.Status,
		&i.ExpiresAt, &i.TokensValidAfter, &i.CreatedAt, &i.UpdatedAt, &i.ManagerID, &i.OffboardedAt, &i.ErasedAt}, extra...)
	err := r.Scan(dest...)
	i.ExpiresAt, i.TokensValidAfter = zeroEpoch(i.ExpiresAt), zeroEpoch(i.TokensValidAfter)
	i.OffboardedAt, i.ErasedAt = zeroEpoch(i.OffboardedAt), zeroEpoch(i.ErasedAt)
	if i.Attributes == nil {
		i.Attributes = map[string]any{}
	}
	return i, err
}

// readTx runs fn in a read-only SERIALIZABLE transaction (one consistent view),
// retried like tx.
func (s *Store) readTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET TRANSACTION READ ONLY`); err != nil {
			return fmt.Errorf("read only: %w", err)
		}
		return fn(tx)
	})
}

// BindingUse is how an identity used one binding for one permission: the allowed
// decisions of the decision log that named the binding.
type BindingUse struct {
	BindingID  string
	Permission string // the permission checked (not the role's pattern)
	LastUsed   time.Time
	Count      int
}

// GrantUsage returns how identity identityID used its bindings since since: one
// BindingUse per (binding, permission) of the allowed decisions of the tenant's
// decision log made at or after since, sorted by binding id then permission. A
// binding absent from the result was not used since then. It reads the decision log
// only: the caller matches the uses with the grants it knows (a binding's role
// patterns) and keeps since within the tenant's decision retention, beyond which
// nothing is logged. Review campaigns call it to show an access's last use and to
// suggest removing what was not used.
func (s *Store) GrantUsage(ctx context.Context, sc Scope, identityID string, since time.Time) ([]BindingUse, error) {
	if _, err := parseID("identity_id", identityID); err != nil {
		return nil, err
	}
	m, err := grantUsageOf(ctx, s.pool, sc, []string{identityID}, since)
	return m[identityID], err
}

// grantUsageOf is GrantUsage for several identities in one statement, on q (the pool,
// or a transaction).
func grantUsageOf(ctx context.Context, q querier, sc Scope, ids []string, since time.Time) (map[string][]BindingUse, error) {
	out := map[string][]BindingUse{}
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := q.Query(ctx, `SELECT d.principal_id, u.id, d.permission, max(d.at), count(*) FROM decisions d, unnest(d.binding_ids) AS u(id)
WHERE d.crdb_region = $1 AND d.tenant_id = $2 AND d.principal_id = ANY($3::TEXT[]) AND d.allowed AND d.at >= $4
GROUP BY d.principal_id, u.id, d.permission ORDER BY d.principal_id, u.id, d.permission`, sc.Region, sc.TenantID, ids, since)
	if err != nil {
		return nil, classify(err)
	}
	type row struct {
		principal string
		use       BindingUse
	}
	rs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		var n int64
		err := r.Scan(&x.principal, &x.use.BindingID, &x.use.Permission, &x.use.LastUsed, &n)
		x.use.Count = int(n)
		return x, err
	})
	if err != nil {
		return nil, classify(err)
	}
	for _, x := range rs {
		out[x.principal] = append(out[x.principal], x.use)
	}
	return out, nil
}

// GrantUsageOf is GrantUsage for several identities (the inventory's page) in one
// statement, keyed by identity id.
func (s *Store) GrantUsageOf(ctx context.Context, sc Scope, ids []string, since time.Time) (map[string][]BindingUse, error) {
	for _, id := range ids {
		if _, err := parseID("identity_id", id); err != nil {
			return nil, err
		}
	}
	return grantUsageOf(ctx, s.pool, sc, ids, since)
}

// LastDecisions returns, per identity of ids, the time of its newest decision
// (allowed or denied) at or after since; identities without one are absent.
func (s *Store) LastDecisions(ctx context.Context, sc Scope, ids []string, since time.Time) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT principal_id, max(at) FROM decisions
WHERE crdb_region = $1 AND tenant_id = $2 AND principal_id = ANY($3::TEXT[]) AND at >= $4 GROUP BY principal_id`, sc.Region, sc.TenantID, ids, since)
	if err != nil {
		return nil, classify(err)
	}
	type row struct {
		id string
		at time.Time
	}
	rs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.id, &x.at)
	})
	if err != nil {
		return nil, classify(err)
	}
	for _, x := range rs {
		out[x.id] = x.at
	}
	return out, nil
}
