package schema

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Upstream OIDC sign-in (docs/openid-provider.md): a tenant lets its people sign in
// through an external OpenID Provider (its corporate IdP), keyplane acting as relying
// party. A verified upstream identity is linked to a keyplane human by externalId (a
// SCIM-provisioned identity) or, when the provider allows it, by a verified email;
// otherwise one is created just in time if the provider allows that, else refused.
// The region talks OIDC; the store keeps the providers and the pending sign-ins.

// UpstreamProvider is one upstream OpenID Provider of a tenant.
type UpstreamProvider struct {
	ID          string
	Name        string // slug in the sign-in URLs: [a-z0-9-], 1 to 63
	DisplayName string // shown as "Sign in with <DisplayName>"
	Issuer      string // ValidIssuer; discovery is fetched from it
	ClientID    string
	// SealedSecret is the client secret sealed under the node's KEK by the region
	// (UpstreamSecretAD); never returned by the admin API.
	SealedSecret []byte
	Scopes       []string // requested besides openid
	// Claims of the upstream ID token: email, display name, and the externalId an
	// identity is linked by (default sub).
	ClaimEmail, ClaimName, ClaimExternalID string
	// AttributeClaims maps identity attribute keys to claim names.
	AttributeClaims map[string]string
	JIT             bool // create a human when nothing links
	LinkByEmail     bool // link by the email claim when email_verified is true
	CreatedAt       time.Time
}

// UpstreamSecretAD is the associated data an upstream provider's client secret is
// sealed with: a sealed secret cannot be moved to another tenant or provider.
func UpstreamSecretAD(tenantID, providerID string) []byte {
	return []byte("upstream-oidc-secret/" + tenantID + "/" + providerID)
}

var (
	upstreamName  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	upstreamClaim = regexp.MustCompile(`^[A-Za-z0-9_.:/-]{1,128}$`)
	upstreamScope = regexp.MustCompile(`^[\x21\x23-\x5b\x5d-\x7e]{1,128}$`)
)

const maxUpstreamScopes, maxUpstreamAttributes = 20, 32

// checkUpstreamProvider validates p and fills the defaults (claims email, name, sub).
func checkUpstreamProvider(p *UpstreamProvider) error {
	if !upstreamName.MatchString(p.Name) {
		return fieldErr("name", "1 to 63 of a-z, 0-9 and -, starting with a letter or digit (it is part of the sign-in URLs)")
	}
	if err := checkText("display_name", p.DisplayName, true, 100); err != nil {
		return err
	}
	if err := ValidIssuer(p.Issuer); err != nil {
		return fieldErr("issuer", "%s", err)
	}
	if p.ClientID == "" || len(p.ClientID) > 255 || !printableToken(p.ClientID) {
		return fieldErr("client_id", "required: 1 to 255 printable ASCII characters without spaces")
	}
	if len(p.SealedSecret) == 0 {
		return fieldErr("client_secret", "required")
	}
	if len(p.Scopes) > maxUpstreamScopes {
		return fieldErr("scopes", "at most %d, got %d", maxUpstreamScopes, len(p.Scopes))
	}
	for _, s := range p.Scopes {
		if !upstreamScope.MatchString(s) {
			return fieldErr("scopes", "%q is not a scope token (RFC 6749 §3.3)", s)
		}
	}
	p.Scopes = append([]string{}, slices.Compact(slices.Sorted(slices.Values(p.Scopes)))...)
	for _, c := range []struct {
		field string
		v     *string
		def   string
	}{{"claim_email", &p.ClaimEmail, "email"}, {"claim_name", &p.ClaimName, "name"}, {"claim_external_id", &p.ClaimExternalID, "sub"}} {
		if *c.v == "" {
			*c.v = c.def
		}
		if !upstreamClaim.MatchString(*c.v) {
			return fieldErr(c.field, "a claim name: 1 to 128 of A-Z a-z 0-9 _ . : / -")
		}
	}
	if p.AttributeClaims == nil {
		p.AttributeClaims = map[string]string{}
	}
	if len(p.AttributeClaims) > maxUpstreamAttributes {
		return fieldErr("attribute_claims", "at most %d, got %d", maxUpstreamAttributes, len(p.AttributeClaims))
	}
	for k, v := range p.AttributeClaims {
		if !upstreamClaim.MatchString(k) || !upstreamClaim.MatchString(v) {
			return fieldErr("attribute_claims", "%q: %q: attribute keys and claim names are 1 to 128 of A-Z a-z 0-9 _ . : / -", k, v)
		}
	}
	return nil
}

// NewUpstreamProviderID is the id a provider will get: the region seals the client
// secret under it before CreateUpstreamProvider stores both.
func NewUpstreamProviderID() string { return uuid.NewString() }

// CreateUpstreamProvider stores p (p.ID from NewUpstreamProviderID), with its audit event.
func (s *Store) CreateUpstreamProvider(ctx context.Context, c Change, sc Scope, p UpstreamProvider) (UpstreamProvider, error) {
	if _, err := parseID("id", p.ID); err != nil {
		return UpstreamProvider{}, err
	}
	if err := checkUpstreamProvider(&p); err != nil {
		return UpstreamProvider{}, err
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO upstream_oidc_providers (tenant_id, crdb_region, id, name, display_name, issuer, client_id,
  client_secret, scopes, claim_email, claim_name, claim_external_id, attribute_claims, jit, link_by_email)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING created_at`,
			sc.TenantID, sc.Region, p.ID, p.Name, p.DisplayName, p.Issuer, p.ClientID, p.SealedSecret, p.Scopes,
			p.ClaimEmail, p.ClaimName, p.ClaimExternalID, p.AttributeClaims, p.JIT, p.LinkByEmail).Scan(&p.CreatedAt)
		if err != nil {
			if errors.Is(classify(err), ErrConflict) {
				return fieldErrConflict("name", "an upstream provider named %q exists", p.Name)
			}
			return fmt.Errorf("insert upstream provider: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "upstream.provider.create", targetKind: "upstream_provider", targetID: p.ID,
			after: upstreamSummary(p)})
	})
	if err != nil {
		return UpstreamProvider{}, err
	}
	return p, nil
}

// DeleteUpstreamProvider removes a provider, with its audit event. Sessions opened
// through it stay (revoke the identities' sessions to end them).
func (s *Store) DeleteUpstreamProvider(ctx context.Context, c Change, sc Scope, id string) error {
	if _, err := parseID("id", id); err != nil {
		return err
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		before, err := getUpstreamProvider(ctx, tx, sc, "id = $3::UUID", id, " FOR UPDATE")
		if err != nil {
			return err
		}
		for _, table := range []string{"upstream_oidc_states", "upstream_oidc_links"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE crdb_region = $1 AND tenant_id = $2 AND provider_id = $3`,
				sc.Region, sc.TenantID, id); err != nil {
				return fmt.Errorf("delete %s: %w", table, err)
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM upstream_oidc_providers WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`,
			sc.Region, sc.TenantID, id); err != nil {
			return fmt.Errorf("delete upstream provider: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "upstream.provider.delete", targetKind: "upstream_provider", targetID: id,
			before: upstreamSummary(before)})
	})
}

// GetUpstreamProvider reads one provider by id.
func (s *Store) GetUpstreamProvider(ctx context.Context, sc Scope, id string) (UpstreamProvider, error) {
	if _, err := parseID("id", id); err != nil {
		return UpstreamProvider{}, err
	}
	return getUpstreamProvider(ctx, s.pool, sc, "id = $3::UUID", id, "")
}

// GetUpstreamProviderByName reads one provider by its name (ErrNotFound for a name
// that cannot be one).
func (s *Store) GetUpstreamProviderByName(ctx context.Context, sc Scope, name string) (UpstreamProvider, error) {
	if !upstreamName.MatchString(name) {
		return UpstreamProvider{}, fmt.Errorf("%w: upstream provider", ErrNotFound)
	}
	return getUpstreamProvider(ctx, s.pool, sc, "name = $3", name, "")
}

// ListUpstreamProviders reads the tenant's providers by name (at most 100: a tenant
// has a handful).
func (s *Store) ListUpstreamProviders(ctx context.Context, sc Scope) ([]UpstreamProvider, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+upstreamColumns+` FROM upstream_oidc_providers
WHERE crdb_region = $1 AND tenant_id = $2 ORDER BY name LIMIT 100`, sc.Region, sc.TenantID)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (UpstreamProvider, error) { return scanUpstream(r) })
	return out, classify(err)
}

const upstreamColumns = `id::TEXT, name, display_name, issuer, client_id, client_secret, scopes, claim_email, claim_name,
  claim_external_id, attribute_claims, jit, link_by_email, created_at`

func scanUpstream(r pgx.Row) (UpstreamProvider, error) {
	var p UpstreamProvider
	err := r.Scan(&p.ID, &p.Name, &p.DisplayName, &p.Issuer, &p.ClientID, &p.SealedSecret, &p.Scopes, &p.ClaimEmail, &p.ClaimName,
		&p.ClaimExternalID, &p.AttributeClaims, &p.JIT, &p.LinkByEmail, &p.CreatedAt)
	return p, err
}

func getUpstreamProvider(ctx context.Context, q querier, sc Scope, where, arg, lock string) (UpstreamProvider, error) {
	p, err := scanUpstream(q.QueryRow(ctx, `SELECT `+upstreamColumns+` FROM upstream_oidc_providers
WHERE crdb_region = $1 AND tenant_id = $2 AND `+where+lock, sc.Region, sc.TenantID, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return UpstreamProvider{}, fmt.Errorf("%w: upstream provider %s", ErrNotFound, arg)
	}
	if err != nil {
		return UpstreamProvider{}, fmt.Errorf("read upstream provider: %w", err)
	}
	return p, nil
}

func upstreamSummary(p UpstreamProvider) map[string]any {
	return map[string]any{"name": p.Name, "display_name": p.DisplayName, "issuer": p.Issuer, "client_id": p.ClientID, "scopes": p.Scopes,
		"claim_email": p.ClaimEmail, "claim_name": p.ClaimName, "claim_external_id": p.ClaimExternalID,
		"attribute_claims": p.AttributeClaims, "jit": p.JIT, "link_by_email": p.LinkByEmail}
}

// UpstreamState is a sign-in sent to an upstream provider, waiting for its callback.
type UpstreamState struct {
	ID           string // SHA-256 of the state, hex
	ProviderID   string
	Nonce        string
	CodeVerifier string
	Request      string // the pending authorization request (query string)
	ExpiresAt    time.Time
}

// CreateUpstreamState stores a pending sign-in, pruning the tenant's expired ones.
func (s *Store) CreateUpstreamState(ctx context.Context, sc Scope, st UpstreamState) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM upstream_oidc_states WHERE crdb_region = $1 AND tenant_id = $2 AND expires_at < now()`,
			sc.Region, sc.TenantID); err != nil {
			return fmt.Errorf("prune upstream states: %w", err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO upstream_oidc_states (tenant_id, crdb_region, id, provider_id, nonce, code_verifier, request, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, sc.TenantID, sc.Region, st.ID, st.ProviderID, st.Nonce, st.CodeVerifier, st.Request, st.ExpiresAt)
		if err != nil {
			return fmt.Errorf("insert upstream state: %w", err)
		}
		return nil
	})
}

// TakeUpstreamState removes and returns the pending sign-in id (ErrNotFound when
// there is none: unknown, or used already). Expiry is the caller's to check.
func (s *Store) TakeUpstreamState(ctx context.Context, sc Scope, id string) (UpstreamState, error) {
	st := UpstreamState{ID: id}
	err := s.pool.QueryRow(ctx, `DELETE FROM upstream_oidc_states WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3
RETURNING provider_id::TEXT, nonce, code_verifier, request, expires_at`, sc.Region, sc.TenantID, id).
		Scan(&st.ProviderID, &st.Nonce, &st.CodeVerifier, &st.Request, &st.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return UpstreamState{}, fmt.Errorf("%w: upstream state", ErrNotFound)
	}
	return st, classify(err)
}

// UpstreamLink returns the identity an upstream subject of provider providerID is
// linked to (ErrNotFound when none).
func (s *Store) UpstreamLink(ctx context.Context, sc Scope, providerID, subject string) (Identity, error) {
	if _, err := parseID("provider_id", providerID); err != nil {
		return Identity{}, err
	}
	return findIdentity(ctx, s.pool, sc, `id = (SELECT identity_id FROM upstream_oidc_links
  WHERE crdb_region = $1 AND tenant_id = $2 AND provider_id = '`+providerID+`'::UUID AND subject = $3)`, subject)
}

// FindIdentityByExternalID returns the identity whose (SCIM) external_id is id.
func (s *Store) FindIdentityByExternalID(ctx context.Context, sc Scope, id string) (Identity, error) {
	return findIdentity(ctx, s.pool, sc, `external_id = $3 AND scim_deleted_at IS NULL`, id)
}

// FindIdentityByEmail returns the identity whose email is email (without regard to case).
func (s *Store) FindIdentityByEmail(ctx context.Context, sc Scope, email string) (Identity, error) {
	return findIdentity(ctx, s.pool, sc, `lower(email) = lower($3)`, email)
}

func findIdentity(ctx context.Context, q querier, sc Scope, where, arg string) (Identity, error) {
	if arg == "" {
		return Identity{}, fmt.Errorf("%w: identity", ErrNotFound)
	}
	i, err := scanIdentity(sc.TenantID, q.QueryRow(ctx, `SELECT `+identityColumns+` FROM identities
WHERE crdb_region = $1 AND tenant_id = $2 AND `+where, sc.Region, sc.TenantID, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return Identity{}, fmt.Errorf("%w: identity", ErrNotFound)
	}
	if err != nil {
		return Identity{}, fmt.Errorf("read identity: %w", err)
	}
	return i, nil
}

// UpstreamLogin is a verified upstream sign-in: the identity it links to, or the
// human to create just in time (IdentityID "").
type UpstreamLogin struct {
	ProviderID, ProviderName string
	Issuer, Subject          string // of the upstream ID token
	Link                     string // link (an earlier sign-in's), external_id, email or jit
	IdentityID               string
	Create                   NewIdentity
}

// CompleteUpstreamLogin opens a browser session for an upstream sign-in in one
// transaction: it creates the identity (JIT), links the upstream subject to it, checks it is an active human, opens the
// session and its browser session, and writes "identity.create" (JIT) and
// "login.upstream" audit events.
func (s *Store) CompleteUpstreamLogin(ctx context.Context, c Change, sc Scope, l UpstreamLogin, ns NewSession, b NewBrowserSession) (Session, error) {
	if l.IdentityID == "" {
		l.Create.Kind = KindHuman
		if l.Create.Attributes == nil {
			l.Create.Attributes = map[string]any{}
		}
		if err := checkIdentity(Identity{TenantID: sc.TenantID, Kind: KindHuman, DisplayName: l.Create.DisplayName, Email: l.Create.Email,
			Attributes: l.Create.Attributes}, time.Now()); err != nil {
			return Session{}, err
		}
	}
	var out Session
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if l.IdentityID == "" {
			in := l.Create
			created, err := scanIdentity(sc.TenantID, tx.QueryRow(ctx, `
INSERT INTO identities (tenant_id, crdb_region, kind, display_name, email, attributes, purpose)
VALUES ($1, $2, $3, $4, nullif($5, ''), $6, '') RETURNING `+identityColumns,
				sc.TenantID, sc.Region, KindHuman, in.DisplayName, in.Email, in.Attributes))
			if err != nil {
				return fmt.Errorf("insert identity: %w", identityConflict(err, in.Email))
			}
			after := identitySummary(created)
			after["upstream_provider"], after["upstream_subject"] = l.ProviderName, l.Subject
			if err := s.applyRules(ctx, tx, sc, created, after); err != nil {
				return err
			}
			if err := s.writeAudit(ctx, tx, sc, c, audit{action: "identity.create", targetKind: "identity", targetID: created.ID, after: after}); err != nil {
				return err
			}
			l.IdentityID = created.ID
		}
		id, err := getIdentity(ctx, tx, sc, l.IdentityID, "")
		if err != nil {
			return err
		}
		if !id.IsHuman() {
			return fmt.Errorf("%w: identity %s is not human: upstream sign-in is for people", ErrPrecondition, id.ID)
		}
		if id.Status != StatusActive || (!id.ExpiresAt.IsZero() && !time.Now().Before(id.ExpiresAt)) {
			return inactiveIdentity("identity", id)
		}
		ns.IdentityID = id.ID
		if l.Link != "link" {
			if _, err := tx.Exec(ctx, `INSERT INTO upstream_oidc_links (tenant_id, crdb_region, provider_id, subject, identity_id)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, sc.TenantID, sc.Region, l.ProviderID, l.Subject, id.ID); err != nil {
				return fmt.Errorf("link upstream subject: %w", err)
			}
		}
		if out, err = insertSession(ctx, tx, sc, ns); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO browser_sessions (tenant_id, crdb_region, id, session_id, secret_hash, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)`, sc.TenantID, sc.Region, b.ID, out.ID, b.Hash, b.ExpiresAt); err != nil {
			return fmt.Errorf("insert browser session: %w", err)
		}
		after := sessionSummary(out)
		after["upstream_provider_id"], after["upstream_provider"] = l.ProviderID, l.ProviderName
		after["upstream_issuer"], after["upstream_subject"], after["linked_by"] = l.Issuer, truncate(l.Subject, 255), l.Link
		return s.writeAudit(ctx, tx, sc, c, audit{action: "login.upstream", targetKind: "session", targetID: out.ID, after: after})
	})
	return out, err
}

// UpstreamRefusal is an upstream sign-in refused, for its audit event.
type UpstreamRefusal struct {
	ProviderID, ProviderName string
	Rule                     string // state, upstream_error, token, no_link, inactive, …
	Reason                   string
	Subject                  string // the upstream subject, when the ID token verified
	IdentityID               string // the linked identity, when one was
}

// RecordUpstreamRefusal writes the "login.upstream_refused" audit event.
func (s *Store) RecordUpstreamRefusal(ctx context.Context, c Change, sc Scope, r UpstreamRefusal) error {
	after := map[string]any{"rule": r.Rule, "reason": truncate(r.Reason, 1000)}
	for k, v := range map[string]string{"upstream_provider": r.ProviderName, "upstream_subject": r.Subject, "identity_id": r.IdentityID} {
		if v != "" {
			after[k] = truncate(v, 255)
		}
	}
	target := r.ProviderID
	return s.tx(ctx, func(tx pgx.Tx) error {
		return s.writeAudit(ctx, tx, sc, c, audit{action: "login.upstream_refused", targetKind: "upstream_provider", targetID: target, after: after})
	})
}
