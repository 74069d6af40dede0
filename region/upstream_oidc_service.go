package region

import (
	"context"
	"maps"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// UpstreamService implements keyplane.v1.UpstreamService: the tenant's upstream
// OpenID Providers (upstream_oidc.go has the sign-in flow). The authority interceptor
// has checked iam.federation.read or .write (and step-up for writes).
type UpstreamService struct {
	node *Node
}

var _ keyplanev1connect.UpstreamServiceHandler = (*UpstreamService)(nil)

func (s *UpstreamService) scope(ctx context.Context, tenantID string) (schema.Scope, error) {
	return (&AdminService{node: s.node}).scope(ctx, tenantID)
}

func (s *UpstreamService) CreateUpstreamProvider(ctx context.Context, req *connect.Request[keyplanev1.CreateUpstreamProviderRequest]) (*connect.Response[keyplanev1.CreateUpstreamProviderResponse], error) {
	m := req.Msg
	p := m.Provider
	switch {
	case p == nil:
		return nil, fieldError("provider", "required")
	case p.ClientSecret == "":
		return nil, fieldError("provider.client_secret", "required")
	case len(p.ClientSecret) > 1024:
		return nil, fieldError("provider.client_secret", "at most 1024 bytes")
	case s.node.cfg.KEK == nil:
		return nil, ErrNoKEK
	}
	sc, err := s.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	if err := s.node.mayConfigureSignIn(ctx, callerOf(ctx), m.TenantId); err != nil {
		return nil, err
	}
	id := schema.NewUpstreamProviderID()
	out, err := s.node.store.CreateUpstreamProvider(ctx, change(ctx), sc, schema.UpstreamProvider{ID: id, Name: p.Name, DisplayName: p.DisplayName,
		Issuer: p.Issuer, ClientID: p.ClientId, SealedSecret: s.node.cfg.KEK.Seal([]byte(p.ClientSecret), schema.UpstreamSecretAD(sc.TenantID, id)),
		Scopes: p.Scopes, ClaimEmail: p.ClaimEmail, ClaimName: p.ClaimName, ClaimExternalID: p.ClaimExternalId,
		AttributeClaims: maps.Clone(p.AttributeClaims), JIT: p.Jit, LinkByEmail: p.LinkByEmail})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.CreateUpstreamProviderResponse{Provider: upstreamToProto(out)}), nil
}

func (s *UpstreamService) GetUpstreamProvider(ctx context.Context, req *connect.Request[keyplanev1.GetUpstreamProviderRequest]) (*connect.Response[keyplanev1.GetUpstreamProviderResponse], error) {
	sc, err := s.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	p, err := s.node.store.GetUpstreamProvider(ctx, sc, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.GetUpstreamProviderResponse{Provider: upstreamToProto(p)}), nil
}

func (s *UpstreamService) ListUpstreamProviders(ctx context.Context, req *connect.Request[keyplanev1.ListUpstreamProvidersRequest]) (*connect.Response[keyplanev1.ListUpstreamProvidersResponse], error) {
	sc, err := s.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	ps, err := s.node.store.ListUpstreamProviders(ctx, sc)
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListUpstreamProvidersResponse{}
	for _, p := range ps {
		out.Providers = append(out.Providers, upstreamToProto(p))
	}
	return connect.NewResponse(out), nil
}

func (s *UpstreamService) DeleteUpstreamProvider(ctx context.Context, req *connect.Request[keyplanev1.DeleteUpstreamProviderRequest]) (*connect.Response[keyplanev1.DeleteUpstreamProviderResponse], error) {
	sc, err := s.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	if err := s.node.store.DeleteUpstreamProvider(ctx, change(ctx), sc, req.Msg.Id); err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.DeleteUpstreamProviderResponse{}), nil
}

// upstreamToProto is a provider without its secret.
func upstreamToProto(p schema.UpstreamProvider) *keyplanev1.UpstreamProvider {
	return &keyplanev1.UpstreamProvider{Id: p.ID, Name: p.Name, DisplayName: p.DisplayName, Issuer: p.Issuer, ClientId: p.ClientID,
		Scopes: p.Scopes, ClaimEmail: p.ClaimEmail, ClaimName: p.ClaimName, ClaimExternalId: p.ClaimExternalID,
		AttributeClaims: p.AttributeClaims, Jit: p.JIT, LinkByEmail: p.LinkByEmail, CreateTime: timestamppb.New(p.CreatedAt)}
}
