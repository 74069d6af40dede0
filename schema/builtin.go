package schema

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Built-in roles (issue 13): every tenant has them, under the same fixed ids and
// names; they can be bound and elevated to, never created, edited or deleted
// (CreateRole refuses their names, DeleteRole their ids). Their permissions live
// here, in code: the node merges them into every policy snapshot, so an upgrade that
// changes them needs no migration. A role row with the same id and name is written
// on first use (CreateBinding, RequestElevation, CreateTenantWithAdmin) only because
// bindings and elevations reference roles by foreign key; its stored permissions are
// never read. See docs/decisions/0009-tenant-administration.md.
const (
	RoleTenantAdmin     = "00000000-0000-4000-8000-00000000a001"
	RoleIdentityManager = "00000000-0000-4000-8000-00000000a002"
	RoleAccessAdmin     = "00000000-0000-4000-8000-00000000a003"
	RoleSecurityAuditor = "00000000-0000-4000-8000-00000000a004"
	RoleNHIOwner        = "00000000-0000-4000-8000-00000000a005"
)

// BuiltinRoles returns the built-in roles, a fresh copy each call. tenant-admin,
// identity-manager and access-admin are privileged: a tenant identity binds them
// only through an approved change request.
func BuiltinRoles() []Role {
	rs := []Role{
		{ID: RoleTenantAdmin, Name: "tenant-admin", Sensitive: true, Privileged: true,
			Description: "Owns the tenant: every permission, keyplane's own (iam.*) and the tenant's applications'.",
			Permissions: []string{"*"}},
		{ID: RoleIdentityManager, Name: "identity-manager", Sensitive: true, Privileged: true,
			Description: "Creates, updates, disables, offboards and erases identities and manages their credentials and sessions.",
			Permissions: []string{"iam.identities.*", "iam.credentials.*", "iam.sessions.*"}},
		{ID: RoleAccessAdmin, Name: "access-admin", Sensitive: true, Privileged: true,
			Description: "Manages roles, groups and bindings, reviews access, decisions and the NHI inventory, sets the governance policy, runs access review campaigns, approves elevations, and reads anomaly alerts and manages their webhooks.",
			Permissions: []string{"iam.roles.*", "iam.groups.*", "iam.bindings.*", "iam.access.review", "iam.elevations.approve",
				"iam.identities.read", "iam.decisions.read", "iam.governance.read", "iam.governance.write", "iam.reviews.manage", "iam.reviews.read",
				"iam.analytics.*"}},
		{ID: RoleSecurityAuditor, Name: "security-auditor",
			Description: "Reads the audit log, decisions, roles, groups, bindings, trust policies, access reviews, review campaigns' evidence, the NHI inventory and anomaly alerts; changes nothing.",
			Permissions: []string{"iam.audit.read", "iam.access.review", "iam.roles.read", "iam.groups.read", "iam.bindings.read",
				"iam.identities.read", "iam.credentials.read", "iam.sessions.read", "iam.decisions.read", "iam.federation.read",
				"iam.governance.read", "iam.reviews.read", "iam.analytics.read"}},
		{ID: RoleNHIOwner, Name: "nhi-owner",
			Description: "Manages the credentials of the non-human identities whose owner the holder is.",
			Permissions: []string{"iam.credentials.manage_owned"}},
	}
	for i := range rs {
		rs[i].BuiltIn = true
	}
	return rs
}

// BuiltinRole returns the built-in role with id.
func BuiltinRole(id string) (Role, bool) {
	for _, r := range BuiltinRoles() {
		if r.ID == id {
			return r, true
		}
	}
	return Role{}, false
}

func builtinRoleName(name string) bool {
	for _, r := range BuiltinRoles() {
		if r.Name == name {
			return true
		}
	}
	return false
}

// ensureBuiltinRole writes the row of built-in role id in the tenant if it is missing
// (see BuiltinRoles); any other id is left alone.
func ensureBuiltinRole(ctx context.Context, tx pgx.Tx, sc Scope, id string) error {
	r, ok := BuiltinRole(id)
	if !ok {
		return nil
	}
	if _, err := tx.Exec(ctx, `INSERT INTO roles (tenant_id, id, crdb_region, name, description, permissions, sensitive, privileged)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`, sc.TenantID, r.ID, sc.Region, r.Name, r.Description, r.Permissions, r.Sensitive, r.Privileged); err != nil {
		return fmt.Errorf("write built-in role %s: %w", r.Name, err)
	}
	return nil
}

// countTenantAdmins counts the tenant's active tenant admins: active, unexpired
// identities holding the tenant-admin role through an unconditional, non-expiring
// allow binding on scope "*", directly or through a group.
func countTenantAdmins(ctx context.Context, q querier, sc Scope) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT count(*) FROM identities i
WHERE i.crdb_region = $1 AND i.tenant_id = $2 AND i.status = 'active' AND (i.expires_at IS NULL OR i.expires_at > now())
  AND EXISTS (SELECT 1 FROM bindings b
    WHERE b.crdb_region = $1 AND b.tenant_id = $2 AND b.role_id = $3 AND b.effect = 'allow' AND b.scope = '*'
      AND b.condition = '' AND b.expires_at IS NULL
      AND ((b.principal_kind = 'identity' AND b.principal_id = i.id)
        OR (b.principal_kind = 'group' AND EXISTS (SELECT 1 FROM group_members m
          WHERE m.crdb_region = $1 AND m.tenant_id = $2 AND m.group_id = b.principal_id AND m.identity_id = i.id))))`,
		sc.Region, sc.TenantID, RoleTenantAdmin).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count tenant admins: %w", err)
	}
	return n, nil
}

// keepsTenantAdmin runs change inside tx and refuses it (ErrPrecondition, so the
// whole transaction rolls back) when the tenant had an active tenant admin before it
// and has none after: a tenant always keeps one. A tenant that never had one (made
// before issue 13) is not held to it.
func keepsTenantAdmin(ctx context.Context, tx pgx.Tx, sc Scope, change func() error) error {
	before, err := countTenantAdmins(ctx, tx, sc)
	if err != nil {
		return err
	}
	if err := change(); err != nil {
		return err
	}
	if before == 0 {
		return nil
	}
	after, err := countTenantAdmins(ctx, tx, sc)
	if err != nil {
		return err
	}
	if after == 0 {
		return fmt.Errorf("%w: this change would leave tenant %q without an active tenant admin; grant tenant-admin (scope \"*\", no condition, no expiry) to another identity first",
			ErrPrecondition, sc.TenantID)
	}
	return nil
}
