package schema

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Two-person change control (issue 13, item 7): a change a tenant identity asks for
// that another identity must approve before it applies. The region decides which
// changes need one (docs/decisions/0010-change-control.md); the store keeps the
// request, and applies the change in the transaction that approves it.

// Kinds of change request.
const (
	ChangeBindingCreate = "binding.create" // Binding is the binding to create
	ChangeBindingDelete = "binding.delete" // Binding is the binding to delete, as it was when requested
	// ChangeGroupAddMember adds IdentityID to GroupID, a group bound to a privileged role.
	ChangeGroupAddMember = "group.add_member"
	// ChangeGroupRemoveMember removes IdentityID from GroupID, a group bound to tenant-admin.
	ChangeGroupRemoveMember = "group.remove_member"
)

// States of a change request. ChangeExpired is never stored: a pending request
// read at or after its expiry is reported expired and can no longer be decided.
const (
	ChangePending  = "pending"
	ChangeApproved = "approved"
	ChangeDenied   = "denied"
	ChangeExpired  = "expired"
)

// DefaultChangeExpiry is how long a change request waits for a decision.
const DefaultChangeExpiry = 24 * time.Hour

// ChangeRequest is a requested change and its decision.
type ChangeRequest struct {
	ID          string
	Kind        string
	Binding     Binding // the binding kinds
	GroupID     string  // group.add_member, group.remove_member
	IdentityID  string  // group.add_member, group.remove_member: the member
	RequesterID string  // the requesting identity
	RequestedBy string  // its audit actor ("identity:<id>")
	Status      string
	CreatedAt   time.Time
	ExpiresAt   time.Time
	DecidedBy   string // the deciding audit actor; "" while pending
	DecidedAt   time.Time
}

// changeJSON is the exact change as stored in change_requests.change.
type changeJSON struct {
	BindingID     string    `json:"binding_id,omitempty"`
	Effect        string    `json:"effect"`
	PrincipalKind string    `json:"principal_kind"`
	PrincipalID   string    `json:"principal_id"`
	RoleID        string    `json:"role_id"`
	Scope         string    `json:"scope"`
	Condition     string    `json:"condition,omitempty"`
	ExpiresAt     time.Time `json:"expires_at,omitzero"`
	Justification string    `json:"justification,omitempty"`
	GroupID       string    `json:"group_id,omitempty"`
	IdentityID    string    `json:"identity_id,omitempty"`
}

func toChangeJSON(cr ChangeRequest) changeJSON {
	b := cr.Binding
	return changeJSON{BindingID: b.ID, Effect: b.Effect, PrincipalKind: b.PrincipalKind, PrincipalID: b.PrincipalID, RoleID: b.RoleID,
		Scope: b.Scope, Condition: b.Condition, ExpiresAt: b.ExpiresAt, Justification: b.Justification, GroupID: cr.GroupID, IdentityID: cr.IdentityID}
}

func (c changeJSON) binding() Binding {
	return Binding{ID: c.BindingID, Effect: c.Effect, PrincipalKind: c.PrincipalKind, PrincipalID: c.PrincipalID, RoleID: c.RoleID,
		Scope: c.Scope, Condition: c.Condition, ExpiresAt: c.ExpiresAt, Justification: c.Justification}
}

const changeColumns = `id::TEXT, kind, change, requester_id::TEXT, requested_by, status, created_at, expires_at, decided_by,
 coalesce(decided_at, 'epoch')`

// scanChange reads a change request as of now: pending past its expiry reads expired.
func scanChange(r pgx.Row, now time.Time) (ChangeRequest, error) {
	var cr ChangeRequest
	var raw []byte
	if err := r.Scan(&cr.ID, &cr.Kind, &raw, &cr.RequesterID, &cr.RequestedBy, &cr.Status, &cr.CreatedAt, &cr.ExpiresAt,
		&cr.DecidedBy, &cr.DecidedAt); err != nil {
		return ChangeRequest{}, err
	}
	var c changeJSON
	if err := json.Unmarshal(raw, &c); err != nil {
		return ChangeRequest{}, fmt.Errorf("decode change request %s: %w", cr.ID, err)
	}
	cr.Binding, cr.GroupID, cr.IdentityID = c.binding(), c.GroupID, c.IdentityID
	cr.DecidedAt = zeroEpoch(cr.DecidedAt)
	if cr.Status == ChangePending && !now.Before(cr.ExpiresAt) {
		cr.Status = ChangeExpired
	}
	return cr, nil
}

func changeSummary(cr ChangeRequest) map[string]any {
	m := map[string]any{"kind": cr.Kind, "requested_by": cr.RequestedBy, "status": cr.Status,
		"expires_at": cr.ExpiresAt.UTC().Format(time.RFC3339)}
	if cr.Kind == ChangeGroupAddMember || cr.Kind == ChangeGroupRemoveMember {
		m["change"] = map[string]any{"group_id": cr.GroupID, "identity_id": cr.IdentityID}
	} else {
		m["change"] = bindingSummary(cr.Binding)
	}
	if cr.Binding.ID != "" {
		m["binding_id"] = cr.Binding.ID
	}
	if cr.DecidedBy != "" {
		m["decided_by"] = cr.DecidedBy
	}
	return m
}

// dryRun runs fn in a savepoint of tx and rolls it back: whether the change would
// apply now, without applying it.
func dryRun(ctx context.Context, tx pgx.Tx, fn func(pgx.Tx) error) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	ferr := fn(sp)
	if err := sp.Rollback(ctx); err != nil {
		return fmt.Errorf("roll back savepoint: %w", err)
	}
	return ferr
}

// CreateChangeRequest records a pending request by identity requesterID (actor c)
// for the change cr.Kind of cr.Binding, expiring at now+ttl. The change must already
// be validated and authorized for the requester; it is tried (and rolled back) first,
// so a change that could not apply now (an unknown principal, a missing binding, the
// last tenant admin) is refused at once instead of waiting for an approval.
func (s *Store) CreateChangeRequest(ctx context.Context, c Change, sc Scope, requesterID string, cr ChangeRequest, now time.Time, ttl time.Duration) (ChangeRequest, error) {
	if ttl <= 0 {
		ttl = DefaultChangeExpiry
	}
	if cr.Kind == ChangeGroupAddMember || cr.Kind == ChangeGroupRemoveMember {
		if _, err := parseID("group_id", cr.GroupID); err != nil {
			return ChangeRequest{}, err
		}
		if _, err := parseID("identity_id", cr.IdentityID); err != nil {
			return ChangeRequest{}, err
		}
	}
	if cr.Kind == ChangeBindingCreate {
		if _, err := parseID("role_id", cr.Binding.RoleID); err != nil {
			return ChangeRequest{}, err
		}
		if _, err := parseID("principal_id", cr.Binding.PrincipalID); err != nil {
			return ChangeRequest{}, err
		}
		if err := checkText("justification", cr.Binding.Justification, false, 1000); err != nil {
			return ChangeRequest{}, err
		}
	}
	var out ChangeRequest
	err := s.tx(ctx, func(tx pgx.Tx) error {
		switch cr.Kind {
		case ChangeBindingCreate:
			if err := dryRun(ctx, tx, func(sp pgx.Tx) error { _, err := insertBinding(ctx, sp, sc, c, cr.Binding); return err }); err != nil {
				return err
			}
		case ChangeBindingDelete:
			if err := dryRun(ctx, tx, func(sp pgx.Tx) error { _, err := removeBinding(ctx, sp, sc, cr.Binding.ID); return err }); err != nil {
				return err
			}
		case ChangeGroupAddMember:
			if err := dryRun(ctx, tx, func(sp pgx.Tx) error { return addMember(ctx, sp, sc, cr.GroupID, cr.IdentityID) }); err != nil {
				return err
			}
		case ChangeGroupRemoveMember:
			if err := dryRun(ctx, tx, func(sp pgx.Tx) error { return removeMember(ctx, sp, sc, cr.GroupID, cr.IdentityID) }); err != nil {
				return err
			}
		default:
			return fmt.Errorf("change request of unknown kind %q", cr.Kind)
		}
		raw, err := json.Marshal(toChangeJSON(cr))
		if err != nil {
			return fmt.Errorf("encode change: %w", err)
		}
		out, err = scanChange(tx.QueryRow(ctx, `INSERT INTO change_requests (tenant_id, crdb_region, kind, change, requester_id, requested_by,
  created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING `+changeColumns,
			sc.TenantID, sc.Region, cr.Kind, raw, requesterID, c.Actor, now, now.Add(ttl)), now)
		if err != nil {
			return fmt.Errorf("insert change request: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "change_request.create", targetKind: "change_request", targetID: out.ID,
			after: changeSummary(out)})
	})
	return out, err
}

// GetChangeRequest reads one change request as of now.
func (s *Store) GetChangeRequest(ctx context.Context, sc Scope, id string, now time.Time) (ChangeRequest, error) {
	if _, err := parseID("change_request_id", id); err != nil {
		return ChangeRequest{}, err
	}
	cr, err := scanChange(s.pool.QueryRow(ctx, `SELECT `+changeColumns+` FROM change_requests WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`,
		sc.Region, sc.TenantID, id), now)
	if errors.Is(err, pgx.ErrNoRows) {
		return ChangeRequest{}, fmt.Errorf("%w: change request %s", ErrNotFound, id)
	}
	return cr, classify(err)
}

// ListChangeRequests pages through the tenant's change requests, oldest first, as of
// now; status "" lists all, otherwise one of the states (ChangeExpired included).
func (s *Store) ListChangeRequests(ctx context.Context, sc Scope, status string, p Page, now time.Time) ([]ChangeRequest, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	switch status {
	case "", ChangePending, ChangeApproved, ChangeDenied, ChangeExpired:
	default:
		return nil, "", fieldErr("status", "must be pending, approved, denied or expired, got %q", status)
	}
	after, err := p.timeKeyed()
	if err != nil {
		return nil, "", err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+changeColumns+` FROM change_requests
WHERE crdb_region = $1 AND tenant_id = $2 AND (created_at, id) > ($4, $5::UUID)
  AND ($7 = '' OR (CASE WHEN status = 'pending' AND expires_at <= $3 THEN 'expired' ELSE status END) = $7)
ORDER BY created_at, id LIMIT $6`, sc.Region, sc.TenantID, now, after.At, after.ID, limit+1, status)
	if err != nil {
		return nil, "", classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ChangeRequest, error) { return scanChange(r, now) })
	if err != nil {
		return nil, "", classify(err)
	}
	out, next := pageOf(out, limit, func(c ChangeRequest) timeKey { return timeKey{c.CreatedAt, c.ID} })
	return out, next, nil
}

// DecideChangeRequest approves or denies a pending, unexpired change request as of
// now, by identity deciderID (actor c; "" for the operator's break-glass). An
// approval must come from another identity than the requester; it applies the change
// in the same transaction as the decision, and refuses (ErrPrecondition) if the
// policy moved since atRevision (> 0), the revision the approver was judged at. The
// change's audit event names both the requester and the approver. It returns the
// decided request and the new policy revision (0 for a denial).
func (s *Store) DecideChangeRequest(ctx context.Context, c Change, sc Scope, id, deciderID string, approve bool, now time.Time, atRevision int64) (ChangeRequest, int64, error) {
	if _, err := parseID("change_request_id", id); err != nil {
		return ChangeRequest{}, 0, err
	}
	var out ChangeRequest
	var rev int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		cr, err := scanChange(tx.QueryRow(ctx, `SELECT `+changeColumns+` FROM change_requests
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3 FOR UPDATE`, sc.Region, sc.TenantID, id), now)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: change request %s", ErrNotFound, id)
		}
		if err != nil {
			return fmt.Errorf("read change request: %w", err)
		}
		if cr.Status != ChangePending {
			return fmt.Errorf("%w: change_request_id: change request %s is %s, not pending", ErrPrecondition, id, cr.Status)
		}
		if approve && cr.RequesterID == deciderID {
			return fmt.Errorf("%w: change_request_id: the requester cannot approve their own change request; another identity holding iam.changes.approve must",
				ErrPrecondition)
		}
		status, action := ChangeDenied, "change_request.deny"
		if approve {
			status, action = ChangeApproved, "change_request.approve"
			var b Binding
			if b, rev, err = s.applyChange(ctx, tx, c, sc, cr, atRevision); err != nil {
				return err
			}
			if cr.Kind == ChangeBindingCreate {
				cr.Binding.ID = b.ID // the binding made, recorded with the change
			}
		}
		raw, err := json.Marshal(toChangeJSON(cr))
		if err != nil {
			return fmt.Errorf("encode change: %w", err)
		}
		out, err = scanChange(tx.QueryRow(ctx, `UPDATE change_requests SET status = $4, decided_by = $5, decided_at = $6, change = $7
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3 RETURNING `+changeColumns, sc.Region, sc.TenantID, id, status, c.Actor, now, raw), now)
		if err != nil {
			return fmt.Errorf("update change request: %w", err)
		}
		after := changeSummary(out)
		if rev > 0 {
			after["policy_revision"] = rev
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: action, targetKind: "change_request", targetID: id, before: changeSummary(cr), after: after})
	})
	return out, rev, err
}

// applyChange makes cr's change inside tx, bumps the policy revision (refusing if it
// moved since atRevision > 0) and writes the change's audit event, which names the
// requester and the approver (c). It returns the binding made (binding.create).
func (s *Store) applyChange(ctx context.Context, tx pgx.Tx, c Change, sc Scope, cr ChangeRequest, atRevision int64) (Binding, int64, error) {
	var a audit
	var b Binding
	after := map[string]any{}
	switch cr.Kind {
	case ChangeBindingCreate:
		var err error
		if b, err = insertBinding(ctx, tx, sc, c, cr.Binding); err != nil {
			return Binding{}, 0, err
		}
		after = bindingSummary(b)
		a = audit{action: "binding.create", targetKind: "binding", targetID: b.ID}
	case ChangeBindingDelete:
		before, err := removeBinding(ctx, tx, sc, cr.Binding.ID)
		if errors.Is(err, ErrNotFound) {
			return Binding{}, 0, fmt.Errorf("%w: change_request_id: binding %s no longer exists", ErrPrecondition, cr.Binding.ID)
		}
		if err != nil {
			return Binding{}, 0, err
		}
		a = audit{action: "binding.delete", targetKind: "binding", targetID: cr.Binding.ID, before: bindingSummary(before)}
	case ChangeGroupAddMember:
		if err := addMember(ctx, tx, sc, cr.GroupID, cr.IdentityID); err != nil {
			return Binding{}, 0, err
		}
		after["identity_id"] = cr.IdentityID
		a = audit{action: "group.add_member", targetKind: "group", targetID: cr.GroupID}
	case ChangeGroupRemoveMember:
		err := removeMember(ctx, tx, sc, cr.GroupID, cr.IdentityID)
		if errors.Is(err, ErrNotFound) {
			return Binding{}, 0, fmt.Errorf("%w: change_request_id: identity %s is no longer a member of group %s", ErrPrecondition, cr.IdentityID, cr.GroupID)
		}
		if err != nil {
			return Binding{}, 0, err
		}
		after["identity_id"] = cr.IdentityID
		a = audit{action: "group.remove_member", targetKind: "group", targetID: cr.GroupID}
	default:
		return Binding{}, 0, fmt.Errorf("change request %s of unknown kind %q", cr.ID, cr.Kind)
	}
	rev, err := bumpRevision(ctx, tx, sc.TenantID)
	if err != nil {
		return Binding{}, 0, err
	}
	if atRevision > 0 && rev != atRevision+1 {
		return Binding{}, 0, fmt.Errorf("%w: change_request_id: the policy changed (revision %d) since the approval was judged at revision %d; retry",
			ErrPrecondition, rev-1, atRevision)
	}
	after["policy_revision"] = rev
	after["change_request_id"] = cr.ID
	after["requested_by"] = cr.RequestedBy
	after["approved_by"] = c.Actor
	a.after = after
	return b, rev, s.writeAudit(ctx, tx, sc, c, a)
}
