package region_test

import (
	"context"
	"net/http"
	"testing"

	"connectrpc.com/connect"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// TestSecuritySignInProvidersNeedTenantAdmin (issue 16): an upstream OIDC provider or a
// SAML IdP signs in as whoever it links to, tenant admins included, so adding one is
// adding a way to be anyone. An identity holding iam.federation.write but not all a
// tenant admin holds is refused (permission_denied), through a real server, and
// nothing is written; the tenant admin is not refused for that reason.
func TestSecuritySignInProvidersNeedTenantAdmin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newAdminFixture(t, nil)
	_, tok := f.identityWith(t, "federation-writer", "*", "iam.federation.write", "iam.federation.read")
	opts := connect.WithInterceptors(bearerInterceptor(tok))
	upstream := keyplanev1connect.NewUpstreamServiceClient(http.DefaultClient, f.url, opts)
	saml := keyplanev1connect.NewSAMLServiceClient(http.DefaultClient, f.url, opts)
	provider := &keyplanev1.UpstreamProvider{Name: "corp", DisplayName: "Corp", Issuer: "http://127.0.0.1:1/t/corp", ClientId: "c", ClientSecret: "s"}
	_, err := upstream.CreateUpstreamProvider(ctx, connect.NewRequest(&keyplanev1.CreateUpstreamProviderRequest{TenantId: "acme", Provider: provider}))
	wantCode(t, err, connect.CodePermissionDenied, "sign-in provider")
	_, err = saml.CreateSAMLIdP(ctx, connect.NewRequest(&keyplanev1.CreateSAMLIdPRequest{TenantId: "acme",
		Idp: &keyplanev1.SAMLIdP{Name: "corp", Metadata: "<EntityDescriptor/>"}}))
	wantCode(t, err, connect.CodePermissionDenied, "sign-in provider")
	if ps, err := upstream.ListUpstreamProviders(ctx, connect.NewRequest(&keyplanev1.ListUpstreamProvidersRequest{TenantId: "acme"})); err != nil || len(ps.Msg.Providers) != 0 {
		t.Fatalf("providers after the refusals: %v %v", ps, err)
	}
	// The tenant admin gets past this check (and is then told about the bad metadata).
	_, err = keyplanev1connect.NewSAMLServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearerInterceptor(f.bootTok))).
		CreateSAMLIdP(ctx, connect.NewRequest(&keyplanev1.CreateSAMLIdPRequest{TenantId: "acme", Idp: &keyplanev1.SAMLIdP{Name: "corp", Metadata: "<EntityDescriptor/>"}}))
	wantCode(t, err, connect.CodeInvalidArgument, "metadata")
}
