package schema

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Change says who makes a change; it is recorded in the change's audit event.
type Change struct {
	Actor     string // "operator", "identity:<uuid>", "client:<id>", "token-holder", "system"
	RequestID string
	// ActorKind is the actor's kind: "operator", an identity kind ("human",
	// "service_account", …), "client" or "system"; "" when not known.
	ActorKind string
	// SessionID and TokenID are the session and the access token (jti) the actor
	// authenticated with; ClientID the OAuth client or API key id it acted through.
	SessionID, TokenID, ClientID string
	// BreakGlass marks an operator acting on a tenant-scoped call (break-glass).
	BreakGlass bool
}

// AuditEvent is one recorded change.
type AuditEvent struct {
	ID         string
	TenantID   string
	At         time.Time
	Actor      string
	Action     string
	TargetKind string
	TargetID   string
	Before     map[string]any // nil when the target did not exist
	After      map[string]any // nil when the target was deleted
	RequestID  string
	Region     string
	Node       string
	// Who acted, beyond Actor: see Change.
	ActorKind                    string
	SessionID, TokenID, ClientID string
	BreakGlass                   bool
}

// audit is what a mutation hands to writeAudit.
type audit struct {
	action     string
	targetKind string
	targetID   string
	before     any
	after      any
}

// writeAudit inserts the audit event for a change inside the change's transaction.
func (s *Store) writeAudit(ctx context.Context, tx pgx.Tx, sc Scope, c Change, a audit) error {
	before, err := jsonOrNil(a.before)
	if err != nil {
		return err
	}
	after, err := jsonOrNil(a.after)
	if err != nil {
		return err
	}
	actor := c.Actor
	if actor == "" {
		actor = "system"
	}
	// The event is written only if the tenant still lives where the change was made:
	// a change made with a home region read before a rehome would otherwise leave rows
	// in the old partition. Every change writes an event, so every change is guarded.
	// A tenant being rehomed in batches (rehome_to set) is fenced the same way.
	tag, err := tx.Exec(ctx, `
INSERT INTO audit_events (tenant_id, crdb_region, actor, action, target_kind, target_id, before, after, request_id, region, node,
  actor_kind, session_id, token_id, client_id, break_glass)
SELECT $1::TEXT, $2::crdb_internal_region, $3::TEXT, $4::TEXT, $5::TEXT, $6::TEXT, $7::JSONB, $8::JSONB, $9::TEXT, $10::TEXT, $11::TEXT,
  $12::TEXT, $13::TEXT, $14::TEXT, $15::TEXT, $16::BOOL
WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1::TEXT AND home_region = $2::crdb_internal_region::TEXT AND rehome_to IS NULL)`,
		sc.TenantID, sc.Region, actor, a.action, a.targetKind, a.targetID, before, after, c.RequestID, s.region, s.node,
		actorKind(c), c.SessionID, c.TokenID, c.ClientID, c.BreakGlass)
	if err != nil {
		return fmt.Errorf("write audit event %s: %w", a.action, err)
	}
	if tag.RowsAffected() != 1 {
		var to string
		if err := tx.QueryRow(ctx, `SELECT COALESCE(rehome_to, '') FROM tenants WHERE id = $1 AND home_region = $2`,
			sc.TenantID, sc.Region).Scan(&to); err == nil && to != "" {
			return fmt.Errorf("%w: tenant %q is being moved to %s", ErrRehoming, sc.TenantID, to)
		}
		return fmt.Errorf("%w: tenant %q no longer lives in %s", ErrMoved, sc.TenantID, sc.Region)
	}
	return nil
}

// actorKind is c's kind, or what its Actor says when the caller set none.
func actorKind(c Change) string {
	if c.ActorKind != "" {
		return c.ActorKind
	}
	switch kind, _, _ := strings.Cut(c.Actor, ":"); kind {
	case "", "system":
		return "system"
	case "operator", "client":
		return kind
	}
	return ""
}

func jsonOrNil(v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode audit summary: %w", err)
	}
	return b, nil
}

// AuditFilter narrows ListAuditEvents; zero fields match everything.
type AuditFilter struct {
	Actor      string    // exact: "operator", "identity:<uuid>", "client:<id>", …
	Action     string    // exact ("credential.rotate"), or a prefix ending in '.' ("credential.")
	TargetKind string    // exact
	TargetID   string    // exact
	Since      time.Time // events at or after
	Until      time.Time // events before
}

// Validate names the first invalid field.
func (f AuditFilter) Validate() error {
	for _, x := range []struct{ name, v string }{{"actor", f.Actor}, {"action", f.Action}, {"target_kind", f.TargetKind}, {"target_id", f.TargetID}} {
		if len(x.v) > 200 {
			return fieldErr(x.name, "at most 200 characters")
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return fieldErr("end_time", "must be after start_time")
	}
	return nil
}

// ListAuditEvents pages through the tenant's audit events that match f, newest first.
func (s *Store) ListAuditEvents(ctx context.Context, sc Scope, f AuditFilter, p Page) ([]AuditEvent, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	if err := f.Validate(); err != nil {
		return nil, "", err
	}
	var after struct {
		At time.Time `json:"at"`
		ID string    `json:"id"`
	}
	if err := p.decode(&after); err != nil {
		return nil, "", err
	}
	q := `
SELECT id::TEXT, at, actor, action, target_kind, target_id, before, after, request_id, region, node,
  actor_kind, session_id, token_id, client_id, break_glass
FROM audit_events
WHERE tenant_id = $1 AND crdb_region = $2`
	args := []any{sc.TenantID, sc.Region}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if after.ID != "" {
		q += ` AND (at, id) < (` + arg(after.At) + `, ` + arg(after.ID) + `::UUID)`
	}
	if f.Actor != "" {
		q += ` AND actor = ` + arg(f.Actor)
	}
	switch {
	case strings.HasSuffix(f.Action, "."):
		q += ` AND left(action, ` + arg(len(f.Action)) + `) = ` + arg(f.Action)
	case f.Action != "":
		q += ` AND action = ` + arg(f.Action)
	}
	if f.TargetKind != "" {
		q += ` AND target_kind = ` + arg(f.TargetKind)
	}
	if f.TargetID != "" {
		q += ` AND target_id = ` + arg(f.TargetID)
	}
	if !f.Since.IsZero() {
		q += ` AND at >= ` + arg(f.Since)
	}
	if !f.Until.IsZero() {
		q += ` AND at < ` + arg(f.Until)
	}
	q += fmt.Sprintf(` ORDER BY at DESC, id DESC LIMIT %d`, limit+1)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, "", classify(err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEvent, error) {
		e := AuditEvent{TenantID: sc.TenantID}
		err := r.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.TargetKind, &e.TargetID, &e.Before, &e.After, &e.RequestID, &e.Region, &e.Node,
			&e.ActorKind, &e.SessionID, &e.TokenID, &e.ClientID, &e.BreakGlass)
		return e, err
	})
	if err != nil {
		return nil, "", classify(err)
	}
	next := ""
	if len(events) > limit {
		events = events[:limit]
		last := events[limit-1]
		after.At, after.ID = last.At, last.ID
		next = encodeToken(after)
	}
	return events, next, nil
}
