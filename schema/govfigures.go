package schema

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Governance figures: how well a tenant's access is governed, computed from its rows
// in the home partition (docs/governance.md, "Governance figures"). Flows (provision,
// deprovision, logins, use of grants) count what happened in a window; stocks
// (orphaned NHIs, MFA coverage, …) are the state at the time of computing.

// GovernanceFigures are one tenant's figures at At, flows over [Since, At).
type GovernanceFigures struct {
	At    time.Time `json:"at"`
	Since time.Time `json:"since"`

	// Provision: identities created in the window and the time from creation to the
	// first access they held (a direct allow binding, or a membership of a group with
	// one, whichever came later of the two). Grants since removed are not seen.
	Provisioned           int     `json:"provisioned"`
	ProvisionedNoAccess   int     `json:"provisioned_without_access"`
	ProvisionP50Seconds   float64 `json:"provision_p50_seconds"`
	ProvisionP95Seconds   float64 `json:"provision_p95_seconds"`
	Deprovisioned         int     `json:"deprovisioned"`
	DeprovisionP50Seconds float64 `json:"deprovision_p50_seconds"`
	DeprovisionP95Seconds float64 `json:"deprovision_p95_seconds"`
	// DisabledWithAccess: disabled identities (not offboarded) that still hold a
	// binding or a group membership: deprovisioning not finished.
	DisabledWithAccess int `json:"disabled_with_access"`

	Humans       int `json:"humans"`        // active, not erased
	HumansMFA    int `json:"humans_mfa"`    // of those, with a confirmed TOTP enrollment
	NHIs         int `json:"nhis"`          // non-human, not erased, not disabled
	OrphanedNHIs int `json:"orphaned_nhis"` // of those, owner disabled, frozen, offboarded, erased or expired
	FrozenNHIs   int `json:"frozen_nhis"`
	// NHIs by how they authenticate: a live API key or client secret (static), a
	// federation policy mapping to them (federated), both, or neither.
	NHIStaticOnly    int `json:"nhis_static_only"`
	NHIFederatedOnly int `json:"nhis_federated_only"`
	NHIStaticAndFed  int `json:"nhis_static_and_federated"`
	NHINoCredential  int `json:"nhis_without_credentials"`

	// Least privilege: grants held (an active identity × a live allow binding it
	// holds directly or through a group) and those an allowed decision in the window
	// used.
	GrantsHeld int `json:"grants_held"`
	GrantsUsed int `json:"grants_used"`

	// Policy coverage: distinct resources checked in the window (at most
	// coverageSample of them), those a live allow binding covers, and those a binding
	// held by an active human (directly or through a group) covers: someone
	// accountable.
	ResourcesChecked int `json:"resources_checked"`
	ResourcesCovered int `json:"resources_covered"`
	ResourcesOwned   int `json:"resources_owned"`

	LoginSuccesses int            `json:"login_successes"`
	LoginFailures  map[string]int `json:"login_failures"` // by reason
}

// Ratios; NaN when there is nothing to divide by (no data is not 0 %).
func (f GovernanceFigures) LeastPrivilegeRatio() float64 { return ratio(f.GrantsUsed, f.GrantsHeld) }
func (f GovernanceFigures) PolicyCoverageRatio() float64 {
	return ratio(f.ResourcesCovered, f.ResourcesChecked)
}
func (f GovernanceFigures) OwnershipRatio() float64 {
	return ratio(f.ResourcesOwned, f.ResourcesChecked)
}
func (f GovernanceFigures) MFACoverageRatio() float64 { return ratio(f.HumansMFA, f.Humans) }
func (f GovernanceFigures) LoginSuccessRatio() float64 {
	failed := 0
	for _, n := range f.LoginFailures {
		failed += n
	}
	return ratio(f.LoginSuccesses, f.LoginSuccesses+failed)
}

func ratio(a, b int) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

// coverageSample bounds the distinct resources policy coverage looks at.
const coverageSample = 20000

// GovernanceFigures computes the tenant's figures at now over [since, now). It reads
// only the tenant's home partition; the decision log part scans the window's
// decisions once, so callers run it periodically, not per request.
func (s *Store) GovernanceFigures(ctx context.Context, sc Scope, since, now time.Time) (GovernanceFigures, error) {
	if !since.Before(now) {
		return GovernanceFigures{}, fieldErr("since", "must be before now")
	}
	f := GovernanceFigures{At: now.UTC(), Since: since.UTC(), LoginFailures: map[string]int{}}
	args := pgx.NamedArgs{"region": sc.Region, "tenant": sc.TenantID, "since": since, "now": now, "sample": coverageSample}
	steps := []struct {
		what string
		run  func() error
	}{
		{"provisioning", func() error { return s.provisionFigures(ctx, args, &f) }},
		{"deprovisioning", func() error { return s.deprovisionFigures(ctx, args, &f) }},
		{"identities", func() error { return s.identityFigures(ctx, args, &f) }},
		{"grants", func() error {
			return s.pool.QueryRow(ctx, grantsSQL, args).Scan(&f.GrantsHeld, &f.GrantsUsed)
		}},
		{"coverage", func() error {
			return s.pool.QueryRow(ctx, coverageSQL, args).Scan(&f.ResourcesChecked, &f.ResourcesCovered, &f.ResourcesOwned)
		}},
		{"logins", func() error { return s.loginFigures(ctx, args, &f) }},
	}
	for _, st := range steps {
		if err := st.run(); err != nil {
			return GovernanceFigures{}, fmt.Errorf("governance figures: %s: %w", st.what, classify(err))
		}
	}
	return f, nil
}

func (s *Store) provisionFigures(ctx context.Context, args pgx.NamedArgs, f *GovernanceFigures) error {
	rows, err := s.pool.Query(ctx, `
SELECT extract(epoch FROM (
  SELECT min(x) FROM (
    SELECT b.created_at AS x FROM bindings b
    WHERE b.crdb_region = @region AND b.tenant_id = @tenant AND b.effect = 'allow' AND b.principal_kind = 'identity' AND b.principal_id = i.id
    UNION ALL
    SELECT greatest(gm.created_at, b.created_at) FROM group_members gm
    JOIN bindings b ON b.crdb_region = gm.crdb_region AND b.tenant_id = gm.tenant_id AND b.principal_kind = 'group'
      AND b.principal_id = gm.group_id AND b.effect = 'allow'
    WHERE gm.crdb_region = @region AND gm.tenant_id = @tenant AND gm.identity_id = i.id) AS firsts
  ) - i.created_at)::FLOAT8
FROM identities i
WHERE i.crdb_region = @region AND i.tenant_id = @tenant AND i.created_at >= @since AND i.created_at < @now AND i.erased_at IS NULL`, args)
	if err != nil {
		return err
	}
	var secs []float64
	for rows.Next() {
		var v *float64
		if err := rows.Scan(&v); err != nil {
			return err
		}
		f.Provisioned++
		if v == nil {
			f.ProvisionedNoAccess++
			continue
		}
		secs = append(secs, max(*v, 0))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	f.ProvisionP50Seconds, f.ProvisionP95Seconds = quantile(secs, 0.50), quantile(secs, 0.95)
	return nil
}

// deprovisionFigures: identities offboarded in the window, timed from the first
// identity.disable event in the 30 days before their offboarding (a leaver disabled
// by hand and offboarded later kept access in between) or 0 when offboarding was the
// first step.
func (s *Store) deprovisionFigures(ctx context.Context, args pgx.NamedArgs, f *GovernanceFigures) error {
	rows, err := s.pool.Query(ctx, `
SELECT extract(epoch FROM i.offboarded_at - coalesce((
  SELECT min(a.at) FROM audit_events a
  WHERE a.crdb_region = @region AND a.tenant_id = @tenant AND a.at >= i.offboarded_at - INTERVAL '30 days'
    AND a.at <= i.offboarded_at AND a.action = 'identity.disable' AND a.target_kind = 'identity' AND a.target_id = i.id::TEXT
), i.offboarded_at))::FLOAT8
FROM identities i
WHERE i.crdb_region = @region AND i.tenant_id = @tenant AND i.offboarded_at >= @since AND i.offboarded_at < @now`, args)
	if err != nil {
		return err
	}
	secs, err := pgx.CollectRows(rows, pgx.RowTo[float64])
	if err != nil {
		return err
	}
	f.Deprovisioned = len(secs)
	f.DeprovisionP50Seconds, f.DeprovisionP95Seconds = quantile(secs, 0.50), quantile(secs, 0.95)
	return nil
}

func (s *Store) identityFigures(ctx context.Context, args pgx.NamedArgs, f *GovernanceFigures) error {
	return s.pool.QueryRow(ctx, `
WITH ids AS (
  SELECT i.id, i.kind, i.status, i.offboarded_at, i.owner_id FROM identities i
  WHERE i.crdb_region = @region AND i.tenant_id = @tenant AND i.erased_at IS NULL
), nhi AS (
  SELECT n.id, n.status,
    (o.id IS NULL OR o.status <> 'active' OR o.offboarded_at IS NOT NULL OR o.erased_at IS NOT NULL
      OR (o.expires_at IS NOT NULL AND o.expires_at <= @now)) AS orphaned,
    EXISTS (SELECT 1 FROM credentials c WHERE c.crdb_region = @region AND c.tenant_id = @tenant AND c.identity_id = n.id
      AND c.kind IN ('api_key', 'client_secret') AND c.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > @now)) AS static,
    EXISTS (SELECT 1 FROM federation_policies p WHERE p.crdb_region = @region AND p.tenant_id = @tenant AND p.identity_id = n.id) AS federated
  FROM ids n
  LEFT JOIN identities o ON o.crdb_region = @region AND o.tenant_id = @tenant AND o.id = n.owner_id
  WHERE n.kind <> 'human' AND n.status <> 'disabled'
)
SELECT
  (SELECT count(*) FROM ids WHERE kind = 'human' AND status = 'active'),
  (SELECT count(*) FROM ids WHERE kind = 'human' AND status = 'active' AND EXISTS (
     SELECT 1 FROM credentials c WHERE c.crdb_region = @region AND c.tenant_id = @tenant AND c.identity_id = ids.id
       AND c.kind = 'totp' AND c.confirmed_at IS NOT NULL AND c.revoked_at IS NULL)),
  (SELECT count(*) FROM ids WHERE status = 'disabled' AND offboarded_at IS NULL AND (
     EXISTS (SELECT 1 FROM bindings b WHERE b.crdb_region = @region AND b.tenant_id = @tenant AND b.principal_kind = 'identity' AND b.principal_id = ids.id)
     OR EXISTS (SELECT 1 FROM group_members gm WHERE gm.crdb_region = @region AND gm.tenant_id = @tenant AND gm.identity_id = ids.id))),
  (SELECT count(*) FROM nhi),
  (SELECT count(*) FROM nhi WHERE orphaned),
  (SELECT count(*) FROM nhi WHERE status = 'frozen'),
  (SELECT count(*) FROM nhi WHERE static AND NOT federated),
  (SELECT count(*) FROM nhi WHERE federated AND NOT static),
  (SELECT count(*) FROM nhi WHERE static AND federated),
  (SELECT count(*) FROM nhi WHERE NOT static AND NOT federated)`, args).Scan(
		&f.Humans, &f.HumansMFA, &f.DisabledWithAccess, &f.NHIs, &f.OrphanedNHIs, &f.FrozenNHIs,
		&f.NHIStaticOnly, &f.NHIFederatedOnly, &f.NHIStaticAndFed, &f.NHINoCredential)
}

// heldGrantsCTE: (identity, binding) for every active identity and live allow binding
// it holds, directly or through a group.
const heldGrantsCTE = `
held AS (
  SELECT b.principal_id AS identity_id, b.id AS binding_id, b.scope FROM bindings b
  WHERE b.crdb_region = @region AND b.tenant_id = @tenant AND b.effect = 'allow' AND b.principal_kind = 'identity'
    AND (b.expires_at IS NULL OR b.expires_at > @now)
  UNION
  SELECT gm.identity_id, b.id, b.scope FROM bindings b
  JOIN group_members gm ON gm.crdb_region = b.crdb_region AND gm.tenant_id = b.tenant_id AND gm.group_id = b.principal_id
  WHERE b.crdb_region = @region AND b.tenant_id = @tenant AND b.effect = 'allow' AND b.principal_kind = 'group'
    AND (b.expires_at IS NULL OR b.expires_at > @now)
), active_held AS (
  SELECT h.* FROM held h JOIN identities i ON i.crdb_region = @region AND i.tenant_id = @tenant AND i.id = h.identity_id
  WHERE i.status = 'active'
)`

const grantsSQL = `WITH ` + heldGrantsCTE + `, used AS (
  SELECT DISTINCT d.principal_id, u.binding_id FROM decisions d, unnest(d.binding_ids) AS u (binding_id)
  WHERE d.crdb_region = @region AND d.tenant_id = @tenant AND d.allowed AND d.at >= @since AND d.at < @now
)
SELECT count(*), count(*) FILTER (WHERE EXISTS (
  SELECT 1 FROM used WHERE used.principal_id = h.identity_id::TEXT AND used.binding_id = h.binding_id::TEXT))
FROM active_held h`

// coverageSQL: a scope covers a resource as authz.ScopeCovers says: "*" all, "p/"
// strictly under p/, else the identical resource.
const coverageSQL = `WITH ` + heldGrantsCTE + `, res AS (
  SELECT DISTINCT resource FROM decisions
  WHERE crdb_region = @region AND tenant_id = @tenant AND at >= @since AND at < @now
  LIMIT @sample
), live AS (
  SELECT b.scope, EXISTS (
    SELECT 1 FROM active_held h JOIN identities i ON i.crdb_region = @region AND i.tenant_id = @tenant AND i.id = h.identity_id
    WHERE h.binding_id = b.id AND i.kind = 'human') AS human
  FROM bindings b
  WHERE b.crdb_region = @region AND b.tenant_id = @tenant AND b.effect = 'allow' AND (b.expires_at IS NULL OR b.expires_at > @now)
), cov AS (
  SELECT r.resource,
    EXISTS (SELECT 1 FROM live l WHERE ` + scopeCoversSQL + `) AS covered,
    EXISTS (SELECT 1 FROM live l WHERE l.human AND ` + scopeCoversSQL + `) AS owned
  FROM res r
)
SELECT count(*), count(*) FILTER (WHERE covered), count(*) FILTER (WHERE owned) FROM cov`

const scopeCoversSQL = `(l.scope = '*' OR l.scope = r.resource OR (right(l.scope, 1) = '/'
  AND length(r.resource) > length(l.scope) AND left(r.resource, length(l.scope)) = l.scope))`

func (s *Store) loginFigures(ctx context.Context, args pgx.NamedArgs, f *GovernanceFigures) error {
	rows, err := s.pool.Query(ctx, `
SELECT action, coalesce(after->>'reason', ''), count(*) FROM audit_events
WHERE crdb_region = @region AND tenant_id = @tenant AND at >= @since AND at < @now AND action IN ('login.success', 'login.failure')
GROUP BY 1, 2`, args)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var action, reason string
		var n int
		if err := rows.Scan(&action, &reason, &n); err != nil {
			return err
		}
		if action == "login.success" {
			f.LoginSuccesses += n
			continue
		}
		if reason == "" {
			reason = "unknown"
		}
		f.LoginFailures[reason] += n
	}
	return rows.Err()
}

// quantile is the q-quantile of xs by the nearest-rank method; 0 for none.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// GovernanceSnapshot is a tenant's figures as recorded for one UTC day.
type GovernanceSnapshot struct {
	Day     time.Time // midnight UTC
	Figures GovernanceFigures
}

// RecordGovernanceSnapshot keeps f as the tenant's snapshot for f.At's UTC day unless
// one is recorded already (the first node to compute a day's figures writes them;
// the others change nothing). It reports whether it wrote.
func (s *Store) RecordGovernanceSnapshot(ctx context.Context, sc Scope, f GovernanceFigures) (bool, error) {
	b, err := json.Marshal(f)
	if err != nil {
		return false, err
	}
	day := f.At.UTC().Truncate(24 * time.Hour)
	tag, err := s.pool.Exec(ctx, `INSERT INTO governance_snapshots (tenant_id, day, crdb_region, at, figures)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, sc.TenantID, day, sc.Region, f.At, b)
	if err != nil {
		return false, fmt.Errorf("record governance snapshot: %w", classify(err))
	}
	return tag.RowsAffected() == 1, nil
}

// GovernanceSnapshots lists the tenant's daily snapshots from since on, oldest first
// (at most 3660: ten years).
func (s *Store) GovernanceSnapshots(ctx context.Context, sc Scope, since time.Time) ([]GovernanceSnapshot, error) {
	rows, err := s.pool.Query(ctx, `SELECT day, figures FROM governance_snapshots
WHERE crdb_region = $1 AND tenant_id = $2 AND day >= $3 ORDER BY day LIMIT 3660`, sc.Region, sc.TenantID, since.UTC().Truncate(24*time.Hour))
	if err != nil {
		return nil, fmt.Errorf("list governance snapshots: %w", classify(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (GovernanceSnapshot, error) {
		var g GovernanceSnapshot
		var raw []byte
		if err := r.Scan(&g.Day, &raw); err != nil {
			return g, err
		}
		g.Day = g.Day.UTC()
		return g, json.Unmarshal(raw, &g.Figures)
	})
	if err != nil {
		return nil, fmt.Errorf("list governance snapshots: %w", classify(err))
	}
	return out, nil
}
