package region_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// upstreamFixture is tenant acme (an application signs its people in through
// keyplane, opFixture) whose upstream OpenID Provider is another keyplane tenant on
// the same node: corp, with a person (bob) who signs in there with a password, and a
// first-party client registered with acme's callback.
type upstreamFixture struct {
	*opFixture
	upstream           keyplanev1connect.UpstreamServiceClient
	corpIssuer         string
	bob, bobEmail      string
	corpClient, corpSc string
	callback           string
}

func newUpstreamFixture(t *testing.T, jit, linkByEmail bool) *upstreamFixture {
	t.Helper()
	ctx := context.Background()
	o := newOPFixture(t, "http://127.0.0.1:9/cb", "http://127.0.0.1:9/bye")
	u := &upstreamFixture{opFixture: o, corpIssuer: o.url + "/t/corp", bobEmail: "bob@corp.example", callback: o.issuer + "/login/oidc/corp/callback"}
	u.upstream = keyplanev1connect.NewUpstreamServiceClient(http.DefaultClient, o.url, connect.WithInterceptors(
		connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+secret)
				return next(ctx, req)
			}
		})))
	if _, err := o.admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "corp", Name: "Corp", HomeRegion: "us-east"})); err != nil {
		t.Fatal(err)
	}
	mk := func(req *keyplanev1.CreateIdentityRequest) string {
		r, err := o.admin.CreateIdentity(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Identity.Id
	}
	u.bob = mk(&keyplanev1.CreateIdentityRequest{TenantId: "corp", Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Bob Builder", Email: u.bobEmail})
	if _, err := o.admin.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "corp", IdentityId: u.bob, Password: opPassword})); err != nil {
		t.Fatal(err)
	}
	sa := mk(&keyplanev1.CreateIdentityRequest{TenantId: "corp", Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, DisplayName: "acme sso",
		OwnerId: u.bob, Purpose: "acme signs corp people in", ExpireTime: timestamppb.New(o.clock.Now().AddDate(1, 0, 0))})
	cl, err := o.admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "corp", IdentityId: sa, Name: "Acme",
		RedirectUris: []string{u.callback}, FirstParty: true}))
	if err != nil {
		t.Fatal(err)
	}
	u.corpClient, u.corpSc = cl.Msg.ClientId, cl.Msg.ClientSecret
	p, err := u.upstream.CreateUpstreamProvider(ctx, connect.NewRequest(&keyplanev1.CreateUpstreamProviderRequest{TenantId: "acme",
		Provider: &keyplanev1.UpstreamProvider{Name: "corp", DisplayName: "Corp SSO", Issuer: u.corpIssuer, ClientId: u.corpClient,
			ClientSecret: u.corpSc, Scopes: []string{"profile", "email"}, Jit: jit, LinkByEmail: linkByEmail,
			AttributeClaims: map[string]string{"upstream_name": "name"}}}))
	if err != nil {
		t.Fatal(err)
	}
	if p.Msg.Provider.ClientSecret != "" || p.Msg.Provider.Id == "" || p.Msg.Provider.ClaimExternalId != "sub" {
		t.Fatalf("created provider: %v", p.Msg.Provider)
	}
	return u
}

func fetch(t *testing.T, c *http.Client, u string) pageResp {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, c, req)
}

// resolve makes a redirect's Location absolute against base.
func resolve(t *testing.T, base string, p pageResp) string {
	t.Helper()
	if p.status != http.StatusSeeOther || p.location == nil {
		t.Fatalf("want a redirect, got %d: %.400s", p.status, p.body)
	}
	b, _ := url.Parse(base)
	return b.ResolveReference(p.location).String()
}

// toUpstream starts an authorization at acme, follows its "Sign in with Corp SSO"
// link and returns the URL of corp's authorization request keyplane redirected to.
func (u *upstreamFixture) toUpstream(t *testing.T, c *http.Client, challenge string) string {
	t.Helper()
	login := u.authorize(t, c, u.authParams(u.firstParty, challenge))
	m := regexpHref.FindStringSubmatch(login.body)
	if m == nil || !strings.Contains(login.body, "Sign in with Corp SSO") {
		t.Fatalf("login page without the Corp SSO option: %.2000s", login.body)
	}
	start := fetch(t, c, u.url+htmlUnescape(m[1]))
	to := resolve(t, u.url, start)
	if !strings.HasPrefix(to, u.corpIssuer+"/oauth2/authorize?") {
		t.Fatalf("start redirected to %s", to)
	}
	q, _ := url.Parse(to)
	if q.Query().Get("code_challenge_method") != "S256" || q.Query().Get("nonce") == "" || q.Query().Get("state") == "" ||
		q.Query().Get("redirect_uri") != u.callback {
		t.Fatalf("upstream authorization request lacks PKCE, nonce, state or the callback: %s", to)
	}
	return to
}

// atUpstream signs bob in at corp for the authorization request to and returns the
// callback URL corp redirected to.
func (u *upstreamFixture) atUpstream(t *testing.T, c *http.Client, to string) string {
	t.Helper()
	login := fetch(t, c, to)
	if !strings.Contains(login.body, `name="password"`) {
		t.Fatalf("corp did not show its login page: %d %.400s", login.status, login.body)
	}
	form := login.fields()
	form.Set("email", u.bobEmail)
	form.Set("password", opPassword)
	req, _ := http.NewRequest(http.MethodPost, u.corpIssuer+"/oauth2/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	back := resolve(t, u.url, do(t, c, req))
	if !strings.HasPrefix(back, u.callback+"?") {
		t.Fatalf("corp redirected to %s, want the callback", back)
	}
	return back
}

// signInUpstream runs the whole flow and returns acme's ID token claims.
func (u *upstreamFixture) signInUpstream(t *testing.T, c *http.Client) idClaims {
	t.Helper()
	verifier, challenge := pkce()
	back := u.atUpstream(t, c, u.toUpstream(t, c, challenge))
	code := u.codeFrom(t, fetch(t, c, back))
	r := u.exchange(t, u.firstParty, u.firstSecret, code, u.redirect, verifier)
	if r.status != http.StatusOK || r.IDToken == "" {
		t.Fatalf("token: %d %s %s", r.status, r.Error, r.Description)
	}
	return u.idClaims(t, r.IDToken)
}

func (u *upstreamFixture) idClaims(t *testing.T, raw string) idClaims {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("id token %q", raw)
	}
	var c idClaims
	if err := decodeSegment(parts[1], &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// idClaims are the ID token claims the tests read.
type idClaims struct {
	Subject string `json:"sub"`
	Name    string `json:"name"`
}

// wantRefused checks a refusal page (status, text) and its audit event's rule.
func (u *upstreamFixture) wantRefused(t *testing.T, p pageResp, status int, text, rule string) {
	t.Helper()
	if p.status != status || !strings.Contains(htmlUnescape(p.body), text) {
		t.Fatalf("want %d naming %q, got %d %v: %.600s", status, text, p.status, p.location, p.body)
	}
	for _, e := range u.listAudit(t, &keyplanev1.ListAuditEventsRequest{Action: "login.upstream_refused"}) {
		if e.After.GetFields()["rule"].GetStringValue() == rule {
			return
		}
	}
	t.Fatalf("no login.upstream_refused audit event with rule %q", rule)
}

// TestUpstreamOIDCJustInTime: a corp person without an acme identity signs in to an
// acme application through corp; acme creates a human for them (name, verified
// email, mapped attribute), links it, and the next sign-in finds the same identity.
func TestUpstreamOIDCJustInTime(t *testing.T) {
	t.Parallel()
	u := newUpstreamFixture(t, true, false)
	first := u.signInUpstream(t, browser(t))
	if first.Subject == "" || first.Subject == u.alice || first.Name != "Bob Builder" {
		t.Fatalf("JIT identity: %+v", first)
	}
	id, err := u.admin.GetIdentity(context.Background(), connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: first.Subject}))
	if err != nil {
		t.Fatal(err)
	}
	got := id.Msg.Identity
	if got.Kind != keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN || got.Attributes.GetFields()["upstream_name"].GetStringValue() != "Bob Builder" {
		t.Fatalf("JIT identity %v", got)
	}
	// keyplane's OP does not claim email_verified: the JIT identity gets no email.
	if got.Email != "" {
		t.Fatalf("JIT identity took an unverified email %q", got.Email)
	}
	second := u.signInUpstream(t, browser(t))
	if second.Subject != first.Subject {
		t.Fatalf("second sign-in made identity %s, want the linked %s", second.Subject, first.Subject)
	}
	var links []string
	for _, e := range u.listAudit(t, &keyplanev1.ListAuditEventsRequest{Action: "login.upstream"}) {
		links = append(links, e.After.GetFields()["linked_by"].GetStringValue())
	}
	if strings.Join(links, ",") != "jit,link" && strings.Join(links, ",") != "link,jit" {
		t.Fatalf("login.upstream events linked_by %v, want jit and link", links)
	}
}

// scimUser provisions an acme human through SCIM with externalId.
func (u *upstreamFixture) scimUser(t *testing.T, externalID string) string {
	t.Helper()
	su, err := u.store.CreateSCIMUser(context.Background(), schema.Change{Actor: "test"}, schema.Scope{TenantID: "acme", Region: "us-east"},
		schema.SCIMUser{UserName: "bob", ExternalID: externalID, DisplayName: "Bob (acme)", Email: "bob@acme.example", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	return su.ID
}

// TestUpstreamOIDCLinksByExternalID: with JIT off, corp's bob signs in as the acme
// identity SCIM provisioned with his corp subject as externalId.
func TestUpstreamOIDCLinksByExternalID(t *testing.T) {
	t.Parallel()
	u := newUpstreamFixture(t, false, false)
	acmeBob := u.scimUser(t, u.bob)
	if got := u.signInUpstream(t, browser(t)); got.Subject != acmeBob {
		t.Fatalf("signed in as %s, want the SCIM identity %s", got.Subject, acmeBob)
	}
	// Disabled, the linked identity is refused (and no session is opened).
	if _, err := u.admin.DisableIdentity(context.Background(), connect.NewRequest(&keyplanev1.DisableIdentityRequest{TenantId: "acme", Id: acmeBob})); err != nil {
		t.Fatal(err)
	}
	c := browser(t)
	_, challenge := pkce()
	p := fetch(t, c, u.atUpstream(t, c, u.toUpstream(t, c, challenge)))
	u.wantRefused(t, p, http.StatusUnauthorized, "This account is disabled.", "inactive")
}

// TestUpstreamOIDCRefusals: every bad callback is refused with a page and an audit
// event naming the rule.
func TestUpstreamOIDCRefusals(t *testing.T) {
	t.Parallel()
	u := newUpstreamFixture(t, false, false)
	_, challenge := pkce()

	t.Run("no link and JIT off", func(t *testing.T) {
		c := browser(t)
		p := fetch(t, c, u.atUpstream(t, c, u.toUpstream(t, c, challenge)))
		u.wantRefused(t, p, http.StatusUnauthorized, "is not linked to an account of this organization", "no_link")
		if !strings.Contains(p.body, `name="password"`) {
			t.Fatalf("the refusal should offer the login page again: %.400s", p.body)
		}
	})
	t.Run("wrong state", func(t *testing.T) {
		c := browser(t)
		back, _ := url.Parse(u.atUpstream(t, c, u.toUpstream(t, c, challenge)))
		q := back.Query()
		q.Set("state", q.Get("state")+"x")
		back.RawQuery = q.Encode()
		u.wantRefused(t, fetch(t, c, back.String()), http.StatusBadRequest, "state: this sign-in was not started in this browser", "state")
	})
	t.Run("replayed state", func(t *testing.T) {
		c := browser(t)
		back := u.atUpstream(t, c, u.toUpstream(t, c, challenge))
		bu, _ := url.Parse(back)
		state := bu.Query().Get("state")
		first := fetch(t, c, back) // refused (no link), but the state is spent
		if first.status != http.StatusUnauthorized {
			t.Fatalf("first callback: %d", first.status)
		}
		req, _ := http.NewRequest(http.MethodGet, back, nil)
		req.AddCookie(&http.Cookie{Name: "kp_upstream", Value: state})
		u.wantRefused(t, do(t, http.DefaultClient, req), http.StatusBadRequest, "state: this sign-in was completed or abandoned already", "state")
	})
	t.Run("nonce mismatch", func(t *testing.T) {
		c := browser(t)
		to, _ := url.Parse(u.toUpstream(t, c, challenge))
		q := to.Query()
		q.Set("nonce", "not-the-nonce-keyplane-sent")
		to.RawQuery = q.Encode()
		u.wantRefused(t, fetch(t, c, u.atUpstream(t, c, to.String())), http.StatusUnauthorized, "the ID token was not issued for this sign-in", "nonce")
	})
	t.Run("upstream error", func(t *testing.T) {
		c := browser(t)
		to, _ := url.Parse(u.toUpstream(t, c, challenge))
		q := to.Query()
		q.Set("prompt", "none") // corp has no session: login_required
		to.RawQuery = q.Encode()
		back := resolve(t, u.url, fetch(t, c, to.String()))
		u.wantRefused(t, fetch(t, c, back), http.StatusUnauthorized, "did not complete (login_required)", "upstream_error")
	})
	t.Run("unknown provider", func(t *testing.T) {
		wantErrorPage(t, fetch(t, browser(t), u.issuer+"/login/oidc/nope/start?req=x"), http.StatusNotFound, "no such sign-in provider")
	})
	t.Run("start without a valid request", func(t *testing.T) {
		wantErrorPage(t, fetch(t, browser(t), u.issuer+"/login/oidc/corp/start?req="+url.QueryEscape("client_id=nope")), http.StatusBadRequest, "Invalid request")
	})
}

// TestUpstreamServiceBadInput: provider writes name the bad field; reads never show
// the client secret.
func TestUpstreamServiceBadInput(t *testing.T) {
	t.Parallel()
	u := newUpstreamFixture(t, false, false)
	ctx := context.Background()
	good := func() *keyplanev1.UpstreamProvider {
		return &keyplanev1.UpstreamProvider{Name: "okta", DisplayName: "Okta", Issuer: "https://example.okta.com", ClientId: "c", ClientSecret: "s"}
	}
	for _, tc := range []struct {
		field  string
		change func(*keyplanev1.UpstreamProvider)
	}{
		{"name", func(p *keyplanev1.UpstreamProvider) { p.Name = "Bad Name" }},
		{"issuer", func(p *keyplanev1.UpstreamProvider) { p.Issuer = "http://idp.example.com" }},
		{"client_id", func(p *keyplanev1.UpstreamProvider) { p.ClientId = "" }},
		{"client_secret", func(p *keyplanev1.UpstreamProvider) { p.ClientSecret = "" }},
		{"scopes", func(p *keyplanev1.UpstreamProvider) { p.Scopes = []string{"two words"} }},
		{"claim_email", func(p *keyplanev1.UpstreamProvider) { p.ClaimEmail = "e mail" }},
		{"attribute_claims", func(p *keyplanev1.UpstreamProvider) { p.AttributeClaims = map[string]string{"dept": "a b"} }},
		{"name", func(p *keyplanev1.UpstreamProvider) { p.Name = "corp" }}, // exists
	} {
		p := good()
		tc.change(p)
		_, err := u.upstream.CreateUpstreamProvider(ctx, connect.NewRequest(&keyplanev1.CreateUpstreamProviderRequest{TenantId: "acme", Provider: p}))
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: got %v, want an error naming it", tc.field, err)
		}
	}
	l, err := u.upstream.ListUpstreamProviders(ctx, connect.NewRequest(&keyplanev1.ListUpstreamProvidersRequest{TenantId: "acme"}))
	if err != nil || len(l.Msg.Providers) != 1 || l.Msg.Providers[0].ClientSecret != "" {
		t.Fatalf("list: %v %v", l, err)
	}
	if _, err := u.upstream.DeleteUpstreamProvider(ctx, connect.NewRequest(&keyplanev1.DeleteUpstreamProviderRequest{TenantId: "acme", Id: l.Msg.Providers[0].Id})); err != nil {
		t.Fatal(err)
	}
	_, challenge := pkce()
	login := u.authorize(t, browser(t), u.authParams(u.firstParty, challenge))
	if strings.Contains(login.body, "Sign in with") {
		t.Fatalf("a deleted provider is still offered")
	}
}

var regexpHref = regexp.MustCompile(`<a href="([^"]+)">Sign in with`)

func htmlUnescape(s string) string { return html.UnescapeString(s) }

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// TestUpstreamServiceConnectJSON: the service speaks Connect JSON to a plain HTTP
// client; without a token it refuses.
func TestUpstreamServiceConnectJSON(t *testing.T) {
	t.Parallel()
	u := newUpstreamFixture(t, true, false)
	call := func(token string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, u.url+"/keyplane.v1.UpstreamService/ListUpstreamProviders", strings.NewReader(`{"tenantId":"acme"}`))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		p := do(t, http.DefaultClient, req)
		return p.status, p.body
	}
	status, body := call(secret)
	if status != http.StatusOK || !strings.Contains(body, `"displayName":"Corp SSO"`) || !strings.Contains(body, `"jit":true`) ||
		strings.Contains(body, "clientSecret") || strings.Contains(body, u.corpSc) {
		t.Fatalf("list: %d %s", status, body)
	}
	if status, body := call(""); status != http.StatusUnauthorized {
		t.Fatalf("unauthenticated list: %d %s", status, body)
	}
}

// TestUpstreamOIDCUnverifiedEmailDoesNotLink: a provider that links by email does
// not link on an email its ID token does not say is verified (keyplane's OP, the
// upstream here, never claims email_verified), even when an acme identity has it.
func TestUpstreamOIDCUnverifiedEmailDoesNotLink(t *testing.T) {
	t.Parallel()
	u := newUpstreamFixture(t, false, true)
	if _, err := u.admin.CreateIdentity(context.Background(), connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Bob at acme", Email: u.bobEmail})); err != nil {
		t.Fatal(err)
	}
	c := browser(t)
	_, challenge := pkce()
	p := fetch(t, c, u.atUpstream(t, c, u.toUpstream(t, c, challenge)))
	u.wantRefused(t, p, http.StatusUnauthorized, "is not linked to an account of this organization", "no_link")
}
