package schema

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// tenantTables are the per-tenant tables, parents before children: the children's
// foreign keys (crdb_region, tenant_id, …) are ON UPDATE CASCADE, so moving a parent
// row moves its children, and a child is never moved ahead of its parent.
var tenantTables = []string{"identities", "roles", "groups", "sessions",
	"credentials", "bindings", "change_requests", "refresh_tokens", "audit_events", "decisions", "login_throttle", "login_throttle_sources",
	"membership_rules", "federation_policies", "federation_jtis", "browser_sessions", "authorization_codes", "oauth_consents", "upstream_oidc_providers", "upstream_oidc_states", "upstream_oidc_links",
	"saml_idps", "saml_assertions", "governance_snapshots", "governance_policies", "idempotency_keys",
	"review_campaigns", "review_items",
	"analytics_features", "analytics_alerts", "analytics_alert_keys", "analytics_sessions", "analytics_webhooks", "analytics_deliveries", "analytics_drift"}

// twoParentTables reference two parent tables: a cascade from one parent would leave
// the row pointing at the other parent's old partition, so their rows are taken out
// before the parents move and put back after.
var twoParentTables = []string{"group_members", "elevations", "membership_rule_groups"}

// SingleTxRehomeMaxRows is the most rows RehomeTenant moves in one transaction; a
// larger tenant is moved in batches by RehomeTenantBatched.
const SingleTxRehomeMaxRows = 100_000

// RehomeTenant moves every row of a tenant to another region's partition
// (crdb_region) and makes that region its home, in one transaction, bumping the
// placement epoch so routers stop sending its requests to the old home. A tenant with
// super_region residency may only move inside its super region. A tenant of more than
// SingleTxRehomeMaxRows rows is refused (ErrPrecondition): on CockroachDB the one
// transaction would rewrite all of them; RehomeTenantBatched moves it in batches. So
// is a tenant that a batched rehome is moving.
func (s *Store) RehomeTenant(ctx context.Context, c Change, id, region string) (Tenant, error) {
	if err := checkTenantID("id", id); err != nil {
		return Tenant{}, err
	}
	if region == "" {
		return Tenant{}, fieldErr("home_region", "required")
	}
	var out Tenant
	err := s.tx(ctx, func(tx pgx.Tx) error {
		before, err := s.rehomeTarget(ctx, tx, id, region)
		if err != nil || before.HomeRegion == region {
			out = before
			return err
		}
		if before.RehomingTo != "" {
			return fmt.Errorf("%w: tenant %q is being rehomed in batches to %s; run that rehome again to finish it", ErrPrecondition, id, before.RehomingTo)
		}
		n, err := countTenantRows(ctx, tx, id, before.HomeRegion, SingleTxRehomeMaxRows+1)
		if err != nil {
			return err
		}
		if n > SingleTxRehomeMaxRows {
			return fmt.Errorf("%w: tenant %q has more than %d rows: too many for one transaction; rehome it in batches (keyplane rehome)", ErrPrecondition, id, SingleTxRehomeMaxRows)
		}
		if err := moveTenantRows(ctx, tx, id, before.HomeRegion, region); err != nil {
			return err
		}
		out, err = scanTenant(tx.QueryRow(ctx, `
UPDATE tenants SET home_region = $2, placement_epoch = placement_epoch + 1, updated_at = now()
WHERE id = $1
RETURNING `+tenantColumns, id, region))
		if err != nil {
			return fmt.Errorf("update tenant: %w", err)
		}
		return s.writeAudit(ctx, tx, out.Scope(), c, audit{action: "tenant.rehome", targetKind: "tenant", targetID: id,
			before: map[string]any{"home_region": before.HomeRegion, "placement_epoch": before.PlacementEpoch},
			after:  map[string]any{"home_region": out.HomeRegion, "placement_epoch": out.PlacementEpoch}})
	})
	return out, err
}

// rehomeTarget locks and reads the tenant to be moved to region and checks that it
// may move there. A tenant already homed in region is returned with no error.
func (s *Store) rehomeTarget(ctx context.Context, tx pgx.Tx, id, region string) (Tenant, error) {
	before, err := scanTenant(tx.QueryRow(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id = $1 FOR UPDATE`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Tenant{}, fmt.Errorf("%w: tenant %q", ErrNotFound, id)
	}
	if err != nil {
		return Tenant{}, fmt.Errorf("read tenant: %w", err)
	}
	if before.HomeRegion == region {
		return before, nil
	}
	if err := checkHomeRegion(ctx, tx, region, before.Residency); err != nil {
		return Tenant{}, err
	}
	if before.Residency == ResidencySuperRegion {
		var same bool
		if err := tx.QueryRow(ctx, `SELECT a.super_region = b.super_region FROM regions a, regions b WHERE a.name = $1 AND b.name = $2`,
			before.HomeRegion, region).Scan(&same); err != nil {
			return Tenant{}, fmt.Errorf("read super regions: %w", err)
		}
		if !same {
			return Tenant{}, fieldErr("home_region", "tenant %q has super_region residency: %q is outside the super region of %q", id, region, before.HomeRegion)
		}
	}
	return before, nil
}

// countTenantRows counts the tenant's rows in region over every per-tenant table,
// stopping at limit.
func countTenantRows(ctx context.Context, tx pgx.Tx, id, region string, limit int64) (int64, error) {
	var total int64
	for _, table := range append(append([]string{}, tenantTables...), twoParentTables...) {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM `+table+` WHERE tenant_id = $1 AND crdb_region = $2 LIMIT $3) AS r`,
			id, region, limit-total).Scan(&n); err != nil {
			return 0, fmt.Errorf("count %s: %w", table, err)
		}
		if total += n; total >= limit {
			break
		}
	}
	return total, nil
}

// moveTenantRows moves every row of the tenant from one region's partition to
// another's in tx: two-parent rows out, parents (and their cascading children) moved,
// two-parent rows back.
func moveTenantRows(ctx context.Context, tx pgx.Tx, id, from, to string) error {
	held := map[string]heldRows{}
	for _, table := range twoParentTables {
		h, err := takeRows(ctx, tx, table, id, from)
		if err != nil {
			return err
		}
		held[table] = h
	}
	for _, table := range tenantTables {
		if _, err := tx.Exec(ctx, `UPDATE `+table+` SET crdb_region = $3 WHERE tenant_id = $1 AND crdb_region = $2`,
			id, from, to); err != nil {
			return fmt.Errorf("move %s: %w", table, err)
		}
	}
	for _, table := range twoParentTables {
		if err := putRows(ctx, tx, table, held[table], to); err != nil {
			return err
		}
	}
	return nil
}

// heldRows are rows taken out of a table, with its column names.
type heldRows struct {
	cols []string
	rows [][]any
}

// takeRows deletes the tenant's rows of table in region and returns them.
func takeRows(ctx context.Context, tx pgx.Tx, table, tenant, region string) (heldRows, error) {
	rows, err := tx.Query(ctx, `DELETE FROM `+table+` WHERE tenant_id = $1 AND crdb_region = $2 RETURNING *`, tenant, region)
	if err != nil {
		return heldRows{}, fmt.Errorf("take %s: %w", table, err)
	}
	defer rows.Close()
	var h heldRows
	for _, f := range rows.FieldDescriptions() {
		h.cols = append(h.cols, f.Name)
	}
	for rows.Next() {
		v, err := rows.Values()
		if err != nil {
			return heldRows{}, fmt.Errorf("take %s: %w", table, err)
		}
		h.rows = append(h.rows, v)
	}
	if err := rows.Err(); err != nil {
		return heldRows{}, fmt.Errorf("take %s: %w", table, err)
	}
	return h, nil
}

// putRows inserts held rows back into table with crdb_region set to region.
func putRows(ctx context.Context, tx pgx.Tx, table string, h heldRows, region string) error {
	if len(h.rows) == 0 {
		return nil
	}
	ph := make([]string, len(h.cols))
	regionCol := -1
	for i, c := range h.cols {
		ph[i] = fmt.Sprintf("$%d", i+1)
		if c == "crdb_region" {
			regionCol = i
		}
	}
	if regionCol < 0 {
		return fmt.Errorf("put %s: no crdb_region column", table)
	}
	sql := `INSERT INTO ` + table + ` (` + strings.Join(h.cols, ", ") + `) VALUES (` + strings.Join(ph, ", ") + `)`
	var b pgx.Batch
	for _, r := range h.rows {
		r[regionCol] = region
		b.Queue(sql, r...)
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("put %s: %w", table, err)
	}
	return nil
}
