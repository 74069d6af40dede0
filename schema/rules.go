package schema

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Membership rules ("birthright" rules, issue 15): an identity for which a rule's
// condition holds is a member of the rule's groups, for as long as it holds. Rule
// memberships are recomputed, in the same transaction, whenever an identity is created
// or changed and whenever a rule is created, changed or deleted: memberships a rule
// gave that no rule gives any more are removed, so a mover accumulates nothing.
// Memberships added by hand are marked manual, kept, and never removed by a rule.
// Conditions are CEL, judged by the RuleMatcher the region gives the store
// (WithRuleMatcher): the store knows no CEL. Disabled and expired identities get no rule
// memberships. See docs/lifecycle.md.

// MembershipRule gives the identities its Condition holds for membership of GroupIDs.
type MembershipRule struct {
	ID          string
	Name        string
	Description string
	Condition   string
	GroupIDs    []string // sorted when read
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// RuleMatcher reports whether condition holds for identity i. An error counts as "does
// not hold" (no membership is given on an error).
type RuleMatcher func(condition string, i Identity) (bool, error)

// Sources of a group membership.
const (
	SourceManual = "manual"
	SourceRule   = "rule"
)

const maxRuleGroups = 50

// WithRuleMatcher returns a copy of s that judges membership rules with m. A store
// without one refuses identity changes while the tenant has rules (it cannot tell which
// memberships they give).
func (s *Store) WithRuleMatcher(m RuleMatcher) *Store {
	c := *s
	c.rules = m
	return &c
}

// Membership is one identity's membership of one group.
type Membership struct {
	IdentityID string `json:"identity_id"`
	GroupID    string `json:"group_id"`
}

// RuleChanges are the memberships rules added and removed in one change.
type RuleChanges struct {
	Added   []Membership `json:"added,omitempty"`
	Removed []Membership `json:"removed,omitempty"`
}

func (r RuleChanges) empty() bool { return len(r.Added) == 0 && len(r.Removed) == 0 }

// MembershipRuleUpdate lists the fields to change; nil fields stay as they are.
type MembershipRuleUpdate struct {
	Name, Description, Condition *string
	GroupIDs                     []string // nil: unchanged
}

func checkRule(r MembershipRule) error {
	if err := checkText("name", r.Name, true, 200); err != nil {
		return err
	}
	if err := checkText("description", r.Description, false, 500); err != nil {
		return err
	}
	if r.Condition == "" {
		return fieldErr("condition", "required")
	}
	if len(r.Condition) > 4096 {
		return fieldErr("condition", "at most 4096 bytes, got %d", len(r.Condition))
	}
	if len(r.GroupIDs) == 0 || len(r.GroupIDs) > maxRuleGroups {
		return fieldErr("group_ids", "between 1 and %d groups, got %d", maxRuleGroups, len(r.GroupIDs))
	}
	seen := map[string]bool{}
	for i, g := range r.GroupIDs {
		if _, err := parseID(fmt.Sprintf("group_ids[%d]", i), g); err != nil {
			return err
		}
		if seen[g] {
			return fieldErr(fmt.Sprintf("group_ids[%d]", i), "group %s is listed twice", g)
		}
		seen[g] = true
	}
	return nil
}

// CreateMembershipRule adds a rule and applies it to every identity of the tenant, in
// one transaction with its audit event (which lists the memberships it added). The
// condition must already be checked by the caller.
func (s *Store) CreateMembershipRule(ctx context.Context, c Change, sc Scope, r MembershipRule) (MembershipRule, RuleChanges, int64, error) {
	r.GroupIDs = slices.Clone(r.GroupIDs)
	if err := checkRule(r); err != nil {
		return MembershipRule{}, RuleChanges{}, 0, err
	}
	var ch RuleChanges
	rev, err := s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		err := tx.QueryRow(ctx, `INSERT INTO membership_rules (tenant_id, crdb_region, name, description, condition)
VALUES ($1, $2, $3, $4, $5) RETURNING id::TEXT, created_at, updated_at`, sc.TenantID, sc.Region, r.Name, r.Description, r.Condition).
			Scan(&r.ID, &r.CreatedAt, &r.UpdatedAt)
		if err != nil {
			if errors.Is(classify(err), ErrConflict) {
				return audit{}, fieldErrConflict("name", "a membership rule named %q exists", r.Name)
			}
			return audit{}, fmt.Errorf("insert membership rule: %w", err)
		}
		if err := insertRuleGroups(ctx, tx, sc, r.ID, r.GroupIDs); err != nil {
			return audit{}, err
		}
		slices.Sort(r.GroupIDs)
		if ch, err = s.reconcileTenant(ctx, tx, sc); err != nil {
			return audit{}, err
		}
		return audit{action: "membership_rule.create", targetKind: "membership_rule", targetID: r.ID, after: ruleSummary(r, ch)}, nil
	})
	if err != nil {
		return MembershipRule{}, RuleChanges{}, 0, err
	}
	return r, ch, rev, nil
}

// UpdateMembershipRule changes a rule and recomputes every identity's rule memberships
// in the same transaction.
func (s *Store) UpdateMembershipRule(ctx context.Context, c Change, sc Scope, id string, u MembershipRuleUpdate) (MembershipRule, RuleChanges, int64, error) {
	if _, err := parseID("id", id); err != nil {
		return MembershipRule{}, RuleChanges{}, 0, err
	}
	var out MembershipRule
	var ch RuleChanges
	rev, err := s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		before, err := getRule(ctx, tx, sc, id, " FOR UPDATE")
		if err != nil {
			return audit{}, err
		}
		out = before
		out.GroupIDs = slices.Clone(before.GroupIDs)
		if u.Name != nil {
			out.Name = *u.Name
		}
		if u.Description != nil {
			out.Description = *u.Description
		}
		if u.Condition != nil {
			out.Condition = *u.Condition
		}
		if u.GroupIDs != nil {
			out.GroupIDs = slices.Clone(u.GroupIDs)
		}
		if err := checkRule(out); err != nil {
			return audit{}, err
		}
		err = tx.QueryRow(ctx, `UPDATE membership_rules SET name = $4, description = $5, condition = $6, updated_at = now()
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3 RETURNING updated_at`, sc.Region, sc.TenantID, id, out.Name, out.Description, out.Condition).
			Scan(&out.UpdatedAt)
		if err != nil {
			if errors.Is(classify(err), ErrConflict) {
				return audit{}, fieldErrConflict("name", "a membership rule named %q exists", out.Name)
			}
			return audit{}, fmt.Errorf("update membership rule: %w", err)
		}
		if u.GroupIDs != nil {
			if _, err := tx.Exec(ctx, `DELETE FROM membership_rule_groups WHERE crdb_region = $1 AND tenant_id = $2 AND rule_id = $3`,
				sc.Region, sc.TenantID, id); err != nil {
				return audit{}, fmt.Errorf("replace membership rule groups: %w", err)
			}
			if err := insertRuleGroups(ctx, tx, sc, id, out.GroupIDs); err != nil {
				return audit{}, err
			}
			slices.Sort(out.GroupIDs)
		}
		if ch, err = s.reconcileTenant(ctx, tx, sc); err != nil {
			return audit{}, err
		}
		return audit{action: "membership_rule.update", targetKind: "membership_rule", targetID: id,
			before: ruleSummary(before, RuleChanges{}), after: ruleSummary(out, ch)}, nil
	})
	if err != nil {
		return MembershipRule{}, RuleChanges{}, 0, err
	}
	return out, ch, rev, nil
}

// DeleteMembershipRule removes a rule and, in the same transaction, the memberships
// only it gave.
func (s *Store) DeleteMembershipRule(ctx context.Context, c Change, sc Scope, id string) (RuleChanges, int64, error) {
	if _, err := parseID("id", id); err != nil {
		return RuleChanges{}, 0, err
	}
	var ch RuleChanges
	rev, err := s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		before, err := getRule(ctx, tx, sc, id, " FOR UPDATE")
		if err != nil {
			return audit{}, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM membership_rules WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`,
			sc.Region, sc.TenantID, id); err != nil {
			return audit{}, fmt.Errorf("delete membership rule: %w", err)
		}
		if ch, err = s.reconcileTenant(ctx, tx, sc); err != nil {
			return audit{}, err
		}
		return audit{action: "membership_rule.delete", targetKind: "membership_rule", targetID: id,
			before: ruleSummary(before, RuleChanges{}), after: map[string]any{"memberships": ch}}, nil
	})
	return ch, rev, err
}

// GetMembershipRule reads one rule.
func (s *Store) GetMembershipRule(ctx context.Context, sc Scope, id string) (MembershipRule, error) {
	if _, err := parseID("id", id); err != nil {
		return MembershipRule{}, err
	}
	return getRule(ctx, s.pool, sc, id, "")
}

// ListMembershipRules pages through the tenant's rules, oldest first.
func (s *Store) ListMembershipRules(ctx context.Context, sc Scope, p Page) ([]MembershipRule, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	after, err := p.timeKeyed()
	if err != nil {
		return nil, "", err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+ruleColumns+` FROM membership_rules
WHERE crdb_region = $1 AND tenant_id = $2 AND (created_at, id) > ($3, $4::UUID) ORDER BY created_at, id LIMIT $5`,
		sc.Region, sc.TenantID, after.At, after.ID, limit+1)
	if err != nil {
		return nil, "", classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (MembershipRule, error) { return scanRule(r) })
	if err != nil {
		return nil, "", classify(err)
	}
	out, next := pageOf(out, limit, func(r MembershipRule) timeKey { return timeKey{r.CreatedAt, r.ID} })
	if err := fillRuleGroups(ctx, s.pool, sc, out); err != nil {
		return nil, "", err
	}
	return out, next, nil
}

const ruleColumns = `id::TEXT, name, description, condition, created_at, updated_at`

func scanRule(r pgx.Row) (MembershipRule, error) {
	var m MembershipRule
	err := r.Scan(&m.ID, &m.Name, &m.Description, &m.Condition, &m.CreatedAt, &m.UpdatedAt)
	return m, err
}

func getRule(ctx context.Context, q querier, sc Scope, id, lock string) (MembershipRule, error) {
	r, err := scanRule(q.QueryRow(ctx, `SELECT `+ruleColumns+` FROM membership_rules WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`+lock,
		sc.Region, sc.TenantID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return MembershipRule{}, fmt.Errorf("%w: membership rule %s", ErrNotFound, id)
	}
	if err != nil {
		return MembershipRule{}, fmt.Errorf("read membership rule: %w", err)
	}
	rs := []MembershipRule{r}
	if err := fillRuleGroups(ctx, q, sc, rs); err != nil {
		return MembershipRule{}, err
	}
	return rs[0], nil
}

// fillRuleGroups reads the groups of rules (all of the tenant's rules when rules is
// every rule) in one statement.
func fillRuleGroups(ctx context.Context, q querier, sc Scope, rules []MembershipRule) error {
	if len(rules) == 0 {
		return nil
	}
	ids := make([]string, len(rules))
	at := make(map[string]int, len(rules))
	for i, r := range rules {
		ids[i], at[r.ID] = r.ID, i
	}
	rows, err := q.Query(ctx, `SELECT rule_id::TEXT, group_id::TEXT FROM membership_rule_groups
WHERE crdb_region = $1 AND tenant_id = $2 AND rule_id = ANY($3::UUID[]) ORDER BY rule_id, group_id`, sc.Region, sc.TenantID, ids)
	if err != nil {
		return fmt.Errorf("read membership rule groups: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var rule, group string
		if err := rows.Scan(&rule, &group); err != nil {
			return fmt.Errorf("read membership rule groups: %w", err)
		}
		rules[at[rule]].GroupIDs = append(rules[at[rule]].GroupIDs, group)
	}
	return rows.Err()
}

func insertRuleGroups(ctx context.Context, tx pgx.Tx, sc Scope, ruleID string, groups []string) error {
	for i, g := range groups {
		if err := ruleTargetAllowed(ctx, tx, sc, fmt.Sprintf("group_ids[%d]", i), g); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO membership_rule_groups (tenant_id, crdb_region, rule_id, group_id) VALUES ($1, $2, $3, $4)`,
			sc.TenantID, sc.Region, ruleID, g); err != nil {
			if errors.Is(classify(err), ErrNotFound) {
				return fieldErr(fmt.Sprintf("group_ids[%d]", i), "no group %s in tenant %q", g, sc.TenantID)
			}
			return fmt.Errorf("insert membership rule group: %w", err)
		}
	}
	return nil
}

func ruleSummary(r MembershipRule, ch RuleChanges) map[string]any {
	m := map[string]any{"name": r.Name, "condition": r.Condition, "group_ids": r.GroupIDs}
	if !ch.empty() {
		m["memberships"] = ch
	}
	return m
}

// loadRules reads every rule of the tenant with its groups.
func loadRules(ctx context.Context, tx pgx.Tx, sc Scope) ([]MembershipRule, error) {
	rows, err := tx.Query(ctx, `SELECT `+ruleColumns+` FROM membership_rules WHERE crdb_region = $1 AND tenant_id = $2 ORDER BY created_at, id`,
		sc.Region, sc.TenantID)
	if err != nil {
		return nil, fmt.Errorf("read membership rules: %w", err)
	}
	rules, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (MembershipRule, error) { return scanRule(r) })
	if err != nil {
		return nil, fmt.Errorf("read membership rules: %w", err)
	}
	return rules, fillRuleGroups(ctx, tx, sc, rules)
}

// ruleGroups is the set of groups rules give identity i now: none when it is disabled
// or expired.
func (s *Store) ruleGroups(rules []MembershipRule, i Identity, now time.Time) (map[string]bool, error) {
	want := map[string]bool{}
	if i.Status != StatusActive || !i.ExpiresAt.IsZero() && !now.Before(i.ExpiresAt) {
		return want, nil
	}
	if len(rules) > 0 && s.rules == nil {
		return nil, fmt.Errorf("%w: tenant %q has membership rules, and this store has no rule matcher to judge them", ErrUnavailable, i.TenantID)
	}
	for _, r := range rules {
		if ok, err := s.rules(r.Condition, i); err == nil && ok {
			for _, g := range r.GroupIDs {
				want[g] = true
			}
		}
	}
	return want, nil
}

// reconcile brings the rule memberships of identities (with their current memberships
// have: group id → source, per identity) to what rules give them, inside tx.
func (s *Store) reconcile(ctx context.Context, tx pgx.Tx, sc Scope, rules []MembershipRule, identities []Identity,
	have map[string]map[string]string) (RuleChanges, error) {
	var ch RuleChanges
	now := time.Now()
	for _, i := range identities {
		want, err := s.ruleGroups(rules, i, now)
		if err != nil {
			return RuleChanges{}, err
		}
		for g := range want {
			if _, ok := have[i.ID][g]; !ok {
				ch.Added = append(ch.Added, Membership{IdentityID: i.ID, GroupID: g})
			}
		}
		for g, source := range have[i.ID] {
			if source == SourceRule && !want[g] {
				ch.Removed = append(ch.Removed, Membership{IdentityID: i.ID, GroupID: g})
			}
		}
	}
	byPair := func(a, b Membership) int {
		return cmp.Or(cmp.Compare(a.IdentityID, b.IdentityID), cmp.Compare(a.GroupID, b.GroupID))
	}
	slices.SortFunc(ch.Added, byPair)
	slices.SortFunc(ch.Removed, byPair)
	for _, m := range ch.Added {
		if _, err := tx.Exec(ctx, `INSERT INTO group_members (tenant_id, crdb_region, group_id, identity_id, source) VALUES ($1, $2, $3, $4, 'rule')`,
			sc.TenantID, sc.Region, m.GroupID, m.IdentityID); err != nil {
			return RuleChanges{}, fmt.Errorf("add rule membership: %w", err)
		}
	}
	if len(ch.Removed) == 0 {
		return ch, nil
	}
	// A rule membership that carried the last tenant admin cannot silently go.
	return ch, keepsTenantAdmin(ctx, tx, sc, func() error {
		for _, m := range ch.Removed {
			if _, err := tx.Exec(ctx, `DELETE FROM group_members
WHERE crdb_region = $1 AND tenant_id = $2 AND group_id = $3 AND identity_id = $4 AND source = 'rule'`,
				sc.Region, sc.TenantID, m.GroupID, m.IdentityID); err != nil {
				return fmt.Errorf("remove rule membership: %w", err)
			}
		}
		return nil
	})
}

// memberships reads the group memberships (group id → source) of the tenant's
// identities, or of one identity when identityID is not "".
func memberships(ctx context.Context, tx pgx.Tx, sc Scope, identityID string) (map[string]map[string]string, error) {
	q, args := `SELECT identity_id::TEXT, group_id::TEXT, source FROM group_members WHERE crdb_region = $1 AND tenant_id = $2`,
		[]any{sc.Region, sc.TenantID}
	if identityID != "" {
		q, args = q+` AND identity_id = $3`, append(args, identityID)
	}
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read memberships: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]string{}
	for rows.Next() {
		var id, g, source string
		if err := rows.Scan(&id, &g, &source); err != nil {
			return nil, fmt.Errorf("read memberships: %w", err)
		}
		if out[id] == nil {
			out[id] = map[string]string{}
		}
		out[id][g] = source
	}
	return out, rows.Err()
}

// reconcileTenant recomputes the rule memberships of every identity of the tenant,
// inside tx (a rule changed). It reads every identity: one transaction per rule change,
// fine for tenants of some ten thousand identities.
func (s *Store) reconcileTenant(ctx context.Context, tx pgx.Tx, sc Scope) (RuleChanges, error) {
	rules, err := loadRules(ctx, tx, sc)
	if err != nil {
		return RuleChanges{}, err
	}
	rows, err := tx.Query(ctx, `SELECT `+identityColumns+` FROM identities WHERE crdb_region = $1 AND tenant_id = $2`, sc.Region, sc.TenantID)
	if err != nil {
		return RuleChanges{}, fmt.Errorf("read identities: %w", err)
	}
	identities, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Identity, error) { return scanIdentity(sc.TenantID, r) })
	if err != nil {
		return RuleChanges{}, fmt.Errorf("read identities: %w", err)
	}
	have, err := memberships(ctx, tx, sc, "")
	if err != nil {
		return RuleChanges{}, err
	}
	return s.reconcile(ctx, tx, sc, rules, identities, have)
}

// reconcileIdentity recomputes i's rule memberships inside tx (i was created or
// changed) and, when they changed, bumps the policy revision. Without rules nothing
// is read but the rules (none can have given a membership: deleting a rule removes
// what it gave).
func (s *Store) reconcileIdentity(ctx context.Context, tx pgx.Tx, sc Scope, i Identity) (RuleChanges, error) {
	rules, err := loadRules(ctx, tx, sc)
	if err != nil || len(rules) == 0 {
		return RuleChanges{}, err
	}
	have, err := memberships(ctx, tx, sc, i.ID)
	if err != nil {
		return RuleChanges{}, err
	}
	ch, err := s.reconcile(ctx, tx, sc, rules, []Identity{i}, have)
	if err != nil || ch.empty() {
		return ch, err
	}
	var judged int64
	if sc.guard != nil && len(ch.Added) > 0 {
		if judged, err = (*sc.guard)(ctx, ch.Added); err != nil {
			return RuleChanges{}, err
		}
	}
	rev, err := bumpRevision(ctx, tx, sc.TenantID)
	if err != nil {
		return RuleChanges{}, err
	}
	if judged > 0 && rev != judged+1 {
		return RuleChanges{}, fmt.Errorf("%w: the policy changed (revision %d) since the memberships this change gives were authorized at revision %d; retry",
			ErrPrecondition, rev-1, judged)
	}
	return ch, nil
}

// applyRules recomputes i's rule memberships inside tx and records what changed in the
// audit summary of the identity change.
func (s *Store) applyRules(ctx context.Context, tx pgx.Tx, sc Scope, i Identity, summary map[string]any) error {
	ch, err := s.reconcileIdentity(ctx, tx, sc, i)
	if err != nil {
		return err
	}
	if !ch.empty() {
		summary["rule_memberships"] = ch
	}
	return nil
}

// rulesTargeting lists the ids of the rules that give group groupID.
func rulesTargeting(ctx context.Context, q querier, sc Scope, groupID string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT rule_id::TEXT FROM membership_rule_groups WHERE crdb_region = $1 AND tenant_id = $2 AND group_id = $3
ORDER BY rule_id`, sc.Region, sc.TenantID, groupID)
	if err != nil {
		return nil, fmt.Errorf("read membership rules of group: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read membership rules of group: %w", err)
	}
	return ids, nil
}

// ruleTargetAllowed refuses a group as a rule's target when a SCIM client manages its
// members (the directory and the rule would fight over them) or when it has an allow
// binding of a privileged role (its members change only through approved change
// requests, never automatically). A group that does not exist passes: the foreign key
// names it.
func ruleTargetAllowed(ctx context.Context, tx pgx.Tx, sc Scope, field, groupID string) error {
	var scim bool
	err := tx.QueryRow(ctx, `SELECT scim_managed FROM groups WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`,
		sc.Region, sc.TenantID, groupID).Scan(&scim)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read group: %w", err)
	}
	if scim {
		return fieldErr(field, "group %s is managed by a SCIM client, which decides its members: a membership rule cannot target it", groupID)
	}
	roles, err := privilegedAllowRoles(ctx, tx, sc, groupID)
	if err != nil {
		return err
	}
	if len(roles) > 0 {
		return fmt.Errorf("%w: %s: group %s has an allow binding of the privileged role %s: its members change only through approved change requests, never by a rule",
			ErrPrecondition, field, groupID, roles[0])
	}
	return nil
}

// privilegedAllowRoles lists the privileged roles (stored or built-in) allow-bound to
// group groupID.
func privilegedAllowRoles(ctx context.Context, tx pgx.Tx, sc Scope, groupID string) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT DISTINCT b.role_id::TEXT, coalesce(r.privileged, false) FROM bindings b
LEFT JOIN roles r ON r.crdb_region = b.crdb_region AND r.tenant_id = b.tenant_id AND r.id = b.role_id
WHERE b.crdb_region = $1 AND b.tenant_id = $2 AND b.principal_kind = 'group' AND b.principal_id = $3 AND b.effect = 'allow'`,
		sc.Region, sc.TenantID, groupID)
	if err != nil {
		return nil, fmt.Errorf("read group bindings: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		var privileged bool
		if err := rows.Scan(&id, &privileged); err != nil {
			return nil, fmt.Errorf("read group bindings: %w", err)
		}
		if b, ok := BuiltinRole(id); privileged || ok && b.Privileged {
			out = append(out, id)
		}
	}
	return out, rows.Err()
}

// refusePrivilegedOnRuleGroup refuses giving a rule-targeted group a privileged role
// (an allow binding of it on groupID; or, with groupID "", the role becoming privileged
// or wider while allow-bound to such groups): the rule would hand it to everyone it
// matches without a second person.
func refusePrivilegedOnRuleGroup(ctx context.Context, tx pgx.Tx, sc Scope, roleID, groupID string) error {
	q, args := `SELECT g.group_id::TEXT, g.rule_id::TEXT FROM membership_rule_groups g
JOIN bindings b ON b.crdb_region = g.crdb_region AND b.tenant_id = g.tenant_id AND b.principal_id = g.group_id
WHERE g.crdb_region = $1 AND g.tenant_id = $2 AND b.principal_kind = 'group' AND b.effect = 'allow' AND b.role_id = $3
ORDER BY 1, 2 LIMIT 1`, []any{sc.Region, sc.TenantID, roleID}
	if groupID != "" {
		q, args = `SELECT group_id::TEXT, rule_id::TEXT FROM membership_rule_groups WHERE crdb_region = $1 AND tenant_id = $2 AND group_id = $3
ORDER BY 2 LIMIT 1`, []any{sc.Region, sc.TenantID, groupID}
	}
	var group, rule string
	err := tx.QueryRow(ctx, q, args...).Scan(&group, &rule)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("read membership rules of the role's groups: %w", err)
	}
	return fmt.Errorf("%w: group %s is a target of membership rule %s: a privileged role cannot reach it, since the rule would hand it to everyone it matches without a second person's approval",
		ErrPrecondition, group, rule)
}

// rolePrivileged reports whether role id is privileged (built-in or stored).
func rolePrivileged(ctx context.Context, tx pgx.Tx, sc Scope, id string) (bool, error) {
	if b, ok := BuiltinRole(id); ok {
		return b.Privileged, nil
	}
	var privileged bool
	err := tx.QueryRow(ctx, `SELECT privileged FROM roles WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`, sc.Region, sc.TenantID, id).Scan(&privileged)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil // the insert names the missing role
	}
	if err != nil {
		return false, fmt.Errorf("read role: %w", err)
	}
	return privileged, nil
}
