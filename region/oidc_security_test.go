package region_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
)

// TestSecurityOIDCAccessTokenIsNotAnAPIToken: the access token a relying party gets
// from the authorization_code grant is for userinfo, not for keyplane's API. Before,
// it carried aud = the tenant's issuer (keyplane's own API audience), so any client
// — a third-party one after one consent, silently with prompt=none; a first-party
// one without even a consent page — could call keyplane's API as the person who
// signed in, with that person's every permission and second factor (amr mfa), e.g.
// enrol a TOTP authenticator of its own on the account.
func TestSecurityOIDCAccessTokenIsNotAnAPIToken(t *testing.T) {
	t.Parallel()
	o := newOPFixture(t, "http://127.0.0.1:9/cb", "http://127.0.0.1:9/bye")
	ctx := context.Background()
	c := browser(t)
	verifier, challenge := pkce()

	// First party: no consent page.
	first := o.exchange(t, o.firstParty, o.firstSecret, o.codeFrom(t, o.signIn(t, c, o.authorize(t, c, o.authParams(o.firstParty, challenge)))),
		o.redirect, verifier)
	// Third party: one consent.
	consent := o.authorize(t, c, o.authParams(o.thirdParty, challenge))
	allow := consent.fields()
	allow.Set("decision", "allow")
	third := o.exchange(t, o.thirdParty, o.thirdSecret, o.codeFrom(t, o.post(t, c, "/oauth2/consent", allow)), o.redirect, verifier)

	for name, tok := range map[string]string{"first party": first.AccessToken, "third party": third.AccessToken} {
		t.Run(name, func(t *testing.T) {
			if tok == "" {
				t.Fatal("no access token")
			}
			// The attack: the relying party enrols its own authenticator on the account.
			enroll := connect.NewRequest(&keyplanev1.EnrollTOTPRequest{TenantId: "acme", IdentityId: o.alice})
			enroll.Header().Set("Authorization", "Bearer "+tok)
			_, err := o.auth.EnrollTOTP(ctx, enroll)
			wantCode(t, err, connect.CodeUnauthenticated, "audience")
			// ... or reads the tenant through the admin API.
			_, err = adminClient(o.url, tok).ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: "acme"}))
			wantCode(t, err, connect.CodeUnauthenticated, "audience")

			// What the token is for still works: userinfo, and validation.
			req, _ := http.NewRequest(http.MethodGet, o.issuer+"/oauth2/userinfo", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			if ui := do(t, http.DefaultClient, req); ui.status != http.StatusOK || !strings.Contains(ui.body, `"sub":"`+o.alice+`"`) {
				t.Fatalf("userinfo: %d %s", ui.status, ui.body)
			}
			v := o.validate(t, tok)
			if !v.Active || len(v.Claims.Audience) != 1 || v.Claims.Audience[0] != o.issuer+"/oauth2/userinfo" {
				t.Fatalf("validation: active %v, aud %v; want aud %s/oauth2/userinfo", v.Active, v.Claims.Audience, o.issuer)
			}
		})
	}
}

// TestSecurityOIDCConsentCannotSkipStepUp: the consent form is answered only for the
// request (and session) the authorization endpoint showed it for. Before, the consent
// POST took any authorization request and issued a code for the browser's session
// without the endpoint's step-up checks, so whoever held a session (a shared or
// stolen browser) could answer a request with max_age=0, prompt=login or
// acr_values=mfa without signing in again: the relying party got a code for a
// session that never met them. The refusal is audited (oauth.authorize_refused, csrf).
func TestSecurityOIDCConsentCannotSkipStepUp(t *testing.T) {
	t.Parallel()
	o := newOPFixture(t, "http://127.0.0.1:9/cb", "http://127.0.0.1:9/bye")
	c := browser(t)
	_, challenge := pkce()
	o.codeFrom(t, o.signIn(t, c, o.authorize(t, c, o.authParams(o.firstParty, challenge))))
	o.clock.Advance(5 * time.Second)
	// A consent page for a plain request: the form the browser may post.
	consent := o.authorize(t, c, o.authParams(o.thirdParty, challenge))
	if !strings.Contains(consent.body, `value="allow"`) {
		t.Fatalf("want the consent page, got %d %v: %.300s", consent.status, consent.location, consent.body)
	}
	for _, tc := range []struct{ name, param, value string }{
		{"max_age=0", "max_age", "0"},
		{"prompt=login", "prompt", "login"},
		{"acr_values=mfa", "acr_values", "mfa"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := o.authParams(o.thirdParty, challenge)
			q.Set(tc.param, tc.value)
			// The endpoint itself asks for a sign-in...
			if p := o.authorize(t, c, q); p.status != http.StatusOK || !strings.Contains(p.body, `name="password"`) {
				t.Fatalf("authorize: want the login page, got %d %v", p.status, p.location)
			}
			// ... and the consent form posted with that request must not skip it.
			form := consent.fields()
			form.Set("decision", "allow")
			form.Set("request", q.Encode())
			p := o.post(t, c, "/oauth2/consent", form)
			if p.location != nil && p.location.Query().Get("code") != "" {
				t.Fatalf("the consent form issued a code for %s without a new sign-in: %v", tc.name, p.location)
			}
			wantErrorPage(t, p, http.StatusForbidden, "start again")
		})
	}
	wantAudit(t, o.fixture, "oauth.authorize_refused", "csrf")
	// The form answers the request it was shown for.
	allow := consent.fields()
	allow.Set("decision", "allow")
	o.codeFrom(t, o.post(t, c, "/oauth2/consent", allow))
}

// TestSecurityOIDCLogoutHintOfAnotherPerson: RP-initiated logout with an
// id_token_hint signs out without asking only when the hint is the browser's own
// person's. Before, any ID token of the tenant (an attacker's own, from any
// application) in a link or an image signed the victim's browser out at once.
func TestSecurityOIDCLogoutHintOfAnotherPerson(t *testing.T) {
	t.Parallel()
	o := newOPFixture(t, "http://127.0.0.1:9/cb", "http://127.0.0.1:9/bye")
	ctx := context.Background()
	verifier, challenge := pkce()
	// Mallory, another person of the tenant, gets an ID token of her own.
	h, err := o.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Mallory", Email: "mallory@acme.example"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.admin.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: h.Msg.Identity.Id,
		Password: "mallory's own long password"})); err != nil {
		t.Fatal(err)
	}
	m := browser(t)
	login := o.authorize(t, m, o.authParams(o.firstParty, challenge))
	form := login.fields()
	form.Set("email", "mallory@acme.example")
	form.Set("password", "mallory's own long password")
	mallory := o.exchange(t, o.firstParty, o.firstSecret, o.codeFrom(t, o.post(t, m, "/oauth2/login", form)), o.redirect, verifier)
	if mallory.IDToken == "" {
		t.Fatalf("mallory's exchange: %+v", mallory)
	}

	// Alice is signed in in her browser; a page makes it load the logout URL with
	// Mallory's hint.
	c := browser(t)
	o.codeFrom(t, o.signIn(t, c, o.authorize(t, c, o.authParams(o.firstParty, challenge))))
	q := url.Values{"id_token_hint": {mallory.IDToken}, "post_logout_redirect_uri": {o.logout}, "state": {"x"}}
	req, _ := http.NewRequest(http.MethodGet, o.issuer+"/oauth2/logout?"+q.Encode(), nil)
	p := do(t, c, req)
	if p.status != http.StatusOK || p.location != nil || !strings.Contains(p.body, "Sign out?") {
		t.Fatalf("logout with another person's hint: want the confirmation page, got %d %v: %.300s", p.status, p.location, p.body)
	}
	noneQ := o.authParams(o.firstParty, challenge)
	noneQ.Set("prompt", "none")
	o.codeFrom(t, o.authorize(t, c, noneQ)) // alice's session lives

	// Confirmed on that page, it signs out.
	confirm := p.fields()
	if confirm.Get("post_logout_redirect_uri") != o.logout {
		t.Fatalf("confirmation form: %v", confirm)
	}
	if p := o.post(t, c, "/oauth2/logout", confirm); p.status != http.StatusSeeOther || p.location == nil || p.location.String() != o.logout+"?state=x" {
		t.Fatalf("confirmed logout: %d %v: %.300s", p.status, p.location, p.body)
	}
	o.wantRedirectError(t, o.authorize(t, c, noneQ), "login_required")

	// Her own hint still signs out at once.
	first := o.exchange(t, o.firstParty, o.firstSecret, o.codeFrom(t, o.signIn(t, c, o.authorize(t, c, o.authParams(o.firstParty, challenge)))),
		o.redirect, verifier)
	q = url.Values{"id_token_hint": {first.IDToken}, "post_logout_redirect_uri": {o.logout}}
	req, _ = http.NewRequest(http.MethodGet, o.issuer+"/oauth2/logout?"+q.Encode(), nil)
	if p := do(t, c, req); p.status != http.StatusSeeOther || p.location == nil || p.location.String() != o.logout {
		t.Fatalf("logout with her own hint: %d %v: %.300s", p.status, p.location, p.body)
	}
	o.wantRedirectError(t, o.authorize(t, c, noneQ), "login_required")
}

// TestSecurityOIDCCodeRefusalsAreAudited: every refused code redemption writes
// oauth.code_refused naming why. Before, a code whose session was revoked (a logout,
// RevokeIdentityTokens) or whose identity was disabled after it was issued was refused
// without an audit event: an attacker replaying a stolen code after the person signed
// out left no trace.
func TestSecurityOIDCCodeRefusalsAreAudited(t *testing.T) {
	t.Parallel()
	o := newOPFixture(t, "http://127.0.0.1:9/cb", "http://127.0.0.1:9/bye")
	ctx := context.Background()
	verifier, challenge := pkce()

	// Signed out between the code and its redemption.
	c := browser(t)
	code := o.codeFrom(t, o.signIn(t, c, o.authorize(t, c, o.authParams(o.firstParty, challenge))))
	req, _ := http.NewRequest(http.MethodGet, o.issuer+"/oauth2/logout", nil)
	if p := o.post(t, c, "/oauth2/logout", do(t, c, req).fields()); p.status != http.StatusOK || !strings.Contains(p.body, "Signed out") {
		t.Fatalf("logout: %d %.300s", p.status, p.body)
	}
	wantGrantError(t, o.exchange(t, o.firstParty, o.firstSecret, code, o.redirect, verifier), "invalid_grant", "revoked")
	wantAudit(t, o.fixture, "oauth.code_refused", "session_revoked")

	// The person's tokens revoked between the code and its redemption.
	o.clock.Advance(2 * time.Second)
	c = browser(t)
	code = o.codeFrom(t, o.signIn(t, c, o.authorize(t, c, o.authParams(o.firstParty, challenge))))
	revoke := connect.NewRequest(&keyplanev1.RevokeIdentityTokensRequest{TenantId: "acme", IdentityId: o.alice})
	revoke.Header().Set("Authorization", "Bearer "+secret)
	if _, err := o.auth.RevokeIdentityTokens(ctx, revoke); err != nil {
		t.Fatal(err)
	}
	wantGrantError(t, o.exchange(t, o.firstParty, o.firstSecret, code, o.redirect, verifier), "invalid_grant", "revoked")
	wantAudit(t, o.fixture, "oauth.code_refused", "tokens_revoked")

	// Disabled between the code and its redemption.
	o.clock.Advance(2 * time.Second)
	c = browser(t)
	code = o.codeFrom(t, o.signIn(t, c, o.authorize(t, c, o.authParams(o.firstParty, challenge))))
	if _, err := o.admin.DisableIdentity(ctx, connect.NewRequest(&keyplanev1.DisableIdentityRequest{TenantId: "acme", Id: o.alice})); err != nil {
		t.Fatal(err)
	}
	wantGrantError(t, o.exchange(t, o.firstParty, o.firstSecret, code, o.redirect, verifier), "invalid_grant", "disabled")
	wantAudit(t, o.fixture, "oauth.code_refused", "identity_inactive")
}

// tossedCSRF is what an attacker on a sibling host (evil.example.com next to
// iam.example.com) can do: set the kp_csrf cookie for the parent domain to a key of
// its choosing (cookie tossing) and so make valid CSRF tokens for it.
func tossedCSRF(t *testing.T, o *opFixture, c *http.Client) string {
	t.Helper()
	key := strings.Repeat("A", 43)
	u, _ := url.Parse(o.issuer + "/")
	c.Jar.SetCookies(u, []*http.Cookie{{Name: "kp_csrf", Value: key, Path: "/t/acme/"}})
	nonce := "bm9uY2Vub25jZW5vbmNl"
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte("keyplane-csrf/" + nonce))
	return nonce + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// TestSecurityOIDCLoginRefusesCrossSiteForm: the login form is refused when the
// browser says it was posted from another origin (Sec-Fetch-Site). Before, the CSRF
// token was the only guard, and an attacker on a sibling host who tossed its own
// kp_csrf cookie into the victim's browser could post the login form with its own
// credentials: the victim was signed in as the attacker (login CSRF) and the
// application got the attacker's identity for the victim's actions.
func TestSecurityOIDCLoginRefusesCrossSiteForm(t *testing.T) {
	t.Parallel()
	o := newOPFixture(t, "http://127.0.0.1:9/cb", "http://127.0.0.1:9/bye")
	_, challenge := pkce()
	victim := browser(t)
	form := url.Values{"csrf_token": {tossedCSRF(t, o, victim)}, "request": {o.authParams(o.firstParty, challenge).Encode()}, "step": {"password"},
		"email": {o.email}, "password": {o.password}} // the attacker's own account
	for _, site := range []string{"same-site", "cross-site"} {
		req, _ := http.NewRequest(http.MethodPost, o.issuer+"/oauth2/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", site)
		p := do(t, victim, req)
		if p.location != nil {
			t.Fatalf("Sec-Fetch-Site %s: the forged login signed the browser in: %d %v", site, p.status, p.location)
		}
		wantErrorPage(t, p, http.StatusForbidden, "another site")
	}
	wantAudit(t, o.fixture, "oauth.authorize_refused", "cross_site")
	// The login page's own form (same-origin, or a browser that does not say) works.
	c := browser(t)
	login := o.authorize(t, c, o.authParams(o.firstParty, challenge))
	f := login.fields()
	f.Set("email", o.email)
	f.Set("password", o.password)
	req, _ := http.NewRequest(http.MethodPost, o.issuer+"/oauth2/login", strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	o.codeFrom(t, do(t, c, req))
}
