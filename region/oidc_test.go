package region_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/pquerna/otp/totp"
	"golang.org/x/oauth2"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
)

// opFixture is a tenant whose node's issuer is its own loopback URL (so relying
// parties can reach discovery), with a person who signs in (alice) and two clients:
// a first-party one and a third-party one, both redirecting to redirect.
type opFixture struct {
	*fixture
	issuer           string
	alice            string
	email, password  string
	firstParty       string // client id
	thirdParty       string
	firstSecret      string
	thirdSecret      string
	redirect, logout string
}

const opPassword = "correct horse battery staple"

func newOPFixture(t *testing.T, redirect, logout string) *opFixture {
	t.Helper()
	ctx := context.Background()
	f := newFixtureWith(t, func(c *region.Config) { c.IssuerBase = "" })
	o := &opFixture{fixture: f, issuer: f.url + "/t/acme", email: "alice@acme.example", password: opPassword, redirect: redirect, logout: logout}
	h, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Alice Liddell", Email: o.email}))
	if err != nil {
		t.Fatal(err)
	}
	o.alice = h.Msg.Identity.Id
	if _, err := f.admin.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: o.alice, Password: o.password})); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, first bool) (string, string) {
		cl, err := f.admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: f.bot, Name: name,
			RedirectUris: []string{redirect}, PostLogoutRedirectUris: []string{logout}, FirstParty: first}))
		if err != nil {
			t.Fatal(err)
		}
		return cl.Msg.ClientId, cl.Msg.ClientSecret
	}
	o.firstParty, o.firstSecret = mk("Intranet", true)
	o.thirdParty, o.thirdSecret = mk("Expense Tracker", false)
	return o
}

// browser is an HTTP client with a cookie jar that does not follow redirects.
func browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 30 * time.Second}
}

// pkce is a verifier and its S256 challenge.
func pkce() (verifier, challenge string) {
	v := oauth2.GenerateVerifier()
	sum := sha256.Sum256([]byte(v))
	return v, base64.RawURLEncoding.EncodeToString(sum[:])
}

// authParams is a valid authorization request of client with challenge.
func (o *opFixture) authParams(client, challenge string) url.Values {
	return url.Values{"response_type": {"code"}, "client_id": {client}, "redirect_uri": {o.redirect}, "scope": {"openid profile email"},
		"state": {"st-123"}, "nonce": {"n-456"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}
}

type pageResp struct {
	status   int
	body     string
	location *url.URL
	header   http.Header
}

func do(t *testing.T, c *http.Client, req *http.Request) pageResp {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	p := pageResp{status: resp.StatusCode, body: string(b), header: resp.Header}
	if loc := resp.Header.Get("Location"); loc != "" {
		u, err := url.Parse(loc)
		if err != nil {
			t.Fatal(err)
		}
		p.location = u
	}
	return p
}

func (o *opFixture) authorize(t *testing.T, c *http.Client, q url.Values) pageResp {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, o.issuer+"/oauth2/authorize?"+q.Encode(), nil)
	return do(t, c, req)
}

var hiddenField = regexp.MustCompile(`name="([a-z_]+)" value="([^"]*)"`)

// fields are the hidden fields of a page's form.
func (p pageResp) fields() url.Values {
	v := url.Values{}
	for _, m := range hiddenField.FindAllStringSubmatch(p.body, -1) {
		v.Set(m[1], html.UnescapeString(m[2]))
	}
	return v
}

func (o *opFixture) post(t *testing.T, c *http.Client, path string, form url.Values) pageResp {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, o.issuer+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(t, c, req)
}

// signIn answers a login page with alice's password.
func (o *opFixture) signIn(t *testing.T, c *http.Client, login pageResp) pageResp {
	t.Helper()
	if !strings.Contains(login.body, `name="password"`) {
		t.Fatalf("not a login page (%d): %.300s", login.status, login.body)
	}
	form := login.fields()
	form.Set("email", o.email)
	form.Set("password", o.password)
	return o.post(t, c, "/oauth2/login", form)
}

// codeFrom checks a redirect to the client and returns its code.
func (o *opFixture) codeFrom(t *testing.T, p pageResp) string {
	t.Helper()
	if p.status != http.StatusSeeOther || p.location == nil || !strings.HasPrefix(p.location.String(), o.redirect+"?") {
		t.Fatalf("want a redirect to %s, got %d %v: %.300s", o.redirect, p.status, p.location, p.body)
	}
	q := p.location.Query()
	if q.Get("state") != "st-123" || q.Get("iss") != o.issuer || q.Get("code") == "" {
		t.Fatalf("redirect %s: want code, state st-123 and iss", p.location)
	}
	return q.Get("code")
}

// wantRedirectError checks an error redirected to the client.
func (o *opFixture) wantRedirectError(t *testing.T, p pageResp, code string) {
	t.Helper()
	if p.status != http.StatusSeeOther || p.location == nil || !strings.HasPrefix(p.location.String(), o.redirect+"?") {
		t.Fatalf("want an error redirect to %s, got %d %v: %.300s", o.redirect, p.status, p.location, p.body)
	}
	if got := p.location.Query().Get("error"); got != code {
		t.Fatalf("error %q (%s), want %q", got, p.location.Query().Get("error_description"), code)
	}
	if p.location.Query().Get("state") != "st-123" {
		t.Fatalf("error redirect without the state: %s", p.location)
	}
}

// wantErrorPage checks an error shown as a page, never redirected.
func wantErrorPage(t *testing.T, p pageResp, status int, msgPart string) {
	t.Helper()
	if p.status != status || p.location != nil || !strings.Contains(html.UnescapeString(p.body), msgPart) {
		t.Fatalf("want an error page %d naming %q, got %d %v: %.400s", status, msgPart, p.status, p.location, p.body)
	}
}

type tokenReply struct {
	status                    int
	AccessToken               string `json:"access_token"`
	IDToken                   string `json:"id_token"`
	Error, Description, Scope string
	ErrorJSON                 string `json:"error"`
	ErrorDescriptionJSON      string `json:"error_description"`
}

func (o *opFixture) exchange(t *testing.T, client, secret, code, redirect, verifier string) tokenReply {
	t.Helper()
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {verifier}}
	req, _ := http.NewRequest(http.MethodPost, o.issuer+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r tokenReply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	r.status, r.Error, r.Description = resp.StatusCode, r.ErrorJSON, r.ErrorDescriptionJSON
	return r
}

func wantGrantError(t *testing.T, r tokenReply, code, descPart string) {
	t.Helper()
	if r.status != http.StatusBadRequest || r.Error != code || !strings.Contains(r.Description, descPart) || r.AccessToken != "" {
		t.Fatalf("want %s naming %q, got %d %q %q", code, descPart, r.status, r.Error, r.Description)
	}
}

// TestOIDCAuthorizationBadInput performs every bad authorization request over real
// HTTP: each is refused with the RFC 6749 §4.1.2.1 error at the registered redirect
// URI, or with an error page when the redirect URI cannot be trusted.
func TestOIDCAuthorizationBadInput(t *testing.T) {
	t.Parallel()
	o := newOPFixture(t, "http://127.0.0.1:9/cb", "http://127.0.0.1:9/bye")
	_, challenge := pkce()
	c := browser(t)
	with := func(change func(url.Values)) url.Values {
		q := o.authParams(o.firstParty, challenge)
		change(q)
		return q
	}
	pages := []struct {
		name   string
		q      url.Values
		status int
		msg    string
	}{
		{"redirect URI one character longer", with(func(q url.Values) { q.Set("redirect_uri", o.redirect+"x") }), 400, "redirect_uri: not registered"},
		{"redirect URI one character different", with(func(q url.Values) { q.Set("redirect_uri", "http://127.0.0.1:9/cc") }), 400, "redirect_uri: not registered"},
		{"redirect URI with another host (open redirect)", with(func(q url.Values) { q.Set("redirect_uri", "https://evil.example/cb") }), 400, "redirect_uri: not registered"},
		{"redirect URI with a trailing slash", with(func(q url.Values) { q.Set("redirect_uri", o.redirect+"/") }), 400, "redirect_uri: not registered"},
		{"redirect URI with userinfo trick", with(func(q url.Values) { q.Set("redirect_uri", "http://127.0.0.1:9@evil.example/cb") }), 400, "redirect_uri"},
		{"javascript redirect URI", with(func(q url.Values) { q.Set("redirect_uri", "javascript:alert(1)") }), 400, "redirect_uri"},
		{"missing redirect URI", with(func(q url.Values) { q.Del("redirect_uri") }), 400, "redirect_uri is required"},
		{"repeated redirect URI", with(func(q url.Values) { q.Add("redirect_uri", "https://evil.example/cb") }), 400, "redirect_uri"},
		{"unknown client", with(func(q url.Values) { q.Set("client_id", "nosuchclient") }), 400, "client_id"},
		{"missing client", with(func(q url.Values) { q.Del("client_id") }), 400, "client_id is required"},
	}
	for _, tc := range pages {
		t.Run(tc.name, func(t *testing.T) {
			wantErrorPage(t, o.authorize(t, c, tc.q), tc.status, tc.msg)
		})
	}
	redirects := []struct {
		name, code string
		q          url.Values
	}{
		{"missing PKCE", "invalid_request", with(func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") })},
		{"plain PKCE", "invalid_request", with(func(q url.Values) { q.Set("code_challenge_method", "plain") })},
		{"PKCE without method", "invalid_request", with(func(q url.Values) { q.Del("code_challenge_method") })},
		{"short challenge", "invalid_request", with(func(q url.Values) { q.Set("code_challenge", "abc") })},
		{"implicit flow", "unsupported_response_type", with(func(q url.Values) { q.Set("response_type", "token") })},
		{"hybrid flow", "unsupported_response_type", with(func(q url.Values) { q.Set("response_type", "code id_token") })},
		{"no openid scope", "invalid_scope", with(func(q url.Values) { q.Set("scope", "profile") })},
		{"scope not allowed", "invalid_scope", with(func(q url.Values) { q.Set("scope", "openid admin") })},
		{"bad prompt", "invalid_request", with(func(q url.Values) { q.Set("prompt", "bogus") })},
		{"prompt none with login", "invalid_request", with(func(q url.Values) { q.Set("prompt", "none login") })},
		{"negative max_age", "invalid_request", with(func(q url.Values) { q.Set("max_age", "-1") })},
		{"request object", "request_not_supported", with(func(q url.Values) { q.Set("request", "eyJ") })},
		{"prompt none without a session", "login_required", with(func(q url.Values) { q.Set("prompt", "none") })},
	}
	for _, tc := range redirects {
		t.Run(tc.name, func(t *testing.T) {
			o.wantRedirectError(t, o.authorize(t, c, tc.q), tc.code)
		})
	}
	t.Run("refusals audited", func(t *testing.T) {
		wantAudit(t, o.fixture, "oauth.authorize_refused", "redirect_uri")
	})
	t.Run("login page headers", func(t *testing.T) {
		p := o.authorize(t, browser(t), o.authParams(o.firstParty, challenge))
		csp := p.header.Get("Content-Security-Policy")
		if p.status != 200 || !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'none'") ||
			strings.Contains(p.body, "<script") || !strings.Contains(p.body, `autocomplete="current-password"`) || !strings.Contains(p.body, `<label for="email">`) {
			t.Fatalf("login page %d, CSP %q: %.300s", p.status, csp, p.body)
		}
	})
}

// TestOIDCCodeFlowAndBadCodes signs alice in over HTTP and redeems codes in every
// wrong way: wrong or missing verifier, another client, another redirect URI, a reused
// code (which revokes the tokens issued from it), an expired code; and checks CSRF on
// the login form, prompt=none with a session, max_age, consent and logout.
func TestOIDCCodeFlowAndBadCodes(t *testing.T) {
	t.Parallel()
	o := newOPFixture(t, "http://127.0.0.1:9/cb", "http://127.0.0.1:9/bye")
	c := browser(t)
	verifier, challenge := pkce()

	// CSRF: a login form posted without the token, with a forged one, or from a
	// browser without the cookie is refused before the password is looked at.
	login := o.authorize(t, c, o.authParams(o.firstParty, challenge))
	for _, change := range []func(url.Values){
		func(f url.Values) { f.Del("csrf_token") }, // missing
		func(f url.Values) { // forged
			f.Set("csrf_token", "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
		},
		func(f url.Values) { // another browser's
			f.Set("csrf_token", csrfOf(t, o.authorize(t, browser(t), o.authParams(o.firstParty, challenge))))
		},
	} {
		form := login.fields()
		form.Set("email", o.email)
		form.Set("password", o.password)
		change(form)
		wantErrorPage(t, o.post(t, c, "/oauth2/login", form), http.StatusForbidden, "csrf_token")
	}
	form := login.fields()
	form.Set("email", o.email)
	form.Set("password", o.password)
	wantErrorPage(t, o.post(t, browser(t), "/oauth2/login", form), http.StatusForbidden, "CSRF cookie")
	// A wrong password shows the login page again.
	form.Set("password", "not the password at all")
	if p := o.post(t, c, "/oauth2/login", form); p.status != http.StatusUnauthorized || !strings.Contains(p.body, `role="alert"`) {
		t.Fatalf("wrong password: %d %.300s", p.status, p.body)
	}

	code := o.codeFrom(t, o.signIn(t, c, o.authorize(t, c, o.authParams(o.firstParty, challenge))))
	wrong := verifier[:len(verifier)-1] + "A"
	if wrong == verifier {
		wrong = verifier[:len(verifier)-1] + "B"
	}
	wantGrantError(t, o.exchange(t, o.firstParty, o.firstSecret, code, o.redirect, wrong), "invalid_grant", "code_verifier")
	r := o.exchange(t, o.firstParty, o.firstSecret, code, o.redirect, "")
	if r.Error != "invalid_request" || !strings.Contains(r.Description, "code_verifier") {
		t.Fatalf("missing verifier: %+v", r)
	}
	wantGrantError(t, o.exchange(t, o.thirdParty, o.thirdSecret, code, o.redirect, verifier), "invalid_grant", "another client")
	wantGrantError(t, o.exchange(t, o.firstParty, o.firstSecret, code, o.redirect+"x", verifier), "invalid_grant", "redirect_uri")
	good := o.exchange(t, o.firstParty, o.firstSecret, code, o.redirect, verifier)
	if good.status != 200 || good.AccessToken == "" || good.IDToken == "" || good.Scope != "email openid profile" {
		t.Fatalf("exchange: %+v", good)
	}
	if v := o.validate(t, good.AccessToken); !v.Active || v.Claims.Subject != o.alice || v.Claims.ClientId != o.firstParty {
		t.Fatalf("access token: %+v", v)
	}
	// The same code again: refused, and the tokens issued from it die with their session.
	wantGrantError(t, o.exchange(t, o.firstParty, o.firstSecret, code, o.redirect, verifier), "invalid_grant", "already used")
	if v := o.validate(t, good.AccessToken); v.Active || v.Reason != "session_revoked" {
		t.Fatalf("token of a reused code still active: %+v", v)
	}
	// ... and so does the browser session: prompt=none now needs a login.
	q := o.authParams(o.firstParty, challenge)
	q.Set("prompt", "none")
	o.wantRedirectError(t, o.authorize(t, c, q), "login_required")

	// Expired code.
	code = o.codeFrom(t, o.signIn(t, c, o.authorize(t, c, o.authParams(o.firstParty, challenge))))
	o.clock.Advance(61 * time.Second)
	wantGrantError(t, o.exchange(t, o.firstParty, o.firstSecret, code, o.redirect, verifier), "invalid_grant", "expired")
	o.clock.Advance(-61 * time.Second)

	// A session skips the password (prompt=none works); max_age=0 and prompt=login
	// ask for it again.
	o.codeFrom(t, o.authorize(t, c, q))
	q = o.authParams(o.firstParty, challenge)
	q.Set("max_age", "3600")
	o.codeFrom(t, o.authorize(t, c, q))
	for _, change := range []func(url.Values){func(q url.Values) { q.Set("max_age", "0") }, func(q url.Values) { q.Set("prompt", "login") }} {
		q := o.authParams(o.firstParty, challenge)
		o.clock.Advance(2 * time.Second)
		change(q)
		if p := o.authorize(t, c, q); p.status != 200 || !strings.Contains(p.body, `name="password"`) {
			t.Fatalf("%v: want the login page, got %d %v", q, p.status, p.location)
		}
	}
	// acr_values=mfa: alice has no second factor, so signing in cannot satisfy it.
	q = o.authParams(o.firstParty, challenge)
	q.Set("acr_values", "mfa")
	o.wantRedirectError(t, o.signIn(t, c, o.authorize(t, c, q)), "access_denied")

	// A third-party client asks for consent; prompt=none cannot; deny is access_denied.
	q = o.authParams(o.thirdParty, challenge)
	q.Set("prompt", "none")
	o.wantRedirectError(t, o.authorize(t, c, q), "consent_required")
	consent := o.authorize(t, c, o.authParams(o.thirdParty, challenge))
	if !strings.Contains(consent.body, "Expense Tracker") || !strings.Contains(consent.body, "See your email address") {
		t.Fatalf("consent page: %.500s", consent.body)
	}
	deny := consent.fields()
	deny.Set("decision", "deny")
	o.wantRedirectError(t, o.post(t, c, "/oauth2/consent", deny), "access_denied")
	allow := consent.fields()
	allow.Set("decision", "allow")
	allow.Del("csrf_token")
	wantErrorPage(t, o.post(t, c, "/oauth2/consent", allow), http.StatusForbidden, "csrf_token")
	allow = consent.fields()
	allow.Set("decision", "allow")
	code = o.codeFrom(t, o.post(t, c, "/oauth2/consent", allow))
	third := o.exchange(t, o.thirdParty, o.thirdSecret, code, o.redirect, verifier)
	if third.status != 200 {
		t.Fatalf("third-party exchange: %+v", third)
	}
	// The consent is remembered; prompt=consent asks again.
	o.codeFrom(t, o.authorize(t, c, o.authParams(o.thirdParty, challenge)))
	q = o.authParams(o.thirdParty, challenge)
	q.Set("prompt", "consent")
	if p := o.authorize(t, c, q); p.status != 200 || !strings.Contains(p.body, `value="allow"`) {
		t.Fatalf("prompt=consent: %d %v", p.status, p.location)
	}

	// Userinfo with the access token.
	req, _ := http.NewRequest(http.MethodGet, o.issuer+"/oauth2/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+third.AccessToken)
	ui := do(t, http.DefaultClient, req)
	if ui.status != 200 || !strings.Contains(ui.body, `"email":"alice@acme.example"`) || !strings.Contains(ui.body, `"sub":"`+o.alice+`"`) {
		t.Fatalf("userinfo: %d %s", ui.status, ui.body)
	}

	// Logout: an unregistered post-logout URI is an error page (no open redirect);
	// with the hint, the session is revoked and the browser sent back with its state.
	bad := url.Values{"id_token_hint": {third.IDToken}, "post_logout_redirect_uri": {"https://evil.example/"}}
	lreq, _ := http.NewRequest(http.MethodGet, o.issuer+"/oauth2/logout?"+bad.Encode(), nil)
	wantErrorPage(t, do(t, c, lreq), http.StatusBadRequest, "post_logout_redirect_uri")
	okq := url.Values{"id_token_hint": {third.IDToken}, "post_logout_redirect_uri": {o.logout}, "state": {"bye"}}
	lreq, _ = http.NewRequest(http.MethodGet, o.issuer+"/oauth2/logout?"+okq.Encode(), nil)
	p := do(t, c, lreq)
	if p.status != http.StatusSeeOther || p.location == nil || p.location.String() != o.logout+"?state=bye" {
		t.Fatalf("logout: %d %v", p.status, p.location)
	}
	if v := o.validate(t, third.AccessToken); v.Active {
		t.Fatalf("token still active after logout: %+v", v)
	}
	q = o.authParams(o.firstParty, challenge)
	q.Set("prompt", "none")
	o.wantRedirectError(t, o.authorize(t, c, q), "login_required")

	// Logout without id_token_hint (a link from any site) asks first: a GET, or a POST
	// without the form's CSRF token, signs nobody out.
	fresh := o.exchange(t, o.firstParty, o.firstSecret, o.codeFrom(t, o.signIn(t, c, o.authorize(t, c, o.authParams(o.firstParty, challenge)))), o.redirect, verifier)
	lreq, _ = http.NewRequest(http.MethodGet, o.issuer+"/oauth2/logout", nil)
	confirm := do(t, c, lreq)
	if confirm.status != 200 || !strings.Contains(confirm.body, `id="sign-out"`) {
		t.Fatalf("logout without hint: %d %v %.300s", confirm.status, confirm.location, confirm.body)
	}
	if p := o.post(t, c, "/oauth2/logout", url.Values{"state": {"x"}}); p.status != 200 || !strings.Contains(p.body, `id="sign-out"`) {
		t.Fatalf("logout POST without CSRF token: %d %.300s", p.status, p.body)
	}
	if v := o.validate(t, fresh.AccessToken); !v.Active {
		t.Fatalf("an unconfirmed logout revoked the session: %+v", v)
	}
	if p := o.post(t, c, "/oauth2/logout", confirm.fields()); p.status != 200 || !strings.Contains(p.body, "You are signed out") {
		t.Fatalf("confirmed logout: %d %.300s", p.status, p.body)
	}
	if v := o.validate(t, fresh.AccessToken); v.Active {
		t.Fatalf("token active after a confirmed logout: %+v", v)
	}

	// Every refusal of a code left an audit event naming what failed; the reuse one
	// says the session was revoked.
	wantAudit(t, o.fixture, "oauth.code_refused", "code_verifier", "client_id", "redirect_uri", "expired")
	wantAudit(t, o.fixture, "oauth.code_reuse", "")
}

// wantAudit checks that the tenant's audit log has an event of action for each reason
// (the "reason" of its after, or any event for "").
func wantAudit(t *testing.T, f *fixture, action string, reasons ...string) {
	t.Helper()
	evs, err := f.admin.ListAuditEvents(context.Background(), connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", Action: action, PageSize: 1000}))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range reasons {
		found := false
		for _, e := range evs.Msg.Events {
			if want == "" || e.After.GetFields()["reason"].GetStringValue() == want {
				found = true
			}
		}
		if !found {
			t.Errorf("no %s audit event with reason %q among %d", action, want, len(evs.Msg.Events))
		}
	}
}

// TestOIDCStepUpWithTOTP: acr_values=mfa makes a password-only session sign in again,
// with TOTP; the ID token then says acr mfa and amr [pwd otp mfa].
func TestOIDCStepUpWithTOTP(t *testing.T) {
	t.Parallel()
	o := newOPFixture(t, "http://127.0.0.1:9/cb", "http://127.0.0.1:9/bye")
	c := browser(t)
	verifier, challenge := pkce()
	// A password-only session first.
	o.codeFrom(t, o.signIn(t, c, o.authorize(t, c, o.authParams(o.firstParty, challenge))))
	// Enrol TOTP (through the Login RPC's session).
	secret := enrolTOTP(t, o)
	q := o.authParams(o.firstParty, challenge)
	q.Set("acr_values", "mfa")
	step := o.signIn(t, c, o.authorize(t, c, q))
	if step.status != 200 || !strings.Contains(step.body, `autocomplete="one-time-code"`) {
		t.Fatalf("want the TOTP page, got %d: %.300s", step.status, step.body)
	}
	f := step.fields()
	f.Set("totp", wrongTOTP(t, secret))
	if p := o.post(t, c, "/oauth2/login", f); p.status != http.StatusUnauthorized {
		t.Fatalf("wrong TOTP: %d", p.status)
	}
	f = step.fields()
	f.Set("pending", f.Get("pending")+"x")
	f.Set("totp", "123456")
	if p := o.post(t, c, "/oauth2/login", f); p.status != http.StatusBadRequest || !strings.Contains(p.body, "start again") {
		t.Fatalf("tampered pending login: %d %.300s", p.status, p.body)
	}
	f = step.fields()
	code, _ := totp.GenerateCode(secret, time.Now().Add(30*time.Second))
	f.Set("totp", code)
	r := o.exchange(t, o.firstParty, o.firstSecret, o.codeFrom(t, o.post(t, c, "/oauth2/login", f)), o.redirect, verifier)
	claims := decodeJWT(t, r.IDToken)
	if claims["acr"] != "mfa" || claims["nonce"] != "n-456" || claims["aud"] != o.firstParty || claims["azp"] != o.firstParty {
		t.Fatalf("ID token claims: %v", claims)
	}
	if amr, _ := json.Marshal(claims["amr"]); string(amr) != `["pwd","otp","mfa"]` {
		t.Fatalf("amr %s", amr)
	}
}

// enrolTOTP enrols and confirms TOTP for alice and returns the secret.
func enrolTOTP(t *testing.T, o *opFixture) string {
	t.Helper()
	ctx := context.Background()
	lr, err := o.auth.Login(ctx, connect.NewRequest(&keyplanev1.LoginRequest{TenantId: "acme", Email: o.email, Password: o.password}))
	if err != nil {
		t.Fatal(err)
	}
	enroll := connect.NewRequest(&keyplanev1.EnrollTOTPRequest{TenantId: "acme", IdentityId: o.alice})
	enroll.Header().Set("Authorization", "Bearer "+lr.Msg.Token.AccessToken)
	en, err := o.auth.EnrollTOTP(ctx, enroll)
	if err != nil {
		t.Fatal(err)
	}
	code := previousStepCode(t, en.Msg.Secret)
	confirm := connect.NewRequest(&keyplanev1.ConfirmTOTPRequest{TenantId: "acme", IdentityId: o.alice, Code: code})
	confirm.Header().Set("Authorization", "Bearer "+lr.Msg.Token.AccessToken)
	if _, err := o.auth.ConfirmTOTP(ctx, confirm); err != nil {
		t.Fatal(err)
	}
	return en.Msg.Secret
}

func decodeJWT(t *testing.T, raw string) map[string]any {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", raw)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestOIDCClientRegistration: redirect URIs are validated where clients are created
// and updated (over the generated client and over plain Connect JSON), an update
// replaces them, and the authorization endpoint follows.
func TestOIDCClientRegistration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	o := newOPFixture(t, "http://127.0.0.1:9/cb", "http://127.0.0.1:9/bye")
	for _, bad := range []string{"http://app.example/cb", "https://app.example/cb#x", "https://user@app.example/cb", "/cb", "ftp://app.example/",
		"https://app.example/" + strings.Repeat("a", 600)} {
		_, err := o.admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: o.bot, Name: "x",
			RedirectUris: []string{bad}}))
		wantCode(t, err, connect.CodeInvalidArgument, "redirect_uris")
	}
	_, err := o.admin.UpdateClient(ctx, connect.NewRequest(&keyplanev1.UpdateClientRequest{TenantId: "acme", ClientId: o.firstParty,
		PostLogoutRedirectUris: []string{"javascript:alert(1)"}}))
	wantCode(t, err, connect.CodeInvalidArgument, "post_logout_redirect_uris")

	// Plain net/http speaking Connect JSON.
	body := `{"tenantId":"acme","identityId":"` + o.bot + `","name":"y","redirectUris":["https://a.example/cb","https://a.example/cb"]}`
	req, _ := http.NewRequest(http.MethodPost, o.url+"/keyplane.v1.AdminService/CreateClient", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	p := do(t, http.DefaultClient, req)
	if p.status != http.StatusBadRequest || !strings.Contains(p.body, `"invalid_argument"`) || !strings.Contains(p.body, "redirect_uris") {
		t.Fatalf("duplicate redirect URI over Connect JSON: %d %s", p.status, p.body)
	}

	// An update replaces the redirect URIs: the old one is refused at once.
	up, err := o.admin.UpdateClient(ctx, connect.NewRequest(&keyplanev1.UpdateClientRequest{TenantId: "acme", ClientId: o.firstParty,
		RedirectUris: []string{"https://app.example/cb"}, FirstParty: true}))
	if err != nil || len(up.Msg.Credential.RedirectUris) != 1 || !up.Msg.Credential.FirstParty {
		t.Fatalf("update: %v %v", up, err)
	}
	_, challenge := pkce()
	wantErrorPage(t, o.authorize(t, browser(t), o.authParams(o.firstParty, challenge)), http.StatusBadRequest, "redirect_uri: not registered")
}

// TestSecurityFirstPartyNeedsCredentialsManage: marking a client first party (its
// users sign in without a consent page) is not within nhi-owner's rights over its own
// service accounts: it needs iam.credentials.manage on the tenant.
func TestSecurityFirstPartyNeedsCredentialsManage(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	email := "owner@acme.test"
	h, err := f.op.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "NHI owner", Email: email}))
	if err != nil {
		t.Fatal(err)
	}
	owner := h.Msg.Identity.Id
	if _, err := f.op.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: owner, Password: "a long enough password"})); err != nil {
		t.Fatal(err)
	}
	f.bind(t, owner, schema.RoleNHIOwner, "*")
	mineReq := f.serviceAccount("mine")
	mineReq.OwnerId = owner
	mine, err := f.op.CreateIdentity(ctx, connect.NewRequest(mineReq))
	if err != nil {
		t.Fatal(err)
	}
	c := adminClient(f.url, mfaLogin(t, f.url, "acme", owner, email, "a long enough password"))
	_, err = c.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: mine.Msg.Identity.Id, Name: "app",
		RedirectUris: []string{"https://app.example/cb"}, FirstParty: true}))
	wantCode(t, err, connect.CodePermissionDenied, "iam.credentials.manage")
	cl, err := c.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: mine.Msg.Identity.Id, Name: "app",
		RedirectUris: []string{"https://app.example/cb"}}))
	if err != nil {
		t.Fatalf("third-party client for its own service account: %v", err)
	}
	_, err = c.UpdateClient(ctx, connect.NewRequest(&keyplanev1.UpdateClientRequest{TenantId: "acme", ClientId: cl.Msg.ClientId,
		RedirectUris: []string{"https://app.example/cb"}, FirstParty: true}))
	wantCode(t, err, connect.CodePermissionDenied, "iam.credentials.manage")
	if _, err := f.op.UpdateClient(ctx, connect.NewRequest(&keyplanev1.UpdateClientRequest{TenantId: "acme", ClientId: cl.Msg.ClientId,
		RedirectUris: []string{"https://app.example/cb"}, FirstParty: true})); err != nil {
		t.Fatalf("the operator marking it first party: %v", err)
	}
}

// csrfOf is the CSRF token of a page's form.
func csrfOf(t *testing.T, p pageResp) string {
	t.Helper()
	tok := p.fields().Get("csrf_token")
	if tok == "" {
		t.Fatalf("page without a csrf_token: %.300s", p.body)
	}
	return tok
}

// wrongTOTP is a six-digit code that no step around now accepts.
func wrongTOTP(t *testing.T, secret string) string {
	t.Helper()
	valid := map[string]bool{}
	for _, d := range []time.Duration{-60 * time.Second, -30 * time.Second, 0, 30 * time.Second, 60 * time.Second} {
		c, err := totp.GenerateCode(secret, time.Now().Add(d))
		if err != nil {
			t.Fatal(err)
		}
		valid[c] = true
	}
	for _, c := range []string{"000000", "111111", "222222", "333333", "444444", "555555"} {
		if !valid[c] {
			return c
		}
	}
	t.Fatal("no wrong TOTP code found")
	return ""
}
