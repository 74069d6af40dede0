package schema

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// SAML 2.0 sign-in (docs/saml.md): a tenant's people sign in through a SAML identity
// provider, keyplane being the service provider. The store keeps the IdPs (their
// metadata, validated by the region, and keyplane's sealed SP key for each), the
// assertions already accepted (replay), and completes a sign-in in one transaction.

// SAMLIdP is a tenant's SAML identity provider.
type SAMLIdP struct {
	ID          string // chosen by the caller (the SP key is sealed to it)
	Name        string
	IdPEntityID string
	// Metadata is the IdP's metadata XML, checked by the region before it is stored.
	Metadata string
	// SPCert is keyplane's SP certificate (DER) and SPKeySealed its private key,
	// sealed with the node's KEK.
	SPCert, SPKeySealed []byte
	// The SAML attribute giving each field; "" means the NameID (email and external
	// id) or none (display name).
	EmailAttribute, ExternalIDAttribute, NameAttribute string
	// JIT creates a human identity on first sign-in when none links.
	JIT bool
	// LinkBy is "email" or "external_id": how an assertion finds its identity.
	LinkBy    string
	CreatedAt time.Time
}

// SAML link modes.
const (
	SAMLLinkEmail      = "email"
	SAMLLinkExternalID = "external_id"
)

// ErrAssertionReplay means a SAML assertion was already used to sign in.
var ErrAssertionReplay = errors.New("assertion already used (replay)")

func checkSAMLIdP(p SAMLIdP) error {
	if _, err := parseID("id", p.ID); err != nil {
		return err
	}
	if err := checkText("name", p.Name, true, 100); err != nil {
		return err
	}
	if strings.ContainsAny(p.Name, "/?#% ") {
		return fieldErr("name", "must not contain '/', '?', '#', '%%' or spaces (it is part of the SP's URLs)")
	}
	if err := checkText("idp_entity_id", p.IdPEntityID, true, 1024); err != nil {
		return err
	}
	if p.Metadata == "" || len(p.Metadata) > 256<<10 {
		return fieldErr("metadata", "required, at most 256 KiB")
	}
	for f, v := range map[string]string{"email_attribute": p.EmailAttribute, "external_id_attribute": p.ExternalIDAttribute, "name_attribute": p.NameAttribute} {
		if err := checkText(f, v, false, 256); err != nil {
			return err
		}
	}
	if p.LinkBy != SAMLLinkEmail && p.LinkBy != SAMLLinkExternalID {
		return fieldErr("link_by", "email or external_id, got %q", p.LinkBy)
	}
	if len(p.SPCert) == 0 || len(p.SPKeySealed) == 0 {
		return errors.New("saml idp without an SP key pair")
	}
	return nil
}

func samlSummary(p SAMLIdP) map[string]any {
	return map[string]any{"name": p.Name, "idp_entity_id": p.IdPEntityID, "email_attribute": p.EmailAttribute,
		"external_id_attribute": p.ExternalIDAttribute, "name_attribute": p.NameAttribute, "jit": p.JIT, "link_by": p.LinkBy}
}

// CreateSAMLIdP stores an IdP, with its audit event.
func (s *Store) CreateSAMLIdP(ctx context.Context, c Change, sc Scope, p SAMLIdP) (SAMLIdP, error) {
	if err := checkSAMLIdP(p); err != nil {
		return SAMLIdP{}, err
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO saml_idps (tenant_id, id, crdb_region, name, idp_entity_id, metadata, sp_cert, sp_key_sealed,
  email_attribute, external_id_attribute, name_attribute, jit, link_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING created_at`,
			sc.TenantID, p.ID, sc.Region, p.Name, p.IdPEntityID, p.Metadata, p.SPCert, p.SPKeySealed,
			p.EmailAttribute, p.ExternalIDAttribute, p.NameAttribute, p.JIT, p.LinkBy).Scan(&p.CreatedAt)
		if err != nil {
			if errors.Is(classify(err), ErrConflict) {
				return fieldErrConflict("name", "a SAML IdP named %q exists", p.Name)
			}
			return fmt.Errorf("insert saml idp: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "saml.idp.create", targetKind: "saml_idp", targetID: p.ID, after: samlSummary(p)})
	})
	if err != nil {
		return SAMLIdP{}, err
	}
	return p, nil
}

// DeleteSAMLIdP removes an IdP, with its audit event. Sessions it opened stay.
func (s *Store) DeleteSAMLIdP(ctx context.Context, c Change, sc Scope, id string) error {
	if _, err := parseID("id", id); err != nil {
		return err
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		before, err := getSAMLIdP(ctx, tx, sc, "id = $3", id, " FOR UPDATE")
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM saml_assertions WHERE crdb_region = $1 AND tenant_id = $2 AND idp_id = $3`, sc.Region, sc.TenantID, id); err != nil {
			return fmt.Errorf("delete saml assertions: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM saml_idps WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`, sc.Region, sc.TenantID, id); err != nil {
			return fmt.Errorf("delete saml idp: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "saml.idp.delete", targetKind: "saml_idp", targetID: id, before: samlSummary(before)})
	})
}

// GetSAMLIdP reads one IdP by id.
func (s *Store) GetSAMLIdP(ctx context.Context, sc Scope, id string) (SAMLIdP, error) {
	if _, err := parseID("id", id); err != nil {
		return SAMLIdP{}, err
	}
	return getSAMLIdP(ctx, s.pool, sc, "id = $3", id, "")
}

// GetSAMLIdPByName reads one IdP by name (the name in the SP's URLs).
func (s *Store) GetSAMLIdPByName(ctx context.Context, sc Scope, name string) (SAMLIdP, error) {
	return getSAMLIdP(ctx, s.pool, sc, "name = $3", name, "")
}

// ListSAMLIdPs reads the tenant's IdPs by name (at most 100).
func (s *Store) ListSAMLIdPs(ctx context.Context, sc Scope) ([]SAMLIdP, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+samlColumns+` FROM saml_idps WHERE crdb_region = $1 AND tenant_id = $2 ORDER BY name LIMIT 100`,
		sc.Region, sc.TenantID)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SAMLIdP, error) { return scanSAMLIdP(r) })
	return out, classify(err)
}

const samlColumns = `id::TEXT, name, idp_entity_id, metadata, sp_cert, sp_key_sealed, email_attribute, external_id_attribute, name_attribute,
  jit, link_by, created_at`

func scanSAMLIdP(r pgx.Row) (SAMLIdP, error) {
	var p SAMLIdP
	err := r.Scan(&p.ID, &p.Name, &p.IdPEntityID, &p.Metadata, &p.SPCert, &p.SPKeySealed, &p.EmailAttribute, &p.ExternalIDAttribute,
		&p.NameAttribute, &p.JIT, &p.LinkBy, &p.CreatedAt)
	return p, err
}

func getSAMLIdP(ctx context.Context, q querier, sc Scope, where, arg, lock string) (SAMLIdP, error) {
	p, err := scanSAMLIdP(q.QueryRow(ctx, `SELECT `+samlColumns+` FROM saml_idps WHERE crdb_region = $1 AND tenant_id = $2 AND `+where+lock,
		sc.Region, sc.TenantID, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return SAMLIdP{}, fmt.Errorf("%w: saml idp %s", ErrNotFound, arg)
	}
	if err != nil {
		return SAMLIdP{}, fmt.Errorf("read saml idp: %w", err)
	}
	return p, nil
}

// SAMLSignIn is a verified assertion: who it names and what it said.
type SAMLSignIn struct {
	IdP         SAMLIdP
	AssertionID string
	// KeepFor is how long its id is kept for replay, from the database's now(): the
	// database decides when a record is pruned, so the window is measured on its
	// clock (a node's clock behind it must not make an id be forgotten early).
	KeepFor     time.Duration
	NameID      string
	Email       string
	ExternalID  string
	DisplayName string
}

// CompleteSAMLLogin signs an assertion's person in, in one transaction: the assertion
// id is recorded (ErrAssertionReplay if it was used), the identity found by the IdP's
// link mode (or, with JIT, created), refused unless active and human, the session and
// the browser session opened and the "saml.login" audit event written.
func (s *Store) CompleteSAMLLogin(ctx context.Context, c Change, sc Scope, in SAMLSignIn, ns NewSession, b NewBrowserSession) (Session, error) {
	var out Session
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM saml_assertions WHERE crdb_region = $1 AND tenant_id = $2 AND expires_at < now()`,
			sc.Region, sc.TenantID); err != nil {
			return fmt.Errorf("prune saml assertions: %w", err)
		}
		tag, err := tx.Exec(ctx, `INSERT INTO saml_assertions (tenant_id, crdb_region, idp_id, assertion_id, expires_at)
VALUES ($1, $2, $3, $4, now() + $5::INT8 * INTERVAL '1 millisecond') ON CONFLICT DO NOTHING`, sc.TenantID, sc.Region, in.IdP.ID, in.AssertionID,
			in.KeepFor.Milliseconds())
		if err != nil {
			return fmt.Errorf("record saml assertion: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return ErrAssertionReplay
		}
		var id string
		switch in.IdP.LinkBy {
		case SAMLLinkExternalID:
			err = tx.QueryRow(ctx, `SELECT id::TEXT FROM identities WHERE crdb_region = $1 AND tenant_id = $2 AND external_id = $3`,
				sc.Region, sc.TenantID, in.ExternalID).Scan(&id)
		default:
			err = tx.QueryRow(ctx, `SELECT id::TEXT FROM identities WHERE crdb_region = $1 AND tenant_id = $2 AND lower(email) = lower($3) AND email IS NOT NULL`,
				sc.Region, sc.TenantID, in.Email).Scan(&id)
		}
		created := false
		switch {
		case errors.Is(err, pgx.ErrNoRows) && in.IdP.JIT:
			if in.Email == "" {
				return fmt.Errorf("%w: the assertion carries no email to create an identity with", ErrPrecondition)
			}
			name := in.DisplayName
			if name == "" {
				name = in.Email
			}
			draft := Identity{TenantID: sc.TenantID, Kind: KindHuman, DisplayName: name, Email: in.Email, Attributes: map[string]any{}}
			if err := checkIdentity(draft, time.Now()); err != nil {
				return err
			}
			err = tx.QueryRow(ctx, `INSERT INTO identities (tenant_id, crdb_region, kind, display_name, email, attributes, external_id)
VALUES ($1, $2, $3, $4, $5, '{}', nullif($6, '')) RETURNING id::TEXT`, sc.TenantID, sc.Region, KindHuman, name, in.Email, in.ExternalID).Scan(&id)
			if err != nil {
				return fmt.Errorf("insert identity: %w", identityConflict(err, in.Email))
			}
			created = true
		case errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("%w: no identity links to this assertion (%s) and just-in-time creation is off", ErrNotFound, in.IdP.LinkBy)
		case err != nil:
			return fmt.Errorf("find identity: %w", err)
		}
		ident, err := getIdentity(ctx, tx, sc, id, "")
		if err != nil {
			return err
		}
		if created {
			after := identitySummary(ident)
			if err := s.applyRules(ctx, tx, sc, ident, after); err != nil {
				return err
			}
			after["saml_idp"] = in.IdP.Name
			if err := s.writeAudit(ctx, tx, sc, c, audit{action: "identity.create", targetKind: "identity", targetID: id, after: after}); err != nil {
				return err
			}
		}
		if !ident.IsHuman() || ident.Status != StatusActive || (!ident.ExpiresAt.IsZero() && !time.Now().Before(ident.ExpiresAt)) {
			return inactiveIdentity("identity", ident)
		}
		ns.IdentityID = id
		if out, err = insertSession(ctx, tx, sc, ns); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO browser_sessions (tenant_id, crdb_region, id, session_id, secret_hash, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)`, sc.TenantID, sc.Region, b.ID, out.ID, b.Hash, b.ExpiresAt); err != nil {
			return fmt.Errorf("insert browser session: %w", err)
		}
		after := sessionSummary(out)
		after["saml_idp_id"], after["saml_idp"], after["assertion_id"] = in.IdP.ID, in.IdP.Name, truncate(in.AssertionID, 256)
		after["name_id"], after["jit_created"] = truncate(in.NameID, 512), created
		return s.writeAudit(ctx, tx, sc, c, audit{action: "saml.login", targetKind: "session", targetID: out.ID, after: after})
	})
	return out, err
}

// SAMLRefusal is a SAML sign-in refused, for its audit event.
type SAMLRefusal struct {
	IdPID, IdPName string
	Rule           string // signature, audience, replay, …
	Reason         string
}

// RecordSAMLRefusal writes the "saml.login_refused" audit event.
func (s *Store) RecordSAMLRefusal(ctx context.Context, c Change, sc Scope, r SAMLRefusal) error {
	after := map[string]any{"rule": r.Rule, "reason": truncate(r.Reason, 1000), "saml_idp": r.IdPName}
	return s.tx(ctx, func(tx pgx.Tx) error {
		return s.writeAudit(ctx, tx, sc, c, audit{action: "saml.login_refused", targetKind: "saml_idp", targetID: r.IdPID, after: after})
	})
}
