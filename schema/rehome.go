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

// RehomeTenant moves every row of a tenant to another region's partition
// (crdb_region) and makes that region its home, in one transaction, bumping the
// placement epoch so routers stop sending its requests to the old home. A tenant with
// super_region residency may only move inside its super region. On CockroachDB the
// transaction rewrites every row of the tenant: fine for tenants of up to some
// hundred thousand rows; larger ones need a batched job (not built).
func (s *Store) RehomeTenant(ctx context.Context, c Change, id, region string) (Tenant, error) {
	if err := checkTenantID("id", id); err != nil {
		return Tenant{}, err
	}
	if region == "" {
		return Tenant{}, fieldErr("home_region", "required")
	}
	var out Tenant
	err := s.tx(ctx, func(tx pgx.Tx) error {
		before, err := scanTenant(tx.QueryRow(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: tenant %q", ErrNotFound, id)
		}
		if err != nil {
			return fmt.Errorf("read tenant: %w", err)
		}
		if before.HomeRegion == region {
			out = before
			return nil
		}
		if err := checkHomeRegion(ctx, tx, region, before.Residency); err != nil {
			return err
		}
		if before.Residency == ResidencySuperRegion {
			var same bool
			if err := tx.QueryRow(ctx, `SELECT a.super_region = b.super_region FROM regions a, regions b WHERE a.name = $1 AND b.name = $2`,
				before.HomeRegion, region).Scan(&same); err != nil {
				return fmt.Errorf("read super regions: %w", err)
			}
			if !same {
				return fieldErr("home_region", "tenant %q has super_region residency: %q is outside the super region of %q", id, region, before.HomeRegion)
			}
		}
		held := map[string]heldRows{}
		for _, table := range twoParentTables {
			if held[table], err = takeRows(ctx, tx, table, id, before.HomeRegion); err != nil {
				return err
			}
		}
		for _, table := range tenantTables {
			if _, err := tx.Exec(ctx, `UPDATE `+table+` SET crdb_region = $3 WHERE tenant_id = $1 AND crdb_region = $2`,
				id, before.HomeRegion, region); err != nil {
				return fmt.Errorf("move %s: %w", table, err)
			}
		}
		for _, table := range twoParentTables {
			if err := putRows(ctx, tx, table, held[table], region); err != nil {
				return err
			}
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
