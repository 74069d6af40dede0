package region

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region/credential"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/region/token"
	"github.com/keyplane/keyplane/schema"
)

// AuthService implements keyplane.v1.AuthService.
type AuthService struct {
	node *Node
}

var _ keyplanev1connect.AuthServiceHandler = (*AuthService)(nil)

// activeTenant reads the tenant a request names and refuses disabled tenants.
func (n *Node) activeTenant(ctx context.Context, tenantID string) (schema.Tenant, error) {
	if tenantID == "" {
		return schema.Tenant{}, fieldError("tenant_id", "required")
	}
	t, err := n.store.GetTenant(ctx, tenantID)
	if err != nil {
		return schema.Tenant{}, err
	}
	if t.Status != schema.StatusActive {
		return schema.Tenant{}, connect.NewError(connect.CodeFailedPrecondition, errors.New("tenant_id: tenant "+t.ID+" is disabled"))
	}
	return t, nil
}

func (a *AuthService) ExchangeAPIKey(ctx context.Context, req *connect.Request[keyplanev1.ExchangeAPIKeyRequest]) (*connect.Response[keyplanev1.ExchangeAPIKeyResponse], error) {
	m := req.Msg
	n := a.node
	if m.ApiKey == "" {
		return nil, fieldError("api_key", "required")
	}
	keyID, err := credential.ParseSecret(credential.PrefixAPIKey, m.ApiKey)
	if err != nil {
		return nil, fieldError("api_key", "not an API key (kpk_<key id>_<secret>)")
	}
	if err := checkAudienceAndScope(m.Audience, m.Scope); err != nil {
		return nil, err
	}
	// Minting a token counts against the token endpoint's limits, by whichever door.
	if err := n.guards.token.allow(ctx, n.metrics, sourceIP(req.Peer().Addr), m.TenantId, n.now()); err != nil {
		return nil, err
	}
	t, err := n.activeTenant(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	cred, err := n.findKeyCredential(ctx, t.Scope(), schema.CredAPIKey, keyID, m.ApiKey)
	if err != nil {
		return nil, err
	}
	// The key's allow-lists bound what it mints, as a client's do at the token endpoint.
	audience, scope, err := requestedTarget(n.Issuer(t.ID), cred.Credential, url.Values{"audience": {m.Audience}, "scope": {m.Scope}})
	if oe, ok := errors.AsType[*oauthError](err); ok {
		field := "audience"
		if oe.Code == "invalid_scope" {
			field = "scope"
		}
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s: %s", field, oe.Description))
	}
	if err != nil {
		return nil, err
	}
	raw, sess, err := n.issue(ctx, schema.Change{Actor: "identity:" + cred.IdentityID, ActorKind: cred.IdentityKind, ClientID: keyID, RequestID: requestID(ctx)}, grant{
		Tenant: t, IdentityID: cred.IdentityID, ClientID: keyID, GrantType: "api_key", CredentialID: cred.ID,
		AMR: []string{"apikey"}, Audience: audience, Scope: scope,
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.ExchangeAPIKeyResponse{Token: tokenToProto(raw, sess, "", n.now())}), nil
}

// findKeyCredential finds the usable credential of kind whose secret is text, for an
// active, unexpired identity; it records the use (coalesced). Any mismatch is the
// same Unauthenticated error, so callers learn nothing about which part was wrong.
func (n *Node) findKeyCredential(ctx context.Context, sc schema.Scope, kind, keyID, text string) (schema.KeyCredential, error) {
	cands, err := n.store.KeyCredentials(ctx, sc, kind, keyID)
	if err != nil {
		return schema.KeyCredential{}, err
	}
	now := n.now()
	for _, c := range cands {
		if !credential.SecretMatches(c.Hash, text) {
			continue
		}
		if !c.Usable(now) || c.IdentityStatus != schema.StatusActive || (!c.IdentityExpiry.IsZero() && !now.Before(c.IdentityExpiry)) {
			break
		}
		n.lastUsed.touch(sc, c.ID, now)
		return c, nil
	}
	n.metrics.credentialFailures.WithLabelValues(kind).Inc()
	if kind == schema.CredAPIKey {
		return schema.KeyCredential{}, errInvalidAPIKey
	}
	return schema.KeyCredential{}, errInvalidClient
}

func (a *AuthService) ValidateToken(ctx context.Context, req *connect.Request[keyplanev1.ValidateTokenRequest]) (*connect.Response[keyplanev1.ValidateTokenResponse], error) {
	m := req.Msg
	if m.TenantId == "" {
		return nil, fieldError("tenant_id", "required")
	}
	if m.Token == "" {
		return nil, fieldError("token", "required")
	}
	v, err := a.node.validate(ctx, m.TenantId, m.Token, m.Audience, true)
	if err != nil {
		return nil, err
	}
	a.node.metrics.validations.WithLabelValues(validationLabel(v)).Inc()
	out := &keyplanev1.ValidateTokenResponse{Active: v.Active, Reason: string(v.Reason)}
	if v.Active {
		out.Claims = claimsToProto(v.Claims)
	}
	return connect.NewResponse(out), nil
}

func validationLabel(v validation) string {
	if v.Active {
		return "active"
	}
	return string(v.Reason)
}

func (a *AuthService) RevokeToken(ctx context.Context, req *connect.Request[keyplanev1.RevokeTokenRequest]) (*connect.Response[keyplanev1.RevokeTokenResponse], error) {
	m := req.Msg
	if m.Token == "" {
		return nil, fieldError("token", "required")
	}
	t, err := a.node.activeTenantOrNil(ctx, m.TenantId)
	if err != nil || t == nil {
		return connect.NewResponse(&keyplanev1.RevokeTokenResponse{}), err
	}
	if err := a.node.revokeByToken(ctx, *t, m.Token, nil); err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.RevokeTokenResponse{}), nil
}

// activeTenantOrNil is activeTenant for revocation: an unknown tenant is no error
// (nothing to revoke), but the tenant id must be given and well-formed.
func (n *Node) activeTenantOrNil(ctx context.Context, tenantID string) (*schema.Tenant, error) {
	if tenantID == "" {
		return nil, fieldError("tenant_id", "required")
	}
	t, err := n.store.GetTenant(ctx, tenantID)
	if errors.Is(err, schema.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// revokeByToken revokes the session of an access or refresh token of tenant t. Invalid
// and foreign tokens are ignored (RFC 7009 §2.2). allowed, when not nil, decides whether
// the caller may revoke a session of the given client id.
func (n *Node) revokeByToken(ctx context.Context, t schema.Tenant, raw string, allowed func(clientID string) bool) error {
	actor := schema.Change{Actor: "token-holder", RequestID: requestID(ctx)}
	if strings.HasPrefix(raw, credential.PrefixRefreshToken+"_") {
		keyID, err := credential.ParseSecret(credential.PrefixRefreshToken, raw)
		if err != nil {
			return nil
		}
		_, err = n.store.RevokeRefreshToken(ctx, actor, t.Scope(), keyID, func(h []byte) bool { return credential.SecretMatches(h, raw) }, allowed)
		if errors.Is(err, schema.ErrNotFound) {
			return nil
		}
		return err
	}
	ring, err := n.keys.forKid(ctx, peekKid(raw))
	if err != nil {
		return err
	}
	// Expired tokens need no revocation; anything that does not verify is not ours.
	c, err := ring.Verify(raw, token.VerifyOptions{Now: n.now()})
	if err != nil || c.Tenant != t.ID || c.Issuer != n.Issuer(t.ID) {
		return nil
	}
	if allowed != nil && !allowed(c.ClientID) {
		return nil
	}
	_, err = n.store.RevokeSession(ctx, actor, t.Scope(), c.SessionID, c.Subject)
	if errors.Is(err, schema.ErrNotFound) {
		return nil
	}
	return err
}

func (a *AuthService) RevokeSession(ctx context.Context, req *connect.Request[keyplanev1.RevokeSessionRequest]) (*connect.Response[keyplanev1.RevokeSessionResponse], error) {
	m := req.Msg
	t, err := a.node.activeTenant(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	caller, err := a.node.authenticate(ctx, req.Header().Get("Authorization"), t.ID)
	if err != nil {
		return nil, err
	}
	owner := caller.identityID // an identity revokes its own sessions, or any with PermSessionsRevoke
	if owner != "" && a.node.requirePermission(ctx, t, caller, PermSessionsRevoke) == nil {
		owner = ""
	}
	s, err := a.node.store.RevokeSession(ctx, caller.change(ctx), t.Scope(), m.SessionId, owner)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.RevokeSessionResponse{RevokeTime: timestamppb.New(s.RevokedAt)}), nil
}

func (a *AuthService) RevokeIdentityTokens(ctx context.Context, req *connect.Request[keyplanev1.RevokeIdentityTokensRequest]) (*connect.Response[keyplanev1.RevokeIdentityTokensResponse], error) {
	m := req.Msg
	t, err := a.node.activeTenant(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	caller, err := a.node.authenticate(ctx, req.Header().Get("Authorization"), t.ID)
	if err != nil {
		return nil, err
	}
	if caller.identityID != "" && caller.identityID != m.IdentityId && a.node.requirePermission(ctx, t, caller, PermSessionsRevoke) != nil {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("identity_id: an identity may only revoke its own tokens, unless it holds "+PermSessionsRevoke))
	}
	at, err := a.node.store.RevokeIdentityTokens(ctx, caller.change(ctx), t.Scope(), m.IdentityId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.RevokeIdentityTokensResponse{TokensValidAfter: timestamppb.New(at)}), nil
}

func tokenToProto(raw string, s schema.Session, refresh string, now time.Time) *keyplanev1.Token {
	return &keyplanev1.Token{
		AccessToken: raw, TokenType: "Bearer", ExpiresIn: secondsUntil(s.ExpiresAt, now),
		ExpireTime: timestamppb.New(s.ExpiresAt), SessionId: s.ID, RefreshToken: refresh,
	}
}

func claimsToProto(c token.Claims) *keyplanev1.TokenClaims {
	return &keyplanev1.TokenClaims{
		Issuer: c.Issuer, Subject: c.Subject, Audience: c.Audience, ExpireTime: timestamppb.New(c.ExpiresAt),
		IssueTime: timestamppb.New(c.IssuedAt), TokenId: c.ID, ClientId: c.ClientID, TenantId: c.Tenant,
		SessionId: c.SessionID, Amr: c.AMR, Region: c.Region, Scope: c.Scope,
	}
}
