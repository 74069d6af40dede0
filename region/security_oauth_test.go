package region_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// clientToken asks the token endpoint for a client_credentials token with extra
// parameters, authenticating with HTTP Basic.
func (f *fixture) clientToken(t *testing.T, tenant, id, secret string, extra url.Values) formResult {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	for k, v := range extra {
		form[k] = v
	}
	return postForm(t, f.url+"/t/"+tenant+"/oauth2/token", id, secret, form)
}

func (f *fixture) accessToken(t *testing.T, tenant, id, secret string, extra url.Values) string {
	t.Helper()
	got := f.clientToken(t, tenant, id, secret, extra)
	tok, _ := got.body["access_token"].(string)
	if got.status != http.StatusOK || tok == "" {
		t.Fatalf("token request %v: %d %v", extra, got.status, got.body)
	}
	return tok
}

// newClient creates an OAuth client of the fixture's service account.
func (f *fixture) newClient(t *testing.T, req *keyplanev1.CreateClientRequest) (id, secret string) {
	t.Helper()
	req.TenantId, req.IdentityId = f.tenant, f.bot
	cl, err := f.admin.CreateClient(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	return cl.Msg.ClientId, cl.Msg.ClientSecret
}

// TestSecurityForeignAudienceRefused — issue 12, finding 5: keyplane's own APIs took a
// bearer token minted for any audience, so a resource server that received a user's
// token for itself could replay it against keyplane's check and elevation APIs. The
// attack: a client allowed to get tokens for https://api.other.test hands such a
// token to keyplane's CheckService, ElevationService and AdminService. Each now
// refuses it as unauthenticated naming the audience, while the same client's token
// for keyplane (aud = the tenant's issuer) still authenticates.
func TestSecurityForeignAudienceRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPolicyFixture(t)
	const other = "https://api.other.test"
	id, sec := f.newClient(t, &keyplanev1.CreateClientRequest{Name: "multi", AllowedAudiences: []string{other}})
	role, err := f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "checker", Permissions: []string{"iam.checks.perform"}}))
	if err != nil {
		t.Fatal(err)
	}
	f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: f.bot, RoleId: role.Msg.Role.Id, Scope: "*"})

	foreign := f.accessToken(t, "acme", id, sec, url.Values{"resource": {other}})
	own := f.accessToken(t, "acme", id, sec, nil)
	// Both are live tokens of the tenant: introspection (which any resource server
	// uses) says so; only keyplane's own APIs care about the audience.
	for _, tok := range []string{foreign, own} {
		if v := f.validate(t, tok); !v.Active {
			t.Fatalf("token inactive: %v", v)
		}
	}
	checkReq := &keyplanev1.CheckRequest{TenantId: "acme", Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: f.alice},
		Permission: "docs.document.read", Resource: "a"}
	check := func(tok string) error {
		c := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearerInterceptor(tok)))
		_, err := c.Check(ctx, connect.NewRequest(checkReq))
		return err
	}
	wantCode(t, check(foreign), connect.CodeUnauthenticated, `audience "https://api.other.test"`)
	if err := check(own); err != nil {
		t.Fatalf("check with the client's keyplane token: %v", err)
	}

	elev := keyplanev1connect.NewElevationServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearerInterceptor(foreign)))
	_, err = elev.RequestElevation(ctx, connect.NewRequest(&keyplanev1.RequestElevationRequest{TenantId: "acme", RoleId: f.editor, Scope: "*",
		Justification: "replayed token", Duration: durationpb.New(time.Hour)}))
	wantCode(t, err, connect.CodeUnauthenticated, "audience")

	_, err = adminClient(f.url, foreign).GetTenant(ctx, connect.NewRequest(&keyplanev1.GetTenantRequest{Id: "acme"}))
	wantCode(t, err, connect.CodeUnauthenticated, "operator")

	// A configured API audience is keyplane's too, on the nodes configured with it.
	const api = "https://keyplane.test"
	if _, err := f.admin.UpdateClient(ctx, connect.NewRequest(&keyplanev1.UpdateClientRequest{TenantId: "acme", ClientId: id,
		AllowedAudiences: []string{other, api}})); err != nil {
		t.Fatal(err)
	}
	apiTok := f.accessToken(t, "acme", id, sec, url.Values{"audience": {api}})
	wantCode(t, check(apiTok), connect.CodeUnauthenticated, `audience "https://keyplane.test"`)
	cfg := authConfig(f.kek, "us-east-2")
	cfg.APIAudience = api
	configured := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, testNode(t, f.store, cfg), connect.WithInterceptors(bearerInterceptor(apiTok)))
	if _, err := configured.Check(ctx, connect.NewRequest(checkReq)); err != nil {
		t.Fatalf("check on a node configured with the API audience: %v", err)
	}
}

// TestSecurityTokenEndpointAllowLists — issue 12, finding 5: any client could mint
// tokens for any resource/audience and any scope. The attack: a client asks the token
// endpoint for a resource and scopes nobody granted it. It now gets invalid_target
// (RFC 8707) and invalid_scope (RFC 6749 §5.2), by default and after its lists are
// set; only what the lists name (and the tenant's own issuer) is issued.
func TestSecurityTokenEndpointAllowLists(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	id, sec := f.newClient(t, &keyplanev1.CreateClientRequest{Name: "plain"})

	for _, tc := range []struct {
		name  string
		form  url.Values
		error string
	}{
		{"foreign resource", url.Values{"resource": {"https://payments.test"}}, "invalid_target"},
		{"foreign audience", url.Values{"audience": {"payments"}}, "invalid_target"},
		{"resource and audience disagree", url.Values{"resource": {f.issuer}, "audience": {"payments"}}, "invalid_target"},
		{"relative resource", url.Values{"resource": {"payments"}}, "invalid_target"},
		{"resource with fragment", url.Values{"resource": {f.issuer + "#x"}}, "invalid_target"},
		{"any scope by default", url.Values{"scope": {"docs.read"}}, "invalid_scope"},
		{"malformed scope", url.Values{"scope": {"a\"b"}}, "invalid_scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := f.clientToken(t, "acme", id, sec, tc.form)
			if got.status != http.StatusBadRequest || got.body["error"] != tc.error || got.body["access_token"] != nil {
				t.Fatalf("got %d %v, want 400 %s", got.status, got.body, tc.error)
			}
		})
	}
	// The tenant's own issuer is always a permitted target.
	for _, form := range []url.Values{nil, {"resource": {f.issuer}}, {"audience": {f.issuer}}} {
		f.accessToken(t, "acme", id, sec, form)
	}

	// Lists are validated, errors naming the field.
	_, err := f.admin.UpdateClient(ctx, connect.NewRequest(&keyplanev1.UpdateClientRequest{TenantId: "acme", ClientId: id, AllowedScopes: []string{"bad scope"}}))
	wantCode(t, err, connect.CodeInvalidArgument, "allowed_scopes")
	_, err = f.admin.UpdateClient(ctx, connect.NewRequest(&keyplanev1.UpdateClientRequest{TenantId: "acme", ClientId: id, AllowedAudiences: []string{"https://a.test#frag"}}))
	wantCode(t, err, connect.CodeInvalidArgument, "allowed_audiences")
	_, err = f.admin.UpdateClient(ctx, connect.NewRequest(&keyplanev1.UpdateClientRequest{TenantId: "acme", ClientId: "nobody", AllowedScopes: []string{"x"}}))
	wantCode(t, err, connect.CodeNotFound, "nobody")

	up, err := f.admin.UpdateClient(ctx, connect.NewRequest(&keyplanev1.UpdateClientRequest{TenantId: "acme", ClientId: id,
		AllowedAudiences: []string{"https://payments.test"}, AllowedScopes: []string{"pay.read", "pay.write"}}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(up.Msg.Credential.AllowedScopes, []string{"pay.read", "pay.write"}) {
		t.Fatalf("allowed scopes %v", up.Msg.Credential.AllowedScopes)
	}
	got := f.clientToken(t, "acme", id, sec, url.Values{"resource": {"https://payments.test"}, "scope": {"pay.read pay.read"}})
	if got.status != http.StatusOK || got.body["scope"] != "pay.read" {
		t.Fatalf("allowed request: %d %v", got.status, got.body)
	}
	for form, want := range map[string]url.Values{
		"invalid_target": {"resource": {"https://payments.test/other"}},
		"invalid_scope":  {"resource": {"https://payments.test"}, "scope": {"pay.read pay.admin"}},
	} {
		if got := f.clientToken(t, "acme", id, sec, want); got.status != http.StatusBadRequest || got.body["error"] != form {
			t.Fatalf("%v: got %d %v, want %s", want, got.status, got.body, form)
		}
	}

	// A rotated secret keeps the lists: rotation is not a way around them.
	creds, err := f.admin.ListCredentials(ctx, connect.NewRequest(&keyplanev1.ListCredentialsRequest{TenantId: "acme", IdentityId: f.bot}))
	if err != nil {
		t.Fatal(err)
	}
	var credID string
	for _, c := range creds.Msg.Credentials {
		if c.KeyId == id {
			credID = c.Id
		}
	}
	rot, err := f.admin.RotateClientSecret(ctx, connect.NewRequest(&keyplanev1.RotateClientSecretRequest{TenantId: "acme", CredentialId: credID}))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.clientToken(t, "acme", id, rot.Msg.ClientSecret, url.Values{"scope": {"docs.read"}}); got.body["error"] != "invalid_scope" {
		t.Fatalf("rotated secret asking for an unlisted scope: %d %v", got.status, got.body)
	}
	if got := f.clientToken(t, "acme", id, rot.Msg.ClientSecret, url.Values{"scope": {"pay.write"}}); got.status != http.StatusOK {
		t.Fatalf("rotated secret asking for a listed scope: %d %v", got.status, got.body)
	}
}

// TestSecurityIntrospectionRights — issue 12, finding 11: any OAuth client of a tenant
// could introspect every token of it, contrary to admin.proto (only admin clients may;
// others only tokens issued to themselves). The attack: client B introspects client
// A's token and an API-key token. B now gets {"active": false} for both (RFC 7662
// §2.2), while A sees its own token and an admin client sees all.
func TestSecurityIntrospectionRights(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	aID, aSec := f.newClient(t, &keyplanev1.CreateClientRequest{Name: "a"})
	bID, bSec := f.newClient(t, &keyplanev1.CreateClientRequest{Name: "b"})
	adminID, adminSec := f.newClient(t, &keyplanev1.CreateClientRequest{Name: "auditor", Admin: true})
	aTok := f.accessToken(t, "acme", aID, aSec, nil)
	keyTok := f.exchange(t)
	introspect := func(id, sec, tok string) formResult {
		return postForm(t, f.url+"/t/acme/oauth2/introspect", id, sec, url.Values{"token": {tok}})
	}
	for _, tc := range []struct {
		name, id, sec, tok string
		active             bool
	}{
		{"B on A's token", bID, bSec, aTok, false},
		{"B on an API-key token", bID, bSec, keyTok, false},
		{"A on its own token", aID, aSec, aTok, true},
		{"A on an API-key token", aID, aSec, keyTok, false},
		{"admin on A's token", adminID, adminSec, aTok, true},
		{"admin on an API-key token", adminID, adminSec, keyTok, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := introspect(tc.id, tc.sec, tc.tok)
			if got.status != http.StatusOK || got.body["active"] != tc.active {
				t.Fatalf("got %d %v, want active=%v", got.status, got.body, tc.active)
			}
			if !tc.active && len(got.body) != 1 {
				t.Fatalf("an unauthorized introspection leaked %v", got.body)
			}
		})
	}
}

// TestSecurityRS256Interop — issue 12, finding 16: JWKS and discovery offered only
// EdDSA, so an RS256-only resource server (RFC 9068 §2.1 makes RS256 mandatory) could
// not verify keyplane's tokens, and discovery advertised the implicit grant. The test
// runs such a resource server's verification over HTTP (discovery, JWKS, go-jose
// restricted to RS256) against an RS256 tenant's token, and the alg-confusion attack
// against keyplane: an HS256 token keyed with the tenant's published RSA public key,
// which keyplane must refuse. An EdDSA tenant's token is refused by the RS256-only
// verifier (no silent downgrade), and discovery lists only what exists.
func TestSecurityRS256Interop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	if _, err := f.admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "rsa", Name: "RSA", HomeRegion: "us-east",
		SigningAlgorithm: keyplanev1.SigningAlgorithm_SIGNING_ALGORITHM_RS256})); err != nil {
		t.Fatal(err)
	}
	_, err := f.admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "bad", Name: "B", HomeRegion: "us-east", SigningAlgorithm: 9}))
	wantCode(t, err, connect.CodeInvalidArgument, "signing_algorithm")
	h, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "rsa",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Owner"}))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := f.admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "rsa", IdentityId: h.Msg.Identity.Id, Name: "rs"}))
	if err != nil {
		t.Fatal(err)
	}
	rsTok := f.accessToken(t, "rsa", cl.Msg.ClientId, cl.Msg.ClientSecret, nil)
	edTok := f.accessToken(t, "acme", f.clientID, f.secret, nil)

	// Discovery lists only what exists.
	var disc map[string]any
	if err := json.Unmarshal(getJSON(t, f.url+"/t/rsa/.well-known/openid-configuration"), &disc); err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(disc["id_token_signing_alg_values_supported"]); string(got) != `["RS256"]` {
		t.Fatalf("id_token_signing_alg_values_supported %s, want [\"RS256\"]", got)
	}
	if got, _ := json.Marshal(disc["response_types_supported"]); string(got) != `["code"]` {
		t.Fatalf("response_types_supported %s, want [\"code\"] (the authorization-code flow only)", got)
	}
	if got, _ := json.Marshal(disc["code_challenge_methods_supported"]); string(got) != `["S256"]` {
		t.Fatalf("code_challenge_methods_supported %s, want [\"S256\"]", got)
	}
	for _, absent := range []string{"token_endpoint_auth_signing_alg_values_supported"} {
		if _, ok := disc[absent]; ok {
			t.Fatalf("discovery lists %s, which keyplane does not have", absent)
		}
	}
	if got, _ := json.Marshal(disc["token_endpoint_auth_methods_supported"]); string(got) != `["client_secret_basic","client_secret_post"]` {
		t.Fatalf("token_endpoint_auth_methods_supported %s", got)
	}

	// An RS256-only resource server: JWKS over HTTP, go-jose restricted to RS256.
	jwksURI, _ := disc["jwks_uri"].(string)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(getJSON(t, strings.Replace(jwksURI, "https://iam.test", f.url, 1)), &set); err != nil {
		t.Fatal(err)
	}
	rsOnly := []jose.SignatureAlgorithm{jose.RS256}
	parsed, err := jwt.ParseSigned(rsTok, rsOnly)
	if err != nil {
		t.Fatalf("RS256-only parse of the RS256 tenant's token: %v", err)
	}
	keys := set.Key(parsed.Headers[0].KeyID)
	if len(keys) != 1 || keys[0].Algorithm != "RS256" {
		t.Fatalf("kid %q in JWKS: %+v", parsed.Headers[0].KeyID, keys)
	}
	var claims jwt.Claims
	if err := parsed.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("verify with the JWKS RSA key: %v", err)
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: "https://iam.test/t/rsa", AnyAudience: jwt.Audience{"https://iam.test/t/rsa"}, Time: time.Now()}, time.Minute); err != nil {
		t.Fatalf("claims: %v", err)
	}
	if _, err := jwt.ParseSigned(edTok, rsOnly); err == nil {
		t.Fatal("the RS256-only verifier accepted an EdDSA token")
	}
	var hasEd bool
	for _, k := range set.Keys {
		hasEd = hasEd || k.Algorithm == "EdDSA"
	}
	if !hasEd {
		t.Fatal("JWKS lacks the region's EdDSA key")
	}

	// Alg confusion against keyplane: HS256 keyed with the published RSA public key.
	der, err := x509.MarshalPKIXPublicKey(keys[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	var payload map[string]any
	if err := parsed.UnsafeClaimsWithoutVerification(&payload); err != nil {
		t.Fatal(err)
	}
	hs, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: der},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader(jose.HeaderKey("kid"), keys[0].KeyID))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := jwt.Signed(hs).Claims(payload).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	v, err := f.auth.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "rsa", Token: forged}))
	if err != nil {
		t.Fatal(err)
	}
	wantInactive(t, v.Msg, "bad_algorithm")
	if got := postForm(t, f.url+"/t/rsa/oauth2/introspect", cl.Msg.ClientId, cl.Msg.ClientSecret, url.Values{"token": {forged}}); got.body["active"] != false {
		t.Fatalf("introspection of the alg-confused token: %v", got.body)
	}
	if v, err := f.auth.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "rsa", Token: rsTok})); err != nil || !v.Msg.Active {
		t.Fatalf("the genuine RS256 token: %v %v", v, err)
	}

	// Switching a tenant's algorithm takes effect on the next token.
	up, err := f.admin.UpdateTenant(ctx, connect.NewRequest(&keyplanev1.UpdateTenantRequest{Id: "acme", SigningAlgorithm: keyplanev1.SigningAlgorithm_SIGNING_ALGORITHM_RS256}))
	if err != nil || up.Msg.Tenant.SigningAlgorithm != keyplanev1.SigningAlgorithm_SIGNING_ALGORITHM_RS256 {
		t.Fatalf("update tenant: %v %v", up, err)
	}
	if _, err := jwt.ParseSigned(f.accessToken(t, "acme", f.clientID, f.secret, nil), rsOnly); err != nil {
		t.Fatalf("acme's token after switching to RS256: %v", err)
	}
	if v := f.validate(t, edTok); !v.Active {
		t.Fatalf("an EdDSA token issued before the switch: %v", v)
	}
}

// TestSecurityAPIKeyAllowLists — issue 12, finding 5, through the other door: an API
// key exchanged for a token could name any audience and any scope. It now gets
// permission_denied naming the field outside its lists (default: the tenant's issuer
// only, no scope); a key created with lists gets what they name, and a rotated key
// keeps them.
func TestSecurityAPIKeyAllowLists(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	exchange := func(key, audience, scope string) (*keyplanev1.TokenClaims, error) {
		r, err := f.auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "acme", ApiKey: key, Audience: audience, Scope: scope}))
		if err != nil {
			return nil, err
		}
		return f.validate(t, r.Msg.Token.AccessToken).Claims, nil
	}
	const other = "https://api.other.test"
	_, err := exchange(f.apiKey, other, "")
	wantCode(t, err, connect.CodePermissionDenied, `audience: audience "https://api.other.test" is not allowed for this API key`)
	_, err = exchange(f.apiKey, "", "docs.read")
	wantCode(t, err, connect.CodePermissionDenied, `scope: scope "docs.read" is not allowed for this API key`)
	if c, err := exchange(f.apiKey, "", ""); err != nil || !slices.Equal(c.GetAudience(), []string{f.issuer}) {
		t.Fatalf("default exchange: %v %v, want the issuer as audience", c, err)
	}

	_, err = f.admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: "acme", IdentityId: f.bot, Name: "bad",
		ExpireTime: timestamppb.New(time.Now().Add(time.Hour)), AllowedScopes: []string{"two words"}}))
	wantCode(t, err, connect.CodeInvalidArgument, "allowed_scopes")
	k, err := f.admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: "acme", IdentityId: f.bot, Name: "docs",
		ExpireTime: timestamppb.New(time.Now().Add(time.Hour)), AllowedAudiences: []string{other}, AllowedScopes: []string{"docs.read"}}))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := exchange(k.Msg.ApiKey, other, "docs.read"); err != nil || !slices.Equal(c.GetAudience(), []string{other}) || c.GetScope() != "docs.read" {
		t.Fatalf("exchange within the lists: %v %v", c, err)
	}
	_, err = exchange(k.Msg.ApiKey, other, "docs.read docs.write")
	wantCode(t, err, connect.CodePermissionDenied, `scope "docs.write"`)
	rot, err := f.admin.RotateAPIKey(ctx, connect.NewRequest(&keyplanev1.RotateAPIKeyRequest{TenantId: "acme", CredentialId: k.Msg.Credential.Id,
		ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exchange(rot.Msg.ApiKey, other, "docs.read"); err != nil {
		t.Fatalf("the rotated key lost its lists: %v", err)
	}
	_, err = exchange(rot.Msg.ApiKey, "https://api.third.test", "")
	wantCode(t, err, connect.CodePermissionDenied, "audience")
}
