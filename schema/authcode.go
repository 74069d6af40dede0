package schema

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Limits of an OAuth client's redirect URIs.
const (
	MaxRedirectURIs   = 20
	MaxRedirectURILen = 512
)

// ErrCodeReuse: an authorization code that was already redeemed was presented again;
// the session its tokens belong to has been revoked (RFC 6749 §4.1.2).
var ErrCodeReuse = errors.New("authorization code already used: the tokens issued from it have been revoked")

// ErrCodeExpired and ErrCodeSessionRevoked are the ErrPrecondition refusals of
// RedeemAuthCode: the code is past its expiry, or its session was revoked.
var (
	ErrCodeExpired        = fmt.Errorf("%w: authorization code expired", ErrPrecondition)
	ErrCodeSessionRevoked = fmt.Errorf("%w: the authorization code's session was revoked", ErrPrecondition)
)

// ValidRedirectURI reports whether s may be registered as a redirect URI: an absolute
// https URI, or http for a loopback host (127.0.0.1, [::1], localhost: native apps and
// tests, RFC 8252 §7.3), without fragment or user info, at most MaxRedirectURILen
// printable ASCII characters. Matching at the authorization endpoint is exact.
func ValidRedirectURI(s string) bool {
	if s == "" || len(s) > MaxRedirectURILen || !printableToken(s) || strings.Contains(s, "#") {
		return false
	}
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" || u.User != nil || u.Opaque != "" {
		return false
	}
	switch u.Scheme {
	case "https":
		return true
	case "http":
		h := u.Hostname()
		if h == "localhost" {
			return true
		}
		ip := net.ParseIP(h)
		return ip != nil && ip.IsLoopback()
	}
	return false
}

// CheckRedirectURIs validates a client's redirect URIs (field names the list) and
// returns them sorted.
func CheckRedirectURIs(field string, uris []string) ([]string, error) {
	if len(uris) > MaxRedirectURIs {
		return nil, fieldErr(field, "at most %d entries, got %d", MaxRedirectURIs, len(uris))
	}
	return checkAllowList(field, uris, ValidRedirectURI,
		fmt.Sprintf("a redirect URI (absolute https, or http on a loopback host; no fragment or user info; at most %d characters)", MaxRedirectURILen))
}

// OAuthClient is what the authorization endpoint knows of a client: its newest usable
// secret's settings.
type OAuthClient struct {
	ClientID               string
	Name                   string
	IdentityID             string
	AllowedScopes          []string
	RedirectURIs           []string
	PostLogoutRedirectURIs []string
	FirstParty             bool
}

// GetOAuthClient reads the client clientID from its newest unrevoked, unexpired secret;
// ErrNotFound when it has none.
func (s *Store) GetOAuthClient(ctx context.Context, sc Scope, clientID string) (OAuthClient, error) {
	if clientID == "" || len(clientID) > 64 || strings.ContainsAny(clientID, ".%_") || !printableToken(clientID) {
		return OAuthClient{}, fmt.Errorf("%w: client", ErrNotFound)
	}
	c, err := scanCredential(s.pool.QueryRow(ctx, `SELECT `+credentialColumns+` FROM credentials
WHERE tenant_id = $1 AND crdb_region = $2 AND kind = $3 AND (key_id = $4 OR (key_id >= $5 AND key_id < $6))
  AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
ORDER BY created_at DESC, id LIMIT 1`, sc.TenantID, sc.Region, CredClientSecret, clientID, clientID+".", clientID+"/"))
	if errors.Is(err, pgx.ErrNoRows) {
		return OAuthClient{}, fmt.Errorf("%w: client %s", ErrNotFound, clientID)
	}
	if err != nil {
		return OAuthClient{}, classify(err)
	}
	name := c.Name
	if name == "" {
		name = clientID
	}
	return OAuthClient{ClientID: clientID, Name: name, IdentityID: c.IdentityID, AllowedScopes: c.AllowedScopes,
		RedirectURIs: c.RedirectURIs, PostLogoutRedirectURIs: c.PostLogoutRedirectURIs, FirstParty: c.FirstParty}, nil
}

// NewBrowserSession is the cookie secret a browser login stores with its session.
type NewBrowserSession struct {
	ID        string // the secret's public key id
	Hash      []byte
	ExpiresAt time.Time
}

// CompleteBrowserLogin is CompleteLogin for a login through the OpenID Provider's
// login page: the session gets a browser session (the cookie's secret) instead of a
// refresh token.
func (s *Store) CompleteBrowserLogin(ctx context.Context, c Change, sc Scope, l LoginSuccess, ns NewSession, b NewBrowserSession) (Session, error) {
	return s.completeLogin(ctx, c, sc, l, ns, func(tx pgx.Tx, sess Session) error {
		_, err := tx.Exec(ctx, `INSERT INTO browser_sessions (tenant_id, crdb_region, id, session_id, secret_hash, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)`, sc.TenantID, sc.Region, b.ID, sess.ID, b.Hash, b.ExpiresAt)
		if err != nil {
			return fmt.Errorf("insert browser session: %w", err)
		}
		return nil
	})
}

// BrowserSession is a browser's session with what the OpenID Provider shows of its
// identity.
type BrowserSession struct {
	Session
	Email string
	Name  string
}

// GetBrowserSession returns the session of the browser cookie whose key id is id, if
// matches accepts the stored hash, the cookie has not expired and the session is not
// revoked; ErrNotFound otherwise. The identity's state is checked by the caller
// (ReadTokenState), as for a token.
func (s *Store) GetBrowserSession(ctx context.Context, sc Scope, id string, matches func(hash []byte) bool) (BrowserSession, error) {
	var out BrowserSession
	var hash []byte
	var expires time.Time
	err := s.pool.QueryRow(ctx, `SELECT b.secret_hash, b.expires_at, s.id::TEXT, s.identity_id::TEXT, coalesce(s.client_id, ''), s.grant_type,
  coalesce(s.credential_id::TEXT, ''), s.amr, s.created_at, s.auth_time, s.expires_at, coalesce(s.revoked_at, 'epoch'),
  coalesce(i.email, ''), coalesce(i.display_name, '')
FROM browser_sessions b
JOIN sessions s ON s.crdb_region = b.crdb_region AND s.tenant_id = b.tenant_id AND s.id = b.session_id
JOIN identities i ON i.crdb_region = s.crdb_region AND i.tenant_id = s.tenant_id AND i.id = s.identity_id
WHERE b.tenant_id = $1 AND b.crdb_region = $2 AND b.id = $3`, sc.TenantID, sc.Region, id).Scan(&hash, &expires,
		&out.ID, &out.IdentityID, &out.ClientID, &out.GrantType, &out.CredentialID, &out.AMR, &out.CreatedAt, &out.AuthTime,
		&out.ExpiresAt, &out.RevokedAt, &out.Email, &out.Name)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !matches(hash)) {
		return BrowserSession{}, fmt.Errorf("%w: browser session", ErrNotFound)
	}
	if err != nil {
		return BrowserSession{}, classify(err)
	}
	out.RevokedAt = zeroEpoch(out.RevokedAt)
	if !out.RevokedAt.IsZero() || !time.Now().Before(expires) {
		return BrowserSession{}, fmt.Errorf("%w: browser session ended", ErrNotFound)
	}
	return out, nil
}

// IdentityProfile is what userinfo tells about an identity.
type IdentityProfile struct {
	Email string
	Name  string
}

// GetIdentityProfile reads an identity's email and display name.
func (s *Store) GetIdentityProfile(ctx context.Context, sc Scope, identityID string) (IdentityProfile, error) {
	var p IdentityProfile
	err := s.pool.QueryRow(ctx, `SELECT coalesce(email, ''), coalesce(display_name, '') FROM identities
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`, sc.TenantID, sc.Region, identityID).Scan(&p.Email, &p.Name)
	if errors.Is(err, pgx.ErrNoRows) {
		return IdentityProfile{}, fmt.Errorf("%w: identity %s", ErrNotFound, identityID)
	}
	return p, classify(err)
}

// AuthCode is an issued authorization code's binding.
type AuthCode struct {
	ID            string
	SessionID     string
	ClientID      string
	RedirectURI   string
	CodeChallenge string
	Nonce         string
	Scope         string
	ExpiresAt     time.Time
}

// NewAuthCode is the input of CreateAuthCode.
type NewAuthCode struct {
	AuthCode
	Hash []byte
}

// CreateAuthCode stores an authorization code (its hash) for a session, with the
// "oauth.code_issue" audit event.
func (s *Store) CreateAuthCode(ctx context.Context, c Change, sc Scope, in NewAuthCode) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO authorization_codes (tenant_id, crdb_region, id, session_id, secret_hash, client_id,
  redirect_uri, code_challenge, nonce, scope, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			sc.TenantID, sc.Region, in.ID, in.SessionID, in.Hash, in.ClientID, in.RedirectURI, in.CodeChallenge, in.Nonce, in.Scope, in.ExpiresAt); err != nil {
			return fmt.Errorf("insert authorization code: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "oauth.code_issue", targetKind: "session", targetID: in.SessionID,
			after: map[string]any{"code_id": in.ID, "client_id": in.ClientID, "redirect_uri": in.RedirectURI, "scope": in.Scope}})
	})
}

// RedeemAuthCode spends the authorization code id (matches checks the presented
// code against the stored hash): ErrNotFound for an unknown code or one that does not
// match, ErrCodeExpired or ErrCodeSessionRevoked (both ErrPrecondition) for an expired
// one or one whose session was revoked. A code
// redeemed before revokes its session (and so every token issued from it) and
// returns ErrCodeReuse, with the "oauth.code_reuse" audit event committed. The caller
// checks the client, redirect URI and PKCE verifier against what is returned: a
// mismatch must not spend the code, so those checks are given as check, run inside
// the transaction before the code is marked used.
func (s *Store) RedeemAuthCode(ctx context.Context, c Change, sc Scope, id string, matches func(hash []byte) bool, check func(AuthCode) error) (AuthCode, Session, error) {
	var out AuthCode
	var sess Session
	reused := false
	err := s.tx(ctx, func(tx pgx.Tx) error {
		reused = false
		var hash []byte
		var used bool
		out = AuthCode{ID: id}
		err := tx.QueryRow(ctx, `SELECT session_id::TEXT, secret_hash, client_id, redirect_uri, code_challenge, nonce, scope, expires_at, used_at IS NOT NULL
FROM authorization_codes WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 FOR UPDATE`, sc.TenantID, sc.Region, id).Scan(
			&out.SessionID, &hash, &out.ClientID, &out.RedirectURI, &out.CodeChallenge, &out.Nonce, &out.Scope, &out.ExpiresAt, &used)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && !matches(hash)) {
			return fmt.Errorf("%w: authorization code", ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("read authorization code: %w", err)
		}
		if used {
			reused = true
			revoked, err := revokeSession(ctx, tx, sc, out.SessionID)
			if err != nil {
				return err
			}
			return s.writeAudit(ctx, tx, sc, c, audit{action: "oauth.code_reuse", targetKind: "session", targetID: out.SessionID,
				after: map[string]any{"code_id": id, "client_id": out.ClientID, "identity_id": revoked.IdentityID, "session_revoked": true}})
		}
		if err := check(out); err != nil {
			return fmt.Errorf("%w: %w", ErrPrecondition, err)
		}
		if !time.Now().Before(out.ExpiresAt) {
			return ErrCodeExpired
		}
		sess, err = scanSession(tx.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`, sc.TenantID, sc.Region, out.SessionID))
		if err != nil {
			return fmt.Errorf("read session: %w", err)
		}
		sess.RevokedAt = zeroEpoch(sess.RevokedAt)
		if !sess.RevokedAt.IsZero() {
			return ErrCodeSessionRevoked
		}
		if _, err := tx.Exec(ctx, `UPDATE authorization_codes SET used_at = now() WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`,
			sc.TenantID, sc.Region, id); err != nil {
			return fmt.Errorf("mark authorization code used: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "oauth.code_redeem", targetKind: "session", targetID: out.SessionID,
			after: map[string]any{"code_id": id, "client_id": out.ClientID}})
	})
	if err == nil && reused {
		return AuthCode{}, Session{}, ErrCodeReuse
	}
	return out, sess, err
}

// HasConsent reports whether identityID consented to clientID for every scope of
// scopes (sorted) in one earlier consent.
func (s *Store) HasConsent(ctx context.Context, sc Scope, identityID, clientID string, scopes []string) (bool, error) {
	rows, err := s.pool.Query(ctx, `SELECT scope FROM oauth_consents
WHERE tenant_id = $1 AND crdb_region = $2 AND identity_id = $3 AND client_id = $4`, sc.TenantID, sc.Region, identityID, clientID)
	if err != nil {
		return false, classify(err)
	}
	granted, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return false, classify(err)
	}
	for _, g := range granted {
		have := strings.Fields(g)
		if !slices.ContainsFunc(scopes, func(s string) bool { return !slices.Contains(have, s) }) {
			return true, nil
		}
	}
	return false, nil
}

// GrantConsent remembers identityID's consent to clientID for scopes, with the
// "oauth.consent" audit event.
func (s *Store) GrantConsent(ctx context.Context, c Change, sc Scope, identityID, clientID string, scopes []string) error {
	sorted := slices.Clone(scopes)
	slices.Sort(sorted)
	scope := strings.Join(sorted, " ")
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO oauth_consents (tenant_id, crdb_region, identity_id, client_id, scope)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, sc.TenantID, sc.Region, identityID, clientID, scope); err != nil {
			return fmt.Errorf("insert consent: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "oauth.consent", targetKind: "identity", targetID: identityID,
			after: map[string]any{"client_id": clientID, "scope": scope}})
	})
}

// OAuthRefusal is a refused OpenID Provider request worth an audit event: a code
// redemption that failed its bindings, an authorization request naming a redirect
// URI its client did not register, or a login or consent form refused by its CSRF
// token.
type OAuthRefusal struct {
	Action   string // "oauth.code_refused" or "oauth.authorize_refused"
	ClientID string
	Reason   string // what failed, e.g. "code_verifier", "redirect_uri"
	CodeID   string // the code's key id, when a code was presented
	Form     string // the page's form refused (login, consent), for reason csrf
}

// RecordOAuthRefusal writes the refusal's audit event (nothing else changes).
func (s *Store) RecordOAuthRefusal(ctx context.Context, c Change, sc Scope, r OAuthRefusal) error {
	after := map[string]any{"reason": r.Reason}
	if r.CodeID != "" {
		after["code_id"] = r.CodeID
	}
	if r.Form != "" {
		after["form"] = r.Form
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		return s.writeAudit(ctx, tx, sc, c, audit{action: r.Action, targetKind: "client", targetID: r.ClientID, after: after})
	})
}
