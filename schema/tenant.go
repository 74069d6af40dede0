package schema

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Tenant residency values.
const (
	ResidencyRegion      = "region"       // data only in the home region
	ResidencySuperRegion = "super_region" // data anywhere in the home region's super region

	// Residency policies: may a node outside the tenant's residency serve it?
	ResidencyStrict  = "strict"  // never: a request is refused rather than served outside
	ResidencyRelaxed = "relaxed" // degraded serving anywhere while the home region is unreachable
)

// Status values for tenants and identities.
const (
	StatusActive   = "active"
	StatusDisabled = "disabled"
)

// Tenant is a row of the GLOBAL tenants table.
type Tenant struct {
	ID         string
	Name       string
	HomeRegion string
	Residency  string
	// ResidencyPolicy is ResidencyStrict or ResidencyRelaxed.
	ResidencyPolicy string
	// ServeRegions lists, comma-separated, the regions whose nodes may serve a
	// strict tenant (its home region, or the members of the home region's super
	// region); "" means any. GetTenant fills it; other reads leave it "".
	ServeRegions   string
	Status         string
	PolicyRevision int64
	PlacementEpoch int64
	CreatedAt      time.Time
	UpdatedAt      time.Time
	// RehomingTo is the region a batched rehome is moving the tenant to, "" when none.
	// While it is set the tenant is fenced: changes are refused with ErrRehoming and
	// nodes refuse its calls (docs/decisions/0019-batched-rehome.md).
	RehomingTo string
	// AccessTokenTTL is the lifetime of the tenant's access tokens.
	AccessTokenTTL time.Duration
	// APIKeyMaxLifetime caps the expiry of new API keys.
	APIKeyMaxLifetime time.Duration
	// SigningAlg is the JWS algorithm of the tenant's access tokens: SigningEdDSA
	// (the default) or SigningRS256.
	SigningAlg string
	// StepUpWindow is how recent a login with a second factor a sensitive call
	// needs; 0 means the node's default.
	StepUpWindow time.Duration
	// DecisionRetention is how long the decision log keeps the tenant's decisions
	// (MinDecisionRetention to MaxDecisionRetention).
	DecisionRetention time.Duration
	// Limits are the tenant's request-rate limits per node (zero: the node's defaults).
	Limits TenantLimits
}

// Signing algorithms of a tenant's tokens.
const (
	SigningEdDSA = "EdDSA"
	SigningRS256 = "RS256"
)

func checkSigningAlg(field, alg string) error {
	if alg != SigningEdDSA && alg != SigningRS256 {
		return fieldErr(field, "must be %q or %q", SigningEdDSA, SigningRS256)
	}
	return nil
}

// Bounds of the tenant token policy.
const (
	MinAccessTokenTTL     = time.Minute
	MaxAccessTokenTTL     = 24 * time.Hour
	MinAPIKeyLifetime     = 24 * time.Hour
	MinStepUpWindow       = time.Minute
	MaxStepUpWindow       = 24 * time.Hour
	MaxAPIKeyLifetime     = 5 * 365 * 24 * time.Hour
	DefaultAccessTokenTTL = 15 * time.Minute
)

// Scope is where a tenant's rows live: every per-tenant statement names both fields.
type Scope struct {
	TenantID string
	Region   string // the tenant's home region: the crdb_region of all its rows

	judgedAt int64            // see JudgedAt
	guard    *MembershipGuard // see GuardMemberships (a pointer: Scope stays comparable)
}

// MembershipGuard authorizes the group memberships membership rules would give an
// identity because of a change to it (its creation, its attributes, its re-enabling),
// inside the change's transaction and before it commits; an error refuses the change.
// It returns the policy revision it judged at (0: none), which must still be current
// when the change commits.
type MembershipGuard func(ctx context.Context, added []Membership) (int64, error)

// GuardMemberships returns sc with g judging the rule memberships an identity change
// would add (see MembershipGuard); nil judges nothing.
func (sc Scope) GuardMemberships(g MembershipGuard) Scope {
	sc.guard = nil
	if g != nil {
		sc.guard = &g
	}
	return sc
}

// JudgedAt returns sc for a policy change (roles, groups, memberships, bindings) that
// the caller authorized against the tenant's policy at revision rev: the change is
// refused (ErrPrecondition, nothing written) if the policy has changed since, so the
// authorization held for exactly the policy the change applies to. rev 0 checks
// nothing.
func (sc Scope) JudgedAt(rev int64) Scope {
	sc.judgedAt = rev
	return sc
}

// Scope returns the partition the tenant's rows live in.
func (t Tenant) Scope() Scope { return Scope{TenantID: t.ID, Region: t.HomeRegion} }

// NewTenant is the input of CreateTenant.
type NewTenant struct {
	ID         string
	Name       string
	HomeRegion string
	Residency  string // "" means ResidencyRegion
	// ResidencyPolicy: "" means ResidencyStrict for super_region residency and
	// ResidencyRelaxed for region residency.
	ResidencyPolicy string
	SigningAlg      string // "" means SigningEdDSA
	// DecisionRetention: 0 means DefaultDecisionRetention.
	DecisionRetention time.Duration
}

const tenantColumns = `id, name, home_region, residency, status, policy_revision, placement_epoch, created_at, updated_at,
 access_token_ttl_seconds, api_key_max_lifetime_seconds, signing_alg, step_up_window_seconds, decision_retention_seconds,
 decision_rate, decision_burst, token_rate, token_burst, write_rate, write_burst, residency_policy, COALESCE(rehome_to, '')`

func scanTenant(r pgx.Row, extra ...any) (Tenant, error) {
	var t Tenant
	var ttl, keyMax, stepUp, retention int64
	err := r.Scan(append([]any{&t.ID, &t.Name, &t.HomeRegion, &t.Residency, &t.Status, &t.PolicyRevision, &t.PlacementEpoch, &t.CreatedAt, &t.UpdatedAt,
		&ttl, &keyMax, &t.SigningAlg, &stepUp, &retention,
		&t.Limits.Decisions.PerSecond, &t.Limits.Decisions.Burst, &t.Limits.Tokens.PerSecond, &t.Limits.Tokens.Burst,
		&t.Limits.Writes.PerSecond, &t.Limits.Writes.Burst, &t.ResidencyPolicy, &t.RehomingTo}, extra...)...)
	t.AccessTokenTTL, t.APIKeyMaxLifetime = time.Duration(ttl)*time.Second, time.Duration(keyMax)*time.Second
	t.StepUpWindow = time.Duration(stepUp) * time.Second
	t.DecisionRetention = time.Duration(retention) * time.Second
	return t, err
}

// CreateTenant creates a tenant and its first audit event, in its home region.
func (s *Store) CreateTenant(ctx context.Context, c Change, in NewTenant) (Tenant, error) {
	if err := checkNewTenant(&in); err != nil {
		return Tenant{}, err
	}
	var t Tenant
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		t, err = s.insertTenant(ctx, tx, c, in)
		return err
	})
	return t, err
}

func checkNewTenant(in *NewTenant) error {
	if in.Residency == "" {
		in.Residency = ResidencyRegion
	}
	if in.ResidencyPolicy == "" {
		in.ResidencyPolicy = ResidencyRelaxed
		if in.Residency == ResidencySuperRegion {
			in.ResidencyPolicy = ResidencyStrict
		}
	}
	if err := checkResidencyPolicy("residency_policy", in.ResidencyPolicy); err != nil {
		return err
	}
	if in.SigningAlg == "" {
		in.SigningAlg = SigningEdDSA
	}
	if in.DecisionRetention == 0 {
		in.DecisionRetention = DefaultDecisionRetention
	}
	if err := checkDecisionRetention("decision_retention", in.DecisionRetention); err != nil {
		return err
	}
	if err := checkTenantID("id", in.ID); err != nil {
		return err
	}
	if err := checkSigningAlg("signing_algorithm", in.SigningAlg); err != nil {
		return err
	}
	if err := checkText("name", in.Name, true, 200); err != nil {
		return err
	}
	if in.Residency != ResidencyRegion && in.Residency != ResidencySuperRegion {
		return fieldErr("residency", "must be %q or %q", ResidencyRegion, ResidencySuperRegion)
	}
	if in.HomeRegion == "" {
		return fieldErr("home_region", "required")
	}
	return nil
}

// insertTenant writes a checked new tenant and its audit event inside tx.
func (s *Store) insertTenant(ctx context.Context, tx pgx.Tx, c Change, in NewTenant) (Tenant, error) {
	if err := checkHomeRegion(ctx, tx, in.HomeRegion, in.Residency); err != nil {
		return Tenant{}, err
	}
	row := tx.QueryRow(ctx, `
INSERT INTO tenants (id, name, home_region, residency, signing_alg, decision_retention_seconds, residency_policy) VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO NOTHING
RETURNING `+tenantColumns, in.ID, in.Name, in.HomeRegion, in.Residency, in.SigningAlg, int64(in.DecisionRetention/time.Second), in.ResidencyPolicy)
	t, err := scanTenant(row)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return Tenant{}, fmt.Errorf("%w: tenant %q already exists", ErrConflict, in.ID)
		}
		return Tenant{}, fmt.Errorf("insert tenant: %w", err)
	}
	return t, s.writeAudit(ctx, tx, t.Scope(), c, audit{action: "tenant.create", targetKind: "tenant", targetID: t.ID, after: tenantSummary(t)})
}

// NewTenantAdmin is the first tenant admin's OAuth client secret, generated and hashed
// by the caller: KeyID is the client id's key, Hash the secret's hash.
type NewTenantAdmin struct {
	KeyID string
	Hash  []byte
}

// TenantAdminLifetime is how long the first tenant admin (a service account, which
// must expire) lives; UpdateIdentity extends it.
const TenantAdminLifetime = 365 * 24 * time.Hour

// TenantAdmin is the first tenant admin CreateTenantWithAdmin made, and the human
// that owns it.
type TenantAdmin struct {
	Owner      Identity
	Identity   Identity
	Credential Credential
	Binding    Binding
}

// CreateTenantWithAdmin creates a tenant and, in the same transaction, its first
// tenant admin (issue 13): a service account "tenant-admin" (expiring after
// TenantAdminLifetime) owned by a new human "tenant owner", an OAuth client secret for
// it, and a binding of the built-in tenant-admin role on scope "*". Either
// all of it is written or none.
func (s *Store) CreateTenantWithAdmin(ctx context.Context, c Change, in NewTenant, admin NewTenantAdmin) (Tenant, TenantAdmin, error) {
	if err := checkNewTenant(&in); err != nil {
		return Tenant{}, TenantAdmin{}, err
	}
	var t Tenant
	var out TenantAdmin
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		if t, err = s.insertTenant(ctx, tx, c, in); err != nil {
			return err
		}
		sc := t.Scope()
		// Every non-human identity has an accountable human owner: the tenant's owner,
		// an identity with no credentials until someone gives it some.
		if out.Owner, err = scanIdentity(sc.TenantID, tx.QueryRow(ctx, `
INSERT INTO identities (tenant_id, crdb_region, kind, display_name, attributes)
VALUES ($1, $2, $3, 'tenant owner', '{}') RETURNING `+identityColumns, sc.TenantID, sc.Region, KindHuman)); err != nil {
			return fmt.Errorf("insert tenant owner: %w", err)
		}
		if out.Identity, err = scanIdentity(sc.TenantID, tx.QueryRow(ctx, `
INSERT INTO identities (tenant_id, crdb_region, kind, display_name, attributes, owner_id, purpose, expires_at)
VALUES ($1, $2, $3, 'tenant-admin', '{}', $4, 'first tenant admin, made with the tenant', now() + $5 * INTERVAL '1 second') RETURNING `+identityColumns,
			sc.TenantID, sc.Region, KindServiceAccount, out.Owner.ID, int64(TenantAdminLifetime/time.Second))); err != nil {
			return fmt.Errorf("insert tenant admin: %w", err)
		}
		for _, i := range []Identity{out.Owner, out.Identity} {
			if err := s.writeAudit(ctx, tx, sc, c, audit{action: "identity.create", targetKind: "identity", targetID: i.ID,
				after: identitySummary(i)}); err != nil {
				return err
			}
		}
		if out.Credential, err = scanCredential(tx.QueryRow(ctx, `
INSERT INTO credentials (tenant_id, crdb_region, identity_id, kind, key_id, secret_hash, name, params, allowed_audiences, allowed_scopes)
VALUES ($1, $2, $3, $4, $5, $6, 'bootstrap', '{"admin": false}', '{}', '{}') RETURNING `+credentialColumns,
			sc.TenantID, sc.Region, out.Identity.ID, CredClientSecret, admin.KeyID, admin.Hash)); err != nil {
			return fmt.Errorf("insert tenant admin credential: %w", err)
		}
		if err := s.writeAudit(ctx, tx, sc, c, audit{action: "credential.create", targetKind: "credential", targetID: out.Credential.ID,
			after: credentialSummary(out.Credential)}); err != nil {
			return err
		}
		if err := ensureBuiltinRole(ctx, tx, sc, RoleTenantAdmin); err != nil {
			return err
		}
		if out.Binding, err = scanBinding(tx.QueryRow(ctx, `INSERT INTO bindings (tenant_id, crdb_region, effect, principal_kind, principal_id,
  role_id, scope, granted_by, justification)
VALUES ($1, $2, 'allow', 'identity', $3, $4, '*', $5, 'first tenant admin, made with the tenant') RETURNING `+bindingColumns,
			sc.TenantID, sc.Region, out.Identity.ID, RoleTenantAdmin, c.Actor)); err != nil {
			return fmt.Errorf("insert tenant admin binding: %w", err)
		}
		rev, err := bumpRevision(ctx, tx, sc.TenantID)
		if err != nil {
			return err
		}
		t.PolicyRevision = rev
		after := bindingSummary(out.Binding)
		after["policy_revision"] = rev
		return s.writeAudit(ctx, tx, sc, c, audit{action: "binding.create", targetKind: "binding", targetID: out.Binding.ID, after: after})
	})
	return t, out, err
}

func checkHomeRegion(ctx context.Context, q querier, region, residency string) error {
	var superRegion *string
	err := q.QueryRow(ctx, `SELECT super_region FROM regions WHERE name = $1`, region).Scan(&superRegion)
	if errors.Is(err, pgx.ErrNoRows) {
		known, lerr := regionNames(ctx, q)
		if lerr != nil {
			return lerr
		}
		return fieldErr("home_region", "unknown region %q (this database serves %v)", truncate(region, 70), known)
	}
	if err != nil {
		return fmt.Errorf("read region: %w", err)
	}
	if residency == ResidencySuperRegion && superRegion == nil {
		return fieldErr("residency", "super_region residency needs a home region inside a super region; %q is in none", region)
	}
	return nil
}

func tenantSummary(t Tenant) map[string]any {
	m := map[string]any{"name": t.Name, "home_region": t.HomeRegion, "residency": t.Residency, "status": t.Status,
		"access_token_ttl": t.AccessTokenTTL.String(), "api_key_max_lifetime": t.APIKeyMaxLifetime.String(), "signing_alg": t.SigningAlg,
		"step_up_window": t.StepUpWindow.String(), "decision_retention": t.DecisionRetention.String(), "residency_policy": t.ResidencyPolicy}
	if t.Limits.Custom() { // tenants on the node's defaults read as they did before limits existed
		m["limits"] = map[string]any{"decisions": t.Limits.Decisions.String(), "tokens": t.Limits.Tokens.String(), "writes": t.Limits.Writes.String()}
	}
	return m
}

// GetTenant reads one tenant. The tenants table is GLOBAL: the read is served locally in
// every region and is never stale.
func (s *Store) GetTenant(ctx context.Context, id string) (Tenant, error) {
	if err := checkTenantID("tenant_id", id); err != nil {
		return Tenant{}, err
	}
	var serve string
	t, err := scanTenant(s.pool.QueryRow(ctx, `SELECT `+tenantColumns+`,
  CASE WHEN residency_policy <> 'strict' THEN ''
       WHEN residency = 'super_region' THEN coalesce((SELECT string_agg(m.name, ',' ORDER BY m.name) FROM regions h JOIN regions m ON m.super_region = h.super_region
         WHERE h.name = tenants.home_region), home_region)
       ELSE home_region END
FROM tenants WHERE id = $1`, id), &serve)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return Tenant{}, fmt.Errorf("%w: tenant %q", ErrNotFound, id)
		}
		return Tenant{}, classify(err)
	}
	t.ServeRegions = serve
	return t, nil
}

func checkResidencyPolicy(field, p string) error {
	if p != ResidencyStrict && p != ResidencyRelaxed {
		return fieldErr(field, "must be %q or %q", ResidencyStrict, ResidencyRelaxed)
	}
	return nil
}

// ListTenants pages through all tenants ordered by id.
func (s *Store) ListTenants(ctx context.Context, p Page) ([]Tenant, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	var after string
	if err := p.decode(&after); err != nil {
		return nil, "", err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id > $1 ORDER BY id LIMIT $2`, after, limit+1)
	if err != nil {
		return nil, "", classify(err)
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tenant, error) { return scanTenant(r) })
	if err != nil {
		return nil, "", classify(err)
	}
	next := ""
	if len(ts) > limit {
		ts = ts[:limit]
		next = encodeToken(ts[limit-1].ID)
	}
	return ts, next, nil
}

// TenantUpdate lists the fields to change; nil fields stay as they are.
type TenantUpdate struct {
	Name              *string
	AccessTokenTTL    *time.Duration
	APIKeyMaxLifetime *time.Duration
	SigningAlg        *string
	StepUpWindow      *time.Duration
	DecisionRetention *time.Duration
	ResidencyPolicy   *string
}

// UpdateTenant changes a tenant's mutable fields.
func (s *Store) UpdateTenant(ctx context.Context, c Change, id string, u TenantUpdate) (Tenant, error) {
	if err := checkTenantID("id", id); err != nil {
		return Tenant{}, err
	}
	if u.Name != nil {
		if err := checkText("name", *u.Name, true, 200); err != nil {
			return Tenant{}, err
		}
	}
	if d := u.AccessTokenTTL; d != nil && (*d < MinAccessTokenTTL || *d > MaxAccessTokenTTL || *d%time.Second != 0) {
		return Tenant{}, fieldErr("access_token_ttl", "must be whole seconds between %s and %s", MinAccessTokenTTL, MaxAccessTokenTTL)
	}
	if d := u.APIKeyMaxLifetime; d != nil && (*d < MinAPIKeyLifetime || *d > MaxAPIKeyLifetime || *d%time.Second != 0) {
		return Tenant{}, fieldErr("api_key_max_lifetime", "must be whole seconds between %s and %s", MinAPIKeyLifetime, MaxAPIKeyLifetime)
	}
	if u.SigningAlg != nil {
		if err := checkSigningAlg("signing_algorithm", *u.SigningAlg); err != nil {
			return Tenant{}, err
		}
	}
	if d := u.StepUpWindow; d != nil && (*d < MinStepUpWindow || *d > MaxStepUpWindow || *d%time.Second != 0) {
		return Tenant{}, fieldErr("step_up_window", "must be whole seconds between %s and %s", MinStepUpWindow, MaxStepUpWindow)
	}
	if d := u.DecisionRetention; d != nil {
		if err := checkDecisionRetention("decision_retention", *d); err != nil {
			return Tenant{}, err
		}
	}
	if p := u.ResidencyPolicy; p != nil {
		if err := checkResidencyPolicy("residency_policy", *p); err != nil {
			return Tenant{}, err
		}
	}
	return s.changeTenant(ctx, c, id, "tenant.update", func(t *Tenant) {
		if u.Name != nil {
			t.Name = *u.Name
		}
		if u.AccessTokenTTL != nil {
			t.AccessTokenTTL = *u.AccessTokenTTL
		}
		if u.APIKeyMaxLifetime != nil {
			t.APIKeyMaxLifetime = *u.APIKeyMaxLifetime
		}
		if u.SigningAlg != nil {
			t.SigningAlg = *u.SigningAlg
		}
		if u.StepUpWindow != nil {
			t.StepUpWindow = *u.StepUpWindow
		}
		if u.DecisionRetention != nil {
			t.DecisionRetention = *u.DecisionRetention
		}
		if u.ResidencyPolicy != nil {
			t.ResidencyPolicy = *u.ResidencyPolicy
		}
	})
}

// SetTenantStatus enables or disables a tenant. Setting the status it already has
// changes nothing and writes no audit event.
func (s *Store) SetTenantStatus(ctx context.Context, c Change, id, status string) (Tenant, error) {
	if err := checkTenantID("id", id); err != nil {
		return Tenant{}, err
	}
	if status != StatusActive && status != StatusDisabled {
		return Tenant{}, fieldErr("status", "must be %q or %q", StatusActive, StatusDisabled)
	}
	action := "tenant.enable"
	if status == StatusDisabled {
		action = "tenant.disable"
	}
	return s.changeTenant(ctx, c, id, action, func(t *Tenant) { t.Status = status })
}

// changeTenant reads the tenant for update, applies edit, and writes it back with its
// audit event when anything changed.
func (s *Store) changeTenant(ctx context.Context, c Change, id, action string, edit func(*Tenant)) (Tenant, error) {
	var out Tenant
	err := s.tx(ctx, func(tx pgx.Tx) error {
		before, err := scanTenant(tx.QueryRow(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("%w: tenant %q", ErrNotFound, id)
			}
			return fmt.Errorf("read tenant: %w", err)
		}
		after := before
		edit(&after)
		if after == before {
			out = before
			return nil
		}
		out, err = scanTenant(tx.QueryRow(ctx, `
UPDATE tenants SET name = $2, status = $3, access_token_ttl_seconds = $4, api_key_max_lifetime_seconds = $5, signing_alg = $6,
  step_up_window_seconds = $7, decision_retention_seconds = $8,
  decision_rate = $9, decision_burst = $10, token_rate = $11, token_burst = $12, write_rate = $13, write_burst = $14,
  residency_policy = $15, updated_at = now()
WHERE id = $1
RETURNING `+tenantColumns, id, after.Name, after.Status, int64(after.AccessTokenTTL/time.Second), int64(after.APIKeyMaxLifetime/time.Second),
			after.SigningAlg, int64(after.StepUpWindow/time.Second), int64(after.DecisionRetention/time.Second),
			after.Limits.Decisions.PerSecond, after.Limits.Decisions.Burst, after.Limits.Tokens.PerSecond, after.Limits.Tokens.Burst,
			after.Limits.Writes.PerSecond, after.Limits.Writes.Burst, after.ResidencyPolicy))
		if err != nil {
			return fmt.Errorf("update tenant: %w", err)
		}
		return s.writeAudit(ctx, tx, out.Scope(), c, audit{action: action, targetKind: "tenant", targetID: id,
			before: tenantSummary(before), after: tenantSummary(out)})
	})
	return out, err
}
