package schema

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// SCIM 2.0 provisioning (RFC 7643/7644) stores Users as human identities with a
// user_name and Groups as groups marked scim_managed (migration 0012). Every write is
// one transaction with its audit event; group writes bump the policy revision. The
// SCIM representation (attribute names, schemas, the payload in Data) is region's.

// ErrTooMany: a SCIM listing would have to read more rows than MaxSCIMScan to answer.
var ErrTooMany = errors.New("too many results")

// MaxSCIMScan bounds the rows a SCIM listing reads from one tenant: a listing whose
// lookup (or, without one, whose tenant) yields more is refused with ErrTooMany.
const MaxSCIMScan = 10_000

// Limits on SCIM fields.
const (
	MaxSCIMBytes      = 32 << 10 // SCIMUser.Data, as JSON
	maxSCIMNameLength = 256      // userName, externalId
	MaxSCIMMembers    = 10_000   // members of one SCIM group
)

// SCIMAttributeKeys are the identity attributes a SCIM directory decides for its
// Users (SCIMUser.Attributes).
var SCIMAttributeKeys = []string{"department", "division", "organization", "cost_center", "employee_number", "title", "user_type"}

// SCIMUser is a human identity provisioned through SCIM.
type SCIMUser struct {
	ID          string
	UserName    string // unique per tenant without regard to case
	ExternalID  string // unique per tenant when set
	DisplayName string
	Email       string // the primary email, the identity's email
	Active      bool   // status active; changed only through SetIdentityStatus (and offboarding)
	// Data is the rest of the SCIM payload, as JSON (personal data: erasure removes it).
	Data map[string]any
	// Attributes are the identity attributes the directory decides (the keys of
	// SCIMAttributeKeys present in the payload: department, title, …), which conditions
	// and membership rules read. On every write they replace those keys of the
	// identity's attributes; other keys, set through the admin API, stay.
	Attributes map[string]any
	// ManagerID is the identity of the User's manager (enterprise manager.value), ""
	// when none: identities.manager_id, whom offboarding hands the leaver's NHIs.
	ManagerID string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Version is the user's entity tag: a hash of everything a SCIM client sees of it but
// its timestamps, so any change to the identity, by SCIM or by the admin API, changes it.
func (u SCIMUser) Version() string {
	return contentVersion(struct {
		ID, UserName, ExternalID, DisplayName, Email string
		Active                                       bool
		Data                                         map[string]any
	}{u.ID, u.UserName, u.ExternalID, u.DisplayName, u.Email, u.Active, u.Data})
}

// SCIMGroup is a group a SCIM client created.
type SCIMGroup struct {
	ID          string
	DisplayName string // the group's name, unique per tenant
	ExternalID  string
	Members     []string // identity ids, sorted
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Version is the group's entity tag (see SCIMUser.Version).
func (g SCIMGroup) Version() string {
	m := slices.Clone(g.Members)
	slices.Sort(m)
	return contentVersion(struct {
		ID, DisplayName, ExternalID string
		Members                     []string
	}{g.ID, g.DisplayName, g.ExternalID, m})
}

func contentVersion(v any) string {
	b, _ := json.Marshal(v) // maps marshal with sorted keys: the hash is stable
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:12])
}

// SCIMLookup narrows a SCIM listing to the rows whose Attr equals Value before the
// caller evaluates the full filter: "" (no lookup), "id", "userName" (without regard to
// case), "externalId" or "displayName" (groups).
type SCIMLookup struct {
	Attr  string
	Value string
}

const scimUserColumns = `id::TEXT, user_name, coalesce(external_id, ''), display_name, coalesce(email, ''), status = 'active',
 coalesce(scim, '{}'::JSONB), created_at, updated_at`

// scimUserVisible is the condition on identities for a SCIM User.
const scimUserVisible = `kind = 'human' AND user_name IS NOT NULL AND scim_deleted_at IS NULL`

func scanSCIMUser(r pgx.Row) (SCIMUser, error) {
	var u SCIMUser
	err := r.Scan(&u.ID, &u.UserName, &u.ExternalID, &u.DisplayName, &u.Email, &u.Active, &u.Data, &u.CreatedAt, &u.UpdatedAt)
	if u.Data == nil {
		u.Data = map[string]any{}
	}
	return u, err
}

func checkSCIMUser(u SCIMUser) error {
	if err := checkText("userName", u.UserName, true, maxSCIMNameLength); err != nil {
		return err
	}
	if err := checkText("externalId", u.ExternalID, false, maxSCIMNameLength); err != nil {
		return err
	}
	if err := checkText("displayName", u.DisplayName, true, 200); err != nil {
		return err
	}
	if err := checkEmail("emails", u.Email); err != nil {
		return err
	}
	b, err := json.Marshal(u.Data)
	if err != nil {
		return fieldErr("body", "not representable as JSON")
	}
	if len(b) > MaxSCIMBytes {
		return fieldErr("body", "the user's attributes take %d bytes as JSON, at most %d", len(b), MaxSCIMBytes)
	}
	return nil
}

// scimConflict names the SCIM attribute a unique violation is about.
func scimConflict(err error, what string) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		return err
	}
	switch pgErr.ConstraintName {
	case "identities_user_name":
		return fieldErrConflict("userName", "another User of this tenant has this userName")
	case "identities_external_id", "groups_external_id":
		return fieldErrConflict("externalId", "another %s of this tenant has this externalId", what)
	case "identities_email":
		return fieldErrConflict("emails", "another identity of this tenant has this email")
	case "groups_name":
		return fieldErrConflict("displayName", "another group of this tenant has this displayName")
	}
	return fieldErrConflict("id", "conflicts with another %s", what)
}

func scimUserSummary(u SCIMUser) map[string]any {
	m := map[string]any{"kind": KindHuman, "user_name": u.UserName, "display_name": u.DisplayName, "scim": true}
	if u.ExternalID != "" {
		m["external_id"] = u.ExternalID
	}
	if u.Email != "" {
		m["email"] = u.Email
	}
	keys := make([]string, 0, len(u.Data))
	for k := range u.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	m["scim_attributes"] = keys // values are personal data: keep them out of the log
	return m
}

// CreateSCIMUser creates a human identity from a SCIM User. An inactive one is
// created disabled.
func (s *Store) CreateSCIMUser(ctx context.Context, c Change, sc Scope, u SCIMUser) (SCIMUser, error) {
	if err := checkSCIMUser(u); err != nil {
		return SCIMUser{}, err
	}
	status := StatusActive
	if !u.Active {
		status = StatusDisabled
	}
	var out SCIMUser
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if u.ManagerID != "" {
			if err := checkManager(ctx, tx, sc, u.ManagerID); err != nil {
				return err
			}
		}
		var err error
		out, err = scanSCIMUser(tx.QueryRow(ctx, `
INSERT INTO identities (tenant_id, crdb_region, kind, display_name, email, user_name, external_id, scim, status, tokens_valid_after,
  attributes, manager_id)
VALUES ($1, $2, 'human', $3, nullif($4, ''), $5, nullif($6, ''), $7, $8, CASE WHEN $8 = 'disabled' THEN now() END, $9, nullif($10, '')::UUID)
RETURNING `+scimUserColumns,
			sc.TenantID, sc.Region, u.DisplayName, u.Email, u.UserName, u.ExternalID, u.Data, status, scimAttributes(nil, u.Attributes), u.ManagerID))
		if err != nil {
			return fmt.Errorf("insert scim user: %w", scimConflict(err, "User"))
		}
		summary := scimUserSummary(out)
		if err := s.applySCIMRules(ctx, tx, sc, out.ID, summary); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "identity.create", targetKind: "identity", targetID: out.ID, after: summary})
	})
	return out, classify(err)
}

// GetSCIMUser reads one SCIM User; ErrNotFound for an id that is no User of the
// tenant (another kind of identity, one SCIM never provisioned, or one it deleted).
func (s *Store) GetSCIMUser(ctx context.Context, sc Scope, id string) (SCIMUser, error) {
	if _, err := parseID("id", id); err != nil {
		return SCIMUser{}, fmt.Errorf("%w: User %q", ErrNotFound, id)
	}
	u, err := getSCIMUser(ctx, s.pool, sc, id, "")
	return u, classify(err)
}

func getSCIMUser(ctx context.Context, q querier, sc Scope, id, lock string) (SCIMUser, error) {
	u, err := scanSCIMUser(q.QueryRow(ctx, `SELECT `+scimUserColumns+` FROM identities
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 AND `+scimUserVisible+lock, sc.TenantID, sc.Region, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return SCIMUser{}, fmt.Errorf("%w: User %s", ErrNotFound, id)
	}
	if err != nil {
		return SCIMUser{}, fmt.Errorf("read scim user: %w", err) // unclassified: a 40001 inside a transaction is retried
	}
	return u, nil
}

// ListSCIMUsers reads the tenant's SCIM Users that match l, oldest first: at most
// MaxSCIMScan of them, or ErrTooMany.
func (s *Store) ListSCIMUsers(ctx context.Context, sc Scope, l SCIMLookup) ([]SCIMUser, error) {
	cond, arg, ok := "", any(nil), true
	switch l.Attr {
	case "":
	case "id":
		cond, arg = ` AND id::TEXT = $3`, l.Value
	case "userName":
		cond, arg = ` AND lower(user_name) = lower($3)`, l.Value
	case "externalId":
		cond, arg = ` AND external_id = $3`, l.Value
	default:
		ok = false
	}
	if !ok {
		return nil, fmt.Errorf("list scim users: lookup by %q is not indexed", l.Attr)
	}
	args := []any{sc.TenantID, sc.Region}
	if arg != nil {
		args = append(args, arg)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+scimUserColumns+` FROM identities
WHERE tenant_id = $1 AND crdb_region = $2 AND `+scimUserVisible+cond+`
ORDER BY created_at, id LIMIT `+fmt.Sprint(MaxSCIMScan+1), args...)
	if err != nil {
		return nil, classify(err)
	}
	us, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SCIMUser, error) { return scanSCIMUser(r) })
	if err != nil {
		return nil, classify(err)
	}
	if len(us) > MaxSCIMScan {
		return nil, fmt.Errorf("%w: more than %d Users match", ErrTooMany, MaxSCIMScan)
	}
	return us, nil
}

// UpdateSCIMUser changes a SCIM User in one transaction: edit gets the user as it is
// now (locked) and returns it as it should be, or an error (a failed If-Match, a bad
// patch) that aborts the change. edit must be a pure function: it may run more than
// once. Active is not changed here (SetIdentityStatus does that); an edit that changes
// nothing writes nothing.
func (s *Store) UpdateSCIMUser(ctx context.Context, c Change, sc Scope, id string, edit func(SCIMUser) (SCIMUser, error),
	leaverReason string) (before, after SCIMUser, off *Offboarding, err error) {
	if _, err := parseID("id", id); err != nil {
		return SCIMUser{}, SCIMUser{}, nil, fmt.Errorf("%w: User %q", ErrNotFound, id)
	}
	err = s.tx(ctx, func(tx pgx.Tx) error {
		off = nil
		var err error
		if before, err = getSCIMUser(ctx, tx, sc, id, " FOR UPDATE"); err != nil {
			return err
		}
		want, err := edit(before)
		if err != nil {
			return err
		}
		leaving := !want.Active && leaverReason != ""
		want.ID, want.Active, want.CreatedAt, want.UpdatedAt = before.ID, before.Active, before.CreatedAt, before.UpdatedAt
		if want.Version() == before.Version() {
			after = before
			return s.scimLeaver(ctx, tx, c, sc, id, leaving, leaverReason, &after, &off)
		}
		if err := checkSCIMUser(want); err != nil {
			return err
		}
		current, err := getIdentity(ctx, tx, sc, id, "")
		if err != nil {
			return err
		}
		if want.ManagerID != "" && want.ManagerID != current.ManagerID {
			if err := checkManager(ctx, tx, sc, want.ManagerID); err != nil {
				return err
			}
		}
		after, err = scanSCIMUser(tx.QueryRow(ctx, `
UPDATE identities SET user_name = $4, external_id = nullif($5, ''), display_name = $6, email = nullif($7, ''), scim = $8,
  attributes = $9, manager_id = nullif($10, '')::UUID, updated_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3
RETURNING `+scimUserColumns, sc.TenantID, sc.Region, id, want.UserName, want.ExternalID, want.DisplayName, want.Email, want.Data,
			scimAttributes(current.Attributes, want.Attributes), want.ManagerID))
		if err != nil {
			return fmt.Errorf("update scim user: %w", scimConflict(err, "User"))
		}
		summary := scimUserSummary(after)
		if err := s.applySCIMRules(ctx, tx, sc, id, summary); err != nil {
			return err
		}
		if err := s.writeAudit(ctx, tx, sc, c, audit{action: "identity.update", targetKind: "identity", targetID: id,
			before: scimUserSummary(before), after: summary}); err != nil {
			return err
		}
		return s.scimLeaver(ctx, tx, c, sc, id, leaving, leaverReason, &after, &off)
	})
	return before, after, off, classify(err)
}

// scimLeaver offboards User id inside tx when leaving (the client set active false, and
// leaverReason says why), unless it is offboarded already, and reads the User back
// into after. Offboarding in the SCIM write's transaction makes a refused offboarding
// (the last tenant admin) refuse the whole write: no attribute change is left behind.
func (s *Store) scimLeaver(ctx context.Context, tx pgx.Tx, c Change, sc Scope, id string, leaving bool, reason string,
	after *SCIMUser, off **Offboarding) error {
	if !leaving {
		return nil
	}
	i, err := getIdentity(ctx, tx, sc, id, "")
	if err != nil {
		return err
	}
	if !i.OffboardedAt.IsZero() && i.Status != StatusActive {
		return nil
	}
	o, err := s.offboardTx(ctx, tx, c, sc, id, reason)
	if err != nil {
		return err
	}
	*off = &o
	u, err := getSCIMUser(ctx, tx, sc, id, "")
	if err != nil {
		return err
	}
	*after = u
	return nil
}

// DeleteSCIMUser ends a User's life in SCIM: it is no longer a SCIM User (a later read
// is ErrNotFound), its userName, externalId and email are free for a rehire, and the
// identity row stays for audit. It does not disable the identity: the caller offboards
// it first. ifMatch, when set, checks the user's version inside the transaction.
func (s *Store) DeleteSCIMUser(ctx context.Context, c Change, sc Scope, id string, ifMatch func(SCIMUser) error, leaverReason string) (*Offboarding, error) {
	if _, err := parseID("id", id); err != nil {
		return nil, fmt.Errorf("%w: User %q", ErrNotFound, id)
	}
	var off *Offboarding
	err := s.tx(ctx, func(tx pgx.Tx) error {
		off = nil
		u, err := getSCIMUser(ctx, tx, sc, id, " FOR UPDATE")
		if err != nil {
			return err
		}
		if ifMatch != nil {
			if err := ifMatch(u); err != nil {
				return err
			}
		}
		if err := s.scimLeaver(ctx, tx, c, sc, id, leaverReason != "", leaverReason, &u, &off); err != nil {
			return err
		}
		// The person left: their login throttling state goes with the email it is
		// keyed by (erasure could no longer find it once the email is cleared).
		if u.Email != "" {
			for _, table := range []string{"login_throttle", "login_throttle_sources"} {
				if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE tenant_id = $1 AND crdb_region = $2 AND subject = $3`,
					sc.TenantID, sc.Region, LoginSubject(u.Email)); err != nil {
					return fmt.Errorf("clear login throttle: %w", err)
				}
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE identities SET scim_deleted_at = now(), email = NULL, updated_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`, sc.TenantID, sc.Region, id); err != nil {
			return fmt.Errorf("delete scim user: %w", err)
		}
		after := map[string]any{"scim_deleted": true}
		if u.Email != "" {
			after["email_sha256"] = EmailHash(u.Email) // for erasure's tombstone: the email itself is cleared here
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "identity.scim_delete", targetKind: "identity", targetID: id,
			before: scimUserSummary(u), after: after})
	})
	return off, classify(err)
}

// SCIM groups.

func getSCIMGroup(ctx context.Context, q querier, sc Scope, id, lock string) (SCIMGroup, error) {
	var g SCIMGroup
	err := q.QueryRow(ctx, `SELECT id::TEXT, name, coalesce(external_id, ''), created_at, updated_at FROM groups
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 AND scim_managed`+lock, sc.TenantID, sc.Region, id).
		Scan(&g.ID, &g.DisplayName, &g.ExternalID, &g.CreatedAt, &g.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return SCIMGroup{}, fmt.Errorf("%w: Group %s", ErrNotFound, id)
	}
	if err != nil {
		return SCIMGroup{}, fmt.Errorf("read scim group: %w", err) // unclassified: a 40001 inside a transaction is retried
	}
	gs := []*SCIMGroup{&g}
	if err := readSCIMMembers(ctx, q, sc, gs); err != nil {
		return SCIMGroup{}, err
	}
	return g, nil
}

// readSCIMMembers fills the members of gs: only SCIM Users are SCIM members.
func readSCIMMembers(ctx context.Context, q querier, sc Scope, gs []*SCIMGroup) error {
	if len(gs) == 0 {
		return nil
	}
	ids := make([]string, len(gs))
	byID := make(map[string]*SCIMGroup, len(gs))
	for i, g := range gs {
		ids[i], byID[g.ID] = g.ID, g
		g.Members = []string{}
	}
	rows, err := q.Query(ctx, `SELECT m.group_id::TEXT, m.identity_id::TEXT FROM group_members m
JOIN identities i ON i.crdb_region = m.crdb_region AND i.tenant_id = m.tenant_id AND i.id = m.identity_id
WHERE m.tenant_id = $1 AND m.crdb_region = $2 AND m.group_id = ANY($3::UUID[]) AND i.`+scimUserVisible+`
ORDER BY m.identity_id`, sc.TenantID, sc.Region, ids)
	if err != nil {
		return fmt.Errorf("read scim members: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var g, i string
		if err := rows.Scan(&g, &i); err != nil {
			return fmt.Errorf("read scim members: %w", err)
		}
		byID[g].Members = append(byID[g].Members, i)
	}
	return rows.Err()
}

func checkSCIMGroup(g SCIMGroup) error {
	if err := checkText("displayName", g.DisplayName, true, 200); err != nil {
		return err
	}
	if err := checkText("externalId", g.ExternalID, false, maxSCIMNameLength); err != nil {
		return err
	}
	if len(g.Members) > MaxSCIMMembers {
		return fieldErr("members", "at most %d members", MaxSCIMMembers)
	}
	for _, m := range g.Members {
		if _, err := parseID("members", m); err != nil {
			return fieldErr("members", "value %q is not a User id", m)
		}
	}
	return nil
}

// checkSCIMMembers verifies inside tx that every id names a SCIM User of the tenant.
func checkSCIMMembers(ctx context.Context, tx pgx.Tx, sc Scope, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `SELECT id::TEXT FROM identities WHERE tenant_id = $1 AND crdb_region = $2 AND id = ANY($3::UUID[]) AND `+
		scimUserVisible, sc.TenantID, sc.Region, ids)
	if err != nil {
		return fmt.Errorf("check scim members: %w", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("check scim members: %w", err)
	}
	seen := make(map[string]bool, len(found))
	for _, id := range found {
		seen[id] = true
	}
	for _, id := range ids {
		if !seen[id] {
			return fieldErr("members", "no User %s in this tenant", id)
		}
	}
	return nil
}

func scimGroupSummary(g SCIMGroup) map[string]any {
	m := map[string]any{"name": g.DisplayName, "scim": true, "members": len(g.Members)}
	if g.ExternalID != "" {
		m["external_id"] = g.ExternalID
	}
	return m
}

// CreateSCIMGroup creates a SCIM-managed group with its members, bumping the policy
// revision.
func (s *Store) CreateSCIMGroup(ctx context.Context, c Change, sc Scope, g SCIMGroup) (SCIMGroup, int64, error) {
	g.Members = dedupe(g.Members)
	if err := checkSCIMGroup(g); err != nil {
		return SCIMGroup{}, 0, err
	}
	var out SCIMGroup
	rev, err := s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		if err := checkSCIMMembers(ctx, tx, sc, g.Members); err != nil {
			return audit{}, err
		}
		out = SCIMGroup{Members: g.Members}
		err := tx.QueryRow(ctx, `INSERT INTO groups (tenant_id, crdb_region, name, external_id, scim_managed)
VALUES ($1, $2, $3, nullif($4, ''), true) RETURNING id::TEXT, name, coalesce(external_id, ''), created_at, updated_at`,
			sc.TenantID, sc.Region, g.DisplayName, g.ExternalID).Scan(&out.ID, &out.DisplayName, &out.ExternalID, &out.CreatedAt, &out.UpdatedAt)
		if err != nil {
			return audit{}, fmt.Errorf("insert scim group: %w", scimConflict(err, "Group"))
		}
		if err := insertMembers(ctx, tx, sc, out.ID, g.Members); err != nil {
			return audit{}, err
		}
		after := scimGroupSummary(out)
		after["added"] = g.Members
		return audit{action: "group.create", targetKind: "group", targetID: out.ID, after: after}, nil
	})
	return out, rev, classify(err)
}

func insertMembers(ctx context.Context, tx pgx.Tx, sc Scope, groupID string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO group_members (tenant_id, crdb_region, group_id, identity_id)
SELECT $1, $2, $3, unnest($4::UUID[]) ON CONFLICT DO NOTHING`, sc.TenantID, sc.Region, groupID, ids)
	if err != nil {
		return fmt.Errorf("add scim members: %w", err)
	}
	return nil
}

// GetSCIMGroup reads one SCIM Group with its members.
func (s *Store) GetSCIMGroup(ctx context.Context, sc Scope, id string) (SCIMGroup, error) {
	if _, err := parseID("id", id); err != nil {
		return SCIMGroup{}, fmt.Errorf("%w: Group %q", ErrNotFound, id)
	}
	g, err := getSCIMGroup(ctx, s.pool, sc, id, "")
	return g, classify(err)
}

// ListSCIMGroups reads the tenant's SCIM Groups that match l, with their members,
// oldest first: at most MaxSCIMScan of them, or ErrTooMany.
func (s *Store) ListSCIMGroups(ctx context.Context, sc Scope, l SCIMLookup, members bool) ([]SCIMGroup, error) {
	cond, arg := "", any(nil)
	switch l.Attr {
	case "":
	case "id":
		cond, arg = ` AND id::TEXT = $3`, l.Value
	case "displayName":
		cond, arg = ` AND lower(name) = lower($3)`, l.Value
	case "externalId":
		cond, arg = ` AND external_id = $3`, l.Value
	default:
		return nil, fmt.Errorf("list scim groups: lookup by %q is not indexed", l.Attr)
	}
	args := []any{sc.TenantID, sc.Region}
	if arg != nil {
		args = append(args, arg)
	}
	rows, err := s.pool.Query(ctx, `SELECT id::TEXT, name, coalesce(external_id, ''), created_at, updated_at FROM groups
WHERE tenant_id = $1 AND crdb_region = $2 AND scim_managed`+cond+`
ORDER BY created_at, id LIMIT `+fmt.Sprint(MaxSCIMScan+1), args...)
	if err != nil {
		return nil, classify(err)
	}
	gs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SCIMGroup, error) {
		var g SCIMGroup
		return g, r.Scan(&g.ID, &g.DisplayName, &g.ExternalID, &g.CreatedAt, &g.UpdatedAt)
	})
	if err != nil {
		return nil, classify(err)
	}
	if len(gs) > MaxSCIMScan {
		return nil, fmt.Errorf("%w: more than %d Groups match", ErrTooMany, MaxSCIMScan)
	}
	if members {
		ptrs := make([]*SCIMGroup, len(gs))
		for i := range gs {
			ptrs[i] = &gs[i]
		}
		if err := readSCIMMembers(ctx, s.pool, sc, ptrs); err != nil {
			return nil, classify(err)
		}
	}
	return gs, nil
}

// UpdateSCIMGroup changes a SCIM Group (name, externalId, members) in one transaction
// that bumps the policy revision; edit is as in UpdateSCIMUser. Members removed keep
// the tenant's last tenant admin (keepsTenantAdmin).
func (s *Store) UpdateSCIMGroup(ctx context.Context, c Change, sc Scope, id string, edit func(SCIMGroup) (SCIMGroup, error)) (SCIMGroup, int64, error) {
	if _, err := parseID("id", id); err != nil {
		return SCIMGroup{}, 0, fmt.Errorf("%w: Group %q", ErrNotFound, id)
	}
	var out SCIMGroup
	rev, err := s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		before, err := getSCIMGroup(ctx, tx, sc, id, " FOR UPDATE")
		if err != nil {
			return audit{}, err
		}
		want, err := edit(before)
		if err != nil {
			return audit{}, err
		}
		want.Members = dedupe(want.Members)
		if err := checkSCIMGroup(want); err != nil {
			return audit{}, err
		}
		added, removed := diffMembers(before.Members, want.Members)
		if err := checkSCIMMembers(ctx, tx, sc, added); err != nil {
			return audit{}, err
		}
		out = before
		if want.DisplayName != before.DisplayName || want.ExternalID != before.ExternalID {
			err := tx.QueryRow(ctx, `UPDATE groups SET name = $4, external_id = nullif($5, ''), updated_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 RETURNING name, coalesce(external_id, ''), updated_at`,
				sc.TenantID, sc.Region, id, want.DisplayName, want.ExternalID).Scan(&out.DisplayName, &out.ExternalID, &out.UpdatedAt)
			if err != nil {
				return audit{}, fmt.Errorf("update scim group: %w", scimConflict(err, "Group"))
			}
		} else if len(added)+len(removed) > 0 {
			if err := tx.QueryRow(ctx, `UPDATE groups SET updated_at = now() WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 RETURNING updated_at`,
				sc.TenantID, sc.Region, id).Scan(&out.UpdatedAt); err != nil {
				return audit{}, fmt.Errorf("update scim group: %w", err)
			}
		}
		if len(removed) > 0 {
			err := keepsTenantAdmin(ctx, tx, sc, func() error {
				_, err := tx.Exec(ctx, `DELETE FROM group_members WHERE crdb_region = $1 AND tenant_id = $2 AND group_id = $3 AND identity_id = ANY($4::UUID[])`,
					sc.Region, sc.TenantID, id, removed)
				if err != nil {
					return fmt.Errorf("remove scim members: %w", err)
				}
				return nil
			})
			if err != nil {
				return audit{}, err
			}
		}
		if err := insertMembers(ctx, tx, sc, id, added); err != nil {
			return audit{}, err
		}
		out.Members = want.Members
		after := scimGroupSummary(out)
		after["added"], after["removed"] = added, removed
		return audit{action: "group.update", targetKind: "group", targetID: id, before: scimGroupSummary(before), after: after}, nil
	})
	return out, rev, classify(err)
}

// DeleteSCIMGroup deletes a SCIM Group, its memberships and the bindings granted to
// it (the audit event lists them), keeping the tenant's last tenant admin.
func (s *Store) DeleteSCIMGroup(ctx context.Context, c Change, sc Scope, id string, ifMatch func(SCIMGroup) error) (int64, error) {
	if _, err := parseID("id", id); err != nil {
		return 0, fmt.Errorf("%w: Group %q", ErrNotFound, id)
	}
	rev, err := s.policyChange(ctx, c, sc, func(tx pgx.Tx) (audit, error) {
		g, err := getSCIMGroup(ctx, tx, sc, id, " FOR UPDATE")
		if err != nil {
			return audit{}, err
		}
		if ifMatch != nil {
			if err := ifMatch(g); err != nil {
				return audit{}, err
			}
		}
		var bindings []string
		err = keepsTenantAdmin(ctx, tx, sc, func() error {
			rows, err := tx.Query(ctx, `DELETE FROM bindings WHERE crdb_region = $1 AND tenant_id = $2 AND principal_kind = 'group' AND principal_id = $3
RETURNING id::TEXT`, sc.Region, sc.TenantID, id)
			if err != nil {
				return fmt.Errorf("delete scim group bindings: %w", err)
			}
			if bindings, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return fmt.Errorf("delete scim group bindings: %w", err)
			}
			if _, err := tx.Exec(ctx, `DELETE FROM group_members WHERE crdb_region = $1 AND tenant_id = $2 AND group_id = $3`, sc.Region, sc.TenantID, id); err != nil {
				return fmt.Errorf("delete scim group members: %w", err)
			}
			if _, err := tx.Exec(ctx, `DELETE FROM groups WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`, sc.Region, sc.TenantID, id); err != nil {
				return fmt.Errorf("delete scim group: %w", err)
			}
			return nil
		})
		if err != nil {
			return audit{}, err
		}
		before := scimGroupSummary(g)
		before["member_ids"], before["binding_ids"] = g.Members, bindings
		return audit{action: "group.delete", targetKind: "group", targetID: id, before: before, after: map[string]any{}}, nil
	})
	return rev, classify(err)
}

func dedupe(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

// diffMembers returns the ids of want not in have, and of have not in want, sorted.
func diffMembers(have, want []string) (added, removed []string) {
	in := func(ids []string) map[string]bool {
		m := make(map[string]bool, len(ids))
		for _, id := range ids {
			m[id] = true
		}
		return m
	}
	h, w := in(have), in(want)
	added, removed = []string{}, []string{}
	for _, id := range want {
		if !h[id] {
			added = append(added, id)
		}
	}
	for _, id := range have {
		if !w[id] {
			removed = append(removed, id)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	return added, removed
}

// scimAttributes is the identity's attributes after a SCIM write: the directory's keys
// (SCIMAttributeKeys) as derived now, every other key as it was.
func scimAttributes(current, derived map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range current {
		if !slices.Contains(SCIMAttributeKeys, k) {
			out[k] = v
		}
	}
	for k, v := range derived {
		if slices.Contains(SCIMAttributeKeys, k) {
			out[k] = v
		}
	}
	return out
}

// applySCIMRules recomputes the rule memberships of User id after a SCIM write, in
// the same transaction (joiners and movers provisioned by the directory).
func (s *Store) applySCIMRules(ctx context.Context, tx pgx.Tx, sc Scope, id string, summary map[string]any) error {
	i, err := getIdentity(ctx, tx, sc, id, "")
	if err != nil {
		return err
	}
	return s.applyRules(ctx, tx, sc, i, summary)
}
