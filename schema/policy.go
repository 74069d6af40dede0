package schema

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The policy tables (roles, groups, group_members, bindings) change only through the
// methods here, and each change bumps the tenant's policy_revision in the same
// transaction, so a node can tell with one point read whether its cached policy is
// current. Syntax (permission patterns, scopes, conditions) is validated by the caller
// (region/authz); the store validates names, ids and references.

// Role is a named set of permission patterns.
type Role struct {
	ID          string
	Name        string
	Description string
	Permissions []string
	Sensitive   bool // decisions using it are logged synchronously
	// Privileged: a tenant identity binds it only through a change request another
	// identity approves (two-person change control, docs/administration.md).
	Privileged bool
	BuiltIn    bool // one of BuiltinRoles: never updated or deleted
}

// Group holds identities.
type Group struct {
	ID          string
	Name        string
	Description string
	ExternalID  string // SCIM externalId
}

// Binding grants (or denies) a role to a principal on a resource scope.
type Binding struct {
	ID            string
	Effect        string // "allow" or "deny"
	PrincipalKind string // "identity" or "group"
	PrincipalID   string
	RoleID        string
	Scope         string
	Condition     string
	ExpiresAt     time.Time
	GrantedBy     string
	Justification string
	CreatedAt     time.Time
}

// Policy is a consistent snapshot of a tenant's policy.
type Policy struct {
	Revision int64
	Roles    []Role
	Bindings []Binding
	Members  map[string][]string // group id → identity ids
}

// bumpRevision increments the tenant's policy revision inside tx and returns it.
func bumpRevision(ctx context.Context, tx pgx.Tx, tenantID string) (int64, error) {
	var rev int64
	if err := tx.QueryRow(ctx, `UPDATE tenants SET policy_revision = policy_revision + 1 WHERE id = $1 RETURNING policy_revision`,
		tenantID).Scan(&rev); err != nil {
		return 0, fmt.Errorf("bump policy revision: %w", err)
	}
	return rev, nil
}

// policyChange runs fn and bumps the revision, both in one transaction with the
// audit event fn describes, and returns the new revision. A scope judged at a
// revision (Scope.JudgedAt) refuses the change if the policy moved since.
func (s *Store) policyChange(ctx context.Context, c Change, sc Scope, fn func(tx pgx.Tx) (audit, error)) (int64, error) {
	var rev int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		a, err := fn(tx)
		if err != nil {
			return err
		}
		if rev, err = bumpRevision(ctx, tx, sc.TenantID); err != nil {
			return err
		}
		if sc.judgedAt > 0 && rev != sc.judgedAt+1 {
			return fmt.Errorf("%w: the policy changed (revision %d) since this change was authorized at revision %d; retry",
				ErrPrecondition, rev-1, sc.judgedAt)
		}
		if m, ok := a.after.(map[string]any); ok {
			m["policy_revision"] = rev
		}
		return s.writeAudit(ctx, tx, sc, c, a)
	})
	return rev, err
}

// PolicyRevision reads the tenant's current policy revision: one point read of the
// GLOBAL tenants table, local and never stale.
func (s *Store) PolicyRevision(ctx context.Context, tenantID string) (int64, error) {
	var rev int64
	err := s.pool.QueryRow(ctx, `SELECT policy_revision FROM tenants WHERE id = $1`, tenantID).Scan(&rev)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: tenant %q", ErrNotFound, tenantID)
	}
	return rev, classify(err)
}

// LoadPolicy reads the tenant's whole policy and its revision in one read-only
// serializable transaction, so the revision describes exactly the rows returned.
func (s *Store) LoadPolicy(ctx context.Context, sc Scope) (Policy, error) {
	var p Policy
	err := s.tx(ctx, func(tx pgx.Tx) error {
		p = Policy{Members: map[string][]string{}}
		if err := tx.QueryRow(ctx, `SELECT policy_revision FROM tenants WHERE id = $1`, sc.TenantID).Scan(&p.Revision); err != nil {
			return fmt.Errorf("read revision: %w", err)
		}
		rows, err := tx.Query(ctx, `SELECT id::TEXT, name, description, permissions, sensitive, privileged FROM roles
WHERE crdb_region = $1 AND tenant_id = $2`, sc.Region, sc.TenantID)
		if err != nil {
			return fmt.Errorf("read roles: %w", err)
		}
		if p.Roles, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Role, error) {
			var x Role
			return x, r.Scan(&x.ID, &x.Name, &x.Description, &x.Permissions, &x.Sensitive, &x.Privileged)
		}); err != nil {
			return fmt.Errorf("read roles: %w", err)
		}
		rows, err = tx.Query(ctx, `SELECT `+bindingColumns+` FROM bindings
WHERE crdb_region = $1 AND tenant_id = $2 AND (expires_at IS NULL OR expires_at > now())`, sc.Region, sc.TenantID)
		if err != nil {
			return fmt.Errorf("read bindings: %w", err)
		}
		if p.Bindings, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Binding, error) { return scanBinding(r) }); err != nil {
			return fmt.Errorf("read bindings: %w", err)
		}
		rows, err = tx.Query(ctx, `SELECT group_id::TEXT, identity_id::TEXT FROM group_members WHERE crdb_region = $1 AND tenant_id = $2`,
			sc.Region, sc.TenantID)
		if err != nil {
			return fmt.Errorf("read members: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var g, i string
			if err := rows.Scan(&g, &i); err != nil {
				return fmt.Errorf("read members: %w", err)
			}
			p.Members[g] = append(p.Members[g], i)
		}
		return rows.Err()
	})
	return p, err
}

const bindingColumns = `id::TEXT, effect, principal_kind, principal_id::TEXT, role_id::TEXT, scope, condition,
 coalesce(expires_at, 'epoch'), granted_by, justification, created_at`

func scanBinding(r pgx.Row) (Binding, error) {
	var b Binding
	err := r.Scan(&b.ID, &b.Effect, &b.PrincipalKind, &b.PrincipalID, &b.RoleID, &b.Scope, &b.Condition, &b.ExpiresAt,
		&b.GrantedBy, &b.Justification, &b.CreatedAt)
	b.ExpiresAt = zeroEpoch(b.ExpiresAt)
	return b, err
}

// CreateRole adds a role. Permissions must already be validated patterns.
func (s *Store) CreateRole(ctx context.Context, c Change, sc Scope, r Role) (Role, int64, error) {
	if err := checkText("name", r.Name, true, 100); err != nil {
		return Role{}, 0, err
	}
	if err := checkText("description", r.Description, false, 500); err != nil {
		return Role{}, 0, err
	}
	if len(r.Permissions) == 0 || len(r.Permissions) > 500 {
		return Role{}, 0, fieldErr("permissions", "between 1 and 500 permissions")
	}
	if builtinRoleName(r.Name) {
		return Role{}, 0, fieldErr("name", "%q is a built-in role's name: bind the built-in role, or pick another name", r.Name)
	}
	var out Role
	rev, err := s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		err := tx.QueryRow(ctx, `INSERT INTO roles (tenant_id, crdb_region, name, description, permissions, sensitive, privileged)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id::TEXT, name, description, permissions, sensitive, privileged`,
			sc.TenantID, sc.Region, r.Name, r.Description, r.Permissions, r.Sensitive, r.Privileged).
			Scan(&out.ID, &out.Name, &out.Description, &out.Permissions, &out.Sensitive, &out.Privileged)
		if err != nil {
			if errors.Is(classify(err), ErrConflict) {
				return audit{}, fieldErrConflict("name", "a role named %q exists", r.Name)
			}
			return audit{}, fmt.Errorf("insert role: %w", err)
		}
		return audit{action: "role.create", targetKind: "role", targetID: out.ID,
			after: map[string]any{"name": out.Name, "permissions": out.Permissions, "sensitive": out.Sensitive, "privileged": out.Privileged}}, nil
	})
	return out, rev, err
}

// CreateGroup adds a group.
func (s *Store) CreateGroup(ctx context.Context, c Change, sc Scope, g Group) (Group, int64, error) {
	if err := checkText("name", g.Name, true, 200); err != nil {
		return Group{}, 0, err
	}
	if err := checkText("description", g.Description, false, 500); err != nil {
		return Group{}, 0, err
	}
	var out Group
	rev, err := s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		err := tx.QueryRow(ctx, `INSERT INTO groups (tenant_id, crdb_region, name, description, external_id)
VALUES ($1, $2, $3, $4, nullif($5, '')) RETURNING id::TEXT, name, description, coalesce(external_id, '')`,
			sc.TenantID, sc.Region, g.Name, g.Description, g.ExternalID).Scan(&out.ID, &out.Name, &out.Description, &out.ExternalID)
		if err != nil {
			if errors.Is(classify(err), ErrConflict) {
				return audit{}, fieldErrConflict("name", "a group named %q exists", g.Name)
			}
			return audit{}, fmt.Errorf("insert group: %w", err)
		}
		return audit{action: "group.create", targetKind: "group", targetID: out.ID, after: map[string]any{"name": out.Name}}, nil
	})
	return out, rev, err
}

// SetMembership adds (member true) or removes an identity from a group.
func (s *Store) SetMembership(ctx context.Context, c Change, sc Scope, groupID, identityID string, member bool) (int64, error) {
	if _, err := parseID("group_id", groupID); err != nil {
		return 0, err
	}
	if _, err := parseID("identity_id", identityID); err != nil {
		return 0, err
	}
	return s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		if !member {
			if err := removeMember(ctx, tx, sc, groupID, identityID); err != nil {
				return audit{}, err
			}
			return audit{action: "group.remove_member", targetKind: "group", targetID: groupID, after: map[string]any{"identity_id": identityID}}, nil
		}
		if err := addMember(ctx, tx, sc, groupID, identityID); err != nil {
			return audit{}, err
		}
		return audit{action: "group.add_member", targetKind: "group", targetID: groupID, after: map[string]any{"identity_id": identityID}}, nil
	})
}

// removeMember removes identityID from groupID inside tx (SetMembership,
// ApproveChangeRequest), refusing to leave the tenant without a tenant admin.
func removeMember(ctx context.Context, tx pgx.Tx, sc Scope, groupID, identityID string) error {
	var source string
	err := tx.QueryRow(ctx, `SELECT source FROM group_members WHERE crdb_region = $1 AND tenant_id = $2 AND group_id = $3 AND identity_id = $4`,
		sc.Region, sc.TenantID, groupID, identityID).Scan(&source)
	if err == nil && source == SourceRule {
		return fmt.Errorf("%w: identity_id: identity %s is a member of group %s by a membership rule; change the rule or the identity's attributes",
			ErrPrecondition, identityID, groupID)
	}
	return keepsTenantAdmin(ctx, tx, sc, func() error {
		tag, err := tx.Exec(ctx, `DELETE FROM group_members WHERE crdb_region = $1 AND tenant_id = $2 AND group_id = $3 AND identity_id = $4`,
			sc.Region, sc.TenantID, groupID, identityID)
		if err != nil {
			return fmt.Errorf("remove member: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: identity %s is not a member of group %s", ErrNotFound, identityID, groupID)
		}
		return nil
	})
}

// addMember adds identityID to groupID inside tx (SetMembership, ApproveChangeRequest).
func addMember(ctx context.Context, tx pgx.Tx, sc Scope, groupID, identityID string) error {
	i, err := getIdentity(ctx, tx, sc, identityID, "")
	if err != nil {
		return fieldErr("identity_id", "no identity %s in tenant %q", identityID, sc.TenantID)
	}
	if i.Status == StatusFrozen {
		return inactiveIdentity("identity_id", i)
	}
	// A membership a rule gave becomes manual: kept when the rule stops giving it.
	tag, err := tx.Exec(ctx, `UPDATE group_members SET source = 'manual'
WHERE crdb_region = $1 AND tenant_id = $2 AND group_id = $3 AND identity_id = $4 AND source = 'rule'`, sc.Region, sc.TenantID, groupID, identityID)
	if err != nil {
		return fmt.Errorf("add member: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	_, err = tx.Exec(ctx, `INSERT INTO group_members (tenant_id, crdb_region, group_id, identity_id) VALUES ($1, $2, $3, $4)`,
		sc.TenantID, sc.Region, groupID, identityID)
	if err != nil {
		switch cerr := classify(err); {
		case errors.Is(cerr, ErrConflict):
			return fieldErrConflict("identity_id", "identity %s is already a member", identityID)
		case errors.Is(cerr, ErrNotFound):
			return fieldErr("group_id", "no group %s in tenant %q", groupID, sc.TenantID)
		}
		return fmt.Errorf("add member: %w", err)
	}
	return nil
}

// CreateBinding grants (or denies) a role. Scope, effect and condition must already be
// validated; the store checks that the role and the principal exist in the tenant.
func (s *Store) CreateBinding(ctx context.Context, c Change, sc Scope, b Binding) (Binding, int64, error) {
	if _, err := parseID("role_id", b.RoleID); err != nil {
		return Binding{}, 0, err
	}
	if _, err := parseID("principal_id", b.PrincipalID); err != nil {
		return Binding{}, 0, err
	}
	if err := checkText("justification", b.Justification, false, 1000); err != nil {
		return Binding{}, 0, err
	}
	var out Binding
	rev, err := s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		var err error
		out, err = insertBinding(ctx, tx, sc, c, b)
		if err != nil {
			return audit{}, err
		}
		return audit{action: "binding.create", targetKind: "binding", targetID: out.ID, after: bindingSummary(out)}, nil
	})
	return out, rev, err
}

// insertBinding writes b inside tx (CreateBinding, ApproveChangeRequest), granted by
// c's actor, after checking that its principal exists in the tenant.
func insertBinding(ctx context.Context, tx pgx.Tx, sc Scope, c Change, b Binding) (Binding, error) {
	var ok bool
	var status string
	q := `SELECT EXISTS (SELECT 1 FROM identities WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3),
  coalesce((SELECT status FROM identities WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3), '')`
	if b.PrincipalKind == "group" {
		q = `SELECT EXISTS (SELECT 1 FROM groups WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3), ''`
	}
	if err := tx.QueryRow(ctx, q, sc.Region, sc.TenantID, b.PrincipalID).Scan(&ok, &status); err != nil {
		return Binding{}, fmt.Errorf("read principal: %w", err)
	}
	if !ok {
		return Binding{}, fieldErr("principal_id", "no %s %s in tenant %q", b.PrincipalKind, b.PrincipalID, sc.TenantID)
	}
	if status == StatusFrozen && b.Effect != "deny" {
		return Binding{}, inactiveIdentity("principal_id", Identity{ID: b.PrincipalID, Status: status})
	}
	if err := ensureBuiltinRole(ctx, tx, sc, b.RoleID); err != nil {
		return Binding{}, err
	}
	if b.PrincipalKind == "group" && b.Effect != "deny" {
		privileged, err := rolePrivileged(ctx, tx, sc, b.RoleID)
		if err != nil {
			return Binding{}, err
		}
		if privileged {
			if err := refusePrivilegedOnRuleGroup(ctx, tx, sc, b.RoleID, b.PrincipalID); err != nil {
				return Binding{}, err
			}
		}
	}
	out, err := scanBinding(tx.QueryRow(ctx, `INSERT INTO bindings (tenant_id, crdb_region, effect, principal_kind, principal_id, role_id,
  scope, condition, expires_at, granted_by, justification)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING `+bindingColumns,
		sc.TenantID, sc.Region, b.Effect, b.PrincipalKind, b.PrincipalID, b.RoleID, b.Scope, b.Condition, nullTime(b.ExpiresAt),
		c.Actor, b.Justification))
	if err != nil {
		if errors.Is(classify(err), ErrNotFound) {
			return Binding{}, fieldErr("role_id", "no role %s in tenant %q", b.RoleID, sc.TenantID)
		}
		return Binding{}, fmt.Errorf("insert binding: %w", err)
	}
	return out, nil
}

func bindingSummary(b Binding) map[string]any {
	m := map[string]any{"effect": b.Effect, "principal": b.PrincipalKind + ":" + b.PrincipalID, "role_id": b.RoleID, "scope": b.Scope}
	if b.Condition != "" {
		m["condition"] = b.Condition
	}
	if !b.ExpiresAt.IsZero() {
		m["expires_at"] = b.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if b.Justification != "" {
		m["justification"] = b.Justification
	}
	return m
}

// DeleteBinding removes a binding.
func (s *Store) DeleteBinding(ctx context.Context, c Change, sc Scope, id string) (int64, error) {
	if _, err := parseID("binding_id", id); err != nil {
		return 0, err
	}
	return s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		before, err := removeBinding(ctx, tx, sc, id)
		if err != nil {
			return audit{}, err
		}
		return audit{action: "binding.delete", targetKind: "binding", targetID: id, before: bindingSummary(before), after: map[string]any{}}, nil
	})
}

// removeBinding deletes binding id inside tx (DeleteBinding, ApproveChangeRequest),
// refusing to leave the tenant without a tenant admin, and returns what it deleted.
func removeBinding(ctx context.Context, tx pgx.Tx, sc Scope, id string) (Binding, error) {
	var before Binding
	err := keepsTenantAdmin(ctx, tx, sc, func() error {
		var err error
		before, err = scanBinding(tx.QueryRow(ctx, `DELETE FROM bindings WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3
RETURNING `+bindingColumns, sc.Region, sc.TenantID, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: binding %s", ErrNotFound, id)
		}
		if err != nil {
			return fmt.Errorf("delete binding: %w", err)
		}
		return nil
	})
	return before, err
}

// ListRoles, ListGroups and ListBindings list the tenant's policy objects.
func (s *Store) ListBindings(ctx context.Context, sc Scope) ([]Binding, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+bindingColumns+` FROM bindings WHERE crdb_region = $1 AND tenant_id = $2 ORDER BY created_at, id`,
		sc.Region, sc.TenantID)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Binding, error) { return scanBinding(r) })
	return out, classify(err)
}
