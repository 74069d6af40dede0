package region_test

import (
	"context"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/pquerna/otp/totp"
	"golang.org/x/oauth2"
)

// relyingParty is an application signing people in through keyplane, built as
// applications are: go-oidc for discovery and ID-token verification, x/oauth2 for the
// authorization-code flow with PKCE.
type relyingParty struct {
	url      string
	provider *oidc.Provider
	config   oauth2.Config

	mu                     sync.Mutex
	state, nonce, verifier string
	idToken, accessToken   string
	claims                 struct{ Subject, Email, Name, Nonce, ACR string }
	userinfo               *oidc.UserInfo
	err                    error
}

func (rp *relyingParty) fail(w http.ResponseWriter, err error) {
	rp.mu.Lock()
	rp.err = err
	rp.mu.Unlock()
	http.Error(w, err.Error(), http.StatusBadRequest)
}

func (rp *relyingParty) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	switch r.URL.Path {
	case "/login":
		rp.mu.Lock()
		rp.state, rp.nonce, rp.verifier = oauth2.GenerateVerifier(), oauth2.GenerateVerifier(), oauth2.GenerateVerifier()
		u := rp.config.AuthCodeURL(rp.state, oidc.Nonce(rp.nonce), oauth2.S256ChallengeOption(rp.verifier))
		rp.mu.Unlock()
		http.Redirect(w, r, u, http.StatusFound)
	case "/callback":
		rp.mu.Lock()
		state, nonce, verifier := rp.state, rp.nonce, rp.verifier
		rp.mu.Unlock()
		if e := r.URL.Query().Get("error"); e != "" {
			rp.fail(w, fmt.Errorf("authorization error %s: %s", e, r.URL.Query().Get("error_description")))
			return
		}
		if r.URL.Query().Get("state") != state {
			rp.fail(w, fmt.Errorf("state %q, want %q", r.URL.Query().Get("state"), state))
			return
		}
		tok, err := rp.config.Exchange(ctx, r.URL.Query().Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			rp.fail(w, fmt.Errorf("exchange: %w", err))
			return
		}
		raw, _ := tok.Extra("id_token").(string)
		idt, err := rp.provider.Verifier(&oidc.Config{ClientID: rp.config.ClientID}).Verify(ctx, raw)
		if err != nil {
			rp.fail(w, fmt.Errorf("verify ID token: %w", err))
			return
		}
		if idt.Nonce != nonce {
			rp.fail(w, fmt.Errorf("nonce %q, want %q", idt.Nonce, nonce))
			return
		}
		ui, err := rp.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
		if err != nil {
			rp.fail(w, fmt.Errorf("userinfo: %w", err))
			return
		}
		rp.mu.Lock()
		rp.idToken, rp.accessToken, rp.userinfo = raw, tok.AccessToken, ui
		err = idt.Claims(&struct {
			Subject *string `json:"sub"`
			Email   *string `json:"email"`
			Name    *string `json:"name"`
			Nonce   *string `json:"nonce"`
			ACR     *string `json:"acr"`
		}{&rp.claims.Subject, &rp.claims.Email, &rp.claims.Name, &rp.claims.Nonce, &rp.claims.ACR})
		rp.mu.Unlock()
		if err != nil {
			rp.fail(w, err)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>RP</title><p id="hello">Signed in as %s</p>`, html.EscapeString(ui.Email))
	case "/bye":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>RP</title><p id="bye">Signed out, state %s</p>`, html.EscapeString(r.URL.Query().Get("state")))
	default:
		http.NotFound(w, r)
	}
}

// chromiumPath finds the Debian package's Chromium; a machine without it fails the
// test (make postgres installs it).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found on PATH: install the Debian package chromium (make postgres, deploy/ensure-postgres.sh, installs it)")
	return ""
}

// TestOIDCBrowserSignInConsentLogout drives a real headless Chromium through keyplane's
// login page (password, then TOTP), the consent page of a third-party application,
// back to the application, which verifies the ID token (go-oidc) and calls userinfo;
// then RP-initiated logout revokes the session: the access token issued before no
// longer validates. With KEYPLANE_SCREENSHOT=path, the login page is saved there.
func TestOIDCBrowserSignInConsentLogout(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rp := &relyingParty{url: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	o := newOPFixture(t, rp.url+"/callback", rp.url+"/bye")
	secret := enrolTOTP(t, o)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rp.provider, err = oidc.NewProvider(ctx, o.issuer)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	rp.config = oauth2.Config{ClientID: o.thirdParty, ClientSecret: o.thirdSecret, Endpoint: rp.provider.Endpoint(),
		RedirectURL: rp.url + "/callback", Scopes: []string{oidc.ScopeOpenID, "profile", "email"}}

	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Flag("disable-gpu", true), chromedp.WindowSize(720, 640))...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()

	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			rp.mu.Lock()
			defer rp.mu.Unlock()
			t.Fatalf("%s: %v (relying party: %v)", what, err, rp.err)
		}
	}
	text := func(sel chromedp.CSS) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	do("open the application", chromedp.Navigate(rp.url+"/login"), chromedp.WaitVisible(chromedp.ID("email")))
	if path := os.Getenv("KEYPLANE_SCREENSHOT"); path != "" {
		shot, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	do("password step",
		chromedp.SendKeys(chromedp.ID("email"), o.email),
		chromedp.SendKeys(chromedp.ID("password"), o.password),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("totp")))
	code, err := totp.GenerateCode(secret, time.Now().Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	do("TOTP step", chromedp.SendKeys(chromedp.ID("totp"), code), chromedp.Click(chromedp.ID("verify")), chromedp.WaitVisible(chromedp.ID("allow")))
	consentText := text("main")
	do("consent", chromedp.Click(chromedp.ID("allow")), chromedp.WaitVisible(chromedp.ID("hello")))
	hello := text("#hello")
	if !strings.Contains(consentText, "Expense Tracker") || !strings.Contains(consentText, "See your email address") {
		t.Fatalf("consent page: %q", consentText)
	}
	rp.mu.Lock()
	claims, ui, access, idToken, rpErr := rp.claims, rp.userinfo, rp.accessToken, rp.idToken, rp.err
	rp.mu.Unlock()
	if rpErr != nil || hello != "Signed in as "+o.email {
		t.Fatalf("relying party: %q %v", hello, rpErr)
	}
	if claims.Subject != o.alice || claims.Email != o.email || claims.Name != "Alice Liddell" || claims.ACR != "mfa" {
		t.Fatalf("ID token claims %+v", claims)
	}
	if ui.Subject != o.alice || ui.Email != o.email {
		t.Fatalf("userinfo %+v", ui)
	}
	if v := o.validate(t, access); !v.Active {
		t.Fatalf("access token before logout: %+v", v)
	}

	// RP-initiated logout from the browser, at discovery's end_session_endpoint.
	var meta struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if err := rp.provider.Claims(&meta); err != nil || meta.EndSession == "" {
		t.Fatalf("end_session_endpoint: %q %v", meta.EndSession, err)
	}
	q := url.Values{"id_token_hint": {idToken}, "post_logout_redirect_uri": {rp.url + "/bye"}, "state": {"s-789"}}
	do("logout", chromedp.Navigate(meta.EndSession+"?"+q.Encode()), chromedp.WaitVisible(chromedp.ID("bye")))
	if bye := text("#bye"); bye != "Signed out, state s-789" {
		t.Fatalf("after logout: %q", bye)
	}
	if v := o.validate(t, access); v.Active || v.Reason != "session_revoked" {
		t.Fatalf("access token after logout: %+v", v)
	}
	if _, err := rp.provider.UserInfo(ctx, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: access, TokenType: "Bearer"})); err == nil {
		t.Fatal("userinfo accepted a token of a logged-out session")
	}
	// The browser's cookie is gone: signing in again shows the login page.
	do("sign in after logout", chromedp.Navigate(rp.url+"/login"), chromedp.WaitVisible(chromedp.ID("password")))
}
