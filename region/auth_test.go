package region_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/region/kek"
	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// fixture is a tenant with a human owner, a service account with an API key and an
// OAuth client, served by one node.
type fixture struct {
	url, tenant, issuer string
	admin               keyplanev1connect.AdminServiceClient
	auth                keyplanev1connect.AuthServiceClient
	owner, bot          string
	apiKey, apiKeyCred  string
	clientID, secret    string
	store               *schema.Store
	kek                 *kek.KEK
	clock               *testClock // the node's clock
	tenantAdmin         string     // the first tenant admin CreateTenant made
}

// testClock is a node clock a test moves by hand: the wall clock plus an offset
// (so the database's now() and the node's stay comparable).
type testClock struct{ offset atomic.Int64 }

func (c *testClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *testClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

func testKEK(t *testing.T) *kek.KEK {
	t.Helper()
	text, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	k, err := kek.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func authConfig(k *kek.KEK, nodeID string) region.Config {
	c := nodeConfig()
	c.NodeID = nodeID
	c.KEK = k
	c.IssuerBase = "https://iam.test"
	return c
}

func newFixture(t *testing.T) *fixture { return newFixtureWith(t, nil) }

// newFixtureWith is newFixture with the node's configuration changed by configure.
func newFixtureWith(t *testing.T, configure func(*region.Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{tenant: "acme", store: schematest.NewStore(t, "us-east"), kek: testKEK(t), clock: &testClock{}}
	cfg := authConfig(f.kek, "us-east-1")
	cfg.Now = f.clock.Now
	if configure != nil {
		configure(&cfg)
	}
	f.url = testNode(t, f.store, cfg)
	f.issuer = "https://iam.test/t/acme"
	f.admin = adminClient(f.url, secret)
	f.auth = keyplanev1connect.NewAuthServiceClient(http.DefaultClient, f.url)
	tr, err := f.admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "Acme", HomeRegion: "us-east"}))
	if err != nil {
		t.Fatal(err)
	}
	f.tenantAdmin = tr.Msg.AdminIdentityId
	h, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Owner"}))
	if err != nil {
		t.Fatal(err)
	}
	f.owner = h.Msg.Identity.Id
	sa, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, DisplayName: "bot", OwnerId: f.owner, Purpose: "tests",
		ExpireTime: timestamppb.New(time.Now().Add(24 * time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	f.bot = sa.Msg.Identity.Id
	k, err := f.admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: "acme", IdentityId: f.bot,
		Name: "ci", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	f.apiKey, f.apiKeyCred = k.Msg.ApiKey, k.Msg.Credential.Id
	cl, err := f.admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: f.bot, Name: "svc",
		AllowedScopes: []string{"docs.read"}}))
	if err != nil {
		t.Fatal(err)
	}
	f.clientID, f.secret = cl.Msg.ClientId, cl.Msg.ClientSecret
	return f
}

func (f *fixture) exchange(t *testing.T) string {
	t.Helper()
	resp, err := f.auth.ExchangeAPIKey(context.Background(), connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: f.tenant, ApiKey: f.apiKey}))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return resp.Msg.Token.AccessToken
}

func (f *fixture) validate(t *testing.T, tok string) *keyplanev1.ValidateTokenResponse {
	t.Helper()
	resp, err := f.auth.ValidateToken(context.Background(), connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: f.tenant, Token: tok}))
	if err != nil {
		t.Fatalf("validate: %v", err)
	}
	return resp.Msg
}

func wantInactive(t *testing.T, v *keyplanev1.ValidateTokenResponse, reason string) {
	t.Helper()
	if v.Active || v.Reason != reason {
		t.Fatalf("got active=%v reason=%q, want inactive %q", v.Active, v.Reason, reason)
	}
}

func TestExchangeAndValidate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tok := f.exchange(t)
	v := f.validate(t, tok)
	if !v.Active || v.Claims.Subject != f.bot || v.Claims.TenantId != "acme" || v.Claims.Issuer != f.issuer ||
		v.Claims.Region != "us-east" || v.Claims.SessionId == "" || v.Claims.ClientId == "" {
		t.Fatalf("validate: %+v", v)
	}
	ctx := context.Background()
	for _, tc := range []struct{ name, tenant, token, aud, reason string }{
		{"garbage", "acme", "not-a-jwt", "", "malformed"},
		{"tampered", "acme", tok[:len(tok)-4] + "AAAA", "", "bad_signature"},
		{"other audience", "acme", tok, "https://elsewhere", "wrong_audience"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := f.auth.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: tc.tenant, Token: tc.token, Audience: tc.aud}))
			if err != nil {
				t.Fatal(err)
			}
			wantInactive(t, resp.Msg, tc.reason)
		})
	}
	// A token of tenant acme presented for tenant "other".
	if _, err := f.admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "other", Name: "O", HomeRegion: "us-east"})); err != nil {
		t.Fatal(err)
	}
	resp, err := f.auth.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "other", Token: tok}))
	if err != nil {
		t.Fatal(err)
	}
	wantInactive(t, resp.Msg, "wrong_tenant")

	_, err = f.auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "acme", ApiKey: flipChar(f.apiKey, len(f.apiKey)-10)}))
	wantCode(t, err, connect.CodeUnauthenticated, "api_key")
	_, err = f.auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "other", ApiKey: f.apiKey}))
	wantCode(t, err, connect.CodeUnauthenticated, "api_key")
	_, err = f.auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "acme", ApiKey: "hunter2"}))
	wantCode(t, err, connect.CodeInvalidArgument, "api_key")
}

func TestRevocationPaths(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)

	tok := f.exchange(t)
	if _, err := f.auth.RevokeToken(ctx, connect.NewRequest(&keyplanev1.RevokeTokenRequest{TenantId: "acme", Token: tok})); err != nil {
		t.Fatal(err)
	}
	wantInactive(t, f.validate(t, tok), "session_revoked")

	tok = f.exchange(t)
	other := f.exchange(t)
	// The identity revokes its own tokens with one of them.
	req := connect.NewRequest(&keyplanev1.RevokeIdentityTokensRequest{TenantId: "acme", IdentityId: f.bot})
	req.Header().Set("Authorization", "Bearer "+tok)
	if _, err := f.auth.RevokeIdentityTokens(ctx, req); err != nil {
		t.Fatal(err)
	}
	wantInactive(t, f.validate(t, tok), "revoked")
	wantInactive(t, f.validate(t, other), "revoked")
	if fresh := f.exchange(t); !f.validate(t, fresh).Active {
		t.Fatal("a token issued after the watermark must be active")
	}

	// Only the operator or the identity itself may revoke an identity's tokens.
	req = connect.NewRequest(&keyplanev1.RevokeIdentityTokensRequest{TenantId: "acme", IdentityId: f.owner})
	req.Header().Set("Authorization", "Bearer "+f.exchange(t))
	_, err := f.auth.RevokeIdentityTokens(ctx, req)
	wantCode(t, err, connect.CodePermissionDenied, "identity_id")
	req = connect.NewRequest(&keyplanev1.RevokeIdentityTokensRequest{TenantId: "acme", IdentityId: f.owner})
	_, err = f.auth.RevokeIdentityTokens(ctx, req)
	wantCode(t, err, connect.CodeUnauthenticated, "credentials")

	tok = f.exchange(t)
	if _, err := f.admin.DisableIdentity(ctx, connect.NewRequest(&keyplanev1.DisableIdentityRequest{TenantId: "acme", Id: f.bot})); err != nil {
		t.Fatal(err)
	}
	v := f.validate(t, tok)
	if v.Active || (v.Reason != "identity_disabled" && v.Reason != "revoked") {
		t.Fatalf("after disable: %+v", v)
	}
	_, err = f.auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "acme", ApiKey: f.apiKey}))
	wantCode(t, err, connect.CodeUnauthenticated, "api_key")
}

func TestAPIKeyRotationAndRevocation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	rot, err := f.admin.RotateAPIKey(ctx, connect.NewRequest(&keyplanev1.RotateAPIKeyRequest{TenantId: "acme", CredentialId: f.apiKeyCred,
		ExpireTime: timestamppb.New(time.Now().Add(2 * time.Hour)), GracePeriod: durationpb.New(time.Minute)}))
	if err != nil {
		t.Fatal(err)
	}
	old := f.apiKey
	f.exchange(t) // the old key still works during the grace period
	f.apiKey = rot.Msg.ApiKey
	f.exchange(t)
	if _, err := f.admin.RevokeCredential(ctx, connect.NewRequest(&keyplanev1.RevokeCredentialRequest{TenantId: "acme", CredentialId: f.apiKeyCred})); err != nil {
		t.Fatal(err)
	}
	_, err = f.auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "acme", ApiKey: old}))
	wantCode(t, err, connect.CodeUnauthenticated, "api_key")
	f.exchange(t) // the new key is unaffected

	// Policy: an API key must expire, within the tenant's maximum lifetime, and only
	// non-humans get one.
	for _, tc := range []struct {
		name, identity string
		exp            *timestamppb.Timestamp
		field          string
	}{
		{"no expiry", f.bot, nil, "expire_time"},
		{"beyond the cap", f.bot, timestamppb.New(time.Now().Add(400 * 24 * time.Hour)), "expire_time"},
		{"human", f.owner, timestamppb.New(time.Now().Add(time.Hour)), "identity_id"},
	} {
		_, err := f.admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: "acme", IdentityId: tc.identity, ExpireTime: tc.exp}))
		wantCode(t, err, connect.CodeInvalidArgument, tc.field)
	}
	creds, err := f.admin.ListCredentials(ctx, connect.NewRequest(&keyplanev1.ListCredentialsRequest{TenantId: "acme", IdentityId: f.bot}))
	if err != nil || len(creds.Msg.Credentials) != 3 {
		t.Fatalf("credentials: %v %v", creds, err)
	}
	evs, err := f.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, e := range evs.Msg.Events {
		counts[e.Action]++
	}
	if counts["credential.rotate"] != 1 || counts["credential.revoke"] != 1 || counts["token.issue"] != 3 || counts["credential.create"] != 3 { // 3: the tenant admin's, made with the tenant
		t.Fatalf("audit counts: %v", counts)
	}
}

// TestOAuthInterop uses standard clients: golang.org/x/oauth2's client credentials
// flow gets a token, go-jose verifies it with the keys found through OIDC discovery,
// and RFC 7662 / RFC 7009 calls behave.
func TestOAuthInterop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	base := f.url + "/t/acme"
	var disc struct {
		Issuer, JWKSURI, TokenEndpoint, IntrospectionEndpoint, RevocationEndpoint string
	}
	raw := getJSON(t, base+"/.well-known/openid-configuration")
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	disc.Issuer, _ = m["issuer"].(string)
	disc.JWKSURI, _ = m["jwks_uri"].(string)
	disc.TokenEndpoint, _ = m["token_endpoint"].(string)
	if disc.Issuer != f.issuer || !strings.HasSuffix(disc.JWKSURI, "/t/acme/.well-known/jwks.json") || !strings.HasSuffix(disc.TokenEndpoint, "/oauth2/token") {
		t.Fatalf("discovery: %s", raw)
	}
	// The issuer base is https://iam.test; the test reaches the same paths on the node.
	local := func(u string) string { return strings.Replace(u, "https://iam.test", f.url, 1) }

	for _, style := range []struct {
		name  string
		style int
	}{{"basic", 2}, {"post", 1}} {
		t.Run(style.name, func(t *testing.T) {
			cc := clientcredentials.Config{ClientID: f.clientID, ClientSecret: f.secret, TokenURL: local(disc.TokenEndpoint), Scopes: []string{"docs.read"}}
			cc.AuthStyle = oauth2.AuthStyle(style.style)
			tok, err := cc.Token(ctx)
			if err != nil {
				t.Fatalf("client credentials: %v", err)
			}
			if tok.TokenType != "Bearer" || tok.Expiry.Before(time.Now().Add(10*time.Minute)) {
				t.Fatalf("token: %+v", tok)
			}
			var set jose.JSONWebKeySet
			if err := json.Unmarshal(getJSON(t, local(disc.JWKSURI)), &set); err != nil {
				t.Fatal(err)
			}
			parsed, err := jwt.ParseSigned(tok.AccessToken, []jose.SignatureAlgorithm{jose.EdDSA})
			if err != nil {
				t.Fatal(err)
			}
			if typ, _ := parsed.Headers[0].ExtraHeaders["typ"].(string); typ != "at+jwt" {
				t.Fatalf("typ header %q, want at+jwt", typ)
			}
			keys := set.Key(parsed.Headers[0].KeyID)
			if len(keys) != 1 {
				t.Fatalf("kid %q not in JWKS", parsed.Headers[0].KeyID)
			}
			var claims jwt.Claims
			var extra struct {
				ClientID string `json:"client_id"`
				Scope    string `json:"scope"`
			}
			if err := parsed.Claims(keys[0].Key, &claims, &extra); err != nil {
				t.Fatalf("verify with JWKS key: %v", err)
			}
			if err := claims.Validate(jwt.Expected{Issuer: f.issuer, Subject: f.bot, Time: time.Now()}); err != nil {
				t.Fatalf("claims: %v", err)
			}
			if extra.ClientID != f.clientID || extra.Scope != "docs.read" {
				t.Fatalf("client_id %q scope %q", extra.ClientID, extra.Scope)
			}

			intro := postForm(t, base+"/oauth2/introspect", f.clientID, f.secret, url.Values{"token": {tok.AccessToken}})
			if intro.status != 200 || intro.body["active"] != true || intro.body["sub"] != f.bot || intro.body["client_id"] != f.clientID {
				t.Fatalf("introspect: %d %v", intro.status, intro.body)
			}
			rev := postForm(t, base+"/oauth2/revoke", f.clientID, f.secret, url.Values{"token": {tok.AccessToken}, "token_type_hint": {"access_token"}})
			if rev.status != 200 {
				t.Fatalf("revoke: %d %v", rev.status, rev.body)
			}
			intro = postForm(t, base+"/oauth2/introspect", f.clientID, f.secret, url.Values{"token": {tok.AccessToken}})
			if intro.status != 200 || intro.body["active"] != false || len(intro.body) != 1 {
				t.Fatalf("introspect after revoke: %d %v", intro.status, intro.body)
			}
		})
	}

	for _, tc := range []struct {
		name, path, id, secret string
		form                   url.Values
		status                 int
		code                   string
	}{
		{"wrong secret", "/oauth2/token", f.clientID, flipChar(f.secret, len(f.secret)-10), url.Values{"grant_type": {"client_credentials"}}, 401, "invalid_client"},
		{"unknown client", "/oauth2/token", "nobody", f.secret, url.Values{"grant_type": {"client_credentials"}}, 401, "invalid_client"},
		{"no grant type", "/oauth2/token", f.clientID, f.secret, url.Values{}, 400, "invalid_request"},
		{"password grant", "/oauth2/token", f.clientID, f.secret, url.Values{"grant_type": {"password"}}, 400, "unsupported_grant_type"},
		{"bad refresh token", "/oauth2/token", f.clientID, f.secret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"kpr_x"}}, 400, "invalid_grant"},
		{"introspect without token", "/oauth2/introspect", f.clientID, f.secret, url.Values{}, 400, "invalid_request"},
		{"introspect unauthenticated", "/oauth2/introspect", "", "", url.Values{"token": {"x"}}, 401, "invalid_client"},
		{"revoke garbage is fine", "/oauth2/revoke", f.clientID, f.secret, url.Values{"token": {"garbage"}}, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := postForm(t, base+tc.path, tc.id, tc.secret, tc.form)
			if got.status != tc.status || (tc.code != "" && got.body["error"] != tc.code) {
				t.Fatalf("got %d %v, want %d %s", got.status, got.body, tc.status, tc.code)
			}
		})
	}
	if got := postForm(t, f.url+"/t/nobody/oauth2/token", f.clientID, f.secret, url.Values{"grant_type": {"client_credentials"}}); got.status != 404 {
		t.Fatalf("unknown tenant: %d %v", got.status, got.body)
	}
}

type formResult struct {
	status int
	body   map[string]any
}

func postForm(t *testing.T, u, id, secret string, form url.Values) formResult {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if id != "" {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := formResult{status: resp.StatusCode, body: map[string]any{}}
	_ = json.Unmarshal(b, &out.body)
	return out
}

func getJSON(t *testing.T, u string) []byte {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	return b
}

// flipChar changes the character at i to another of the same alphabet, keeping the
// secret well-formed but wrong.
func flipChar(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}
