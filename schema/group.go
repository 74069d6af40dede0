package schema

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Reading, updating and deleting groups (issue 14).

const groupColumns = `id::TEXT, name, description, coalesce(external_id, '')`

func scanGroup(r pgx.Row) (Group, error) {
	var g Group
	err := r.Scan(&g.ID, &g.Name, &g.Description, &g.ExternalID)
	return g, err
}

func groupSummary(g Group) map[string]any {
	return map[string]any{"name": g.Name, "description": g.Description, "external_id": g.ExternalID}
}

// GetGroup reads one group of the tenant.
func (s *Store) GetGroup(ctx context.Context, sc Scope, id string) (Group, error) {
	if _, err := parseID("group_id", id); err != nil {
		return Group{}, err
	}
	return getGroup(ctx, s.pool, sc, id, "")
}

func getGroup(ctx context.Context, q querier, sc Scope, id, lock string) (Group, error) {
	g, err := scanGroup(q.QueryRow(ctx, `SELECT `+groupColumns+` FROM groups WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`+lock,
		sc.Region, sc.TenantID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Group{}, fmt.Errorf("%w: group %s in tenant %q", ErrNotFound, id, sc.TenantID)
	}
	if err != nil {
		return Group{}, classify(fmt.Errorf("read group: %w", err))
	}
	return g, nil
}

// GroupFilter selects groups; empty fields select all.
type GroupFilter struct {
	NamePrefix string
	ExternalID string // exactly
}

// ListGroups pages through the tenant's groups ordered by name.
func (s *Store) ListGroups(ctx context.Context, sc Scope, f GroupFilter, p Page) ([]Group, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	if err := checkText("name_prefix", f.NamePrefix, false, 200); err != nil {
		return nil, "", err
	}
	if err := checkText("external_id", f.ExternalID, false, 500); err != nil {
		return nil, "", err
	}
	var after nameKey
	if err := p.decode(&after); err != nil {
		return nil, "", err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+groupColumns+` FROM groups
WHERE crdb_region = $1 AND tenant_id = $2 AND name > $3 AND left(name, char_length($4)) = $4 AND ($5 = '' OR external_id = $5)
ORDER BY name LIMIT $6`, sc.Region, sc.TenantID, after.Name, f.NamePrefix, f.ExternalID, limit+1)
	if err != nil {
		return nil, "", classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Group, error) { return scanGroup(r) })
	if err != nil {
		return nil, "", classify(err)
	}
	if len(out) <= limit {
		return out, "", nil
	}
	out = out[:limit]
	return out, encodeToken(nameKey{out[limit-1].Name}), nil
}

// GroupUpdate lists the fields to change; nil fields stay as they are.
type GroupUpdate struct {
	Name        *string
	Description *string
	ExternalID  *string // "" clears it
}

// UpdateGroup changes a group and returns it and the policy revision: unchanged, and
// no audit event written, when the update changes nothing.
func (s *Store) UpdateGroup(ctx context.Context, c Change, sc Scope, id string, u GroupUpdate) (Group, int64, error) {
	if _, err := parseID("group_id", id); err != nil {
		return Group{}, 0, err
	}
	if u.Name != nil {
		if err := checkText("name", *u.Name, true, 200); err != nil {
			return Group{}, 0, err
		}
	}
	if u.Description != nil {
		if err := checkText("description", *u.Description, false, 500); err != nil {
			return Group{}, 0, err
		}
	}
	if u.ExternalID != nil {
		if err := checkText("external_id", *u.ExternalID, false, 500); err != nil {
			return Group{}, 0, err
		}
	}
	var before, out Group
	rev, err := s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		var err error
		if before, err = getGroup(ctx, tx, sc, id, " FOR UPDATE"); err != nil {
			return audit{}, err
		}
		after := before
		if u.Name != nil {
			after.Name = *u.Name
		}
		if u.Description != nil {
			after.Description = *u.Description
		}
		if u.ExternalID != nil {
			after.ExternalID = *u.ExternalID
		}
		if after == before {
			return audit{}, errUnchanged
		}
		out, err = scanGroup(tx.QueryRow(ctx, `UPDATE groups SET name = $4, description = $5, external_id = nullif($6, ''), updated_at = now()
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3 RETURNING `+groupColumns,
			sc.Region, sc.TenantID, id, after.Name, after.Description, after.ExternalID))
		if err != nil {
			if errors.Is(classify(err), ErrConflict) {
				return audit{}, fieldErrConflict("name", "a group named %q exists", after.Name)
			}
			return audit{}, fmt.Errorf("update group: %w", err)
		}
		return audit{action: "group.update", targetKind: "group", targetID: id, before: groupSummary(before), after: groupSummary(out)}, nil
	})
	if errors.Is(err, errUnchanged) {
		rev, err = s.PolicyRevision(ctx, sc.TenantID)
		return before, rev, err
	}
	if err != nil {
		return Group{}, 0, err
	}
	return out, rev, nil
}

// Member is an identity in a group, as ListGroupMembers shows it.
type Member struct {
	IdentityID  string
	Kind        string
	DisplayName string
	Email       string
	Status      string
	AddedAt     time.Time
	Source      string // SourceManual or SourceRule
}

// ListGroupMembers pages through group id's members ordered by identity id; a group
// that does not exist is ErrNotFound.
func (s *Store) ListGroupMembers(ctx context.Context, sc Scope, id, source string, p Page) ([]Member, string, error) {
	if _, err := parseID("group_id", id); err != nil {
		return nil, "", err
	}
	if source != "" && source != SourceManual && source != SourceRule {
		return nil, "", fieldErr("source", "must be \"\", %q or %q, got %q", SourceManual, SourceRule, source)
	}
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
	var out []Member
	err = s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := getGroup(ctx, tx, sc, id, ""); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT i.id::TEXT, i.kind, i.display_name, coalesce(i.email, ''), i.status, m.created_at, m.source
FROM group_members m JOIN identities i ON i.crdb_region = m.crdb_region AND i.tenant_id = m.tenant_id AND i.id = m.identity_id
WHERE m.crdb_region = $1 AND m.tenant_id = $2 AND m.group_id = $3 AND m.identity_id > $4::UUID AND ($6 = '' OR m.source = $6)
ORDER BY m.identity_id LIMIT $5`, sc.Region, sc.TenantID, id, after, limit+1, source)
		if err != nil {
			return fmt.Errorf("read members: %w", err)
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Member, error) {
			var m Member
			return m, r.Scan(&m.IdentityID, &m.Kind, &m.DisplayName, &m.Email, &m.Status, &m.AddedAt, &m.Source)
		})
		if err != nil {
			return fmt.Errorf("read members: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	if len(out) <= limit {
		return out, "", nil
	}
	out = out[:limit]
	return out, encodeToken(out[limit-1].IdentityID), nil
}

// GroupDeletion is what went with a group.
type GroupDeletion struct {
	Bindings []Binding // its bindings (cascade)
	Members  []string  // the identities that were members
}

// GroupBindings reads the bindings whose principal is group id (expired ones
// included), oldest first: what DeleteGroup with cascade deletes.
func (s *Store) GroupBindings(ctx context.Context, sc Scope, id string) ([]Binding, error) {
	if _, err := parseID("group_id", id); err != nil {
		return nil, err
	}
	bs, err := groupBindings(ctx, s.pool, sc, id)
	return bs, classify(err)
}

func groupBindings(ctx context.Context, q querier, sc Scope, id string) ([]Binding, error) {
	rows, err := q.Query(ctx, `SELECT `+bindingColumns+` FROM bindings
WHERE crdb_region = $1 AND tenant_id = $2 AND principal_kind = 'group' AND principal_id = $3 ORDER BY created_at, id`, sc.Region, sc.TenantID, id)
	if err != nil {
		return nil, fmt.Errorf("read group bindings: %w", err)
	}
	bs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Binding, error) { return scanBinding(r) })
	if err != nil {
		return nil, fmt.Errorf("read group bindings: %w", err)
	}
	return bs, nil
}

// DeleteGroup deletes a group and its memberships. A group that is still a binding's
// principal is refused with ErrPrecondition naming the bindings, unless cascade: then
// they are deleted too. All in one transaction, under one audit event (group.delete)
// listing the bindings and members that went; a deletion that would leave the tenant
// without an active tenant admin is refused (keepsTenantAdmin).
func (s *Store) DeleteGroup(ctx context.Context, c Change, sc Scope, id string, cascade bool) (GroupDeletion, int64, error) {
	if _, err := parseID("group_id", id); err != nil {
		return GroupDeletion{}, 0, err
	}
	var gone GroupDeletion
	rev, err := s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		g, err := getGroup(ctx, tx, sc, id, " FOR UPDATE")
		if err != nil {
			return audit{}, err
		}
		gone = GroupDeletion{}
		if gone.Bindings, err = groupBindings(ctx, tx, sc, id); err != nil {
			return audit{}, err
		}
		rules, err := rulesTargeting(ctx, tx, sc, id)
		if err != nil {
			return audit{}, err
		}
		if len(rules) > 0 {
			return audit{}, fmt.Errorf("%w: group_id: group %s is a target of membership rules %s; change or delete them first (cascade does not)",
				ErrPrecondition, id, idList(rules))
		}
		if !cascade && len(gone.Bindings) > 0 {
			return audit{}, fmt.Errorf("%w: group_id: group %s is still the principal of bindings %s; delete them first, or set cascade to delete them with the group",
				ErrPrecondition, id, idList(bindingIDs(gone.Bindings)))
		}
		err = keepsTenantAdmin(ctx, tx, sc, func() error {
			if _, err := tx.Exec(ctx, `DELETE FROM bindings WHERE crdb_region = $1 AND tenant_id = $2 AND principal_kind = 'group' AND principal_id = $3`,
				sc.Region, sc.TenantID, id); err != nil {
				return fmt.Errorf("delete group bindings: %w", err)
			}
			rows, err := tx.Query(ctx, `DELETE FROM group_members WHERE crdb_region = $1 AND tenant_id = $2 AND group_id = $3 RETURNING identity_id::TEXT`,
				sc.Region, sc.TenantID, id)
			if err != nil {
				return fmt.Errorf("delete group members: %w", err)
			}
			if gone.Members, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return fmt.Errorf("delete group members: %w", err)
			}
			if _, err := tx.Exec(ctx, `DELETE FROM groups WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`, sc.Region, sc.TenantID, id); err != nil {
				return fmt.Errorf("delete group: %w", err)
			}
			return nil
		})
		if err != nil {
			return audit{}, err
		}
		after := map[string]any{"cascade": cascade, "deleted_bindings": bindingsGone(gone.Bindings), "removed_members": nonNilIDs(gone.Members)}
		return audit{action: "group.delete", targetKind: "group", targetID: id, before: groupSummary(g), after: after}, nil
	})
	if err != nil {
		return GroupDeletion{}, 0, err
	}
	return gone, rev, nil
}

// BindingFilter selects bindings; empty fields select all.
type BindingFilter struct {
	PrincipalKind string
	PrincipalID   string
	RoleID        string
}

// ListBindingsPage pages through the tenant's bindings (expired ones included),
// oldest first.
func (s *Store) ListBindingsPage(ctx context.Context, sc Scope, f BindingFilter, p Page) ([]Binding, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	switch {
	case f.PrincipalKind == "" && f.PrincipalID == "":
	case f.PrincipalKind != "identity" && f.PrincipalKind != "group":
		return nil, "", fieldErr("principal_kind", `must be "identity" or "group" when principal_id is set`)
	default:
		if _, err := parseID("principal_id", f.PrincipalID); err != nil {
			return nil, "", err
		}
	}
	if f.RoleID != "" {
		if _, err := parseID("role_id", f.RoleID); err != nil {
			return nil, "", err
		}
	}
	after, err := p.timeKeyed()
	if err != nil {
		return nil, "", err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+bindingColumns+` FROM bindings
WHERE crdb_region = $1 AND tenant_id = $2 AND (created_at, id) > ($3, $4::UUID)
  AND ($5 = '' OR (principal_kind = $5 AND principal_id::TEXT = $6)) AND ($7 = '' OR role_id::TEXT = $7)
ORDER BY created_at, id LIMIT $8`, sc.Region, sc.TenantID, after.At, after.ID, f.PrincipalKind, f.PrincipalID, f.RoleID, limit+1)
	if err != nil {
		return nil, "", classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Binding, error) { return scanBinding(r) })
	if err != nil {
		return nil, "", classify(err)
	}
	out, next := pageOf(out, limit, func(b Binding) timeKey { return timeKey{b.CreatedAt, b.ID} })
	return out, next, nil
}
