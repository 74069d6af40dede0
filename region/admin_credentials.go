package region

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region/credential"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
)

// Rotation grace periods.
const (
	defaultGrace = time.Hour
	maxGrace     = 7 * 24 * time.Hour
)

func gracePeriod(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return defaultGrace, nil
	}
	if err := d.CheckValid(); err != nil || d.AsDuration() < 0 || d.AsDuration() > maxGrace {
		return 0, fieldError("grace_period", "must be between 0 and 7 days")
	}
	return d.AsDuration(), nil
}

// scopeAndSecret resolves the tenant a credential call names and makes the new secret
// (shown once, stored only as its hash).
//
// It authorizes the caller first (mayManageIdentity, minting): the credential belongs
// to identityID or, when that is "", to the one credentialID names.
func (a *AdminService) scopeAndSecret(ctx context.Context, tenantID, identityID, credentialID, prefix string) (schema.Scope, credential.Secret, error) {
	sc, err := a.manageIdentity(ctx, tenantID, identityID, credentialID, true)
	if err != nil {
		return schema.Scope{}, credential.Secret{}, err
	}
	sec, err := credential.NewSecret(prefix)
	return sc, sec, err
}

// manageIdentity resolves the tenant and authorizes the caller to manage the
// credentials of identityID or, when that is "", of the identity that owns
// credentialID (mayManageIdentity).
func (a *AdminService) manageIdentity(ctx context.Context, tenantID, identityID, credentialID string, minting bool) (schema.Scope, error) {
	sc, err := a.scope(ctx, tenantID)
	if err != nil {
		return schema.Scope{}, err
	}
	c := callerOf(ctx)
	if c.operator() {
		return sc, nil
	}
	if identityID == "" {
		if identityID, err = a.node.credentialIdentity(ctx, sc, credentialID); err != nil {
			return schema.Scope{}, err
		}
	}
	return sc, a.node.mayManageIdentity(ctx, c, sc.TenantID, identityID, minting)
}

func (a *AdminService) CreateAPIKey(ctx context.Context, req *connect.Request[keyplanev1.CreateAPIKeyRequest]) (*connect.Response[keyplanev1.CreateAPIKeyResponse], error) {
	m := req.Msg
	expires, err := timeFromProto("expire_time", m.ExpireTime)
	if err != nil {
		return nil, err
	}
	sc, sec, err := a.scopeAndSecret(ctx, m.TenantId, m.IdentityId, "", credential.PrefixAPIKey)
	if err != nil {
		return nil, err
	}
	c, err := a.node.store.CreateKeyCredential(ctx, change(ctx), sc, schema.NewKeyCredential{
		IdentityID: m.IdentityId, Kind: schema.CredAPIKey, Name: m.Name, KeyID: sec.KeyID, Hash: sec.Hash, ExpiresAt: expires,
		AllowedAudiences: m.AllowedAudiences, AllowedScopes: m.AllowedScopes,
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.CreateAPIKeyResponse{Credential: credentialToProto(c), ApiKey: sec.Text}), nil
}

func (a *AdminService) RotateAPIKey(ctx context.Context, req *connect.Request[keyplanev1.RotateAPIKeyRequest]) (*connect.Response[keyplanev1.RotateAPIKeyResponse], error) {
	m := req.Msg
	expires, err := timeFromProto("expire_time", m.ExpireTime)
	if err != nil {
		return nil, err
	}
	grace, err := gracePeriod(m.GracePeriod)
	if err != nil {
		return nil, err
	}
	sc, sec, err := a.scopeAndSecret(ctx, m.TenantId, "", m.CredentialId, credential.PrefixAPIKey)
	if err != nil {
		return nil, err
	}
	c, err := a.node.store.RotateKeyCredential(ctx, change(ctx), sc, m.CredentialId,
		schema.NewKeyCredential{Kind: schema.CredAPIKey, KeyID: sec.KeyID, Hash: sec.Hash, ExpiresAt: expires}, grace)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.RotateAPIKeyResponse{Credential: credentialToProto(c), ApiKey: sec.Text}), nil
}

func (a *AdminService) CreateClient(ctx context.Context, req *connect.Request[keyplanev1.CreateClientRequest]) (*connect.Response[keyplanev1.CreateClientResponse], error) {
	m := req.Msg
	sc, sec, err := a.scopeAndSecret(ctx, m.TenantId, m.IdentityId, "", credential.PrefixClientSecret)
	if err != nil {
		return nil, err
	}
	if c := callerOf(ctx); m.Admin && !c.operator() {
		// An admin client introspects and revokes every token of the tenant: only for a
		// caller that may revoke every session itself.
		t, err := a.node.store.GetTenant(ctx, sc.TenantID)
		if err != nil {
			return nil, err
		}
		if err := a.node.requirePermission(ctx, t, c, PermSessionsRevoke); err != nil {
			return nil, err
		}
	}
	if c := callerOf(ctx); m.FirstParty && !c.operator() {
		if err := a.requireFirstParty(ctx, sc.TenantID, c); err != nil {
			return nil, err
		}
	}
	c, err := a.node.store.CreateKeyCredential(ctx, change(ctx), sc, schema.NewKeyCredential{
		IdentityID: m.IdentityId, Kind: schema.CredClientSecret, Name: m.Name, KeyID: sec.KeyID, Hash: sec.Hash, Admin: m.Admin,
		AllowedAudiences: m.AllowedAudiences, AllowedScopes: m.AllowedScopes,
		RedirectURIs: m.RedirectUris, PostLogoutRedirectURIs: m.PostLogoutRedirectUris, FirstParty: m.FirstParty,
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.CreateClientResponse{Credential: credentialToProto(c), ClientId: c.KeyID, ClientSecret: sec.Text}), nil
}

// requireFirstParty authorizes marking a client first party, which signs the
// tenant's people in without asking their consent: only a caller holding
// iam.credentials.manage on the tenant (not the owner-bound manage_owned).
func (a *AdminService) requireFirstParty(ctx context.Context, tenantID string, c caller) error {
	t, err := a.node.store.GetTenant(ctx, tenantID)
	if err != nil {
		return err
	}
	if err := a.node.requirePermission(ctx, t, c, PermCredentialsManage); err != nil {
		return fmt.Errorf("first_party: %w", err)
	}
	return nil
}

func (a *AdminService) UpdateClient(ctx context.Context, req *connect.Request[keyplanev1.UpdateClientRequest]) (*connect.Response[keyplanev1.UpdateClientResponse], error) {
	m := req.Msg
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	if c := callerOf(ctx); !c.operator() {
		owner, err := a.node.clientIdentity(ctx, sc, m.ClientId)
		if err != nil {
			return nil, err
		}
		if err := a.node.mayManageIdentity(ctx, c, sc.TenantID, owner, false); err != nil {
			return nil, err
		}
		if m.FirstParty {
			if err := a.requireFirstParty(ctx, sc.TenantID, c); err != nil {
				return nil, err
			}
		}
	}
	c, err := a.node.store.UpdateClient(ctx, change(ctx), sc, m.ClientId, schema.ClientSettings{
		AllowedAudiences: m.AllowedAudiences, AllowedScopes: m.AllowedScopes,
		RedirectURIs: m.RedirectUris, PostLogoutRedirectURIs: m.PostLogoutRedirectUris, FirstParty: m.FirstParty,
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.UpdateClientResponse{Credential: credentialToProto(c)}), nil
}

func (a *AdminService) RotateClientSecret(ctx context.Context, req *connect.Request[keyplanev1.RotateClientSecretRequest]) (*connect.Response[keyplanev1.RotateClientSecretResponse], error) {
	m := req.Msg
	grace, err := gracePeriod(m.GracePeriod)
	if err != nil {
		return nil, err
	}
	sc, sec, err := a.scopeAndSecret(ctx, m.TenantId, "", m.CredentialId, credential.PrefixClientSecret)
	if err != nil {
		return nil, err
	}
	c, err := a.node.store.RotateKeyCredential(ctx, change(ctx), sc, m.CredentialId, schema.NewKeyCredential{Kind: schema.CredClientSecret, Hash: sec.Hash}, grace)
	if err != nil {
		return nil, err
	}
	clientID := schema.ClientID(c.KeyID)
	return connect.NewResponse(&keyplanev1.RotateClientSecretResponse{Credential: credentialToProto(c), ClientId: clientID, ClientSecret: sec.Text}), nil
}

func (a *AdminService) RevokeCredential(ctx context.Context, req *connect.Request[keyplanev1.RevokeCredentialRequest]) (*connect.Response[keyplanev1.RevokeCredentialResponse], error) {
	sc, err := a.manageIdentity(ctx, req.Msg.TenantId, "", req.Msg.CredentialId, false)
	if err != nil {
		return nil, err
	}
	c, err := a.node.store.RevokeCredential(ctx, change(ctx), sc, req.Msg.CredentialId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.RevokeCredentialResponse{Credential: credentialToProto(c)}), nil
}

func (a *AdminService) ListCredentials(ctx context.Context, req *connect.Request[keyplanev1.ListCredentialsRequest]) (*connect.Response[keyplanev1.ListCredentialsResponse], error) {
	sc, err := a.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	cs, err := a.node.store.ListCredentials(ctx, sc, req.Msg.IdentityId)
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListCredentialsResponse{}
	for _, c := range cs {
		out.Credentials = append(out.Credentials, credentialToProto(c))
	}
	return connect.NewResponse(out), nil
}

func (a *AdminService) ListSessions(ctx context.Context, req *connect.Request[keyplanev1.ListSessionsRequest]) (*connect.Response[keyplanev1.ListSessionsResponse], error) {
	sc, err := a.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	ss, err := a.node.store.ListSessions(ctx, sc, req.Msg.IdentityId)
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListSessionsResponse{}
	for _, s := range ss {
		out.Sessions = append(out.Sessions, &keyplanev1.Session{
			Id: s.ID, IdentityId: s.IdentityID, ClientId: s.ClientID, GrantType: s.GrantType, Amr: s.AMR,
			CreateTime: timestamppb.New(s.CreatedAt), ExpireTime: timestamppb.New(s.ExpiresAt), RevokeTime: timeToProto(s.RevokedAt),
		})
	}
	return connect.NewResponse(out), nil
}

var credentialKinds = map[string]keyplanev1.CredentialKind{
	schema.CredPassword:     keyplanev1.CredentialKind_CREDENTIAL_KIND_PASSWORD,
	schema.CredTOTP:         keyplanev1.CredentialKind_CREDENTIAL_KIND_TOTP,
	schema.CredRecoveryCode: keyplanev1.CredentialKind_CREDENTIAL_KIND_RECOVERY_CODE,
	schema.CredAPIKey:       keyplanev1.CredentialKind_CREDENTIAL_KIND_API_KEY,
	schema.CredClientSecret: keyplanev1.CredentialKind_CREDENTIAL_KIND_CLIENT_SECRET,
}

func credentialToProto(c schema.Credential) *keyplanev1.Credential {
	keyID := c.KeyID
	if c.Kind == schema.CredClientSecret {
		keyID = schema.ClientID(keyID)
	}
	return &keyplanev1.Credential{
		Id: c.ID, IdentityId: c.IdentityID, Kind: credentialKinds[c.Kind], KeyId: keyID, Name: c.Name,
		CreateTime: timestamppb.New(c.CreatedAt), ExpireTime: timeToProto(c.ExpiresAt), LastUsedTime: timeToProto(c.LastUsedAt),
		RotateTime: timeToProto(c.RotatedAt), RevokeTime: timeToProto(c.RevokedAt),
		AllowedAudiences: c.AllowedAudiences, AllowedScopes: c.AllowedScopes,
		RedirectUris: c.RedirectURIs, PostLogoutRedirectUris: c.PostLogoutRedirectURIs, FirstParty: c.FirstParty,
	}
}
