package region

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/keyplane/keyplane/region/credential"
	"github.com/keyplane/keyplane/region/token"
	"github.com/keyplane/keyplane/schema"
)

// Inactive reasons reported by validation beyond the token package's own.
const (
	reasonWrongTenant      token.Reason = "wrong_tenant"
	reasonRevoked          token.Reason = "revoked"
	reasonSessionRevoked   token.Reason = "session_revoked"
	reasonSessionExpired   token.Reason = "session_expired"
	reasonIdentityDisabled token.Reason = "identity_disabled"
	reasonIdentityFrozen   token.Reason = "identity_frozen"
	reasonIdentityExpired  token.Reason = "identity_expired"
	reasonTenantDisabled   token.Reason = "tenant_disabled"
)

// Issuer returns the tenant's OAuth 2.0 / OIDC issuer.
func (n *Node) Issuer(tenantID string) string {
	return strings.TrimSuffix(n.cfg.IssuerBase, "/") + "/t/" + tenantID
}

// validation is the outcome of validating a token.
type validation struct {
	Active bool
	Reason token.Reason
	Claims token.Claims // filled when the signature checked out, even if inactive
	Tenant schema.Tenant
	// AuthTime is when the session's owner last authenticated (the session's
	// auth_time, read with its revocation state): zero unless Active.
	AuthTime time.Time
	// IdentityKind is the subject's kind, read with it: "" unless Active.
	IdentityKind string
	// State is what the decision read returned for the token (its tenant's policy
	// revision and its subject's attributes included): set unless the token was refused
	// before the read.
	State *schema.DecisionState
}

// validate checks a token for tenantID: signature, issuer, audience and lifetime on
// the CPU (verifyToken), then one read of the session, identity and tenant state at
// the tenant's home region, shared with concurrent decisions (stateReader). An error
// means the state could not be read: callers fail closed.
func (n *Node) validate(ctx context.Context, tenantID, raw, audience string, charge bool) (validation, error) {
	v, key, err := n.verifyToken(ctx, tenantID, raw, audience)
	if err != nil || key == nil {
		return v, err
	}
	// A public validation spends its tenant's decision budget only once the token
	// proved to be the tenant's (tenantlimits.go): garbage cannot spend it.
	if charge {
		if err := n.limits.allowTenant(classDecisions, v.Tenant, n.now()); err != nil {
			return validation{}, err
		}
	}
	st, err := n.states.read(ctx, v.Tenant.HomeRegion, *key)
	if err != nil {
		return validation{}, err
	}
	n.judgeToken(&v, &st[0])
	return v, nil
}

// verifyToken is validation's CPU half: it checks the signature, issuer, audience,
// lifetime and tenant of raw. It returns the key to read when the token passed, or nil
// with the refusal in v.Reason.
func (n *Node) verifyToken(ctx context.Context, tenantID, raw, audience string) (validation, *schema.StateKey, error) {
	now := n.now()
	c, ok := n.verified.get(raw)
	if ok {
		if r := recheck(c, audience, now); r != "" {
			return validation{Reason: r}, nil, nil
		}
	} else {
		ring, err := n.keys.forKid(ctx, peekKid(raw))
		if err != nil {
			return validation{}, nil, err
		}
		c, err = ring.Verify(raw, token.VerifyOptions{Now: now})
		if err != nil {
			if r := token.ReasonOf(err); r != "" {
				return validation{Reason: r}, nil, nil
			}
			return validation{}, nil, err
		}
		if c.Issuer == n.Issuer(c.Tenant) {
			n.verified.put(raw, c)
		}
		if r := recheck(c, audience, now); r != "" {
			return validation{Reason: r}, nil, nil
		}
	}
	v := validation{Claims: c}
	if c.Tenant != tenantID {
		v.Reason = reasonWrongTenant
		return v, nil, nil
	}
	if c.Issuer != n.Issuer(tenantID) {
		v.Reason = token.ReasonWrongIssuer
		return v, nil, nil
	}
	// The cached tenant gives the partition to read; nothing revocation depends on is
	// taken from it: the decision read returns the tenant's status with the session
	// and identity in one statement. A home region made stale by a rehome makes that
	// read miss, which fails closed.
	t, err := n.tenants.Tenant(ctx, tenantID, 0)
	if errors.Is(err, schema.ErrNotFound) {
		v.Reason = reasonWrongTenant
		return v, nil, nil
	}
	if err != nil {
		return validation{}, nil, err
	}
	v.Tenant = t
	return v, &schema.StateKey{TenantID: tenantID, IdentityID: c.Subject, SessionID: c.SessionID}, nil
}

// judgeToken is validation's state half: it decides v from what the decision read
// returned for v's token.
func (n *Node) judgeToken(v *validation, st *schema.DecisionState) {
	v.State = st
	now := n.now()
	switch {
	case !st.TenantFound || !st.SessionFound || !st.IdentityFound:
		// As gone as revoked; a home region made stale by a rehome lands here too.
		v.Reason = reasonSessionRevoked
	case st.TenantStatus != schema.StatusActive:
		v.Reason = reasonTenantDisabled
	case st.SessionRevoked:
		v.Reason = reasonSessionRevoked
	case !now.Before(st.SessionExpiresAt):
		v.Reason = reasonSessionExpired
	case st.IdentityStatus == schema.StatusFrozen:
		v.Reason = reasonIdentityFrozen
	case st.IdentityStatus != schema.StatusActive:
		v.Reason = reasonIdentityDisabled
	case !st.IdentityExpiry.IsZero() && !now.Before(st.IdentityExpiry):
		v.Reason = reasonIdentityExpired
	case !st.TokensValidAfter.IsZero() && st.SessionCreatedAt.Before(st.TokensValidAfter):
		v.Reason = reasonRevoked
	default:
		v.Active = true
		v.AuthTime, v.IdentityKind = st.SessionAuthTime, st.IdentityKind
	}
}

// peekKid reads the kid from a JWT header without trusting it (only to pick keys).
func peekKid(raw string) string {
	if len(raw) > 8192 {
		return ""
	}
	return token.PeekKeyID(raw)
}

// grant is what issuing a token needs to know.
type grant struct {
	Tenant       schema.Tenant
	IdentityID   string
	ClientID     string
	GrantType    string
	CredentialID string
	AMR          []string
	Audience     string
	Scope        string
	Refresh      *schema.NewRefreshToken
	SessionTTL   time.Duration // 0: the access token's lifetime
	Act          *token.Actor  // the external subject of a token exchange (federation.go)
}

// signingAlg is the algorithm t's tokens are signed with.
func signingAlg(t schema.Tenant) token.Algorithm {
	if t.SigningAlg == schema.SigningRS256 {
		return token.RS256
	}
	return token.EdDSA
}

// issue opens a session for g and mints its access token.
func (n *Node) issue(ctx context.Context, c schema.Change, g grant) (string, schema.Session, error) {
	ring, err := n.keys.signer(ctx, signingAlg(g.Tenant))
	if err != nil {
		return "", schema.Session{}, err
	}
	ttl := g.Tenant.AccessTokenTTL
	if ttl <= 0 {
		ttl = schema.DefaultAccessTokenTTL
	}
	now := n.now()
	sessionTTL := max(g.SessionTTL, ttl)
	sess, err := n.store.CreateSession(ctx, c, g.Tenant.Scope(), schema.NewSession{
		IdentityID: g.IdentityID, ClientID: g.ClientID, GrantType: g.GrantType, CredentialID: g.CredentialID,
		AMR: g.AMR, ExpiresAt: now.Add(sessionTTL),
	}, g.Refresh)
	if err != nil {
		return "", schema.Session{}, err
	}
	raw, err := n.mint(ring, g, sess.ID, now, ttl)
	sess.ExpiresAt = now.Add(ttl) // what the caller reports is the token's expiry
	if err == nil {
		n.spendTokens(g.Tenant)
		// A token issued is an access event of its identity's baseline (analytics.go).
		n.analytics.observe(accessEvent{tenant: g.Tenant.Scope(), identity: g.IdentityID, at: now, region: n.entryRegion(ctx), client: g.ClientID, session: sess.ID})
	}
	return raw, sess, err
}

func (n *Node) mint(ring *token.Ring, g grant, sessionID string, now time.Time, ttl time.Duration) (string, error) {
	aud := g.Audience
	if aud == "" {
		aud = n.Issuer(g.Tenant.ID)
	}
	raw, err := ring.MintWith(signingAlg(g.Tenant), token.Claims{
		Issuer: n.Issuer(g.Tenant.ID), Subject: g.IdentityID, Audience: []string{aud},
		IssuedAt: now, ExpiresAt: now.Add(ttl), ID: uuid.NewString(), ClientID: g.ClientID,
		Tenant: g.Tenant.ID, SessionID: sessionID, AMR: g.AMR, Region: n.cfg.Region, Scope: g.Scope, Act: g.Act,
	})
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return raw, nil
}

// checkAudienceAndScope validates the optional audience and scope a caller asks for.
func checkAudienceAndScope(audience, scope string) error {
	if len(audience) > 512 {
		return fieldError("audience", "at most 512 characters")
	}
	if len(scope) > 1024 {
		return fieldError("scope", "at most 1024 characters")
	}
	for _, s := range strings.Fields(scope) {
		for _, r := range s {
			if r < 0x21 || r > 0x7e || r == '"' || r == '\\' {
				return fieldError("scope", "scope tokens are printable ASCII without quotes or backslashes (RFC 6749 §3.3)")
			}
		}
	}
	return nil
}

// refreshTTL is how long an interactive session (and its refresh tokens) lives.
const refreshTTL = 12 * time.Hour

// refresh rotates a refresh token and mints a new access token for its session. A
// reused refresh token revokes the whole session (committed before this returns).
func (n *Node) refresh(ctx context.Context, t schema.Tenant, raw string) (string, string, schema.Session, error) {
	if raw == "" {
		return "", "", schema.Session{}, oauthErr(400, "invalid_request", "refresh_token is required")
	}
	keyID, err := credential.ParseSecret(credential.PrefixRefreshToken, raw)
	if err != nil {
		return "", "", schema.Session{}, oauthErr(400, "invalid_grant", "not a refresh token")
	}
	ring, err := n.keys.signer(ctx, signingAlg(t))
	if err != nil {
		return "", "", schema.Session{}, err
	}
	next, err := credential.NewSecret(credential.PrefixRefreshToken)
	if err != nil {
		return "", "", schema.Session{}, err
	}
	sc := t.Scope()
	c := schema.Change{Actor: "token-holder", RequestID: requestID(ctx)}
	sess, err := n.store.RotateRefreshToken(ctx, c, sc, keyID, func(h []byte) bool { return credential.SecretMatches(h, raw) },
		schema.NewRefreshToken{ID: next.KeyID, Hash: next.Hash, ExpiresAt: n.now().Add(refreshTTL)})
	switch {
	case errors.Is(err, schema.ErrRefreshReuse):
		n.metrics.refreshReuse.Inc()
		return "", "", schema.Session{}, err
	case errors.Is(err, schema.ErrNotFound), errors.Is(err, schema.ErrPrecondition):
		return "", "", schema.Session{}, oauthErr(400, "invalid_grant", "refresh token invalid, expired or revoked")
	case err != nil:
		return "", "", schema.Session{}, err
	}
	st, err := n.store.ReadTokenState(ctx, sc, sess.ID, sess.IdentityID)
	if err != nil {
		return "", "", schema.Session{}, err
	}
	now := n.now()
	if st.IdentityStatus != schema.StatusActive || (!st.IdentityExpiry.IsZero() && !now.Before(st.IdentityExpiry)) ||
		(!st.TokensValidAfter.IsZero() && st.SessionCreatedAt.Before(st.TokensValidAfter)) || !now.Before(st.SessionExpiresAt) {
		return "", "", schema.Session{}, oauthErr(400, "invalid_grant", "the session's identity is disabled or its tokens were revoked")
	}
	ttl := min(t.AccessTokenTTL, sess.ExpiresAt.Sub(now))
	raw2, err := n.mint(ring, grant{Tenant: t, IdentityID: sess.IdentityID, ClientID: sess.ClientID, AMR: sess.AMR}, sess.ID, now, ttl)
	if err != nil {
		return "", "", schema.Session{}, err
	}
	n.spendTokens(t)
	sess.ExpiresAt = now.Add(ttl)
	return raw2, next.Text, sess, nil
}
