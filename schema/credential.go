package schema

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Credential kinds.
const (
	CredPassword     = "password"
	CredTOTP         = "totp"
	CredRecoveryCode = "recovery_code"
	CredAPIKey       = "api_key"
	CredClientSecret = "client_secret"
)

// Credential describes a credential without its secret.
type Credential struct {
	ID         string
	IdentityID string
	Kind       string
	KeyID      string // public lookup id: API key id, OAuth client id
	Name       string
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero: never
	LastUsedAt time.Time
	RotatedAt  time.Time
	RevokedAt  time.Time
	// OAuth clients: the audiences (resources) and scopes the client may request,
	// sorted. Empty: only the tenant's issuer as audience, no scope.
	AllowedAudiences []string
	AllowedScopes    []string
	// OAuth clients signing people in (docs/openid-provider.md): the redirect URIs the
	// authorization endpoint accepts (exact match) and the URIs logout may return to,
	// sorted; FirstParty skips the consent page.
	RedirectURIs           []string
	PostLogoutRedirectURIs []string
	FirstParty             bool
}

// Usable reports whether the credential may authenticate at now.
func (c Credential) Usable(now time.Time) bool {
	return c.RevokedAt.IsZero() && (c.ExpiresAt.IsZero() || now.Before(c.ExpiresAt))
}

const credentialColumns = `id::TEXT, identity_id::TEXT, kind, coalesce(key_id, ''), name, created_at,
 coalesce(expires_at, 'epoch'), coalesce(last_used_at, 'epoch'), coalesce(rotated_at, 'epoch'), coalesce(revoked_at, 'epoch'),
 allowed_audiences, allowed_scopes, redirect_uris, post_logout_redirect_uris, first_party`

func scanCredential(r pgx.Row, extra ...any) (Credential, error) {
	var c Credential
	dest := append([]any{&c.ID, &c.IdentityID, &c.Kind, &c.KeyID, &c.Name, &c.CreatedAt, &c.ExpiresAt, &c.LastUsedAt, &c.RotatedAt, &c.RevokedAt,
		&c.AllowedAudiences, &c.AllowedScopes, &c.RedirectURIs, &c.PostLogoutRedirectURIs, &c.FirstParty}, extra...)
	err := r.Scan(dest...)
	c.ExpiresAt, c.LastUsedAt, c.RotatedAt, c.RevokedAt = zeroEpoch(c.ExpiresAt), zeroEpoch(c.LastUsedAt), zeroEpoch(c.RotatedAt), zeroEpoch(c.RevokedAt)
	return c, err
}

func credentialSummary(c Credential) map[string]any {
	m := map[string]any{"kind": c.Kind, "identity_id": c.IdentityID}
	if c.KeyID != "" {
		m["key_id"] = c.KeyID
	}
	if c.Name != "" {
		m["name"] = c.Name
	}
	if !c.ExpiresAt.IsZero() {
		m["expires_at"] = c.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if !c.RevokedAt.IsZero() {
		m["revoked_at"] = c.RevokedAt.UTC().Format(time.RFC3339)
	}
	if c.Kind == CredClientSecret {
		m["allowed_audiences"], m["allowed_scopes"] = c.AllowedAudiences, c.AllowedScopes
		m["redirect_uris"], m["post_logout_redirect_uris"], m["first_party"] = c.RedirectURIs, c.PostLogoutRedirectURIs, c.FirstParty
	}
	return m
}

// NewKeyCredential is the input of CreateKeyCredential: an API key or an OAuth client
// secret, whose secret the caller generated and hashed.
type NewKeyCredential struct {
	IdentityID string
	Kind       string // CredAPIKey or CredClientSecret
	Name       string
	KeyID      string
	Hash       []byte
	ExpiresAt  time.Time // required for API keys; capped by the tenant's policy
	Admin      bool      // client secrets: may introspect and revoke every token of the tenant
	// Client secrets: what the client may ask the token endpoint for (see
	// Credential.AllowedAudiences); validated by CheckAllowLists.
	AllowedAudiences []string
	AllowedScopes    []string
	// Client secrets: redirect URIs, post-logout redirect URIs and first party (see
	// Credential); validated by CheckRedirectURIs.
	RedirectURIs           []string
	PostLogoutRedirectURIs []string
	FirstParty             bool
}

// CreateKeyCredential stores an API key or client secret for an active identity.
// API keys are for non-human identities only and must expire within the tenant's
// maximum API key lifetime.
func (s *Store) CreateKeyCredential(ctx context.Context, c Change, sc Scope, in NewKeyCredential) (Credential, error) {
	if _, err := parseID("identity_id", in.IdentityID); err != nil {
		return Credential{}, err
	}
	if err := checkText("name", in.Name, false, 200); err != nil {
		return Credential{}, err
	}
	if in.Kind != CredAPIKey && in.Kind != CredClientSecret {
		return Credential{}, fieldErr("kind", "must be %s or %s", CredAPIKey, CredClientSecret)
	}
	auds, scopes, err := CheckAllowLists(in.AllowedAudiences, in.AllowedScopes)
	if err != nil {
		return Credential{}, err
	}
	redirects, err := CheckRedirectURIs("redirect_uris", in.RedirectURIs)
	if err != nil {
		return Credential{}, err
	}
	logouts, err := CheckRedirectURIs("post_logout_redirect_uris", in.PostLogoutRedirectURIs)
	if err != nil {
		return Credential{}, err
	}
	if in.Kind != CredClientSecret && (len(redirects) > 0 || len(logouts) > 0 || in.FirstParty) {
		return Credential{}, fieldErr("redirect_uris", "only OAuth clients have redirect URIs")
	}
	var out Credential
	err = s.tx(ctx, func(tx pgx.Tx) error {
		id, err := getIdentity(ctx, tx, sc, in.IdentityID, "")
		if err != nil {
			return err
		}
		if id.Status != StatusActive {
			return inactiveIdentity("identity_id", id)
		}
		if err := refuseFederated(ctx, tx, sc, in.IdentityID); err != nil {
			return err
		}
		if in.Kind == CredAPIKey {
			if id.IsHuman() {
				return fieldErr("identity_id", "API keys are for non-human identities; humans log in")
			}
			if err := checkKeyExpiry(ctx, tx, sc, in.ExpiresAt); err != nil {
				return err
			}
		}
		out, err = scanCredential(tx.QueryRow(ctx, `
INSERT INTO credentials (tenant_id, crdb_region, identity_id, kind, key_id, secret_hash, name, expires_at, params, allowed_audiences, allowed_scopes,
  redirect_uris, post_logout_redirect_uris, first_party)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING `+credentialColumns,
			sc.TenantID, sc.Region, in.IdentityID, in.Kind, in.KeyID, in.Hash, in.Name, nullTime(in.ExpiresAt),
			map[string]any{"admin": in.Admin}, auds, scopes, redirects, logouts, in.FirstParty))
		if err != nil {
			return fmt.Errorf("insert credential: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "credential.create", targetKind: "credential", targetID: out.ID, after: credentialSummary(out)})
	})
	return out, err
}

func checkKeyExpiry(ctx context.Context, q querier, sc Scope, expires time.Time) error {
	if expires.IsZero() {
		return fieldErr("expire_time", "required: API keys must expire")
	}
	var maxSeconds int64
	if err := q.QueryRow(ctx, `SELECT api_key_max_lifetime_seconds FROM tenants WHERE id = $1`, sc.TenantID).Scan(&maxSeconds); err != nil {
		return fmt.Errorf("read tenant policy: %w", err)
	}
	now := time.Now()
	if !expires.After(now) {
		return fieldErr("expire_time", "must be in the future")
	}
	if limit := time.Duration(maxSeconds) * time.Second; expires.Sub(now) > limit {
		return fieldErr("expire_time", "beyond the tenant's maximum API key lifetime of %s", limit)
	}
	return nil
}

// RotateKeyCredential replaces an API key or client secret: the new one is stored,
// and the old one stays valid for grace (never beyond its own expiry).
func (s *Store) RotateKeyCredential(ctx context.Context, c Change, sc Scope, oldID string, next NewKeyCredential, grace time.Duration) (Credential, error) {
	if _, err := parseID("credential_id", oldID); err != nil {
		return Credential{}, err
	}
	var out Credential
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var params map[string]any
		old, err := lockCredential(ctx, tx, sc, oldID, &params)
		if err != nil {
			return err
		}
		if old.Kind != next.Kind {
			return fieldErr("credential_id", "credential %s is a %s, not a %s", oldID, old.Kind, next.Kind)
		}
		if !old.Usable(time.Now()) {
			return fmt.Errorf("%w: credential_id: credential %s is revoked or expired", ErrPrecondition, oldID)
		}
		if old.Kind == CredAPIKey {
			if err := checkKeyExpiry(ctx, tx, sc, next.ExpiresAt); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE credentials SET rotated_at = now(),
  expires_at = least(coalesce(expires_at, now() + $4 * INTERVAL '1 second'), now() + $4 * INTERVAL '1 second')
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`, sc.TenantID, sc.Region, oldID, int64(grace/time.Second)); err != nil {
			return fmt.Errorf("expire old credential: %w", err)
		}
		keyID := next.KeyID
		if old.Kind == CredClientSecret {
			keyID = old.KeyID // a client keeps its client_id; only the secret changes
		}
		out, err = scanCredential(tx.QueryRow(ctx, `
INSERT INTO credentials (tenant_id, crdb_region, identity_id, kind, key_id, secret_hash, name, expires_at, params, allowed_audiences, allowed_scopes,
  redirect_uris, post_logout_redirect_uris, first_party)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING `+credentialColumns,
			sc.TenantID, sc.Region, old.IdentityID, old.Kind, rotatedKeyID(old, keyID), next.Hash, old.Name, nullTime(next.ExpiresAt), params,
			old.AllowedAudiences, old.AllowedScopes, old.RedirectURIs, old.PostLogoutRedirectURIs, old.FirstParty))
		if err != nil {
			return fmt.Errorf("insert rotated credential: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "credential.rotate", targetKind: "credential", targetID: out.ID,
			before: credentialSummary(old), after: credentialSummary(out)})
	})
	return out, err
}

// rotatedKeyID keeps key ids unique: a rotated client secret gets the client id plus
// a suffix, resolved back to the client id on lookup.
func rotatedKeyID(old Credential, keyID string) string {
	if old.Kind == CredClientSecret {
		return keyID + "." + strings.ToLower(rand.Text())
	}
	return keyID
}

// RevokeCredential revokes a credential at once. Revoking a revoked credential changes
// nothing.
func (s *Store) RevokeCredential(ctx context.Context, c Change, sc Scope, id string) (Credential, error) {
	if _, err := parseID("credential_id", id); err != nil {
		return Credential{}, err
	}
	var out Credential
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var params map[string]any
		before, err := lockCredential(ctx, tx, sc, id, &params)
		if err != nil {
			return err
		}
		if !before.RevokedAt.IsZero() {
			out = before
			return nil
		}
		out, err = scanCredential(tx.QueryRow(ctx, `UPDATE credentials SET revoked_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 RETURNING `+credentialColumns, sc.TenantID, sc.Region, id))
		if err != nil {
			return fmt.Errorf("revoke credential: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "credential.revoke", targetKind: "credential", targetID: id,
			before: credentialSummary(before), after: credentialSummary(out)})
	})
	return out, err
}

// ListCredentials lists an identity's credentials (never their secrets).
func (s *Store) ListCredentials(ctx context.Context, sc Scope, identityID string) ([]Credential, error) {
	if _, err := parseID("identity_id", identityID); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+credentialColumns+` FROM credentials
WHERE tenant_id = $1 AND crdb_region = $2 AND identity_id = $3 ORDER BY created_at, id`, sc.TenantID, sc.Region, identityID)
	if err != nil {
		return nil, classify(err)
	}
	cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Credential, error) { return scanCredential(r) })
	return cs, classify(err)
}

// ClientSettings are what UpdateClient replaces on every secret of an OAuth client.
type ClientSettings struct {
	AllowedAudiences       []string
	AllowedScopes          []string
	RedirectURIs           []string
	PostLogoutRedirectURIs []string
	FirstParty             bool
}

// UpdateClient replaces the allowed audiences and scopes, the redirect URIs and the
// first-party flag of the OAuth client clientID (every secret of it, rotated ones
// included) and returns its newest secret's credential. Tokens already issued keep
// their audience and scope until they expire.
func (s *Store) UpdateClient(ctx context.Context, c Change, sc Scope, clientID string, set ClientSettings) (Credential, error) {
	if clientID == "" {
		return Credential{}, fieldErr("client_id", "required")
	}
	if len(clientID) > 64 || strings.ContainsAny(clientID, ".%_") || !printableToken(clientID) {
		return Credential{}, fieldErr("client_id", "not a client id")
	}
	auds, scs, err := CheckAllowLists(set.AllowedAudiences, set.AllowedScopes)
	if err != nil {
		return Credential{}, err
	}
	redirects, err := CheckRedirectURIs("redirect_uris", set.RedirectURIs)
	if err != nil {
		return Credential{}, err
	}
	logouts, err := CheckRedirectURIs("post_logout_redirect_uris", set.PostLogoutRedirectURIs)
	if err != nil {
		return Credential{}, err
	}
	var out Credential
	err = s.tx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+credentialColumns+` FROM credentials
WHERE tenant_id = $1 AND crdb_region = $2 AND kind = $3 AND (key_id = $4 OR (key_id >= $5 AND key_id < $6))
ORDER BY created_at DESC, id FOR UPDATE`, sc.TenantID, sc.Region, CredClientSecret, clientID, clientID+".", clientID+"/")
		if err != nil {
			return fmt.Errorf("read client: %w", err)
		}
		cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Credential, error) { return scanCredential(r) })
		if err != nil {
			return fmt.Errorf("read client: %w", err)
		}
		if len(cs) == 0 {
			return fmt.Errorf("%w: client %s", ErrNotFound, clientID)
		}
		before := cs[0]
		if _, err := tx.Exec(ctx, `UPDATE credentials SET allowed_audiences = $7, allowed_scopes = $8,
  redirect_uris = $9, post_logout_redirect_uris = $10, first_party = $11
WHERE tenant_id = $1 AND crdb_region = $2 AND kind = $3 AND (key_id = $4 OR (key_id >= $5 AND key_id < $6))`,
			sc.TenantID, sc.Region, CredClientSecret, clientID, clientID+".", clientID+"/", auds, scs, redirects, logouts, set.FirstParty); err != nil {
			return fmt.Errorf("update client: %w", err)
		}
		out = before
		out.AllowedAudiences, out.AllowedScopes = auds, scs
		out.RedirectURIs, out.PostLogoutRedirectURIs, out.FirstParty = redirects, logouts, set.FirstParty
		return s.writeAudit(ctx, tx, sc, c, audit{action: "client.update", targetKind: "client", targetID: clientID,
			before: credentialSummary(before), after: credentialSummary(out)})
	})
	return out, err
}

// KeyCredential is a credential found by its key id, with what is needed to decide
// whether it authenticates: its hash and its identity's state.
type KeyCredential struct {
	Credential
	Admin          bool // client secrets: the client may act on every token of the tenant
	Hash           []byte
	IdentityKind   string
	IdentityStatus string
	IdentityExpiry time.Time
}

// KeyCredentials returns the usable-or-not credentials of kind whose key id is keyID
// or, for client secrets, starts with keyID + "." (rotated secrets of one client).
// One indexed read in the tenant's partition.
func (s *Store) KeyCredentials(ctx context.Context, sc Scope, kind, keyID string) ([]KeyCredential, error) {
	rows, err := s.pool.Query(ctx, `
SELECT c.id::TEXT, c.identity_id::TEXT, c.kind, coalesce(c.key_id, ''), c.name, c.created_at,
  coalesce(c.expires_at, 'epoch'), coalesce(c.last_used_at, 'epoch'), coalesce(c.rotated_at, 'epoch'), coalesce(c.revoked_at, 'epoch'),
  c.allowed_audiences, c.allowed_scopes, c.redirect_uris, c.post_logout_redirect_uris, c.first_party, c.secret_hash, i.kind, i.status, coalesce(i.expires_at, 'epoch'), coalesce((c.params->>'admin')::BOOL, false)
FROM credentials c JOIN identities i ON i.crdb_region = c.crdb_region AND i.tenant_id = c.tenant_id AND i.id = c.identity_id
WHERE c.crdb_region = $1 AND c.tenant_id = $2 AND c.kind = $3 AND (c.key_id = $4 OR (c.key_id >= $5 AND c.key_id < $6))`,
		sc.Region, sc.TenantID, kind, keyID, keyID+".", keyID+"/")
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (KeyCredential, error) {
		var k KeyCredential
		var c Credential
		c, err := scanCredential(r, &k.Hash, &k.IdentityKind, &k.IdentityStatus, &k.IdentityExpiry, &k.Admin)
		k.Credential = c
		k.IdentityExpiry = zeroEpoch(k.IdentityExpiry)
		return k, err
	})
	return out, classify(err)
}

// TouchCredentials records last use times, coalesced by the caller (one write per
// credential per flush interval, never one per request).
func (s *Store) TouchCredentials(ctx context.Context, sc Scope, used map[string]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	ids := make([]string, 0, len(used))
	ats := make([]time.Time, 0, len(used))
	for id, at := range used {
		ids = append(ids, id)
		ats = append(ats, at)
	}
	_, err := s.pool.Exec(ctx, `
UPDATE credentials c SET last_used_at = u.at
FROM (SELECT unnest($3::UUID[]) AS id, unnest($4::TIMESTAMPTZ[]) AS at) u
WHERE c.tenant_id = $1 AND c.crdb_region = $2 AND c.id = u.id AND (c.last_used_at IS NULL OR c.last_used_at < u.at)`,
		sc.TenantID, sc.Region, ids, ats)
	return classify(err)
}

// ClientID returns the OAuth client id of a client-secret credential's key id (rotated
// secrets carry a ".suffix").
func ClientID(keyID string) string {
	if i := strings.IndexByte(keyID, '.'); i >= 0 {
		return keyID[:i]
	}
	return keyID
}

// lockCredential reads a credential of the tenant for update, with its params.
func lockCredential(ctx context.Context, tx pgx.Tx, sc Scope, id string, params *map[string]any) (Credential, error) {
	c, err := scanCredential(tx.QueryRow(ctx, `SELECT `+credentialColumns+`, params FROM credentials
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 FOR UPDATE`, sc.TenantID, sc.Region, id), params)
	if errors.Is(err, pgx.ErrNoRows) {
		return Credential{}, fmt.Errorf("%w: credential %s", ErrNotFound, id)
	}
	if err != nil {
		return Credential{}, fmt.Errorf("read credential: %w", err)
	}
	return c, nil
}

// GetCredential reads one credential of the tenant (never its secret).
func (s *Store) GetCredential(ctx context.Context, sc Scope, id string) (Credential, error) {
	if _, err := parseID("credential_id", id); err != nil {
		return Credential{}, err
	}
	c, err := scanCredential(s.pool.QueryRow(ctx, `SELECT `+credentialColumns+` FROM credentials
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`, sc.TenantID, sc.Region, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Credential{}, fmt.Errorf("%w: credential %s", ErrNotFound, id)
	}
	return c, classify(err)
}
