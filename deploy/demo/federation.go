package demo

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"
)

// The federation tour (issue 16): a CI job (a workload) holds no secret. Its CI system
// runs an OIDC issuer — here simulated on 127.0.0.1, started and stopped with the demo
// — that hands the job a signed JWT about itself (repository, ref, workflow). The job
// exchanges that JWT at the tenant's token endpoint (RFC 8693 token exchange) under a
// trust policy, gets a short-lived keyplane token for its workload identity, and calls
// Check with it.

// ciIssuer is a simulated CI OIDC issuer, GitHub-Actions-like: discovery, JWKS, and a
// token endpoint a job calls to get its identity token for an audience.
type ciIssuer struct {
	url    string
	key    *rsa.PrivateKey
	signer jose.Signer
	srv    *http.Server
}

// startCIIssuer starts the simulated issuer on a loopback port.
func startCIIssuer() (*ciIssuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: "ci-1"}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	is := &ciIssuer{url: "http://" + ln.Addr().String(), key: key, signer: signer}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		writeIssuerJSON(w, map[string]any{"issuer": is.url, "jwks_uri": is.url + "/.well-known/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256"}, "response_types_supported": []string{"id_token"},
			"subject_types_supported": []string{"public"}})
	})
	mux.HandleFunc("GET /.well-known/jwks", func(w http.ResponseWriter, _ *http.Request) {
		writeIssuerJSON(w, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "ci-1", Algorithm: "RS256", Use: "sig"}}})
	})
	is.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = is.srv.Serve(ln) }()
	return is, nil
}

func writeIssuerJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// jobToken is the identity token the CI system gives the running job for audience.
func (is *ciIssuer) jobToken(audience, repository, ref string) (string, error) {
	now := time.Now()
	return jwt.Signed(is.signer).Claims(map[string]any{
		"iss": is.url, "aud": audience, "sub": "repo:" + repository + ":ref:" + ref, "jti": uuid.NewString(),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"repository": repository, "ref": ref, "workflow": "deploy", "run_id": "4242",
	}).Serialize()
}

// Close stops the issuer.
func (is *ciIssuer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = is.srv.Shutdown(ctx)
}

// runFederationTour runs the federation step; it returns the simulated issuer, which
// the caller stops with the demo. It fails if any answer is wrong.
func runFederationTour(ctx context.Context, w io.Writer, st State) (*ciIssuer, error) {
	tn := st.Tenants[0]
	from := st.Regions[len(st.Regions)-1].Name
	is, err := startCIIssuer()
	if err != nil {
		return nil, fmt.Errorf("start the CI issuer: %w", err)
	}
	if err := federationTour(ctx, w, st, tn, from, is); err != nil {
		is.Close()
		return nil, err
	}
	return is, nil
}

func federationTour(ctx context.Context, w io.Writer, st State, tn Tenant, from string, is *ciIssuer) error {
	adminTok, err := oauthToken(ctx, st, tn, from, tn.TenantAdminClient, tn.TenantAdminSecret)
	if err != nil {
		return err
	}
	base := st.ClientURLs[from][from][0]
	opts := connect.WithInterceptors(client.Bearer(adminTok), client.Tenant())
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, base, opts)
	fed := keyplanev1connect.NewFederationServiceClient(http.DefaultClient, base, opts)
	fmt.Fprintf(w, "\nfederation: a CI job in %s gets keyplane tokens for %s with no secret anywhere.\n", from, tn.ID)

	// The tenant admin sets up the workload identity, what it may do, and the trust policy.
	wl, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: tn.ID,
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_WORKLOAD, DisplayName: "api-deployer", OwnerId: tn.AdminID,
		Purpose: "deploys acme/api from CI", ExpireTime: timestamppb.New(time.Now().Add(30 * 24 * time.Hour))}))
	if err != nil {
		return fmt.Errorf("create the workload identity: %w", err)
	}
	workload := wl.Msg.Identity.Id
	role, err := admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: tn.ID, Name: "api-deployer",
		Permissions: []string{"iam.checks.perform", "deploy.release.create"}}))
	if err != nil {
		return fmt.Errorf("create the deployer role: %w", err)
	}
	if _, err := admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: tn.ID, PrincipalKind: "identity",
		PrincipalId: workload, RoleId: role.Msg.Role.Id, Scope: "*"})); err != nil {
		return fmt.Errorf("bind the deployer role: %w", err)
	}
	audience := tn.Issuer
	if _, err := fed.CreateTrustPolicy(ctx, connect.NewRequest(&keyplanev1.CreateTrustPolicyRequest{TenantId: tn.ID, Policy: &keyplanev1.TrustPolicy{
		Name: "ci-acme-api-main", Issuer: is.url, Audiences: []string{audience}, IdentityId: workload,
		Condition: `claims.repository == "acme/api" && claims.ref == "refs/heads/main"`,
	}})); err != nil {
		return fmt.Errorf("create the trust policy: %w", err)
	}
	fmt.Fprintf(w, "  1. trust policy ci-acme-api-main: tokens of the CI issuer for acme/api on main are api-deployer\n")

	// The workload script: ask CI for an identity token, exchange it, check.
	exchange := func(jobTok string) (tourCall, error) {
		return tokenExchange(ctx, st, tn, from, jobTok)
	}
	jobTok, err := is.jobToken(audience, "acme/api", "refs/heads/main")
	if err != nil {
		return err
	}
	got, err := exchange(jobTok)
	if err != nil {
		return err
	}
	tok, _ := got.body["access_token"].(string)
	if tok == "" || got.body["issued_token_type"] != "urn:ietf:params:oauth:token-type:access_token" {
		return fmt.Errorf("token exchange answered %v", got.body)
	}
	fmt.Fprintf(w, "  2. the job exchanges its CI token (RFC 8693)       %-9s → %-14s %4d ms: a %v s keyplane token\n",
		got.route, got.servedBy, got.took.Milliseconds(), got.body["expires_in"])
	check := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, base, connect.WithInterceptors(client.Bearer(tok), client.Tenant()))
	res, err := check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: tn.ID,
		Principal: &keyplanev1.CheckRequest_Token{Token: tok}, Permission: "deploy.release.create", Resource: "services/api/releases/42"}))
	if err != nil {
		return fmt.Errorf("check with the exchanged token: %w", err)
	}
	if !res.Msg.Allowed {
		return fmt.Errorf("the deployer may not create a release: %v", res.Msg)
	}
	fmt.Fprintf(w, "  3. with it the job calls Check: deploy.release.create on services/api/releases/42 allowed\n")

	// The same token again, and a branch the policy does not trust: refused, and why.
	if _, err := exchange(jobTok); !errors.Is(err, errExchangeRefused) {
		return refusalMissing("a replayed CI token", err)
	}
	featureTok, err := is.jobToken(audience, "acme/api", "refs/heads/feature")
	if err != nil {
		return err
	}
	_, err = exchange(featureTok)
	if !errors.Is(err, errExchangeRefused) {
		return refusalMissing("a feature branch's CI token", err)
	}
	fmt.Fprintf(w, "  4. refused: the same CI token again (replay) and a feature branch's (%v)\n", err)
	return nil
}

// refusalMissing is the tour's error when an exchange that must be refused was not.
func refusalMissing(what string, err error) error {
	if err == nil {
		return fmt.Errorf("%s was exchanged: it must be refused", what)
	}
	return fmt.Errorf("%s: want a refusal, got: %w", what, err)
}

// errExchangeRefused is a token exchange the token endpoint refused with 400.
var errExchangeRefused = errors.New("token exchange refused")

// tokenExchange exchanges a CI token at the tenant's token endpoint as an application
// in region from: no client authentication, the subject token is the credential. A
// refusal is errExchangeRefused with the endpoint's error and description.
func tokenExchange(ctx context.Context, st State, tn Tenant, from, subjectToken string) (tourCall, error) {
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {subjectToken},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, st.ClientURLs[from][from][0]+"/t/"+tn.ID+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		return tourCall{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return tourCall{}, fmt.Errorf("token exchange from %s: %w", from, err)
	}
	defer resp.Body.Close()
	c := tourCall{from: from, route: resp.Header.Get("Keyplane-Route"), servedBy: resp.Header.Get("Keyplane-Served-By")}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	c.took = time.Since(start)
	if err := json.Unmarshal(b, &c.body); err != nil {
		return c, fmt.Errorf("token exchange from %s: %s %s", from, resp.Status, b)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return c, nil
	case http.StatusBadRequest:
		return c, fmt.Errorf("%w: %v: %v", errExchangeRefused, c.body["error"], c.body["error_description"])
	}
	return c, fmt.Errorf("token exchange from %s: %s %s", from, resp.Status, b)
}
