package schema

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Reading, updating and deleting roles (issue 14). Built-in roles are read from code
// (BuiltinRoles), never from their rows, and are never updated or deleted.

const roleColumns = `id::TEXT, name, description, permissions, sensitive, privileged`

func scanRole(r pgx.Row) (Role, error) {
	var x Role
	err := r.Scan(&x.ID, &x.Name, &x.Description, &x.Permissions, &x.Sensitive, &x.Privileged)
	return x, err
}

func roleSummary(r Role) map[string]any {
	return map[string]any{"name": r.Name, "description": r.Description, "permissions": r.Permissions, "sensitive": r.Sensitive,
		"privileged": r.Privileged}
}

// errUnchanged ends a policy change's transaction without writing: the request
// changed nothing (no revision bump, no audit event).
var errUnchanged = errors.New("unchanged")

// nameKey is a position in a listing ordered by name: its page token.
type nameKey struct {
	Name string `json:"n"`
}

// GetRole reads one role of the tenant, built-in or its own.
func (s *Store) GetRole(ctx context.Context, sc Scope, id string) (Role, error) {
	if _, err := parseID("role_id", id); err != nil {
		return Role{}, err
	}
	if r, ok := BuiltinRole(id); ok {
		return r, nil
	}
	return getRole(ctx, s.pool, sc, id, "")
}

func getRole(ctx context.Context, q querier, sc Scope, id, lock string) (Role, error) {
	r, err := scanRole(q.QueryRow(ctx, `SELECT `+roleColumns+` FROM roles WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`+lock,
		sc.Region, sc.TenantID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Role{}, fmt.Errorf("%w: role %s in tenant %q", ErrNotFound, id, sc.TenantID)
	}
	if err != nil {
		return Role{}, classify(fmt.Errorf("read role: %w", err))
	}
	return r, nil
}

// ListRoles pages through the tenant's roles ordered by name, the built-in ones
// included, only those whose name starts with namePrefix.
func (s *Store) ListRoles(ctx context.Context, sc Scope, namePrefix string, p Page) ([]Role, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	if err := checkText("name_prefix", namePrefix, false, 100); err != nil {
		return nil, "", err
	}
	var after nameKey
	if err := p.decode(&after); err != nil {
		return nil, "", err
	}
	var builtinIDs []string
	var out []Role
	for _, r := range BuiltinRoles() {
		builtinIDs = append(builtinIDs, r.ID)
		if r.Name > after.Name && strings.HasPrefix(r.Name, namePrefix) {
			out = append(out, r)
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT `+roleColumns+` FROM roles
WHERE crdb_region = $1 AND tenant_id = $2 AND name > $3 AND left(name, char_length($4)) = $4 AND NOT (id = ANY ($5::UUID[]))
ORDER BY name LIMIT $6`, sc.Region, sc.TenantID, after.Name, namePrefix, builtinIDs, limit+1)
	if err != nil {
		return nil, "", classify(err)
	}
	own, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Role, error) { return scanRole(r) })
	if err != nil {
		return nil, "", classify(err)
	}
	out = append(out, own...)
	slices.SortFunc(out, func(a, b Role) int { return strings.Compare(a.Name, b.Name) })
	if len(out) <= limit {
		return out, "", nil
	}
	out = out[:limit]
	return out, encodeToken(nameKey{out[limit-1].Name}), nil
}

// RoleUpdate lists the fields to change; nil (empty Permissions) fields stay as they
// are. Permissions must already be validated patterns.
type RoleUpdate struct {
	Name        *string
	Description *string
	Permissions []string
	Sensitive   *bool
	Privileged  *bool
}

// UpdateRole changes a role of the tenant (never a built-in one) and returns it as
// before and after the change, and the policy revision: unchanged, and no audit
// event written, when the update changes nothing.
func (s *Store) UpdateRole(ctx context.Context, c Change, sc Scope, id string, u RoleUpdate) (before, after Role, rev int64, err error) {
	if _, err := parseID("role_id", id); err != nil {
		return Role{}, Role{}, 0, err
	}
	if r, ok := BuiltinRole(id); ok {
		return Role{}, Role{}, 0, fmt.Errorf("%w: role_id: %s is the built-in role %q, which cannot be changed", ErrPrecondition, id, r.Name)
	}
	if u.Name != nil {
		if err := checkText("name", *u.Name, true, 100); err != nil {
			return Role{}, Role{}, 0, err
		}
		if builtinRoleName(*u.Name) {
			return Role{}, Role{}, 0, fieldErr("name", "%q is a built-in role's name", *u.Name)
		}
	}
	if u.Description != nil {
		if err := checkText("description", *u.Description, false, 500); err != nil {
			return Role{}, Role{}, 0, err
		}
	}
	if len(u.Permissions) > 500 {
		return Role{}, Role{}, 0, fieldErr("permissions", "between 1 and 500 permissions")
	}
	rev, err = s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		var err error
		if before, err = getRole(ctx, tx, sc, id, " FOR UPDATE"); err != nil {
			return audit{}, err
		}
		after = before
		if u.Name != nil {
			after.Name = *u.Name
		}
		if u.Description != nil {
			after.Description = *u.Description
		}
		if len(u.Permissions) > 0 {
			after.Permissions = u.Permissions
		}
		if u.Sensitive != nil {
			after.Sensitive = *u.Sensitive
		}
		if u.Privileged != nil {
			after.Privileged = *u.Privileged
		}
		if after.Name == before.Name && after.Description == before.Description && slices.Equal(after.Permissions, before.Permissions) &&
			after.Sensitive == before.Sensitive && after.Privileged == before.Privileged {
			return audit{}, errUnchanged
		}
		if after.Privileged && (!before.Privileged || !slices.Equal(after.Permissions, before.Permissions)) {
			if err := refusePrivilegedOnRuleGroup(ctx, tx, sc, id, ""); err != nil {
				return audit{}, err
			}
		}
		after, err = scanRole(tx.QueryRow(ctx, `UPDATE roles SET name = $4, description = $5, permissions = $6, sensitive = $7, privileged = $8,
  updated_at = now()
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3 RETURNING `+roleColumns,
			sc.Region, sc.TenantID, id, after.Name, after.Description, after.Permissions, after.Sensitive, after.Privileged))
		if err != nil {
			if errors.Is(classify(err), ErrConflict) {
				return audit{}, fieldErrConflict("name", "a role named %q exists", after.Name)
			}
			return audit{}, fmt.Errorf("update role: %w", err)
		}
		return audit{action: "role.update", targetKind: "role", targetID: id, before: roleSummary(before), after: roleSummary(after)}, nil
	})
	if errors.Is(err, errUnchanged) {
		rev, err = s.PolicyRevision(ctx, sc.TenantID)
		return before, before, rev, err
	}
	if err != nil {
		return Role{}, Role{}, 0, err
	}
	return before, after, rev, nil
}

// RoleUse is what still uses a role: its bindings (expired ones included) and its
// pending and active elevations.
type RoleUse struct {
	Bindings []Binding
	Pending  []string // elevation ids
	Active   []string // elevation ids
}

func (u RoleUse) empty() bool {
	return len(u.Bindings) == 0 && len(u.Pending) == 0 && len(u.Active) == 0
}

// RoleUses reads what uses role id now (for authorizing a cascading DeleteRole).
func (s *Store) RoleUses(ctx context.Context, sc Scope, id string) (RoleUse, error) {
	if _, err := parseID("role_id", id); err != nil {
		return RoleUse{}, err
	}
	u, err := roleUses(ctx, s.pool, sc, id)
	return u, classify(err)
}

func roleUses(ctx context.Context, q querier, sc Scope, id string) (RoleUse, error) {
	var u RoleUse
	rows, err := q.Query(ctx, `SELECT `+bindingColumns+` FROM bindings WHERE crdb_region = $1 AND tenant_id = $2 AND role_id = $3
ORDER BY created_at, id`, sc.Region, sc.TenantID, id)
	if err != nil {
		return u, fmt.Errorf("read role bindings: %w", err)
	}
	if u.Bindings, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Binding, error) { return scanBinding(r) }); err != nil {
		return u, fmt.Errorf("read role bindings: %w", err)
	}
	rows, err = q.Query(ctx, `SELECT id::TEXT, status FROM elevations
WHERE crdb_region = $1 AND tenant_id = $2 AND role_id = $3 AND status IN ('pending', 'active') ORDER BY created_at, id`, sc.Region, sc.TenantID, id)
	if err != nil {
		return u, fmt.Errorf("read role elevations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var eid, status string
		if err := rows.Scan(&eid, &status); err != nil {
			return u, fmt.Errorf("read role elevations: %w", err)
		}
		if status == ElevationPending {
			u.Pending = append(u.Pending, eid)
		} else {
			u.Active = append(u.Active, eid)
		}
	}
	return u, rows.Err()
}

// idList names at most 20 ids, and how many more there are.
func idList(ids []string) string {
	if len(ids) <= 20 {
		return strings.Join(ids, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(ids[:20], ", "), len(ids)-20)
}

func bindingIDs(bs []Binding) []string {
	ids := make([]string, len(bs))
	for i, b := range bs {
		ids[i] = b.ID
	}
	return ids
}

// bindingsGone is the audit record of deleted bindings: each one's summary and id.
func bindingsGone(bs []Binding) []map[string]any {
	out := make([]map[string]any, len(bs))
	for i, b := range bs {
		out[i] = bindingSummary(b)
		out[i]["id"] = b.ID
	}
	return out
}

// DeleteRole deletes a role of the tenant (never a built-in one). A role still used
// (RoleUse) is refused with ErrPrecondition naming what uses it, unless cascade: then
// its bindings are deleted, its active elevations ended and its pending ones denied,
// all in the role's transaction, under one audit event (role.delete) that lists them.
// Decided elevations keep the role's id as history. It returns what went.
func (s *Store) DeleteRole(ctx context.Context, c Change, sc Scope, id string, cascade bool) (RoleUse, int64, error) {
	if _, err := parseID("role_id", id); err != nil {
		return RoleUse{}, 0, err
	}
	if r, ok := BuiltinRole(id); ok {
		return RoleUse{}, 0, fmt.Errorf("%w: role_id: %s is the built-in role %q, which cannot be deleted", ErrPrecondition, id, r.Name)
	}
	var gone RoleUse
	rev, err := s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		role, err := getRole(ctx, tx, sc, id, " FOR UPDATE")
		if err != nil {
			return audit{}, err
		}
		if gone, err = roleUses(ctx, tx, sc, id); err != nil {
			return audit{}, err
		}
		if !cascade && !gone.empty() {
			var parts []string
			if len(gone.Bindings) > 0 {
				parts = append(parts, "bindings "+idList(bindingIDs(gone.Bindings)))
			}
			if len(gone.Active) > 0 {
				parts = append(parts, "active elevations "+idList(gone.Active))
			}
			if len(gone.Pending) > 0 {
				parts = append(parts, "pending elevations "+idList(gone.Pending))
			}
			return audit{}, fmt.Errorf("%w: role_id: role %s is still used by %s; delete those first, or set cascade to delete them with the role",
				ErrPrecondition, id, strings.Join(parts, "; "))
		}
		if _, err := tx.Exec(ctx, `DELETE FROM bindings WHERE crdb_region = $1 AND tenant_id = $2 AND role_id = $3`, sc.Region, sc.TenantID, id); err != nil {
			return audit{}, fmt.Errorf("delete role bindings: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE elevations SET status = 'ended', ends_at = least(ends_at, now())
WHERE crdb_region = $1 AND tenant_id = $2 AND role_id = $3 AND status = 'active'`, sc.Region, sc.TenantID, id); err != nil {
			return audit{}, fmt.Errorf("end role elevations: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE elevations SET status = 'denied', decided_at = now()
WHERE crdb_region = $1 AND tenant_id = $2 AND role_id = $3 AND status = 'pending'`, sc.Region, sc.TenantID, id); err != nil {
			return audit{}, fmt.Errorf("deny role elevations: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM roles WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`, sc.Region, sc.TenantID, id); err != nil {
			return audit{}, fmt.Errorf("delete role: %w", err)
		}
		after := map[string]any{"cascade": cascade, "deleted_bindings": bindingsGone(gone.Bindings),
			"ended_elevations": nonNilIDs(gone.Active), "denied_elevations": nonNilIDs(gone.Pending)}
		return audit{action: "role.delete", targetKind: "role", targetID: id, before: roleSummary(role), after: after}, nil
	})
	if err != nil {
		return RoleUse{}, 0, err
	}
	return gone, rev, nil
}

func nonNilIDs(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}
