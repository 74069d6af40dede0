package schema

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Session is one authentication of an identity (a grant). Every token carries its
// session id; revoking the session revokes them all.
type Session struct {
	ID           string
	IdentityID   string
	ClientID     string
	GrantType    string
	CredentialID string
	AMR          []string
	CreatedAt    time.Time
	AuthTime     time.Time
	ExpiresAt    time.Time
	RevokedAt    time.Time
}

// NewSession is the input of CreateSession.
type NewSession struct {
	IdentityID   string
	ClientID     string
	GrantType    string // "api_key", "client_credentials", "password"
	CredentialID string
	AMR          []string
	ExpiresAt    time.Time
}

// NewRefreshToken is a refresh token to store with a session, or in its rotation.
type NewRefreshToken struct {
	ID        string // the token's public key id
	Hash      []byte
	ExpiresAt time.Time
}

const sessionColumns = `id::TEXT, identity_id::TEXT, coalesce(client_id, ''), grant_type, coalesce(credential_id::TEXT, ''), amr,
 created_at, auth_time, expires_at, coalesce(revoked_at, 'epoch')`

func scanSession(r pgx.Row) (Session, error) {
	var s Session
	err := r.Scan(&s.ID, &s.IdentityID, &s.ClientID, &s.GrantType, &s.CredentialID, &s.AMR, &s.CreatedAt, &s.AuthTime, &s.ExpiresAt, &s.RevokedAt)
	s.RevokedAt = zeroEpoch(s.RevokedAt)
	return s, err
}

func sessionSummary(s Session) map[string]any {
	m := map[string]any{"identity_id": s.IdentityID, "grant_type": s.GrantType, "amr": s.AMR,
		"expires_at": s.ExpiresAt.UTC().Format(time.RFC3339)}
	if s.ClientID != "" {
		m["client_id"] = s.ClientID
	}
	if s.CredentialID != "" {
		m["credential_id"] = s.CredentialID
	}
	if !s.RevokedAt.IsZero() {
		m["revoked_at"] = s.RevokedAt.UTC().Format(time.RFC3339Nano)
	}
	return m
}

// CreateSession records a successful authentication and, optionally, the session's
// first refresh token; the audit event ("token.issue") is written with it.
func (s *Store) CreateSession(ctx context.Context, c Change, sc Scope, in NewSession, refresh *NewRefreshToken) (Session, error) {
	var out Session
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = insertSession(ctx, tx, sc, in)
		if err != nil {
			return err
		}
		if refresh != nil {
			if err := insertRefresh(ctx, tx, sc, out.ID, *refresh); err != nil {
				return err
			}
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "token.issue", targetKind: "session", targetID: out.ID, after: sessionSummary(out)})
	})
	return out, err
}

func insertSession(ctx context.Context, tx pgx.Tx, sc Scope, in NewSession) (Session, error) {
	if in.AMR == nil {
		in.AMR = []string{}
	}
	out, err := scanSession(tx.QueryRow(ctx, `
INSERT INTO sessions (tenant_id, crdb_region, identity_id, client_id, grant_type, credential_id, amr, expires_at)
VALUES ($1, $2, $3, nullif($4, ''), $5, nullif($6, '')::UUID, $7, $8) RETURNING `+sessionColumns,
		sc.TenantID, sc.Region, in.IdentityID, in.ClientID, in.GrantType, in.CredentialID, in.AMR, in.ExpiresAt))
	if err != nil {
		return Session{}, fmt.Errorf("insert session: %w", err)
	}
	return out, nil
}

func insertRefresh(ctx context.Context, tx pgx.Tx, sc Scope, sessionID string, r NewRefreshToken) error {
	_, err := tx.Exec(ctx, `INSERT INTO refresh_tokens (tenant_id, crdb_region, id, session_id, secret_hash, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)`, sc.TenantID, sc.Region, r.ID, sessionID, r.Hash, r.ExpiresAt)
	if err != nil {
		return fmt.Errorf("insert refresh token: %w", err)
	}
	return nil
}

// RevokeSession revokes a session and with it every token it issued. Revoking a
// revoked session changes nothing. When the session belongs to another identity than
// identityID (if given), it is reported as not found.
func (s *Store) RevokeSession(ctx context.Context, c Change, sc Scope, id, identityID string) (Session, error) {
	if _, err := parseID("session_id", id); err != nil {
		return Session{}, err
	}
	var out Session
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = revokeSession(ctx, tx, sc, id)
		if err != nil {
			return err
		}
		if identityID != "" && out.IdentityID != identityID {
			return fmt.Errorf("%w: session %s", ErrNotFound, id)
		}
		if out.RevokedAt.IsZero() {
			return nil // was revoked already: no change, no event
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "session.revoke", targetKind: "session", targetID: id, after: sessionSummary(out)})
	})
	if err == nil && out.RevokedAt.IsZero() {
		return s.getSession(ctx, sc, id)
	}
	return out, err
}

// revokeSession sets revoked_at unless it is set; it returns the updated row, or the
// row with a zero RevokedAt when it was already revoked (callers then skip the audit).
func revokeSession(ctx context.Context, tx pgx.Tx, sc Scope, id string) (Session, error) {
	out, err := scanSession(tx.QueryRow(ctx, `UPDATE sessions SET revoked_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 AND revoked_at IS NULL RETURNING `+sessionColumns, sc.TenantID, sc.Region, id))
	if errors.Is(err, pgx.ErrNoRows) {
		existing, gerr := scanSession(tx.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`, sc.TenantID, sc.Region, id))
		if errors.Is(gerr, pgx.ErrNoRows) {
			return Session{}, fmt.Errorf("%w: session %s", ErrNotFound, id)
		}
		if gerr != nil {
			return Session{}, fmt.Errorf("read session: %w", gerr)
		}
		existing.RevokedAt = time.Time{}
		return existing, nil
	}
	if err != nil {
		return Session{}, fmt.Errorf("revoke session: %w", err)
	}
	return out, nil
}

func (s *Store) getSession(ctx context.Context, sc Scope, id string) (Session, error) {
	out, err := scanSession(s.pool.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`, sc.TenantID, sc.Region, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Session{}, fmt.Errorf("%w: session %s", ErrNotFound, id)
	}
	return out, classify(err)
}

// ListSessions lists an identity's sessions that have not expired, newest first.
func (s *Store) ListSessions(ctx context.Context, sc Scope, identityID string) ([]Session, error) {
	if _, err := parseID("identity_id", identityID); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+sessionColumns+` FROM sessions
WHERE tenant_id = $1 AND crdb_region = $2 AND identity_id = $3 AND expires_at > now() ORDER BY created_at DESC LIMIT 1000`,
		sc.TenantID, sc.Region, identityID)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Session, error) { return scanSession(r) })
	return out, classify(err)
}

// RevokeIdentityTokens moves the identity's tokens-valid-after watermark to the
// commit's time: every session created before it, and so every token, is revoked.
func (s *Store) RevokeIdentityTokens(ctx context.Context, c Change, sc Scope, identityID string) (time.Time, error) {
	if _, err := parseID("identity_id", identityID); err != nil {
		return time.Time{}, err
	}
	var at time.Time
	err := s.tx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `UPDATE identities SET tokens_valid_after = now(), updated_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 RETURNING tokens_valid_after`, sc.TenantID, sc.Region, identityID).Scan(&at)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: identity %s in tenant %q", ErrNotFound, identityID, sc.TenantID)
		}
		if err != nil {
			return fmt.Errorf("set watermark: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "identity.revoke_tokens", targetKind: "identity", targetID: identityID,
			after: map[string]any{"tokens_valid_after": at.UTC().Format(time.RFC3339Nano)}})
	})
	return at, err
}

// TokenState is everything validation needs to know beyond the signature, read in one
// statement at the home region's leaseholders. Never cached, never a follower read:
// this read is what makes revocation linearizable.
type TokenState struct {
	SessionCreatedAt time.Time
	SessionAuthTime  time.Time
	SessionExpiresAt time.Time
	SessionRevoked   bool
	IdentityStatus   string
	IdentityKind     string
	IdentityExpiry   time.Time // zero: never
	TokensValidAfter time.Time // zero: no watermark
	TenantStatus     string
}

// ReadTokenState reads the state of a token's session and identity.
func (s *Store) ReadTokenState(ctx context.Context, sc Scope, sessionID, identityID string) (TokenState, error) {
	var st TokenState
	err := s.pool.QueryRow(ctx, `
SELECT s.created_at, s.auth_time, s.expires_at, s.revoked_at IS NOT NULL, i.status, i.kind, coalesce(i.expires_at, 'epoch'),
  coalesce(i.tokens_valid_after, 'epoch'), t.status
FROM sessions s
JOIN identities i ON i.crdb_region = s.crdb_region AND i.tenant_id = s.tenant_id AND i.id = s.identity_id
JOIN tenants t ON t.id = s.tenant_id
WHERE s.crdb_region = $1 AND s.tenant_id = $2 AND s.id = $3 AND s.identity_id = $4`,
		sc.Region, sc.TenantID, sessionID, identityID).Scan(&st.SessionCreatedAt, &st.SessionAuthTime, &st.SessionExpiresAt, &st.SessionRevoked,
		&st.IdentityStatus, &st.IdentityKind, &st.IdentityExpiry, &st.TokensValidAfter, &st.TenantStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return TokenState{}, fmt.Errorf("%w: session %s", ErrNotFound, sessionID)
	}
	st.IdentityExpiry, st.TokensValidAfter = zeroEpoch(st.IdentityExpiry), zeroEpoch(st.TokensValidAfter)
	return st, classify(err)
}

// RefreshResult is what a successful rotation returns.
type RefreshResult struct {
	Session    Session
	IdentityOK bool // identity active, not expired, session not behind the watermark
}

// RotateRefreshToken exchanges a refresh token for its successor. matches checks the
// presented secret against the stored hash (constant-time, by the caller's primitive).
// A token used before revokes its whole session and returns ErrRefreshReuse.
func (s *Store) RotateRefreshToken(ctx context.Context, c Change, sc Scope, id string, matches func(hash []byte) bool, next NewRefreshToken) (Session, error) {
	var out Session
	reused := false
	err := s.tx(ctx, func(tx pgx.Tx) error {
		reused = false
		var sessionID string
		var hash []byte
		var expires time.Time
		var used bool
		err := tx.QueryRow(ctx, `SELECT session_id::TEXT, secret_hash, expires_at, used_at IS NOT NULL FROM refresh_tokens
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 FOR UPDATE`, sc.TenantID, sc.Region, id).Scan(&sessionID, &hash, &expires, &used)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && !matches(hash)) {
			return fmt.Errorf("%w: refresh token", ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("read refresh token: %w", err)
		}
		if used {
			reused = true
			sess, err := revokeSession(ctx, tx, sc, sessionID)
			if err != nil {
				return err
			}
			return s.writeAudit(ctx, tx, sc, c, audit{action: "token.refresh_reuse", targetKind: "session", targetID: sessionID,
				after: map[string]any{"refresh_token_id": id, "identity_id": sess.IdentityID, "session_revoked": true}})
		}
		if !time.Now().Before(expires) {
			return fmt.Errorf("%w: refresh token expired", ErrPrecondition)
		}
		out, err = scanSession(tx.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`, sc.TenantID, sc.Region, sessionID))
		if err != nil {
			return fmt.Errorf("read session: %w", err)
		}
		if !out.RevokedAt.IsZero() {
			return fmt.Errorf("%w: session revoked", ErrPrecondition)
		}
		if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET used_at = now() WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`,
			sc.TenantID, sc.Region, id); err != nil {
			return fmt.Errorf("mark refresh token used: %w", err)
		}
		if err := insertRefresh(ctx, tx, sc, sessionID, next); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "token.refresh", targetKind: "session", targetID: sessionID,
			after: map[string]any{"refresh_token_id": next.ID, "previous_id": id}})
	})
	if err == nil && reused {
		return Session{}, ErrRefreshReuse
	}
	return out, err
}

// RevokeRefreshToken revokes the session a refresh token belongs to (RFC 7009: revoking
// a refresh token invalidates the access tokens of the same grant). allowed, when not
// nil, must accept the session's client id, else the token counts as not found.
func (s *Store) RevokeRefreshToken(ctx context.Context, c Change, sc Scope, id string, matches func(hash []byte) bool, allowed func(clientID string) bool) (Session, error) {
	var sessionID, clientID string
	var hash []byte
	err := s.pool.QueryRow(ctx, `SELECT r.session_id::TEXT, r.secret_hash, coalesce(s.client_id, '') FROM refresh_tokens r
JOIN sessions s ON s.crdb_region = r.crdb_region AND s.tenant_id = r.tenant_id AND s.id = r.session_id
WHERE r.tenant_id = $1 AND r.crdb_region = $2 AND r.id = $3`,
		sc.TenantID, sc.Region, id).Scan(&sessionID, &hash, &clientID)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && (!matches(hash) || (allowed != nil && !allowed(clientID)))) {
		return Session{}, fmt.Errorf("%w: refresh token", ErrNotFound)
	}
	if err != nil {
		return Session{}, classify(err)
	}
	return s.RevokeSession(ctx, c, sc, sessionID, "")
}
