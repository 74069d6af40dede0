package schema

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Access review campaigns (docs/access-reviews.md). A campaign snapshots one item per
// access in its scope when it is created:
//
//   - kind "binding": an allow binding an identity holds directly; revoking deletes
//     the binding, modifying replaces it with a narrower one;
//   - kind "membership": an identity's membership of a group with at least one allow
//     binding, carrying the group's roles; revoking removes the membership (the
//     group's bindings stay: its other members are reviewed on their own items).
//
// Each item goes to a reviewer: a non-human identity's owner, a human's manager, else
// the subject's manager, else the campaign's creator — never the subject itself, nor
// an identity that is not active; NULL when no one is left (only the operator, or the
// deadline, decides it). Decisions, defaults and reminders are conditional updates in
// audited transactions, so every node may run the review loop: each happens once.

// Campaign scope kinds, decisions and statuses.
const (
	CampaignScopeNHIs   = "nhis"
	CampaignScopeRole   = "role"
	CampaignScopeGroup  = "group"
	CampaignScopeTenant = "tenant"

	ReviewKeep   = "keep"
	ReviewRevoke = "revoke"
	ReviewModify = "modify"

	CampaignOpen   = "open"
	CampaignClosed = "closed"

	ItemBinding    = "binding"
	ItemMembership = "membership"
)

// Campaign is an access review campaign.
type Campaign struct {
	ID               string
	Name             string
	ScopeKind        string // CampaignScope…
	ScopeID          string // the role or group of scopes role and group
	Deadline         time.Time
	ReminderInterval time.Duration
	DefaultAction    string // ReviewKeep or ReviewRevoke, for non-sensitive access
	UnusedDays       int
	SignInClientID   string
	Status           string
	CreatedBy        string // the audit actor who created it
	CreatorID        string // its identity; "" for the operator
	CreatedAt        time.Time
	ClosedAt         time.Time
	Items, Decided   int
}

// ReviewItem is one access under review.
type ReviewItem struct {
	ID, CampaignID string
	Kind           string // ItemBinding or ItemMembership
	SubjectID      string
	SubjectName    string
	SubjectKind    string
	BindingID      string // kind binding
	GroupID        string // kind membership
	GroupName      string
	RoleIDs        []string
	RoleNames      []string
	Scopes         []string
	BindingIDs     []string // the bindings the access consists of (last use reads them)
	Sensitive      bool
	ReviewerID     string
	ReviewerName   string
	LastUsed       time.Time // zero: never, as far as the decision log remembers
	Decision       string    // "" until decided
	Justification  string
	DecidedBy      string
	DecidedAt      time.Time
	Defaulted      bool
	Applied        string
	NewRoleID      string
	NewScope       string
	CreatedAt      time.Time
}

// Risks are the item's risk findings: sensitive, never_used, unused_<n>d (no use
// within unusedDays of now).
func (i ReviewItem) Risks(now time.Time, unusedDays int) []string {
	var out []string
	if i.Sensitive {
		out = append(out, "sensitive")
	}
	switch {
	case i.LastUsed.IsZero():
		out = append(out, "never_used")
	case unusedDays > 0 && now.Sub(i.LastUsed) > time.Duration(unusedDays)*24*time.Hour:
		out = append(out, fmt.Sprintf("unused_%dd", unusedDays))
	}
	return out
}

// DefaultActionFor is the action item gets at the deadline: revoke for sensitive
// access, the campaign's default otherwise.
func (c Campaign) DefaultActionFor(i ReviewItem) string {
	if i.Sensitive {
		return ReviewRevoke
	}
	return c.DefaultAction
}

const campaignColumns = `c.id::TEXT, c.name, c.scope_kind, c.scope_id, c.deadline, c.reminder_seconds, c.default_action, c.unused_days,
 c.sign_in_client_id, c.status, c.created_by, coalesce(c.creator_id::TEXT, ''), c.created_at, coalesce(c.closed_at, 'epoch'),
 (SELECT count(*) FROM review_items i WHERE i.crdb_region = c.crdb_region AND i.tenant_id = c.tenant_id AND i.campaign_id = c.id),
 (SELECT count(*) FROM review_items i WHERE i.crdb_region = c.crdb_region AND i.tenant_id = c.tenant_id AND i.campaign_id = c.id AND i.decision IS NOT NULL)`

func scanCampaign(r pgx.Row) (Campaign, error) {
	var c Campaign
	var secs, days int64
	err := r.Scan(&c.ID, &c.Name, &c.ScopeKind, &c.ScopeID, &c.Deadline, &secs, &c.DefaultAction, &days, &c.SignInClientID, &c.Status,
		&c.CreatedBy, &c.CreatorID, &c.CreatedAt, &c.ClosedAt, &c.Items, &c.Decided)
	c.ReminderInterval, c.UnusedDays, c.ClosedAt = time.Duration(secs)*time.Second, int(days), zeroEpoch(c.ClosedAt)
	return c, err
}

const itemColumns = `i.id::TEXT, i.campaign_id::TEXT, i.kind, i.subject_id::TEXT, i.subject_name, i.subject_kind, coalesce(i.binding_id::TEXT, ''),
 coalesce(i.group_id::TEXT, ''), i.group_name, i.role_ids, i.role_names, i.scopes, i.binding_ids, i.sensitive, coalesce(i.reviewer_id::TEXT, ''),
 i.reviewer_name, coalesce(i.last_used_at, 'epoch'), coalesce(i.decision, ''), i.justification, i.decided_by, coalesce(i.decided_at, 'epoch'),
 i.defaulted, i.applied, i.new_role_id, i.new_scope, i.created_at`

func scanItem(r pgx.Row) (ReviewItem, error) {
	var i ReviewItem
	err := r.Scan(&i.ID, &i.CampaignID, &i.Kind, &i.SubjectID, &i.SubjectName, &i.SubjectKind, &i.BindingID, &i.GroupID, &i.GroupName,
		&i.RoleIDs, &i.RoleNames, &i.Scopes, &i.BindingIDs, &i.Sensitive, &i.ReviewerID, &i.ReviewerName, &i.LastUsed, &i.Decision,
		&i.Justification, &i.DecidedBy, &i.DecidedAt, &i.Defaulted, &i.Applied, &i.NewRoleID, &i.NewScope, &i.CreatedAt)
	i.LastUsed, i.DecidedAt = zeroEpoch(i.LastUsed), zeroEpoch(i.DecidedAt)
	return i, err
}

// CreateCampaign validates in, snapshots its items and stores both, with one audit
// event, in one transaction. creatorID is the creating identity ("" for the operator).
// The caller has checked the deadline against its clock and the sign-in client.
func (s *Store) CreateCampaign(ctx context.Context, c Change, sc Scope, creatorID string, in Campaign) (Campaign, error) {
	if err := checkText("name", in.Name, true, 200); err != nil {
		return Campaign{}, err
	}
	switch in.ScopeKind {
	case CampaignScopeNHIs, CampaignScopeTenant:
		if in.ScopeID != "" {
			return Campaign{}, fieldErr("scope_id", "only scopes role and group name one")
		}
	case CampaignScopeRole, CampaignScopeGroup:
		if _, err := parseID("scope_id", in.ScopeID); err != nil {
			return Campaign{}, err
		}
	default:
		return Campaign{}, fieldErr("scope", "nhis, role, group or tenant")
	}
	if in.DefaultAction != ReviewKeep && in.DefaultAction != ReviewRevoke {
		return Campaign{}, fieldErr("default_action", "keep or revoke")
	}
	if in.ReminderInterval < time.Hour || in.ReminderInterval > 365*24*time.Hour {
		return Campaign{}, fieldErr("reminder_interval", "between 1 hour and 365 days")
	}
	if in.UnusedDays < 1 || in.UnusedDays > 3650 {
		return Campaign{}, fieldErr("unused_days", "between 1 and 3650")
	}
	if in.Deadline.IsZero() {
		return Campaign{}, fieldErr("deadline", "required")
	}
	var out Campaign
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := checkCampaignScope(ctx, tx, sc, in); err != nil {
			return err
		}
		var id string
		err := tx.QueryRow(ctx, `INSERT INTO review_campaigns (tenant_id, crdb_region, name, scope_kind, scope_id, deadline, reminder_seconds,
  default_action, unused_days, sign_in_client_id, created_by, creator_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id::TEXT`,
			sc.TenantID, sc.Region, in.Name, in.ScopeKind, in.ScopeID, in.Deadline, int64(in.ReminderInterval/time.Second), in.DefaultAction,
			in.UnusedDays, in.SignInClientID, cmp.Or(c.Actor, "system"), nullID(creatorID)).Scan(&id)
		if err != nil {
			return fmt.Errorf("insert campaign: %w", err)
		}
		items, err := snapshotItems(ctx, tx, sc, in, creatorID)
		if err != nil {
			return err
		}
		for _, it := range items {
			if _, err := tx.Exec(ctx, `INSERT INTO review_items (tenant_id, crdb_region, campaign_id, kind, subject_id, subject_name, subject_kind,
  binding_id, group_id, group_name, role_ids, role_names, scopes, binding_ids, sensitive, reviewer_id, reviewer_name, last_used_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
				sc.TenantID, sc.Region, id, it.Kind, it.SubjectID, it.SubjectName, it.SubjectKind, nullID(it.BindingID), nullID(it.GroupID),
				it.GroupName, it.RoleIDs, it.RoleNames, it.Scopes, it.BindingIDs, it.Sensitive, nullID(it.ReviewerID), it.ReviewerName,
				nullTime(it.LastUsed)); err != nil {
				return fmt.Errorf("insert review item: %w", err)
			}
		}
		if out, err = scanCampaign(tx.QueryRow(ctx, `SELECT `+campaignColumns+` FROM review_campaigns c
WHERE c.crdb_region = $1 AND c.tenant_id = $2 AND c.id = $3`, sc.Region, sc.TenantID, id)); err != nil {
			return fmt.Errorf("read campaign: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "review.campaign_create", targetKind: "review_campaign", targetID: id,
			after: map[string]any{"name": out.Name, "scope": out.ScopeKind, "scope_id": out.ScopeID, "deadline": out.Deadline.UTC().Format(time.RFC3339),
				"default_action": out.DefaultAction, "items": out.Items}})
	})
	return out, err
}

// nullID is id, or NULL for "".
func nullID(id string) *string {
	if id == "" {
		return nil
	}
	return &id
}

// checkCampaignScope refuses a role or group scope that is not the tenant's.
func checkCampaignScope(ctx context.Context, tx pgx.Tx, sc Scope, in Campaign) error {
	var table string
	switch in.ScopeKind {
	case CampaignScopeRole:
		if _, ok := BuiltinRole(in.ScopeID); ok {
			return nil
		}
		table = "roles"
	case CampaignScopeGroup:
		table = "groups"
	default:
		return nil
	}
	var ok bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+table+` WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3)`,
		sc.Region, sc.TenantID, in.ScopeID).Scan(&ok); err != nil {
		return fmt.Errorf("read campaign scope: %w", err)
	}
	if !ok {
		return fieldErr("scope_id", "no %s %s in tenant %q", in.ScopeKind, in.ScopeID, sc.TenantID)
	}
	return nil
}

// accessGrant is one allow binding, with its role.
type accessGrant struct {
	bindingID, principalKind, principalID, roleID, roleName, scope string
	sensitive                                                      bool
}

type person struct {
	id, kind, name, owner, manager, status string
}

// snapshotItems reads the access in in's scope and returns its items, reviewers
// and last uses filled in.
func snapshotItems(ctx context.Context, tx pgx.Tx, sc Scope, in Campaign, creatorID string) ([]ReviewItem, error) {
	people := map[string]person{}
	rows, err := tx.Query(ctx, `SELECT id::TEXT, kind, display_name, coalesce(owner_id::TEXT, ''), coalesce(manager_id::TEXT, ''), status
FROM identities WHERE crdb_region = $1 AND tenant_id = $2`, sc.Region, sc.TenantID)
	if err != nil {
		return nil, fmt.Errorf("read identities: %w", err)
	}
	for rows.Next() {
		var p person
		if err := rows.Scan(&p.id, &p.kind, &p.name, &p.owner, &p.manager, &p.status); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read identities: %w", err)
		}
		people[p.id] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read identities: %w", err)
	}
	rows, err = tx.Query(ctx, `SELECT b.id::TEXT, b.principal_kind, b.principal_id::TEXT, b.role_id::TEXT, r.name, r.sensitive OR r.privileged, b.scope
FROM bindings b JOIN roles r ON r.crdb_region = b.crdb_region AND r.tenant_id = b.tenant_id AND r.id = b.role_id
WHERE b.crdb_region = $1 AND b.tenant_id = $2 AND b.effect = 'allow' AND (b.expires_at IS NULL OR b.expires_at > now())
ORDER BY b.created_at, b.id`, sc.Region, sc.TenantID)
	if err != nil {
		return nil, fmt.Errorf("read bindings: %w", err)
	}
	grants, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (accessGrant, error) {
		var g accessGrant
		err := r.Scan(&g.bindingID, &g.principalKind, &g.principalID, &g.roleID, &g.roleName, &g.sensitive, &g.scope)
		if b, ok := BuiltinRole(g.roleID); ok {
			g.sensitive = b.Sensitive || b.Privileged
		}
		return g, err
	})
	if err != nil {
		return nil, fmt.Errorf("read bindings: %w", err)
	}
	groupGrants := map[string][]accessGrant{}
	for _, g := range grants {
		if g.principalKind == "group" {
			groupGrants[g.principalID] = append(groupGrants[g.principalID], g)
		}
	}
	type membership struct{ group, name, identity string }
	rows, err = tx.Query(ctx, `SELECT m.group_id::TEXT, g.name, m.identity_id::TEXT FROM group_members m
JOIN groups g ON g.crdb_region = m.crdb_region AND g.tenant_id = m.tenant_id AND g.id = m.group_id
WHERE m.crdb_region = $1 AND m.tenant_id = $2 ORDER BY m.created_at, m.group_id, m.identity_id`, sc.Region, sc.TenantID)
	if err != nil {
		return nil, fmt.Errorf("read memberships: %w", err)
	}
	members, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (membership, error) {
		var m membership
		return m, r.Scan(&m.group, &m.name, &m.identity)
	})
	if err != nil {
		return nil, fmt.Errorf("read memberships: %w", err)
	}

	// Which subjects and which access the scope takes.
	inScope := func(p person) bool { return true }
	grantIn := func(g accessGrant) bool { return true }
	memberIn := func(m membership) bool { return len(groupGrants[m.group]) > 0 }
	switch in.ScopeKind {
	case CampaignScopeNHIs:
		inScope = func(p person) bool { return p.kind != KindHuman }
	case CampaignScopeRole:
		grantIn = func(g accessGrant) bool { return g.roleID == in.ScopeID }
		memberIn = func(m membership) bool {
			return slices.ContainsFunc(groupGrants[m.group], func(g accessGrant) bool { return g.roleID == in.ScopeID })
		}
	case CampaignScopeGroup:
		// The members' access through the group: their memberships of it. (Their other
		// access lies outside the group's scope, which is all its creator was judged on.)
		grantIn = func(accessGrant) bool { return false }
		memberIn = func(m membership) bool { return m.group == in.ScopeID }
	}
	var items []ReviewItem
	for _, g := range grants {
		p, ok := people[g.principalID]
		if g.principalKind != "identity" || !ok || !inScope(p) || !grantIn(g) {
			continue
		}
		items = append(items, ReviewItem{Kind: ItemBinding, SubjectID: p.id, SubjectName: p.name, SubjectKind: p.kind, BindingID: g.bindingID,
			RoleIDs: []string{g.roleID}, RoleNames: []string{g.roleName}, Scopes: []string{g.scope}, BindingIDs: []string{g.bindingID},
			Sensitive: g.sensitive})
	}
	for _, m := range members {
		p, ok := people[m.identity]
		if !ok || !inScope(p) || !memberIn(m) {
			continue
		}
		it := ReviewItem{Kind: ItemMembership, SubjectID: p.id, SubjectName: p.name, SubjectKind: p.kind, GroupID: m.group, GroupName: m.name}
		for _, g := range groupGrants[m.group] {
			it.RoleIDs, it.RoleNames, it.Scopes = append(it.RoleIDs, g.roleID), append(it.RoleNames, g.roleName), append(it.Scopes, g.scope)
			it.BindingIDs = append(it.BindingIDs, g.bindingID)
			it.Sensitive = it.Sensitive || g.sensitive
		}
		items = append(items, it)
	}
	lastUse := map[string]map[string]time.Time{} // subject → binding → last allowed use
	for k := range items {
		it := &items[k]
		it.ReviewerID = reviewerOf(people, people[it.SubjectID], creatorID)
		it.ReviewerName = people[it.ReviewerID].name
		uses, ok := lastUse[it.SubjectID]
		if !ok {
			if uses, err = bindingLastUse(ctx, tx, sc, it.SubjectID); err != nil {
				return nil, err
			}
			lastUse[it.SubjectID] = uses
		}
		for _, b := range it.BindingIDs {
			if at := uses[b]; at.After(it.LastUsed) {
				it.LastUsed = at
			}
		}
	}
	return items, nil
}

// reviewerOf picks the reviewer of subject's access: a non-human identity's owner or
// a human's manager, then the subject's manager, then the campaign's creator; the
// first that is an active identity other than the subject ("" if none).
func reviewerOf(people map[string]person, subject person, creatorID string) string {
	first := subject.manager
	if subject.kind != KindHuman {
		first = subject.owner
	}
	for _, id := range []string{first, subject.manager, creatorID} {
		if p, ok := people[id]; ok && id != subject.id && p.status == StatusActive {
			return id
		}
	}
	return ""
}

// bindingLastUse reads, from the decision log, when identity last had a decision
// allowed by each binding (allowed decisions carry their deciding binding_ids).
func bindingLastUse(ctx context.Context, q querier, sc Scope, identityID string) (map[string]time.Time, error) {
	m, err := grantUsageOf(ctx, q, sc, []string{identityID}, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("read last use: %w", err)
	}
	out := map[string]time.Time{}
	for _, u := range m[identityID] {
		if u.LastUsed.After(out[u.BindingID]) {
			out[u.BindingID] = u.LastUsed
		}
	}
	return out, nil
}

// GetCampaign reads one campaign.
func (s *Store) GetCampaign(ctx context.Context, sc Scope, id string) (Campaign, error) {
	if _, err := parseID("campaign_id", id); err != nil {
		return Campaign{}, err
	}
	c, err := scanCampaign(s.pool.QueryRow(ctx, `SELECT `+campaignColumns+` FROM review_campaigns c
WHERE c.crdb_region = $1 AND c.tenant_id = $2 AND c.id = $3`, sc.Region, sc.TenantID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Campaign{}, fmt.Errorf("%w: campaign_id: no campaign %s in tenant %q", ErrNotFound, id, sc.TenantID)
	}
	return c, classify(err)
}

// ListCampaigns pages through the tenant's campaigns, oldest first.
func (s *Store) ListCampaigns(ctx context.Context, sc Scope, p Page) ([]Campaign, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	k, err := p.timeKeyed()
	if err != nil {
		return nil, "", err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+campaignColumns+` FROM review_campaigns c
WHERE c.crdb_region = $1 AND c.tenant_id = $2 AND (c.created_at, c.id) > ($3, $4::UUID) ORDER BY c.created_at, c.id LIMIT $5`,
		sc.Region, sc.TenantID, k.At, k.ID, limit+1)
	if err != nil {
		return nil, "", classify(err)
	}
	cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Campaign, error) { return scanCampaign(r) })
	if err != nil {
		return nil, "", classify(err)
	}
	cs, next := pageOf(cs, limit, func(c Campaign) timeKey { return timeKey{At: c.CreatedAt, ID: c.ID} })
	return cs, next, nil
}

// ItemFilter selects review items: those of a campaign, of a reviewer, or both.
type ItemFilter struct {
	CampaignID string
	ReviewerID string
	OpenOnly   bool // only items of open campaigns
}

// ListReviewItems pages through the items f selects, oldest first.
func (s *Store) ListReviewItems(ctx context.Context, sc Scope, f ItemFilter, p Page) ([]ReviewItem, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	k, err := p.timeKeyed()
	if err != nil {
		return nil, "", err
	}
	where := []string{"i.crdb_region = $1", "i.tenant_id = $2", "(i.created_at, i.id) > ($3, $4::UUID)"}
	args := []any{sc.Region, sc.TenantID, k.At, k.ID}
	if f.CampaignID != "" {
		if _, err := parseID("campaign_id", f.CampaignID); err != nil {
			return nil, "", err
		}
		args = append(args, f.CampaignID)
		where = append(where, fmt.Sprintf("i.campaign_id = $%d", len(args)))
	}
	if f.ReviewerID != "" {
		args = append(args, f.ReviewerID)
		where = append(where, fmt.Sprintf("i.reviewer_id = $%d", len(args)))
	}
	if f.OpenOnly {
		where = append(where, `EXISTS (SELECT 1 FROM review_campaigns c WHERE c.crdb_region = i.crdb_region AND c.tenant_id = i.tenant_id
  AND c.id = i.campaign_id AND c.status = 'open')`)
	}
	args = append(args, limit+1)
	rows, err := s.pool.Query(ctx, `SELECT `+itemColumns+` FROM review_items i WHERE `+strings.Join(where, " AND ")+
		fmt.Sprintf(" ORDER BY i.created_at, i.id LIMIT $%d", len(args)), args...)
	if err != nil {
		return nil, "", classify(err)
	}
	is, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ReviewItem, error) { return scanItem(r) })
	if err != nil {
		return nil, "", classify(err)
	}
	is, next := pageOf(is, limit, func(i ReviewItem) timeKey { return timeKey{At: i.CreatedAt, ID: i.ID} })
	return is, next, nil
}

// GetReviewItem reads one item by its id, whatever its campaign.
func (s *Store) GetReviewItem(ctx context.Context, sc Scope, id string) (ReviewItem, error) {
	if _, err := parseID("item_id", id); err != nil {
		return ReviewItem{}, err
	}
	it, err := scanItem(s.pool.QueryRow(ctx, `SELECT `+itemColumns+` FROM review_items i WHERE i.crdb_region = $1 AND i.tenant_id = $2 AND i.id = $3`,
		sc.Region, sc.TenantID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return ReviewItem{}, fmt.Errorf("%w: item_id: no review item %s in tenant %q", ErrNotFound, id, sc.TenantID)
	}
	return it, classify(err)
}

// ItemDecision is a reviewer's decision on an item.
type ItemDecision struct {
	Decision      string // ReviewKeep, ReviewRevoke or ReviewModify
	Justification string
	// ReviewModify: the binding that replaces the item's (role and scope validated
	// by the caller as narrower).
	NewRoleID, NewScope string
}

// DecideReviewItem records d on item itemID of campaign campaignID and applies it, in
// one transaction with its audit events (and the policy revision bump when it
// changes policy). Refused: an item of another campaign (field item_id), a decided
// item, a closed campaign or one past its deadline (by the database's clock).
func (s *Store) DecideReviewItem(ctx context.Context, c Change, sc Scope, campaignID, itemID string, d ItemDecision) (ReviewItem, error) {
	if _, err := parseID("campaign_id", campaignID); err != nil {
		return ReviewItem{}, err
	}
	if _, err := parseID("item_id", itemID); err != nil {
		return ReviewItem{}, err
	}
	switch d.Decision {
	case ReviewKeep, ReviewRevoke:
		if d.NewRoleID != "" || d.NewScope != "" {
			return ReviewItem{}, fieldErr("new_role_id", "only a modify decision names a new role or scope")
		}
	case ReviewModify:
		if d.NewRoleID == "" && d.NewScope == "" {
			return ReviewItem{}, fieldErr("new_role_id", "a modify decision names a narrower role (new_role_id) or scope (new_scope)")
		}
	default:
		return ReviewItem{}, fieldErr("decision", "keep, revoke or modify")
	}
	if strings.TrimSpace(d.Justification) == "" {
		return ReviewItem{}, fieldErr("justification", "required: say why")
	}
	if err := checkText("justification", d.Justification, true, 1000); err != nil {
		return ReviewItem{}, err
	}
	var out ReviewItem
	err := s.tx(ctx, func(tx pgx.Tx) error {
		it, err := scanItem(tx.QueryRow(ctx, `SELECT `+itemColumns+` FROM review_items i WHERE i.crdb_region = $1 AND i.tenant_id = $2 AND i.id = $3`,
			sc.Region, sc.TenantID, itemID))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: item_id: no review item %s in tenant %q", ErrNotFound, itemID, sc.TenantID)
		}
		if err != nil {
			return fmt.Errorf("read review item: %w", err)
		}
		if it.CampaignID != campaignID {
			return fieldErr("item_id", "item %s belongs to campaign %s, not %s", itemID, it.CampaignID, campaignID)
		}
		var status string
		var deadline time.Time
		var past bool
		if err := tx.QueryRow(ctx, `SELECT status, deadline, deadline <= now() FROM review_campaigns WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`,
			sc.Region, sc.TenantID, campaignID).Scan(&status, &deadline, &past); err != nil {
			return fmt.Errorf("read campaign: %w", err)
		}
		switch {
		case it.Decision != "":
			return fmt.Errorf("%w: item_id: item %s was already decided (%s by %s at %s); a decision is final", ErrPrecondition,
				itemID, it.Decision, it.DecidedBy, it.DecidedAt.UTC().Format(time.RFC3339))
		case status != CampaignOpen:
			return fmt.Errorf("%w: campaign_id: campaign %s is closed", ErrPrecondition, campaignID)
		case past:
			return fmt.Errorf("%w: campaign_id: the deadline of campaign %s (%s) has passed; undecided items get the default action",
				ErrPrecondition, campaignID, deadline.UTC().Format(time.RFC3339))
		}
		if d.Decision == ReviewModify && it.Kind != ItemBinding {
			return fieldErr("decision", "modify narrows a binding; item %s is a group membership: keep or revoke it", itemID)
		}
		out, err = s.applyDecision(ctx, tx, c, sc, it, d, false)
		return err
	})
	return out, err
}

// applyDecision applies d to it inside tx, records it (conditionally: only an
// undecided item), and writes the audit events; defaulted marks the deadline's
// default action, which records a revocation that cannot be applied instead of
// failing.
func (s *Store) applyDecision(ctx context.Context, tx pgx.Tx, c Change, sc Scope, it ReviewItem, d ItemDecision, defaulted bool) (ReviewItem, error) {
	applied := "kept"
	var changes []audit
	switch d.Decision {
	case ReviewRevoke:
		var err error
		applied, changes, err = revokeAccess(ctx, tx, sc, it, defaulted)
		if err != nil {
			return ReviewItem{}, err
		}
	case ReviewModify:
		var err error
		applied, changes, err = modifyAccess(ctx, tx, sc, c, it, d)
		if err != nil {
			return ReviewItem{}, err
		}
	}
	decidedBy := cmp.Or(c.Actor, "system")
	out, err := scanItem(tx.QueryRow(ctx, `UPDATE review_items i SET decision = $4, justification = $5, decided_by = $6, decided_at = now(),
  defaulted = $7, applied = $8, new_role_id = $9, new_scope = $10
WHERE i.crdb_region = $1 AND i.tenant_id = $2 AND i.id = $3 AND i.decision IS NULL RETURNING `+itemColumns,
		sc.Region, sc.TenantID, it.ID, d.Decision, d.Justification, decidedBy, defaulted, applied, d.NewRoleID, d.NewScope))
	if errors.Is(err, pgx.ErrNoRows) {
		return ReviewItem{}, fmt.Errorf("%w: item_id: item %s was decided meanwhile", ErrPrecondition, it.ID)
	}
	if err != nil {
		return ReviewItem{}, fmt.Errorf("record decision: %w", err)
	}
	if len(changes) > 0 {
		rev, err := bumpRevision(ctx, tx, sc.TenantID)
		if err != nil {
			return ReviewItem{}, err
		}
		for _, a := range changes {
			if m, ok := a.after.(map[string]any); ok {
				m["policy_revision"] = rev
			}
			if err := s.writeAudit(ctx, tx, sc, c, a); err != nil {
				return ReviewItem{}, err
			}
		}
	}
	action := "review.decide"
	if defaulted {
		action = "review.default"
	}
	return out, s.writeAudit(ctx, tx, sc, c, audit{action: action, targetKind: "review_item", targetID: it.ID,
		after: map[string]any{"campaign_id": it.CampaignID, "subject_id": it.SubjectID, "kind": it.Kind, "decision": d.Decision,
			"justification": d.Justification, "applied": applied, "reviewer_id": it.ReviewerID}})
}

// revokeAccess removes it's access: its binding or its membership. Access already
// gone is recorded, not an error. A revocation the policy forbids (a membership a
// rule gives, the tenant's last admin) fails a reviewer's decision; a default one is
// rolled back to a savepoint and recorded as not applied.
func revokeAccess(ctx context.Context, tx pgx.Tx, sc Scope, it ReviewItem, defaulted bool) (string, []audit, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("savepoint: %w", err)
	}
	applied, changes, err := func() (string, []audit, error) {
		if it.Kind == ItemBinding {
			before, err := removeBinding(ctx, sp, sc, it.BindingID)
			if errors.Is(err, ErrNotFound) {
				return "nothing applied: the binding was already deleted", nil, nil
			}
			if err != nil {
				return "", nil, err
			}
			return "binding deleted", []audit{{action: "binding.delete", targetKind: "binding", targetID: it.BindingID,
				before: bindingSummary(before), after: map[string]any{"review_item_id": it.ID}}}, nil
		}
		err := removeMember(ctx, sp, sc, it.GroupID, it.SubjectID)
		if errors.Is(err, ErrNotFound) {
			return "nothing applied: no longer a member", nil, nil
		}
		if err != nil {
			return "", nil, err
		}
		return "membership removed", []audit{{action: "group.remove_member", targetKind: "group", targetID: it.GroupID,
			after: map[string]any{"identity_id": it.SubjectID, "review_item_id": it.ID}}}, nil
	}()
	if err != nil {
		_ = sp.Rollback(ctx)
		if defaulted && errors.Is(err, ErrPrecondition) {
			return "not applied: " + strings.TrimPrefix(err.Error(), ErrPrecondition.Error()+": "), nil, nil
		}
		if errors.Is(err, ErrPrecondition) {
			return "", nil, fmt.Errorf("item_id: %w", err)
		}
		return "", nil, err
	}
	if err := sp.Commit(ctx); err != nil {
		return "", nil, fmt.Errorf("release savepoint: %w", err)
	}
	return applied, changes, nil
}

// modifyAccess replaces it's binding with one of d's role and scope (the old one's
// where d leaves them empty), granted by c's actor.
func modifyAccess(ctx context.Context, tx pgx.Tx, sc Scope, c Change, it ReviewItem, d ItemDecision) (string, []audit, error) {
	before, err := removeBinding(ctx, tx, sc, it.BindingID)
	if errors.Is(err, ErrNotFound) {
		return "", nil, fmt.Errorf("%w: item_id: binding %s no longer exists; nothing to modify", ErrPrecondition, it.BindingID)
	}
	if err != nil {
		return "", nil, err
	}
	nb := before
	nb.RoleID, nb.Scope = cmp.Or(d.NewRoleID, before.RoleID), cmp.Or(d.NewScope, before.Scope)
	nb.Justification = "access review: " + d.Justification
	privileged, err := rolePrivileged(ctx, tx, sc, nb.RoleID)
	if err != nil {
		return "", nil, err
	}
	if privileged {
		return "", nil, fieldErr("new_role_id", "role %s is privileged: bind it through change control, not a review", nb.RoleID)
	}
	after, err := insertBinding(ctx, tx, sc, c, nb)
	if err != nil {
		return "", nil, err
	}
	return "binding replaced by " + after.ID + " (role " + after.RoleID + " on " + after.Scope + ")", []audit{
		{action: "binding.delete", targetKind: "binding", targetID: before.ID, before: bindingSummary(before), after: map[string]any{"review_item_id": it.ID}},
		{action: "binding.create", targetKind: "binding", targetID: after.ID, after: bindingSummary(after)},
	}, nil
}

// CloseCampaign closes campaign id now (ReviewService.CloseCampaign) or, with dueOnly, only if its
// deadline has passed by the database's clock (the review loop), and gives every
// undecided item its default action, all in one transaction: the close is a
// conditional update, so whichever node or caller closes it does so exactly once.
// It returns the items it defaulted; closed is false when dueOnly and another closed
// it first, or it is not due.
func (s *Store) CloseCampaign(ctx context.Context, c Change, sc Scope, id string, dueOnly bool) (out Campaign, defaulted []ReviewItem, closed bool, err error) {
	if _, err := parseID("campaign_id", id); err != nil {
		return Campaign{}, nil, false, err
	}
	err = s.tx(ctx, func(tx pgx.Tx) error {
		defaulted, closed = nil, false
		cond := ""
		if dueOnly {
			cond = " AND deadline <= now()"
		}
		var action string
		err := tx.QueryRow(ctx, `UPDATE review_campaigns SET status = 'closed', closed_at = now()
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3 AND status = 'open'`+cond+` RETURNING default_action`, sc.Region, sc.TenantID, id).Scan(&action)
		if errors.Is(err, pgx.ErrNoRows) {
			if dueOnly {
				return nil
			}
			var status string
			err := tx.QueryRow(ctx, `SELECT status FROM review_campaigns WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`,
				sc.Region, sc.TenantID, id).Scan(&status)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("%w: campaign_id: no campaign %s in tenant %q", ErrNotFound, id, sc.TenantID)
			}
			if err != nil {
				return fmt.Errorf("read campaign: %w", err)
			}
			return fmt.Errorf("%w: campaign_id: campaign %s is already closed", ErrPrecondition, id)
		}
		if err != nil {
			return fmt.Errorf("close campaign: %w", err)
		}
		closed = true
		rows, err := tx.Query(ctx, `SELECT `+itemColumns+` FROM review_items i
WHERE i.crdb_region = $1 AND i.tenant_id = $2 AND i.campaign_id = $3 AND i.decision IS NULL ORDER BY i.created_at, i.id`, sc.Region, sc.TenantID, id)
		if err != nil {
			return fmt.Errorf("read undecided items: %w", err)
		}
		items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ReviewItem, error) { return scanItem(r) })
		if err != nil {
			return fmt.Errorf("read undecided items: %w", err)
		}
		camp := Campaign{DefaultAction: action}
		why := "default action: the campaign was closed before a reviewer decided"
		if dueOnly {
			why = "default action: no decision by the deadline"
		}
		for _, it := range items {
			a := camp.DefaultActionFor(it)
			reason := why
			if it.Sensitive {
				reason += " (sensitive access is revoked)"
			}
			d, err := s.applyDecision(ctx, tx, c, sc, it, ItemDecision{Decision: a, Justification: reason}, true)
			if err != nil {
				return err
			}
			defaulted = append(defaulted, d)
		}
		if out, err = scanCampaign(tx.QueryRow(ctx, `SELECT `+campaignColumns+` FROM review_campaigns c
WHERE c.crdb_region = $1 AND c.tenant_id = $2 AND c.id = $3`, sc.Region, sc.TenantID, id)); err != nil {
			return fmt.Errorf("read campaign: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "review.campaign_close", targetKind: "review_campaign", targetID: id,
			after: map[string]any{"defaulted": len(defaulted), "at_deadline": dueOnly, "items": out.Items}})
	})
	return out, defaulted, closed, err
}

// DueCampaigns lists the open campaigns of the tenant whose deadline has passed, by
// the database's clock (at most limit).
func (s *Store) DueCampaigns(ctx context.Context, sc Scope, limit int) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT id::TEXT FROM review_campaigns
WHERE crdb_region = $1 AND tenant_id = $2 AND status = 'open' AND deadline <= now() ORDER BY deadline, id LIMIT $3`, sc.Region, sc.TenantID, limit)
	if err != nil {
		return nil, classify(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return ids, classify(err)
}

// Reminder is one reminder sent: a reviewer's undecided items of a campaign.
type Reminder struct {
	CampaignID, ReviewerID string
	Items                  int
}

// RemindReviewers marks up to limit undecided items of open campaigns whose last
// reminder (or creation) is at least their campaign's reminder interval ago, by the
// database's clock, and writes one audit event per reviewer and campaign, all in one
// transaction. The mark is a conditional UPDATE … RETURNING: nodes racing remind each
// item once per interval.
func (s *Store) RemindReviewers(ctx context.Context, sc Scope, limit int) ([]Reminder, error) {
	var out []Reminder
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out = nil
		rows, err := tx.Query(ctx, `UPDATE review_items SET last_reminded_at = now()
WHERE crdb_region = $1 AND tenant_id = $2 AND id IN (
  SELECT i.id FROM review_items i JOIN review_campaigns c ON c.crdb_region = i.crdb_region AND c.tenant_id = i.tenant_id AND c.id = i.campaign_id
  WHERE i.crdb_region = $1 AND i.tenant_id = $2 AND c.status = 'open' AND c.deadline > now() AND i.decision IS NULL AND i.reviewer_id IS NOT NULL
    AND coalesce(i.last_reminded_at, i.created_at) <= now() - c.reminder_seconds * INTERVAL '1 second'
  ORDER BY i.created_at, i.id LIMIT $3)
  AND decision IS NULL
RETURNING campaign_id::TEXT, reviewer_id::TEXT, id::TEXT`, sc.Region, sc.TenantID, limit)
		if err != nil {
			return fmt.Errorf("mark reminders: %w", err)
		}
		type key struct{ campaign, reviewer string }
		items := map[key][]string{}
		var order []key
		for rows.Next() {
			var k key
			var item string
			if err := rows.Scan(&k.campaign, &k.reviewer, &item); err != nil {
				rows.Close()
				return fmt.Errorf("mark reminders: %w", err)
			}
			if _, ok := items[k]; !ok {
				order = append(order, k)
			}
			items[k] = append(items[k], item)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("mark reminders: %w", err)
		}
		for _, k := range order {
			slices.Sort(items[k])
			if err := s.writeAudit(ctx, tx, sc, Change{Actor: "system", ActorKind: "system"}, audit{action: "review.remind",
				targetKind: "review_campaign", targetID: k.campaign,
				after: map[string]any{"reviewer_id": k.reviewer, "item_ids": items[k], "items": len(items[k])}}); err != nil {
				return err
			}
			out = append(out, Reminder{CampaignID: k.campaign, ReviewerID: k.reviewer, Items: len(items[k])})
		}
		return nil
	})
	return out, err
}

// CampaignEvidence reads a campaign and all its items (at most 100 000), for its
// evidence report.
func (s *Store) CampaignEvidence(ctx context.Context, sc Scope, id string) (Campaign, []ReviewItem, error) {
	c, err := s.GetCampaign(ctx, sc, id)
	if err != nil {
		return Campaign{}, nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+itemColumns+` FROM review_items i
WHERE i.crdb_region = $1 AND i.tenant_id = $2 AND i.campaign_id = $3 ORDER BY i.created_at, i.id LIMIT 100000`, sc.Region, sc.TenantID, id)
	if err != nil {
		return Campaign{}, nil, classify(err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ReviewItem, error) { return scanItem(r) })
	return c, items, classify(err)
}
