package region

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/keyplane/keyplane/region/credential"
	"github.com/keyplane/keyplane/region/token"
	"github.com/keyplane/keyplane/schema"
)

// keyplane as OpenID Provider (docs/openid-provider.md): the authorization endpoint
// (authorization-code flow with PKCE S256 only), the login, second-factor and consent
// pages it shows, the authorization_code grant at the token endpoint (access and ID
// token), userinfo and RP-initiated logout.

// authCodeTTL is how long an authorization code may wait for its redemption.
const authCodeTTL = 60 * time.Second

// mountOIDC mounts the OpenID Provider's endpoints under each tenant's issuer.
func (n *Node) mountOIDC(mux *http.ServeMux) {
	mux.HandleFunc("GET /t/{tenant}/oauth2/authorize", n.limitHTTP(n.guards.token, n.pageHandler(n.authorizeEndpoint)))
	mux.HandleFunc("POST /t/{tenant}/oauth2/login", n.pageHandler(n.loginSubmit))
	mux.HandleFunc("POST /t/{tenant}/oauth2/consent", n.limitHTTP(n.guards.token, n.pageHandler(n.consentSubmit)))
	mux.HandleFunc("GET /t/{tenant}/oauth2/logout", n.pageHandler(n.logout))
	mux.HandleFunc("POST /t/{tenant}/oauth2/logout", n.pageHandler(n.logout))
	mux.HandleFunc("GET /t/{tenant}/oauth2/userinfo", n.limitHTTP(n.guards.introspect, n.userinfo))
	mux.HandleFunc("POST /t/{tenant}/oauth2/userinfo", n.limitHTTP(n.guards.introspect, n.userinfo))
}

type pageFunc func(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant)

// pageHandler resolves the tenant for a browser-facing endpoint, parses a posted form
// (bounded, no repeated fields) and answers failures with an HTML page.
func (n *Node) pageHandler(f pageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx := context.WithValue(r.Context(), requestIDKey{}, incomingRequestID(r.Header.Get(RequestIDHeader)))
		w.Header().Set(RequestIDHeader, requestID(ctx))
		tenantID := r.PathValue("tenant")
		if !schema.ValidTenantID(tenantID) {
			messagePage(w, http.StatusNotFound, "Unknown organization", "There is no such tenant.")
			return
		}
		t, err := n.store.GetTenant(ctx, tenantID)
		if errors.Is(err, schema.ErrNotFound) {
			messagePage(w, http.StatusNotFound, "Unknown organization", "There is no such tenant.")
			return
		}
		if err != nil {
			n.failPage(ctx, w, err)
			return
		}
		if t.Status != schema.StatusActive {
			messagePage(w, http.StatusForbidden, "Sign-in unavailable", "This organization is disabled.")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
				messagePage(w, http.StatusBadRequest, "Bad request", "Content-Type must be application/x-www-form-urlencoded.")
				return
			}
			if err := r.ParseForm(); err != nil {
				messagePage(w, http.StatusBadRequest, "Bad request", "The form is malformed or too large.")
				return
			}
			for k, v := range r.PostForm {
				if len(v) > 1 {
					messagePage(w, http.StatusBadRequest, "Bad request", "The field "+k+" is repeated.")
					return
				}
			}
		}
		f(ctx, w, r, t)
		n.metrics.observeRPCIn(ctx, r.Pattern, "ok", time.Since(start))
	}
}

// failPage answers an internal failure (never its text).
func (n *Node) failPage(ctx context.Context, w http.ResponseWriter, err error) {
	oe := n.toOAuthError(ctx, err)
	status := http.StatusInternalServerError
	if oe.status == http.StatusServiceUnavailable {
		status = oe.status
	}
	messagePage(w, status, "Something went wrong", "keyplane could not complete this request; try again. ("+oe.Code+")")
}

// authorizeRequest parses and checks an authorization request against its client: an
// error that cannot be sent to the client (an unknown client, a redirect URI it did
// not register) is shown as a page and ok is false; any other is redirected.
func (n *Node) authorizeRequest(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant, query string) (authRequest, schema.OAuthClient, bool) {
	q, err := url.ParseQuery(query)
	if err != nil || len(query) > 8192 {
		messagePage(w, http.StatusBadRequest, "Invalid request", "The authorization request is malformed.")
		return authRequest{}, schema.OAuthClient{}, false
	}
	req, aerr := parseAuthRequest(q)
	if aerr != nil && !aerr.redirectable {
		messagePage(w, http.StatusBadRequest, "Invalid request", aerr.Description)
		return req, schema.OAuthClient{}, false
	}
	c, err := n.store.GetOAuthClient(ctx, t.Scope(), req.ClientID)
	if errors.Is(err, schema.ErrNotFound) {
		messagePage(w, http.StatusBadRequest, "Unknown application", "client_id: no such client in this tenant.")
		return req, c, false
	}
	if err != nil {
		n.failPage(ctx, w, err)
		return req, c, false
	}
	if !slices.Contains(c.RedirectURIs, req.RedirectURI) {
		// Never redirect to a URI the client did not register (open redirector).
		n.recordRefusal(ctx, t, schema.Change{Actor: "anonymous", ClientID: c.ClientID, RequestID: requestID(ctx)},
			schema.OAuthRefusal{Action: "oauth.authorize_refused", ClientID: c.ClientID, Reason: "redirect_uri"})
		messagePage(w, http.StatusBadRequest, "Invalid request",
			"redirect_uri: not registered for this client (keyplane matches redirect URIs exactly).")
		return req, c, false
	}
	if aerr != nil {
		n.redirectError(w, r, t, req, aerr)
		return req, c, false
	}
	for _, s := range req.Scopes {
		if !slices.Contains(oidcScopes, s) && !slices.Contains(c.AllowedScopes, s) {
			n.redirectError(w, r, t, req, &authError{Code: "invalid_scope", Description: "scope " + quoteParam(s) + " is not allowed for this client"})
			return req, c, false
		}
	}
	return req, c, true
}

// redirectError sends an authorization error to the (registered) redirect URI.
func (n *Node) redirectError(w http.ResponseWriter, r *http.Request, t schema.Tenant, req authRequest, e *authError) {
	v := url.Values{"error": {e.Code}, "error_description": {e.Description}}
	n.redirectBack(w, r, t, req, v)
}

// redirectBack redirects to the request's redirect URI with v, state and iss (RFC 9207).
func (n *Node) redirectBack(w http.ResponseWriter, r *http.Request, t schema.Tenant, req authRequest, v url.Values) {
	if req.State != "" {
		v.Set("state", req.State)
	}
	v.Set("iss", n.Issuer(t.ID))
	u := req.RedirectURI
	if strings.Contains(u, "?") {
		u += "&" + v.Encode()
	} else {
		u += "?" + v.Encode()
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, u, http.StatusSeeOther)
}

// authorizeEndpoint is the authorization endpoint.
func (n *Node) authorizeEndpoint(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant) {
	req, c, ok := n.authorizeRequest(ctx, w, r, t, r.URL.RawQuery)
	if !ok {
		return
	}
	sess, err := n.browserSession(ctx, r, t)
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	n.continueAuthorize(ctx, w, r, t, c, req, sess, false)
}

// continueAuthorize takes an authorization from a browser session (nil: none) on:
// login when there is none or the request demands a new one, then consent, then the
// code. fresh says the session was opened by this request's login.
func (n *Node) continueAuthorize(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant, c schema.OAuthClient, req authRequest, sess *schema.BrowserSession, fresh bool) {
	if !fresh && (sess == nil || req.prompt("login") ||
		(req.MaxAge >= 0 && n.now().Sub(sess.AuthTime) > time.Duration(req.MaxAge)*time.Second) ||
		(req.wantsMFA() && !slices.Contains(sess.AMR, "mfa"))) {
		if req.prompt("none") {
			n.redirectError(w, r, t, req, &authError{Code: "login_required", Description: "the end user must sign in (again)"})
			return
		}
		n.loginPage(w, r, t, c, req, http.StatusOK, "", "")
		return
	}
	if !c.FirstParty {
		consented := false
		if !req.prompt("consent") {
			var err error
			if consented, err = n.store.HasConsent(ctx, t.Scope(), sess.IdentityID, c.ClientID, req.Scopes); err != nil {
				n.failPage(ctx, w, err)
				return
			}
		}
		if !consented {
			if req.prompt("none") {
				n.redirectError(w, r, t, req, &authError{Code: "consent_required", Description: "the end user must consent"})
				return
			}
			key := n.csrfKey(w, r, t.ID)
			renderPage(w, http.StatusOK, page{Kind: "consent", Title: "Allow access?", Client: c.Name, Action: n.cookiePath(t.ID) + "oauth2/consent",
				CSRF: boundCSRFToken(key, consentBinding(sess.ID, requestQuery(r))), Request: requestQuery(r), Scopes: describeScopes(req.Scopes)},
				originOf(req.RedirectURI))
			return
		}
	}
	n.issueCode(ctx, w, r, t, req, sess.Session)
}

// issueCode stores an authorization code for sess and redirects to the client with it.
func (n *Node) issueCode(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant, req authRequest, sess schema.Session) {
	code, err := credential.NewSecret(credential.PrefixAuthCode)
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	err = n.store.CreateAuthCode(ctx, schema.Change{Actor: "identity:" + sess.IdentityID, ActorKind: "human", ClientID: req.ClientID, RequestID: requestID(ctx)},
		t.Scope(), schema.NewAuthCode{AuthCode: schema.AuthCode{ID: code.KeyID, SessionID: sess.ID, ClientID: req.ClientID, RedirectURI: req.RedirectURI,
			CodeChallenge: req.CodeChallenge, Nonce: req.Nonce, Scope: req.scope(), ExpiresAt: n.now().Add(authCodeTTL)}, Hash: code.Hash})
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	n.redirectBack(w, r, t, req, url.Values{"code": {code.Text}})
}

// browserSession returns the live session of the request's session cookie, or nil.
// A session whose identity is no longer active, or that was revoked by any route
// (logout, a reused code, RevokeIdentityTokens), counts as none.
func (n *Node) browserSession(ctx context.Context, r *http.Request, t schema.Tenant) (*schema.BrowserSession, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, nil
	}
	keyID, err := credential.ParseSecret(credential.PrefixBrowserSession, ck.Value)
	if err != nil {
		return nil, nil
	}
	sc := t.Scope()
	bs, err := n.store.GetBrowserSession(ctx, sc, keyID, func(h []byte) bool { return credential.SecretMatches(h, ck.Value) })
	if errors.Is(err, schema.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	st, err := n.store.ReadTokenState(ctx, sc, bs.ID, bs.IdentityID)
	if errors.Is(err, schema.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	now := n.now()
	if st.SessionRevoked || !now.Before(st.SessionExpiresAt) || st.IdentityStatus != schema.StatusActive ||
		(!st.IdentityExpiry.IsZero() && !now.Before(st.IdentityExpiry)) ||
		(!st.TokensValidAfter.IsZero() && st.SessionCreatedAt.Before(st.TokensValidAfter)) {
		return nil, nil
	}
	return &bs, nil
}

// loginSubmit handles the login form: the password step, then the second-factor step
// when the identity has one. Both go through checkLogin (throttling, the hashing
// bound, lockout), as the Login RPC does.
func (n *Node) loginSubmit(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant) {
	req, c, ok := n.authorizeRequest(ctx, w, r, t, r.PostForm.Get("request"))
	if !ok {
		return
	}
	if crossSite(r) {
		n.refuseForm(ctx, w, t, c, "login", "cross_site", errCrossSite)
		return
	}
	if err := checkCSRF(r); err != nil {
		n.refuseForm(ctx, w, t, c, "login", "csrf", err)
		return
	}
	key := n.csrfKey(w, r, t.ID)
	in := loginAttempt{tenantID: t.ID, source: sourceIP(r.RemoteAddr)}
	switch r.PostForm.Get("step") {
	case "password":
		in.email, in.password = r.PostForm.Get("email"), r.PostForm.Get("password")
		switch {
		case in.email == "" || in.password == "":
			n.loginPage(w, r, t, c, req, http.StatusBadRequest, in.email, "Enter your email and password.")
			return
		case len(in.email) > 320 || len(in.password) > credential.MaxPasswordBytes:
			n.loginPage(w, r, t, c, req, http.StatusBadRequest, "", "The email or password is too long.")
			return
		}
	case "totp":
		p, err := n.openPending(r.PostForm.Get("pending"), t.ID, key)
		if err != nil {
			n.loginPage(w, r, t, c, req, http.StatusBadRequest, "", err.Error())
			return
		}
		in.email, in.pending, in.totp = p.Email, &p, r.PostForm.Get("totp")
		if in.totp == "" || len(in.totp) > 16 {
			n.totpPage(w, r, t, c, req, http.StatusBadRequest, r.PostForm.Get("pending"), key, "Enter the 6-digit code.")
			return
		}
	default:
		messagePage(w, http.StatusBadRequest, "Bad request", "step: password or totp")
		return
	}
	lc, err := n.checkLogin(ctx, in)
	if err != nil {
		msg, status := "That email and password do not match.", http.StatusUnauthorized
		var rl *rateLimited
		switch {
		case errors.As(err, &rl):
			msg, status = "Too many attempts; wait a moment and try again.", http.StatusTooManyRequests
		case in.pending != nil && !errors.Is(err, errBadLogin):
			n.totpPage(w, r, t, c, req, http.StatusUnauthorized, r.PostForm.Get("pending"), key, "That code is not valid; try the next one.")
			return
		case !errors.Is(err, errBadLogin):
			n.failPage(ctx, w, err)
			return
		}
		n.loginPage(w, r, t, c, req, status, "", msg)
		return
	}
	if lc.mfaRequired {
		sealed, err := n.sealPending(pendingLogin{TenantID: t.ID, IdentityID: lc.identity.ID, PasswordID: lc.passwordID,
			Email: in.email, ExpiresAt: n.now().Add(pendingTTL)}, key)
		if err != nil {
			n.failPage(ctx, w, err)
			return
		}
		n.totpPage(w, r, t, c, req, http.StatusOK, sealed, key, "")
		return
	}
	if req.wantsMFA() && !slices.Contains(lc.amr, "mfa") {
		n.redirectError(w, r, t, req, &authError{Code: "access_denied",
			Description: "this application requires a second factor (acr_values mfa) and the account has none enrolled"})
		return
	}
	secret, err := credential.NewSecret(credential.PrefixBrowserSession)
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	now := n.now()
	expires := now.Add(refreshTTL)
	sess, err := n.store.CompleteBrowserLogin(ctx, lc.change, t.Scope(), lc.success, schema.NewSession{
		IdentityID: lc.identity.ID, GrantType: "password", CredentialID: lc.passwordID, AMR: lc.amr, ExpiresAt: expires,
	}, schema.NewBrowserSession{ID: secret.KeyID, Hash: secret.Hash, ExpiresAt: expires})
	if errors.Is(err, schema.ErrReplay) {
		_ = lc.fail("replayed_code", "bad_second_factor", err)
		n.totpPage(w, r, t, c, req, http.StatusUnauthorized, r.PostForm.Get("pending"), key, "That code was used already; wait for the next one.")
		return
	}
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	n.metrics.loginAttempts.WithLabelValues("success").Inc()
	n.setSessionCookie(w, t.ID, secret.Text, expires)
	n.continueAuthorize(ctx, w, r, t, c, req, &schema.BrowserSession{Session: sess}, true)
}

func (n *Node) totpPage(w http.ResponseWriter, r *http.Request, t schema.Tenant, c schema.OAuthClient, req authRequest, status int, pending, key, msg string) {
	renderPage(w, status, page{Kind: "totp", Title: "Two-step verification", Client: c.Name, Error: msg, Action: n.cookiePath(t.ID) + "oauth2/login",
		CSRF: csrfToken(key), Request: requestQuery(r), Pending: pending}, originOf(req.RedirectURI))
}

// consentSubmit handles the consent form. Its CSRF token is bound to the session and
// the request the page was shown for, so the form cannot answer another request (one
// whose max_age, prompt=login or acr_values the session does not meet), nor outlive
// its session.
func (n *Node) consentSubmit(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant) {
	req, c, ok := n.authorizeRequest(ctx, w, r, t, r.PostForm.Get("request"))
	if !ok {
		return
	}
	if crossSite(r) {
		n.refuseForm(ctx, w, t, c, "consent", "cross_site", errCrossSite)
		return
	}
	sess, err := n.browserSession(ctx, r, t)
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	if sess == nil {
		n.loginPage(w, r, t, c, req, http.StatusOK, "", "Your session ended; sign in again.")
		return
	}
	if err := checkBoundCSRF(r, consentBinding(sess.ID, r.PostForm.Get("request"))); err != nil {
		n.refuseForm(ctx, w, t, c, "consent", "csrf", err)
		return
	}
	switch r.PostForm.Get("decision") {
	case "allow":
	case "deny":
		n.redirectError(w, r, t, req, &authError{Code: "access_denied", Description: "the end user denied the request"})
		return
	default:
		messagePage(w, http.StatusBadRequest, "Bad request", "decision: allow or deny")
		return
	}
	if err := n.store.GrantConsent(ctx, schema.Change{Actor: "identity:" + sess.IdentityID, ActorKind: "human", ClientID: c.ClientID, RequestID: requestID(ctx)},
		t.Scope(), sess.IdentityID, c.ClientID, req.Scopes); err != nil {
		n.failPage(ctx, w, err)
		return
	}
	n.issueCode(ctx, w, r, t, req, sess.Session)
}

// refuseForm answers a refused login or consent form with a page and writes
// oauth.authorize_refused naming the form and why: reason csrf (its CSRF token is
// forged, another browser's, or a consent form's for another request than it was
// shown for) or cross_site (posted from another site).
func (n *Node) refuseForm(ctx context.Context, w http.ResponseWriter, t schema.Tenant, c schema.OAuthClient, form, reason string, err error) {
	n.recordRefusal(ctx, t, schema.Change{Actor: "anonymous", ClientID: c.ClientID, RequestID: requestID(ctx)},
		schema.OAuthRefusal{Action: "oauth.authorize_refused", ClientID: c.ClientID, Reason: reason, Form: form})
	messagePage(w, http.StatusForbidden, "Request refused", err.Error())
}

// errCrossSite refuses a form posted from another site.
var errCrossSite = errors.New("this form was posted from another site: start again from the application")

// crossSite reports whether the browser says the form was posted from another origin
// (Sec-Fetch-Site same-site or cross-site). The login and consent forms are only ever
// posted by keyplane's own pages; this check holds where the CSRF token alone does
// not: a host of the same site (a sibling subdomain) can toss its own kp_csrf cookie
// into the browser and make tokens for it. A browser that does not send the header
// is judged by the token alone.
func crossSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return false
	}
	return true
}

// idTokenResponse is the token response of the authorization_code grant.
type idTokenResponse struct {
	tokenResponse
	IDToken string `json:"id_token"`
}

// authorizationCodeGrant redeems an authorization code (RFC 6749 §4.1.3, RFC 7636
// §4.6) for an access token and an ID token of the code's session. The client
// authenticates with its secret (keyplane has no public clients: every client has a
// secret, and PKCE is required besides). A code presented a second time revokes its
// session, and so every token issued from it.
func (n *Node) authorizationCodeGrant(ctx context.Context, r *http.Request, t schema.Tenant) (any, error) {
	cl, err := n.authenticateClient(ctx, r, t)
	if err != nil {
		return nil, err
	}
	f := r.PostForm
	raw, redirectURI, verifier := f.Get("code"), f.Get("redirect_uri"), f.Get("code_verifier")
	switch {
	case raw == "":
		return nil, oauthErr(http.StatusBadRequest, "invalid_request", "code is required")
	case redirectURI == "":
		return nil, oauthErr(http.StatusBadRequest, "invalid_request", "redirect_uri is required")
	case verifier == "":
		return nil, oauthErr(http.StatusBadRequest, "invalid_request", "code_verifier is required (PKCE)")
	case len(verifier) < 43 || len(verifier) > 128 || !unreserved(verifier):
		return nil, oauthErr(http.StatusBadRequest, "invalid_grant", "code_verifier: 43 to 128 unreserved characters (RFC 7636 §4.1)")
	}
	keyID, err := credential.ParseSecret(credential.PrefixAuthCode, raw)
	if err != nil {
		return nil, oauthErr(http.StatusBadRequest, "invalid_grant", "code: not an authorization code")
	}
	ring, err := n.keys.signer(ctx, signingAlg(t))
	if err != nil {
		return nil, err
	}
	sc := t.Scope()
	c := schema.Change{Actor: "client:" + cl.id, ActorKind: "client", ClientID: cl.id, RequestID: requestID(ctx)}
	code, sess, err := n.store.RedeemAuthCode(ctx, c, sc, keyID, func(h []byte) bool { return credential.SecretMatches(h, raw) }, func(ac schema.AuthCode) error {
		sum := sha256.Sum256([]byte(verifier))
		switch {
		case ac.ClientID != cl.id:
			return refusal{"client_id", oauthErr(http.StatusBadRequest, "invalid_grant", "code: issued to another client")}
		case ac.RedirectURI != redirectURI:
			return refusal{"redirect_uri", oauthErr(http.StatusBadRequest, "invalid_grant", "redirect_uri: differs from the authorization request's")}
		case base64.RawURLEncoding.EncodeToString(sum[:]) != ac.CodeChallenge:
			return refusal{"code_verifier", oauthErr(http.StatusBadRequest, "invalid_grant", "code_verifier: does not match the code_challenge (PKCE S256)")}
		case !n.now().Before(ac.ExpiresAt):
			return refusal{"expired", oauthErr(http.StatusBadRequest, "invalid_grant", "code: expired (codes live "+authCodeTTL.String()+")")}
		}
		return nil
	})
	var rf refusal
	switch {
	case errors.As(err, &rf):
		n.recordRefusal(ctx, t, c, schema.OAuthRefusal{Action: "oauth.code_refused", ClientID: cl.id, Reason: rf.reason, CodeID: keyID})
		return nil, rf.err
	case errors.Is(err, schema.ErrCodeReuse):
		return nil, oauthErr(http.StatusBadRequest, "invalid_grant", "code: already used; the tokens issued from it are revoked")
	case errors.Is(err, schema.ErrNotFound):
		n.recordRefusal(ctx, t, c, schema.OAuthRefusal{Action: "oauth.code_refused", ClientID: cl.id, Reason: "unknown_code", CodeID: keyID})
		return nil, oauthErr(http.StatusBadRequest, "invalid_grant", "code: invalid")
	case errors.Is(err, schema.ErrCodeSessionRevoked):
		n.recordRefusal(ctx, t, c, schema.OAuthRefusal{Action: "oauth.code_refused", ClientID: cl.id, Reason: "session_revoked", CodeID: keyID})
		return nil, oauthErr(http.StatusBadRequest, "invalid_grant", "code: its session was revoked (signed out)")
	case errors.Is(err, schema.ErrPrecondition):
		n.recordRefusal(ctx, t, c, schema.OAuthRefusal{Action: "oauth.code_refused", ClientID: cl.id, Reason: "expired", CodeID: keyID})
		return nil, oauthErr(http.StatusBadRequest, "invalid_grant", "code: expired (codes live "+authCodeTTL.String()+")")
	case err != nil:
		return nil, err
	}
	st, err := n.store.ReadTokenState(ctx, sc, sess.ID, sess.IdentityID)
	if err != nil {
		return nil, err
	}
	now := n.now()
	var reason, desc string
	switch {
	case st.IdentityStatus != schema.StatusActive || (!st.IdentityExpiry.IsZero() && !now.Before(st.IdentityExpiry)):
		reason, desc = "identity_inactive", "the session's identity is disabled, frozen or expired"
	case !st.TokensValidAfter.IsZero() && st.SessionCreatedAt.Before(st.TokensValidAfter):
		reason, desc = "tokens_revoked", "the session's tokens were revoked"
	case !now.Before(st.SessionExpiresAt):
		reason, desc = "session_expired", "the session expired"
	}
	if reason != "" {
		n.recordRefusal(ctx, t, c, schema.OAuthRefusal{Action: "oauth.code_refused", ClientID: cl.id, Reason: reason, CodeID: keyID})
		return nil, oauthErr(http.StatusBadRequest, "invalid_grant", desc)
	}
	ttl := t.AccessTokenTTL
	if ttl <= 0 {
		ttl = schema.DefaultAccessTokenTTL
	}
	ttl = min(ttl, sess.ExpiresAt.Sub(now))
	// The access token is for userinfo (and resource servers that check no audience),
	// never keyplane's API: a relying party must not act as the person in keyplane.
	access, err := n.mint(ring, grant{Tenant: t, IdentityID: sess.IdentityID, ClientID: cl.id, AMR: sess.AMR, Scope: code.Scope,
		Audience: n.userinfoAudience(t.ID)}, sess.ID, now, ttl)
	if err != nil {
		return nil, err
	}
	n.spendTokens(t)
	scopes := strings.Fields(code.Scope)
	idc := token.IDClaims{Issuer: n.Issuer(t.ID), Subject: sess.IdentityID, Audience: cl.id, AZP: cl.id, ExpiresAt: now.Add(ttl), IssuedAt: now,
		AuthTime: sess.AuthTime, Nonce: code.Nonce, AMR: sess.AMR, ACR: acrOf(sess.AMR), SessionID: sess.ID}
	if slices.Contains(scopes, "profile") || slices.Contains(scopes, "email") {
		p, err := n.store.GetIdentityProfile(ctx, sc, sess.IdentityID)
		if err != nil {
			return nil, err
		}
		if slices.Contains(scopes, "profile") {
			idc.Name = p.Name
		}
		if slices.Contains(scopes, "email") {
			idc.Email = p.Email
		}
	}
	idt, err := ring.MintIDToken(signingAlg(t), idc)
	if err != nil {
		return nil, err
	}
	return idTokenResponse{tokenResponse: tokenResponse{AccessToken: access, TokenType: "Bearer", ExpiresIn: secondsUntil(now.Add(ttl), now), Scope: code.Scope},
		IDToken: idt}, nil
}

// refusal is a code redemption refused for reason.
type refusal struct {
	reason string
	err    *oauthError
}

func (r refusal) Error() string { return r.err.Error() }

// recordRefusal writes a refusal's audit event; failing to is logged, not answered:
// the refusal stands either way.
func (n *Node) recordRefusal(ctx context.Context, t schema.Tenant, c schema.Change, r schema.OAuthRefusal) {
	if err := n.store.RecordOAuthRefusal(ctx, c, t.Scope(), r); err != nil {
		n.log.WarnContext(ctx, "record OAuth refusal", "action", r.Action, "err", err)
	}
}

// acrOf is the acr of a session's authentication methods.
func acrOf(amr []string) string {
	if slices.Contains(amr, "mfa") {
		return acrMFA
	}
	return acrPassword
}

// userinfoAudience is the aud of the access tokens the authorization_code grant
// mints: the userinfo endpoint's URL. It is not keyplane's API audience (the issuer,
// Config.APIAudience), so authenticate refuses these tokens: the person consented to
// the client learning who they are, not to it acting as them in keyplane.
func (n *Node) userinfoAudience(tenantID string) string {
	return n.Issuer(tenantID) + "/oauth2/userinfo"
}

// userinfo is the OIDC UserInfo endpoint: the access token's subject, with its name
// (scope profile) and email (scope email). keyplane does not verify email addresses,
// so email_verified is not claimed.
func (n *Node) userinfo(w http.ResponseWriter, r *http.Request) {
	ctx := context.WithValue(r.Context(), requestIDKey{}, incomingRequestID(r.Header.Get(RequestIDHeader)))
	w.Header().Set("Cache-Control", "no-store")
	fail := func(status int, code, desc string) {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer error=%q, error_description=%q`, code, desc))
		writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
	}
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || raw == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyplane"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "error_description": "an access token is required (Authorization: Bearer)"})
		return
	}
	tenantID := r.PathValue("tenant")
	if !schema.ValidTenantID(tenantID) {
		fail(http.StatusUnauthorized, "invalid_token", "unknown tenant")
		return
	}
	v, err := n.validate(ctx, tenantID, raw, "", false)
	if err != nil {
		writeOAuthError(w, n.toOAuthError(ctx, err))
		return
	}
	if !v.Active {
		fail(http.StatusUnauthorized, "invalid_token", "the access token is not active ("+string(v.Reason)+")")
		return
	}
	// Counted in the decision class once the token verified (limitHTTP only refused
	// the call if the class was already spent).
	if err := n.limits.allowTenant(classDecisions, v.Tenant, n.now()); err != nil {
		writeOAuthError(w, n.toOAuthError(ctx, err))
		return
	}
	scopes := strings.Fields(v.Claims.Scope)
	if !slices.Contains(scopes, "openid") {
		fail(http.StatusForbidden, "insufficient_scope", "the access token lacks the openid scope")
		return
	}
	out := map[string]any{"sub": v.Claims.Subject}
	if slices.Contains(scopes, "profile") || slices.Contains(scopes, "email") {
		p, err := n.store.GetIdentityProfile(ctx, v.Tenant.Scope(), v.Claims.Subject)
		if err != nil {
			writeOAuthError(w, n.toOAuthError(ctx, err))
			return
		}
		if slices.Contains(scopes, "profile") {
			out["name"] = p.Name
		}
		if slices.Contains(scopes, "email") && p.Email != "" {
			out["email"] = p.Email
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// logout is RP-initiated logout (OpenID RP-Initiated Logout 1.0): it revokes the
// browser's keyplane session (and the session id_token_hint names, if it is the same
// identity's), clears the cookie, and returns to post_logout_redirect_uri when the
// client registered it exactly. Without id_token_hint, or with the ID token of another
// person than the browser's, the person confirms first.
func (n *Node) logout(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant) {
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		q = r.PostForm
	}
	for k, v := range q {
		if len(v) > 1 {
			messagePage(w, http.StatusBadRequest, "Invalid request", "parameter "+k+" repeated")
			return
		}
	}
	hint, clientID, target, state := q.Get("id_token_hint"), q.Get("client_id"), q.Get("post_logout_redirect_uri"), q.Get("state")
	var claims token.IDClaims
	if hint != "" {
		ring, err := n.keys.get(ctx)
		if err != nil {
			n.failPage(ctx, w, err)
			return
		}
		claims, err = ring.VerifyIDToken(hint)
		if err != nil || claims.Issuer != n.Issuer(t.ID) {
			messagePage(w, http.StatusBadRequest, "Invalid request", "id_token_hint: not an ID token of this issuer")
			return
		}
		if clientID != "" && clientID != claims.Audience {
			messagePage(w, http.StatusBadRequest, "Invalid request", "client_id: differs from the id_token_hint's audience")
			return
		}
		clientID = claims.Audience
	}
	if target != "" {
		if clientID == "" {
			messagePage(w, http.StatusBadRequest, "Invalid request", "post_logout_redirect_uri needs id_token_hint or client_id")
			return
		}
		c, err := n.store.GetOAuthClient(ctx, t.Scope(), clientID)
		if err != nil && !errors.Is(err, schema.ErrNotFound) {
			n.failPage(ctx, w, err)
			return
		}
		if err != nil || !slices.Contains(c.PostLogoutRedirectURIs, target) {
			messagePage(w, http.StatusBadRequest, "Invalid request", "post_logout_redirect_uri: not registered for this client")
			return
		}
	}
	sess, err := n.browserSession(ctx, r, t)
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	// Without an ID token of the browser's person, the request may come from any site
	// (a link, an image; the hint may be anyone's ID token, an attacker's own): the
	// person confirms, by a form only this origin can post (which drops the hint).
	foreign := hint != "" && sess != nil && claims.Subject != sess.IdentityID
	if foreign || hint == "" && (r.Method != http.MethodPost || crossSite(r) || checkCSRF(r) != nil) {
		key := n.csrfKey(w, r, t.ID)
		renderPage(w, http.StatusOK, page{Kind: "logout", Title: "Sign out?", Message: "Sign out of keyplane in this browser?",
			Action: n.cookiePath(t.ID) + "oauth2/logout", CSRF: csrfToken(key), LogoutClient: clientID, LogoutTarget: target, LogoutState: state},
			originOf(target))
		return
	}
	actor := schema.Change{Actor: "token-holder", ClientID: clientID, RequestID: requestID(ctx)}
	var revoke []schema.Session
	if sess != nil {
		actor.Actor, actor.ActorKind = "identity:"+sess.IdentityID, "human"
		revoke = append(revoke, sess.Session)
	}
	if claims.SessionID != "" && (sess == nil || claims.SessionID != sess.ID) {
		revoke = append(revoke, schema.Session{ID: claims.SessionID, IdentityID: claims.Subject})
	}
	for _, s := range revoke {
		// The identity check makes a hint naming another identity's session a no-op.
		if _, err := n.store.RevokeSession(ctx, actor, t.Scope(), s.ID, s.IdentityID); err != nil && !errors.Is(err, schema.ErrNotFound) {
			n.failPage(ctx, w, err)
			return
		}
	}
	n.clearSessionCookie(w, t.ID)
	if target != "" {
		u := target
		if state != "" {
			sep := "?"
			if strings.Contains(u, "?") {
				sep = "&"
			}
			u += sep + url.Values{"state": {state}}.Encode()
		}
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, u, http.StatusSeeOther)
		return
	}
	messagePage(w, http.StatusOK, "Signed out", "You are signed out of keyplane.")
}
