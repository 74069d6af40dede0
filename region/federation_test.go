package region_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// extIssuer is an external OIDC issuer run by a test on loopback HTTP: discovery,
// JWKS (fetches counted) and a signing key. It stands in for a CI system's OIDC
// issuer or a Kubernetes cluster's service-account issuer.
type extIssuer struct {
	srv         *httptest.Server
	url         string
	alg         jose.SignatureAlgorithm
	key         crypto.Signer
	kid         string
	jwksFetches atomic.Int64
}

func newExtIssuer(t *testing.T, alg jose.SignatureAlgorithm) *extIssuer {
	t.Helper()
	is := &extIssuer{alg: alg, kid: "key-1"}
	var err error
	switch alg {
	case jose.RS256:
		is.key, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		is.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		t.Fatalf("alg %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": is.url, "jwks_uri": is.url + "/keys",
			"id_token_signing_alg_values_supported": []string{string(alg)}, "response_types_supported": []string{"id_token"},
			"subject_types_supported": []string{"public"}})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, _ *http.Request) {
		is.jwksFetches.Add(1)
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: is.key.Public(), KeyID: is.kid, Algorithm: string(alg), Use: "sig"}}})
	})
	is.srv = httptest.NewServer(mux)
	t.Cleanup(is.srv.Close)
	is.url = is.srv.URL
	return is
}

// sign signs claims with the issuer's key (kid: the issuer's unless given).
func (is *extIssuer) sign(t *testing.T, claims map[string]any, kid string) string {
	t.Helper()
	if kid == "" {
		kid = is.kid
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: is.alg, Key: jose.JSONWebKey{Key: is.key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// ciClaims are GitHub-Actions-like claims of a workflow run on main of acme/api.
func (is *extIssuer) ciClaims(aud string) map[string]any {
	now := time.Now()
	return map[string]any{"iss": is.url, "aud": aud, "sub": "repo:acme/api:ref:refs/heads/main", "jti": uuid.NewString(),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"repository": "acme/api", "ref": "refs/heads/main", "workflow": "deploy", "actor": "octocat"}
}

// k8sClaims are projected service-account token claims of prod/deployer.
func (is *extIssuer) k8sClaims(aud string) map[string]any {
	now := time.Now()
	return map[string]any{"iss": is.url, "aud": []string{aud}, "sub": "system:serviceaccount:prod:deployer", "jti": uuid.NewString(),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
		"kubernetes.io": map[string]any{"namespace": "prod", "serviceaccount": map[string]any{"name": "deployer", "uid": uuid.NewString()}}}
}

// fedFixture is a tenant with a workload identity federated through two trust
// policies: one for a CI issuer, one for a Kubernetes issuer.
type fedFixture struct {
	*fixture
	fed       keyplanev1connect.FederationServiceClient
	ci, k8s   *extIssuer
	workload  string // the federated identity
	ciPolicy  *keyplanev1.TrustPolicy
	k8sPolicy *keyplanev1.TrustPolicy
	ciAud     string
	k8sAud    string
	tokenURL  string
}

func newFedFixture(t *testing.T) *fedFixture {
	t.Helper()
	ctx := context.Background()
	f := &fedFixture{fixture: newFixture(t), ci: newExtIssuer(t, jose.RS256), k8s: newExtIssuer(t, jose.ES256),
		ciAud: "https://iam.test/t/acme", k8sAud: "keyplane"}
	f.fed = federationClient(f.url, secret)
	f.tokenURL = f.url + "/t/acme/oauth2/token"
	w, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_WORKLOAD, DisplayName: "deployer", OwnerId: f.owner, Purpose: "deploys",
		ExpireTime: timestamppb.New(time.Now().Add(24 * time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	f.workload = w.Msg.Identity.Id
	f.ciPolicy = f.createPolicy(t, &keyplanev1.TrustPolicy{Name: "ci-main", Issuer: f.ci.url, Audiences: []string{f.ciAud},
		Condition: `claims.repository == "acme/api" && claims.ref == "refs/heads/main"`, IdentityId: f.workload,
		MaxTokenAge: durationpb.New(10 * time.Minute), AllowedScopes: []string{"deploy"}})
	f.k8sPolicy = f.createPolicy(t, &keyplanev1.TrustPolicy{Name: "k8s-prod", Issuer: f.k8s.url, Audiences: []string{f.k8sAud},
		Condition:  `claims["kubernetes.io"].namespace == "prod" && claims["kubernetes.io"].serviceaccount.name == "deployer"`,
		IdentityId: f.workload, Algorithms: []string{"ES256"}})
	return f
}

func federationClient(url, token string) keyplanev1connect.FederationServiceClient {
	return keyplanev1connect.NewFederationServiceClient(http.DefaultClient, url, connect.WithInterceptors(
		connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+token)
				return next(ctx, req)
			}
		})))
}

func (f *fedFixture) createPolicy(t *testing.T, p *keyplanev1.TrustPolicy) *keyplanev1.TrustPolicy {
	t.Helper()
	resp, err := f.fed.CreateTrustPolicy(context.Background(), connect.NewRequest(&keyplanev1.CreateTrustPolicyRequest{TenantId: "acme", Policy: p}))
	if err != nil {
		t.Fatalf("create trust policy %s: %v", p.Name, err)
	}
	return resp.Msg.Policy
}

// exchangeForm is a token-exchange request for subject token tok.
func exchangeForm(tok string) url.Values {
	return url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {tok},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}}
}

func TestFederationExchangeCIAndKubernetes(t *testing.T) {
	t.Parallel()
	f := newFedFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		iss      *extIssuer
		claims   map[string]any
		extra    url.Values
		wantSub  string
		wantScop string
	}{
		{"github-actions-like CI", f.ci, f.ci.ciClaims(f.ciAud), url.Values{"scope": {"deploy"}}, "repo:acme/api:ref:refs/heads/main", "deploy"},
		{"kubernetes service account", f.k8s, f.k8s.k8sClaims(f.k8sAud), url.Values{"requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:id_token"}}, "system:serviceaccount:prod:deployer", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			form := exchangeForm(tc.iss.sign(t, tc.claims, ""))
			for k, v := range tc.extra {
				form[k] = v
			}
			// Plain net/http, no client authentication: the subject token is the credential.
			got := postForm(t, f.tokenURL, "", "", form)
			if got.status != http.StatusOK {
				t.Fatalf("exchange: %d %v", got.status, got.body)
			}
			if got.body["issued_token_type"] != "urn:ietf:params:oauth:token-type:access_token" || got.body["token_type"] != "Bearer" {
				t.Fatalf("response %v: want RFC 8693 §2.2.1 fields", got.body)
			}
			if exp, _ := got.body["expires_in"].(float64); exp <= 0 || exp > 3600 {
				t.Fatalf("expires_in %v: want a short lifetime", got.body["expires_in"])
			}
			if got.body["scope"] != nil && got.body["scope"] != tc.wantScop || tc.wantScop != "" && got.body["scope"] != tc.wantScop {
				t.Fatalf("scope %v, want %q", got.body["scope"], tc.wantScop)
			}
			tok := got.body["access_token"].(string)
			// keyplane's own validation.
			v := f.validate(t, tok)
			if !v.Active || v.Claims.GetSubject() != f.workload {
				t.Fatalf("validate: active=%v reason=%q sub=%q, want active for the workload %s", v.Active, v.Reason, v.Claims.GetSubject(), f.workload)
			}
			// A standard JOSE library against keyplane's JWKS: signature, and the act claim.
			var set jose.JSONWebKeySet
			if err := json.Unmarshal(getJSON(t, f.url+"/t/acme/.well-known/jwks.json"), &set); err != nil {
				t.Fatal(err)
			}
			parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.EdDSA, jose.RS256, jose.ES256})
			if err != nil {
				t.Fatal(err)
			}
			var std jwt.Claims
			var extra struct {
				Act struct {
					Sub string `json:"sub"`
					Iss string `json:"iss"`
				} `json:"act"`
			}
			if err := parsed.Claims(set, &std, &extra); err != nil {
				t.Fatalf("verify with keyplane's JWKS: %v", err)
			}
			if std.Subject != f.workload || extra.Act.Sub != tc.wantSub || extra.Act.Iss != tc.iss.url {
				t.Fatalf("claims sub=%q act=%+v, want sub %s act {%s %s}", std.Subject, extra.Act, f.workload, tc.wantSub, tc.iss.url)
			}
		})
	}
	// Both exchanges were audited.
	ev, err := f.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", Action: "federation.exchange"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Msg.Events) != 2 {
		t.Fatalf("got %d federation.exchange events, want 2", len(ev.Msg.Events))
	}
	for _, e := range ev.Msg.Events {
		after := e.After.AsMap()
		if after["identity_id"] != f.workload || after["external_subject"] == "" || after["trust_policy_id"] == "" {
			t.Fatalf("audit event %v: want the identity, the external subject and the policy", after)
		}
	}
	// Discovery lists the grant.
	var disc struct {
		Grants []string `json:"grant_types_supported"`
	}
	if err := json.Unmarshal(getJSON(t, f.url+"/t/acme/.well-known/openid-configuration"), &disc); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(disc.Grants, " "), "urn:ietf:params:oauth:grant-type:token-exchange") {
		t.Fatalf("discovery grants %v lack token exchange", disc.Grants)
	}
}

// TestFederationNoStaticSecrets: a federated identity gets no API key or client secret,
// and an identity holding one cannot be federated (the error names them).
func TestFederationNoStaticSecrets(t *testing.T) {
	t.Parallel()
	f := newFedFixture(t)
	ctx := context.Background()
	_, err := f.admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: "acme", IdentityId: f.workload,
		Name: "static", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}))
	wantCode(t, err, connect.CodeFailedPrecondition, "ci-main")
	_, err = f.admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: f.workload, Name: "static"}))
	wantCode(t, err, connect.CodeFailedPrecondition, "is federated")
	// f.bot holds an API key and a client secret.
	_, err = f.fed.CreateTrustPolicy(ctx, connect.NewRequest(&keyplanev1.CreateTrustPolicyRequest{TenantId: "acme", Policy: &keyplanev1.TrustPolicy{
		Name: "bot", Issuer: f.ci.url, Audiences: []string{"x"}, Condition: "true", IdentityId: f.bot}}))
	wantCode(t, err, connect.CodeFailedPrecondition, f.apiKeyCred)
	// A human is never federated.
	_, err = f.fed.CreateTrustPolicy(ctx, connect.NewRequest(&keyplanev1.CreateTrustPolicyRequest{TenantId: "acme", Policy: &keyplanev1.TrustPolicy{
		Name: "human", Issuer: f.ci.url, Audiences: []string{"x"}, Condition: "true", IdentityId: f.owner}}))
	wantCode(t, err, connect.CodeInvalidArgument, "identity_id")
}

func TestFederationExchangeRefusals(t *testing.T) {
	t.Parallel()
	f := newFedFixture(t)
	ctx := context.Background()
	untrusted := newExtIssuer(t, jose.RS256)
	old := f.ci.ciClaims(f.ciAud)
	old["iat"] = time.Now().Add(-time.Hour).Unix()
	expired := f.ci.ciClaims(f.ciAud)
	expired["iat"], expired["exp"] = time.Now().Add(-3*time.Minute).Unix(), time.Now().Add(-time.Minute).Unix()
	wrongRef := f.ci.ciClaims(f.ciAud)
	wrongRef["ref"] = "refs/heads/feature"
	otherNS := f.k8s.k8sClaims(f.k8sAud)
	otherNS["kubernetes.io"] = map[string]any{"namespace": "dev", "serviceaccount": map[string]any{"name": "deployer"}}
	noJTI := f.ci.ciClaims(f.ciAud)
	delete(noJTI, "jti")
	replayed := f.ci.sign(t, f.ci.ciClaims(f.ciAud), "")
	if got := postForm(t, f.tokenURL, "", "", exchangeForm(replayed)); got.status != http.StatusOK {
		t.Fatalf("first exchange: %d %v", got.status, got.body)
	}
	// HS256 signed with the issuer's public key as the HMAC secret (the classic
	// algorithm-confusion attack), and an unsigned token.
	pub, err := x509.MarshalPKIXPublicKey(f.ci.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	hs, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pub}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", f.ci.kid))
	if err != nil {
		t.Fatal(err)
	}
	hsTok, err := jwt.Signed(hs).Claims(f.ci.ciClaims(f.ciAud)).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(f.ci.ciClaims(f.ciAud))
	noneTok := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + base64.RawURLEncoding.EncodeToString(payload) + "."

	for _, tc := range []struct {
		name     string
		form     url.Values
		wantErr  string
		wantRule string
	}{
		{"untrusted issuer", exchangeForm(untrusted.sign(t, untrusted.ciClaims(f.ciAud), "")), "invalid_grant", "untrusted_issuer"},
		{"wrong audience", exchangeForm(f.ci.sign(t, f.ci.ciClaims("https://elsewhere.test"), "")), "invalid_grant", "audience"},
		{"expired", exchangeForm(f.ci.sign(t, expired, "")), "invalid_grant", "expired"},
		{"too old (iat)", exchangeForm(f.ci.sign(t, old, "")), "invalid_grant", "too_old"},
		{"replayed jti", exchangeForm(replayed), "invalid_grant", "replay"},
		{"no jti", exchangeForm(f.ci.sign(t, noJTI, "")), "invalid_grant", "jti_missing"},
		{"HS256 with the public key as secret", exchangeForm(hsTok), "invalid_grant", "algorithm"},
		{"alg none", exchangeForm(noneTok), "invalid_grant", "algorithm"},
		{"RS256 where the policy allows only ES256", exchangeForm(f.ci.sign(t, map[string]any{"iss": f.k8s.url, "aud": f.k8sAud,
			"sub": "x", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix()}, "")), "invalid_grant", "algorithm"},
		{"CI condition false", exchangeForm(f.ci.sign(t, wrongRef, "")), "invalid_grant", "condition"},
		{"kubernetes condition false", exchangeForm(f.k8s.sign(t, otherNS, "")), "invalid_grant", "condition"},
		{"signed by another key", exchangeForm(untrusted.sign(t, f.ci.ciClaims(f.ciAud), f.ci.kid)), "invalid_grant", "signature"},
		{"scope outside the policy", func() url.Values {
			v := exchangeForm(f.ci.sign(t, f.ci.ciClaims(f.ciAud), ""))
			v.Set("scope", "admin")
			return v
		}(), "invalid_scope", "target"},
		{"audience outside the policy", func() url.Values {
			v := exchangeForm(f.ci.sign(t, f.ci.ciClaims(f.ciAud), ""))
			v.Set("audience", "https://api.other.test")
			return v
		}(), "invalid_target", "target"},
		{"missing subject_token_type", func() url.Values {
			v := exchangeForm(f.ci.sign(t, f.ci.ciClaims(f.ciAud), ""))
			v.Del("subject_token_type")
			return v
		}(), "invalid_request", "request"},
		{"unsupported requested_token_type", func() url.Values {
			v := exchangeForm(f.ci.sign(t, f.ci.ciClaims(f.ciAud), ""))
			v.Set("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token")
			return v
		}(), "invalid_request", "request"},
		{"not a JWT", exchangeForm("abc.def"), "invalid_request", "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := postForm(t, f.tokenURL, "", "", tc.form)
			desc, _ := got.body["error_description"].(string)
			if got.status != http.StatusBadRequest || got.body["error"] != tc.wantErr || !strings.HasPrefix(desc, tc.wantRule+":") {
				t.Fatalf("got %d %v, want 400 %s naming rule %s", got.status, got.body, tc.wantErr, tc.wantRule)
			}
			if strings.Contains(desc, tc.form.Get("subject_token")) && len(tc.form.Get("subject_token")) > 20 {
				t.Fatalf("description %q repeats the token", desc)
			}
		})
	}
	// Every refusal is audited with its rule, never with the token.
	ev, err := f.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme",
		Action: "federation.exchange_refused", PageSize: 100}))
	if err != nil {
		t.Fatal(err)
	}
	rules := map[string]int{}
	for _, e := range ev.Msg.Events {
		after := e.After.AsMap()
		rules[after["rule"].(string)]++
		b, _ := json.Marshal(after)
		if strings.Contains(string(b), replayed) {
			t.Fatalf("audit event %s holds the token", b)
		}
	}
	want := map[string]int{"untrusted_issuer": 1, "audience": 1, "expired": 1, "too_old": 1, "replay": 1, "jti_missing": 1, "algorithm": 3,
		"condition": 2, "signature": 1, "target": 2, "request": 2, "malformed": 1}
	for rule, n := range want {
		if rules[rule] != n {
			t.Errorf("%d refusals audited with rule %s, want %d (all: %v)", rules[rule], rule, n, rules)
		}
	}
}

// TestFederationUnknownKidFlood: tokens naming unknown kids make keyplane refetch the
// issuer's JWKS only as often as the per-issuer rate limit allows, and a good token
// still verifies from the cached keys afterwards.
func TestFederationUnknownKidFlood(t *testing.T) {
	t.Parallel()
	f := newFedFixture(t)
	first := postForm(t, f.tokenURL, "", "", exchangeForm(f.ci.sign(t, f.ci.ciClaims(f.ciAud), "")))
	if first.status != http.StatusOK {
		t.Fatalf("first exchange: %d %v", first.status, first.body)
	}
	before := f.ci.jwksFetches.Load()
	const flood = 40
	for i := range flood {
		got := postForm(t, f.tokenURL, "", "", exchangeForm(f.ci.sign(t, f.ci.ciClaims(f.ciAud), "unknown-"+uuid.NewString())))
		if got.status != http.StatusBadRequest || got.body["error"] != "invalid_grant" {
			t.Fatalf("flood token %d: %d %v, want invalid_grant", i, got.status, got.body)
		}
	}
	// The burst is 4 fetches (discovery and the first JWKS fetch took some of it);
	// the refill is one per 10 seconds, so at most a few more can happen while the flood runs.
	if fetched := f.ci.jwksFetches.Load() - before; fetched > 6 {
		t.Fatalf("%d unknown kids made %d JWKS fetches: the rate limit should bound them", flood, fetched)
	} else if fetched == flood {
		t.Fatal("no rate limit")
	}
	if got := postForm(t, f.tokenURL, "", "", exchangeForm(f.ci.sign(t, f.ci.ciClaims(f.ciAud), ""))); got.status != http.StatusOK {
		t.Fatalf("good token after the flood: %d %v", got.status, got.body)
	}
}

func TestTrustPolicyBadInput(t *testing.T) {
	t.Parallel()
	f := newFedFixture(t)
	ctx := context.Background()
	valid := func() *keyplanev1.TrustPolicy {
		return &keyplanev1.TrustPolicy{Name: "p", Issuer: "https://token.actions.githubusercontent.com", Audiences: []string{"keyplane"},
			Condition: "true", IdentityId: f.workload}
	}
	for _, tc := range []struct {
		name   string
		edit   func(p *keyplanev1.TrustPolicy)
		code   connect.Code
		reason string
	}{
		{"http issuer off loopback", func(p *keyplanev1.TrustPolicy) { p.Issuer = "http://ci.example.com" }, connect.CodeInvalidArgument, "issuer"},
		{"issuer with a query", func(p *keyplanev1.TrustPolicy) { p.Issuer = "https://ci.example.com/?x=1" }, connect.CodeInvalidArgument, "issuer"},
		{"no audience", func(p *keyplanev1.TrustPolicy) { p.Audiences = nil }, connect.CodeInvalidArgument, "audiences"},
		{"HS256", func(p *keyplanev1.TrustPolicy) { p.Algorithms = []string{"HS256"} }, connect.CodeInvalidArgument, "algorithms"},
		{"none", func(p *keyplanev1.TrustPolicy) { p.Algorithms = []string{"none"} }, connect.CodeInvalidArgument, "algorithms"},
		{"condition not bool", func(p *keyplanev1.TrustPolicy) { p.Condition = "claims.repository" }, connect.CodeInvalidArgument, "policy.condition"},
		{"condition syntax", func(p *keyplanev1.TrustPolicy) { p.Condition = "claims.repository ==" }, connect.CodeInvalidArgument, "policy.condition"},
		{"empty condition", func(p *keyplanev1.TrustPolicy) { p.Condition = "" }, connect.CodeInvalidArgument, "policy.condition"},
		{"max age too long", func(p *keyplanev1.TrustPolicy) { p.MaxTokenAge = durationpb.New(48 * time.Hour) }, connect.CodeInvalidArgument, "max_token_age"},
		{"negative max age", func(p *keyplanev1.TrustPolicy) { p.MaxTokenAge = durationpb.New(-time.Second) }, connect.CodeInvalidArgument, "max_token_age"},
		{"identity not a UUID", func(p *keyplanev1.TrustPolicy) { p.IdentityId = "bot" }, connect.CodeInvalidArgument, "identity_id"},
		{"unknown identity", func(p *keyplanev1.TrustPolicy) { p.IdentityId = uuid.NewString() }, connect.CodeInvalidArgument, "identity_id"},
		{"duplicate name", func(p *keyplanev1.TrustPolicy) { p.Name = "ci-main" }, connect.CodeAlreadyExists, "name"},
		{"bad allowed scope", func(p *keyplanev1.TrustPolicy) { p.AllowedScopes = []string{"a b"} }, connect.CodeInvalidArgument, "allowed_scopes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := valid()
			tc.edit(p)
			_, err := f.fed.CreateTrustPolicy(ctx, connect.NewRequest(&keyplanev1.CreateTrustPolicyRequest{TenantId: "acme", Policy: p}))
			wantCode(t, err, tc.code, tc.reason)
		})
	}
	// Update, get, list and delete, each audited.
	_, err := f.fed.UpdateTrustPolicy(ctx, connect.NewRequest(&keyplanev1.UpdateTrustPolicyRequest{TenantId: "acme", Id: f.ciPolicy.Id,
		UpdateFields: []string{"colour"}, Policy: &keyplanev1.TrustPolicy{}}))
	wantCode(t, err, connect.CodeInvalidArgument, "update_fields[0]")
	up, err := f.fed.UpdateTrustPolicy(ctx, connect.NewRequest(&keyplanev1.UpdateTrustPolicyRequest{TenantId: "acme", Id: f.ciPolicy.Id,
		UpdateFields: []string{"condition"}, Policy: &keyplanev1.TrustPolicy{Condition: `claims.repository == "acme/web"`}}))
	if err != nil || up.Msg.Policy.Condition != `claims.repository == "acme/web"` || up.Msg.Policy.Issuer != f.ci.url {
		t.Fatalf("update: %v %v", up, err)
	}
	if got := postForm(t, f.tokenURL, "", "", exchangeForm(f.ci.sign(t, f.ci.ciClaims(f.ciAud), ""))); got.body["error"] != "invalid_grant" {
		t.Fatalf("exchange after narrowing the condition: %v, want invalid_grant", got.body)
	}
	list, err := f.fed.ListTrustPolicies(ctx, connect.NewRequest(&keyplanev1.ListTrustPoliciesRequest{TenantId: "acme"}))
	if err != nil || len(list.Msg.Policies) != 2 {
		t.Fatalf("list: %v %v", list, err)
	}
	if _, err := f.fed.DeleteTrustPolicy(ctx, connect.NewRequest(&keyplanev1.DeleteTrustPolicyRequest{TenantId: "acme", Id: f.k8sPolicy.Id})); err != nil {
		t.Fatal(err)
	}
	_, err = f.fed.GetTrustPolicy(ctx, connect.NewRequest(&keyplanev1.GetTrustPolicyRequest{TenantId: "acme", Id: f.k8sPolicy.Id}))
	wantCode(t, err, connect.CodeNotFound, "")
	ev, err := f.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", Action: "federation.policy."}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(ev.Msg.Events); n != 4 { // two creates, an update, a delete
		t.Fatalf("%d federation.policy.* audit events, want 4", n)
	}
	// Without the operator secret or a token holding iam.federation.read: refused.
	_, err = federationClient(f.url, "not-a-token").ListTrustPolicies(ctx, connect.NewRequest(&keyplanev1.ListTrustPoliciesRequest{TenantId: "acme"}))
	wantCode(t, err, connect.CodeUnauthenticated, "")
}

// TestFederationWriteNeedsWhatMintingNeeds: a trust policy hands out its identity's
// tokens, so writing one needs iam.federation.write and what minting a credential for
// the identity needs — iam.credentials.manage on it and every permission it holds —
// through plain Connect JSON over net/http.
func TestFederationWriteNeedsWhatMintingNeeds(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	target, err := f.op.CreateIdentity(ctx, connect.NewRequest(f.serviceAccount("powerful")))
	if err != nil {
		t.Fatal(err)
	}
	role, err := f.op.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "role-admin", Permissions: []string{"iam.roles.write"}}))
	if err != nil {
		t.Fatal(err)
	}
	f.bind(t, target.Msg.Identity.Id, role.Msg.Role.Id, "*")
	create := keyplanev1connect.FederationServiceCreateTrustPolicyProcedure
	msg := map[string]any{"tenantId": "acme", "policy": map[string]any{"name": "ci", "issuer": "https://ci.example.com",
		"audiences": []string{"keyplane"}, "condition": "true", "identityId": target.Msg.Identity.Id}}
	_, reader := f.identityWith(t, "reader", "*", "iam.federation.read")
	_, fedOnly := f.identityWith(t, "fed-only", "*", "iam.federation.write")
	_, noRoles := f.identityWith(t, "no-roles", "*", "iam.federation.write", "iam.credentials.manage")
	_, enough := f.identityWith(t, "enough", "*", "iam.federation.write", "iam.credentials.manage", "iam.roles.write")
	for _, tc := range []struct {
		name, token, procedure string
		msg                    map[string]any
		want                   string
	}{
		{"read only may list", reader, keyplanev1connect.FederationServiceListTrustPoliciesProcedure, map[string]any{"tenantId": "acme"}, ""},
		{"read only may not create", reader, create, msg, "permission_denied"},
		{"federation.write without credentials.manage", fedOnly, create, msg, "permission_denied"},
		{"without the identity's permissions (escalation)", noRoles, create, msg, "permission_denied"},
		{"no token", "", create, msg, "unauthenticated"},
		{"write, credentials.manage and the identity's permissions", enough, create, msg, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := f.call(t, tc.procedure, tc.token, tc.msg); code != tc.want {
				t.Fatalf("got code %q (%s), want %q", code, body, tc.want)
			}
		})
	}
}

// TestFederationConcurrentReplay: the same external token exchanged many times at once
// gets exactly one keyplane token; every other attempt is refused as a replay.
func TestFederationConcurrentReplay(t *testing.T) {
	t.Parallel()
	f := newFedFixture(t)
	tok := f.ci.sign(t, f.ci.ciClaims(f.ciAud), "")
	const n = 8
	results := make([]formResult, n)
	done := make(chan int)
	for i := range n {
		go func() {
			results[i] = postFormNoFatal(f.tokenURL, exchangeForm(tok))
			done <- i
		}()
	}
	for range n {
		<-done
	}
	ok, replays := 0, 0
	for _, r := range results {
		desc, _ := r.body["error_description"].(string)
		switch {
		case r.status == http.StatusOK:
			ok++
		case r.body["error"] == "invalid_grant" && strings.HasPrefix(desc, "replay:"):
			replays++
		default:
			t.Errorf("unexpected answer %d %v", r.status, r.body)
		}
	}
	if ok != 1 || replays != n-1 {
		t.Fatalf("%d exchanges succeeded and %d were refused as replays, want 1 and %d", ok, replays, n-1)
	}
}

// postFormNoFatal posts a form without client authentication from any goroutine.
func postFormNoFatal(u string, form url.Values) formResult {
	resp, err := http.Post(u, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		return formResult{body: map[string]any{"error": err.Error()}}
	}
	defer resp.Body.Close()
	out := formResult{status: resp.StatusCode, body: map[string]any{}}
	_ = json.NewDecoder(resp.Body).Decode(&out.body)
	return out
}
