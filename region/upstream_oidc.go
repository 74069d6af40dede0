package region

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/keyplane/keyplane/region/credential"
	"github.com/keyplane/keyplane/schema"
)

// Upstream OIDC sign-in (docs/openid-provider.md): the login page offers "Sign in
// with <provider>" for the tenant's upstream OpenID Providers; keyplane is their
// relying party (authorization code with PKCE S256, state bound to a cookie and
// single use, nonce), verifies the ID token (go-oidc: signature, iss, aud, exp), maps
// its claims to the keyplane human it links to (or creates just in time), opens the
// same browser session a password login opens and takes the pending authorization
// request on.

// upstreamStateTTL is how long a person may take at the upstream provider.
const upstreamStateTTL = 10 * time.Minute

// upstreamCookie holds the state of the sign-in in flight, on the provider's path.
const upstreamCookie = "kp_upstream"

func (n *Node) mountUpstreamOIDC(mux *http.ServeMux) {
	mux.HandleFunc("GET /t/{tenant}/login/oidc/{provider}/start", n.limitHTTP(n.guards.token, n.pageHandler(n.upstreamStart)))
	mux.HandleFunc("GET /t/{tenant}/login/oidc/{provider}/callback", n.limitHTTP(n.guards.token, n.pageHandler(n.upstreamCallback)))
}

// upstreamPath is the path prefix of a provider's sign-in URLs.
func (n *Node) upstreamPath(tenantID, name string) string {
	return n.cookiePath(tenantID) + "login/oidc/" + name + "/"
}

// upstreamRedirectURI is the callback URL a provider's client must register.
func (n *Node) upstreamRedirectURI(tenantID, name string) string {
	return n.Issuer(tenantID) + "/login/oidc/" + name + "/callback"
}

// upstreamProvider reads the provider of the request's path; ok is false when a page
// was written.
func (n *Node) upstreamProvider(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant) (schema.UpstreamProvider, bool) {
	p, err := n.store.GetUpstreamProviderByName(ctx, t.Scope(), r.PathValue("provider"))
	if errors.Is(err, schema.ErrNotFound) {
		messagePage(w, http.StatusNotFound, "Unknown sign-in option", "provider: this organization has no such sign-in provider.")
		return p, false
	}
	if err != nil {
		n.failPage(ctx, w, err)
		return p, false
	}
	return p, true
}

// upstreamConfig discovers the provider (cached per issuer) and returns its OAuth
// configuration with the client secret opened.
func (n *Node) upstreamConfig(ctx context.Context, t schema.Tenant, p schema.UpstreamProvider) (*oidc.Provider, *oauth2.Config, error) {
	op, err := n.issuers.get(p.Issuer).discover(ctx, n.now)
	if err != nil {
		return nil, nil, err
	}
	if n.cfg.KEK == nil {
		return nil, nil, ErrNoKEK
	}
	secret, err := n.cfg.KEK.Open(p.SealedSecret, schema.UpstreamSecretAD(t.ID, p.ID))
	if err != nil {
		return nil, nil, fmt.Errorf("open upstream client secret: %w", err)
	}
	return op, &oauth2.Config{ClientID: p.ClientID, ClientSecret: string(secret), Endpoint: op.Endpoint(),
		RedirectURL: n.upstreamRedirectURI(t.ID, p.Name), Scopes: append([]string{oidc.ScopeOpenID}, p.Scopes...)}, nil
}

// discover returns the issuer's provider (discovery), fetching it when not cached or
// older than issuerRediscover (keeping the old one if the fetch fails).
func (i *issuer) discover(ctx context.Context, now func() time.Time) (*oidc.Provider, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.provider == nil || now().Sub(i.found) > issuerRediscover {
		p, err := oidc.NewProvider(oidc.ClientContext(ctx, i.client), i.url)
		switch {
		case err == nil:
			i.provider, i.found = p, now()
		case i.provider == nil:
			return nil, fmt.Errorf("discover issuer: %w", err)
		}
	}
	return i.provider, nil
}

// upstreamStart sends the browser to the provider: GET …/start?req=<the pending
// authorization request, as the login page carries it>.
func (n *Node) upstreamStart(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant) {
	p, ok := n.upstreamProvider(ctx, w, r, t)
	if !ok {
		return
	}
	q := r.URL.Query()
	if len(q["req"]) != 1 {
		messagePage(w, http.StatusBadRequest, "Invalid request", "req: exactly one authorization request is required; start again from the application.")
		return
	}
	pending := q.Get("req")
	if _, _, ok := n.authorizeRequest(ctx, w, r, t, pending); !ok {
		return
	}
	_, cfg, err := n.upstreamConfig(ctx, t, p)
	if err != nil {
		n.log.WarnContext(ctx, "upstream provider unavailable", "provider", p.Name, "err", err)
		messagePage(w, http.StatusBadGateway, "Sign-in unavailable", "keyplane could not reach "+p.DisplayName+"; try again later.")
		return
	}
	state, nonce, verifier := randomToken(32), randomToken(16), oauth2.GenerateVerifier()
	if err := n.store.CreateUpstreamState(ctx, t.Scope(), schema.UpstreamState{ID: stateID(state), ProviderID: p.ID, Nonce: nonce,
		CodeVerifier: verifier, Request: pending, ExpiresAt: n.now().Add(upstreamStateTTL)}); err != nil {
		n.failPage(ctx, w, err)
		return
	}
	// Lax: the provider's redirect back is a top-level GET from another site.
	http.SetCookie(w, &http.Cookie{Name: upstreamCookie, Value: state, Path: n.upstreamPath(t.ID, p.Name), HttpOnly: true,
		Secure: n.secureCookies(), SameSite: http.SameSiteLaxMode, MaxAge: int(upstreamStateTTL / time.Second)})
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, cfg.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), http.StatusSeeOther)
}

// stateID is the key a state is stored under.
func stateID(state string) string {
	sum := sha256.Sum256([]byte("upstream-state/" + state))
	return hex.EncodeToString(sum[:])
}

// upstreamClaims are what a verified upstream ID token says of the person.
type upstreamClaims struct {
	Subject, ExternalID, Email, Name string
	EmailVerified                    bool
	Attributes                       map[string]any
}

// mapUpstreamClaims reads the provider's claims from an ID token's claim set. Only
// string claims are taken (and a boolean or "true" email_verified); the rest is
// ignored.
func mapUpstreamClaims(p schema.UpstreamProvider, sub string, claims map[string]any) upstreamClaims {
	str := func(name string) string {
		if s, ok := claims[name].(string); ok && len(s) <= 1024 {
			return s
		}
		return ""
	}
	c := upstreamClaims{Subject: sub, ExternalID: str(p.ClaimExternalID), Email: str(p.ClaimEmail), Name: str(p.ClaimName),
		Attributes: map[string]any{}}
	switch v := claims["email_verified"].(type) {
	case bool:
		c.EmailVerified = v
	case string:
		c.EmailVerified = v == "true"
	}
	for k, claim := range p.AttributeClaims {
		if v := str(claim); v != "" {
			c.Attributes[k] = v
		}
	}
	return c
}

// upstreamCallback completes an upstream sign-in.
func (n *Node) upstreamCallback(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant) {
	p, ok := n.upstreamProvider(ctx, w, r, t)
	if !ok {
		return
	}
	sc := t.Scope()
	c := schema.Change{Actor: "anonymous", RequestID: requestID(ctx)}
	refuse := func(rule, reason string, status int, title, msg string, more ...func(*schema.UpstreamRefusal)) {
		rf := schema.UpstreamRefusal{ProviderID: p.ID, ProviderName: p.Name, Rule: rule, Reason: reason}
		for _, f := range more {
			f(&rf)
		}
		if err := n.store.RecordUpstreamRefusal(ctx, c, sc, rf); err != nil {
			n.log.WarnContext(ctx, "record upstream refusal", "rule", rule, "err", err)
		}
		messagePage(w, status, title, msg)
	}
	// The state cookie is spent whatever happens next.
	http.SetCookie(w, &http.Cookie{Name: upstreamCookie, Value: "", Path: n.upstreamPath(t.ID, p.Name), HttpOnly: true,
		Secure: n.secureCookies(), SameSite: http.SameSiteLaxMode, MaxAge: -1})
	q := r.URL.Query()
	for k, v := range q {
		if len(v) > 1 {
			refuse("request", "parameter "+k+" repeated", http.StatusBadRequest, "Invalid request", "parameter "+k+" repeated")
			return
		}
	}
	state := q.Get("state")
	ck, err := r.Cookie(upstreamCookie)
	if state == "" || len(state) > 256 || err != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(state)) != 1 {
		refuse("state", "state: missing or not this browser's", http.StatusBadRequest, "Sign-in refused",
			"state: this sign-in was not started in this browser; start again from the application.")
		return
	}
	st, err := n.store.TakeUpstreamState(ctx, sc, stateID(state))
	if errors.Is(err, schema.ErrNotFound) {
		refuse("state", "state: unknown or used already", http.StatusBadRequest, "Sign-in refused",
			"state: this sign-in was completed or abandoned already; start again from the application.")
		return
	}
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	if st.ProviderID != p.ID || !n.now().Before(st.ExpiresAt) {
		refuse("state", "state: expired or of another provider", http.StatusBadRequest, "Sign-in refused",
			"state: this sign-in took too long; start again from the application.")
		return
	}
	// The pending authorization request takes over: pages rendered from here carry it.
	pr := r.Clone(ctx)
	pr.URL.RawQuery = st.Request
	req, client, ok := n.authorizeRequest(ctx, w, pr, t, st.Request)
	if !ok {
		return
	}
	retry := func(rule, reason, msg string, more ...func(*schema.UpstreamRefusal)) {
		rf := schema.UpstreamRefusal{ProviderID: p.ID, ProviderName: p.Name, Rule: rule, Reason: reason}
		for _, f := range more {
			f(&rf)
		}
		if err := n.store.RecordUpstreamRefusal(ctx, c, sc, rf); err != nil {
			n.log.WarnContext(ctx, "record upstream refusal", "rule", rule, "err", err)
		}
		n.loginPage(w, pr, t, client, req, http.StatusUnauthorized, "", msg)
	}
	if e := q.Get("error"); e != "" {
		retry("upstream_error", truncateText("upstream error "+e+": "+q.Get("error_description"), 500),
			"Sign-in with "+p.DisplayName+" did not complete ("+truncateText(e, 64)+").")
		return
	}
	code := q.Get("code")
	if code == "" || len(code) > 2048 {
		retry("code", "code: missing or too long", "Sign-in with "+p.DisplayName+" did not complete (no code).")
		return
	}
	op, cfg, err := n.upstreamConfig(ctx, t, p)
	if err != nil {
		n.log.WarnContext(ctx, "upstream provider unavailable", "provider", p.Name, "err", err)
		retry("unavailable", "provider unreachable", "keyplane could not reach "+p.DisplayName+"; try again later.")
		return
	}
	tok, err := cfg.Exchange(oidc.ClientContext(ctx, n.upstreamHTTP()), code, oauth2.VerifierOption(st.CodeVerifier))
	if err != nil {
		retry("exchange", truncateText("code exchange: "+err.Error(), 500), "Sign-in with "+p.DisplayName+" failed: the code was refused.")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		retry("id_token", "no id_token in the token response", "Sign-in with "+p.DisplayName+" failed: no ID token.")
		return
	}
	idt, err := op.Verifier(&oidc.Config{ClientID: p.ClientID, Now: n.now}).Verify(ctx, raw)
	if err != nil {
		retry("id_token", truncateText("id_token: "+err.Error(), 500), "Sign-in with "+p.DisplayName+" failed: the ID token did not verify.")
		return
	}
	withSub := func(rf *schema.UpstreamRefusal) { rf.Subject = idt.Subject }
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		retry("nonce", "id_token: nonce differs from the authorization request's", "Sign-in with "+p.DisplayName+" failed: the ID token was not issued for this sign-in.", withSub)
		return
	}
	var all map[string]any
	if err := idt.Claims(&all); err != nil {
		retry("id_token", "id_token: claims: "+err.Error(), "Sign-in with "+p.DisplayName+" failed: unreadable ID token.", withSub)
		return
	}
	if reason := authorizedParty(idt.Audience, all, p.ClientID); reason != "" {
		retry("id_token", reason, "Sign-in with "+p.DisplayName+" failed: the ID token did not verify.", withSub)
		return
	}
	claims := mapUpstreamClaims(p, idt.Subject, all)
	login, err := n.linkUpstream(ctx, sc, p, claims)
	if errors.Is(err, schema.ErrNotFound) {
		retry("no_link", "no keyplane identity links to this upstream identity and just-in-time creation is off",
			"Your "+p.DisplayName+" account is not linked to an account of this organization.", withSub)
		return
	}
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	login.Issuer = idt.Issuer
	if req.wantsMFA() {
		retry("mfa", "the application requires a second factor (acr_values mfa), which upstream sign-in does not give",
			"This application requires keyplane's two-step verification: sign in with your password.", withSub)
		return
	}
	secret, err := credential.NewSecret(credential.PrefixBrowserSession)
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	expires := n.now().Add(refreshTTL)
	c.Actor, c.ActorKind = "upstream:"+p.Name, "human"
	sess, err := n.store.CompleteUpstreamLogin(ctx, c, sc, login, schema.NewSession{GrantType: "upstream_oidc", AMR: []string{"fed"}, ExpiresAt: expires},
		schema.NewBrowserSession{ID: secret.KeyID, Hash: secret.Hash, ExpiresAt: expires})
	var fe *schema.FieldError
	switch {
	case errors.Is(err, schema.ErrPrecondition):
		c.Actor, c.ActorKind = "anonymous", ""
		retry("inactive", truncateText(err.Error(), 500), "This account is disabled.", withSub,
			func(rf *schema.UpstreamRefusal) { rf.IdentityID = login.IdentityID })
		return
	case errors.Is(err, schema.ErrConflict) || errors.As(err, &fe):
		c.Actor, c.ActorKind = "anonymous", ""
		retry("jit", truncateText("just-in-time creation: "+err.Error(), 500),
			"Your "+p.DisplayName+" account cannot be set up here (its email belongs to another account); ask an administrator.", withSub)
		return
	case err != nil:
		n.failPage(ctx, w, err)
		return
	}
	n.metrics.loginAttempts.WithLabelValues("success").Inc()
	n.setSessionCookie(w, t.ID, secret.Text, expires)
	n.continueAuthorize(ctx, w, pr, t, client, req, &schema.BrowserSession{Session: sess}, true)
}

// authorizedParty checks an upstream ID token was issued to keyplane's client
// (OIDC Core §3.1.3.7, steps 4 and 5; go-oidc checks only that clientID is among the
// audiences): with several audiences its azp must be clientID, and an azp it carries
// must be clientID. It returns why not, or "".
func authorizedParty(aud []string, claims map[string]any, clientID string) string {
	raw, has := claims["azp"]
	azp, _ := raw.(string)
	switch {
	case has && azp != clientID:
		return "id_token: azp " + quoteParam(fmt.Sprint(raw)) + " is not keyplane's client: the token was issued to another client"
	case !has && len(aud) > 1:
		return "id_token: several audiences and no azp: the token need not have been issued to keyplane's client"
	}
	return ""
}

// linkUpstream finds the keyplane identity a verified upstream identity signs in as:
// its earlier link, a SCIM identity by externalId, an identity by verified email (if
// the provider allows), or a human to create (if the provider allows JIT);
// ErrNotFound when none.
func (n *Node) linkUpstream(ctx context.Context, sc schema.Scope, p schema.UpstreamProvider, c upstreamClaims) (schema.UpstreamLogin, error) {
	l := schema.UpstreamLogin{ProviderID: p.ID, ProviderName: p.Name, Subject: c.Subject}
	found := func(link string, i schema.Identity, err error) (bool, error) {
		if errors.Is(err, schema.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		l.Link, l.IdentityID = link, i.ID
		return true, nil
	}
	i, err := n.store.UpstreamLink(ctx, sc, p.ID, c.Subject)
	if ok, err := found("link", i, err); ok || err != nil {
		return l, err
	}
	if c.ExternalID != "" {
		i, err := n.store.FindIdentityByExternalID(ctx, sc, c.ExternalID)
		if ok, err := found("external_id", i, err); ok || err != nil {
			return l, err
		}
	}
	if p.LinkByEmail && c.EmailVerified && c.Email != "" {
		i, err := n.store.FindIdentityByEmail(ctx, sc, c.Email)
		if ok, err := found("email", i, err); ok || err != nil {
			return l, err
		}
	}
	if !p.JIT {
		return l, fmt.Errorf("%w: no linked identity", schema.ErrNotFound)
	}
	name := strings.TrimSpace(c.Name)
	if name == "" {
		name = c.Email
	}
	if name == "" {
		name = p.DisplayName + " user " + c.Subject
	}
	l.Link = "jit"
	l.Create = schema.NewIdentity{DisplayName: truncateText(name, 200), Attributes: c.Attributes}
	if c.EmailVerified {
		// An unverified address is not given to the new identity: it could be anyone's.
		l.Create.Email = c.Email
	}
	return l, nil
}

// upstreamHTTP is the client of token requests to upstream providers: bounded in
// time, no redirects, https only (or http on a loopback host).
func (n *Node) upstreamHTTP() *http.Client {
	return &http.Client{Timeout: issuerFetchTimeout, Transport: upstreamTransport{n.issuers.base},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type upstreamTransport struct{ base http.RoundTripper }

func (t upstreamTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := schema.ValidIssuer(r.URL.Scheme + "://" + r.URL.Host); err != nil {
		return nil, fmt.Errorf("refusing to call %s: %w", r.URL.Redacted(), err)
	}
	return t.base.RoundTrip(r)
}

// truncateText cuts s to at most n bytes, on a rune boundary.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// signInOption is an external sign-in offered on the login page.
type signInOption struct {
	Label, URL string
}

// signInOptions are the tenant's external sign-in options for the pending request.
func (n *Node) signInOptions(ctx context.Context, t schema.Tenant, pending string) []signInOption {
	ps, err := n.store.ListUpstreamProviders(ctx, t.Scope())
	if err != nil {
		n.log.WarnContext(ctx, "list upstream providers", "err", err)
		return nil
	}
	out := make([]signInOption, 0, len(ps))
	for _, p := range ps {
		out = append(out, signInOption{Label: "Sign in with " + p.DisplayName,
			URL: n.upstreamPath(t.ID, p.Name) + "start?" + url.Values{"req": {pending}}.Encode()})
	}
	idps, err := n.store.ListSAMLIdPs(ctx, t.Scope())
	if err != nil {
		n.log.WarnContext(ctx, "list SAML IdPs", "err", err)
		return slices.Clip(out)
	}
	for _, p := range idps {
		out = append(out, signInOption{Label: "Sign in with " + p.Name + " (SAML)",
			URL: n.samlPath(t.ID, p.Name) + "login?" + url.Values{"req": {pending}}.Encode()})
	}
	return slices.Clip(out)
}

// mayConfigureSignIn authorizes caller c to add a sign-in provider (upstream OIDC, SAML)
// to tenantID: such a provider can sign in as anyone it links to, tenant admins
// included, so the caller must hold everything a tenant admin holds (every permission,
// unconditionally, on the whole tenant). The operator may.
func (n *Node) mayConfigureSignIn(ctx context.Context, c caller, tenantID string) error {
	if c.operator() {
		return nil
	}
	p, err := n.policyFor(ctx, tenantID, c)
	if err != nil {
		return err
	}
	admin, _ := p.snap.Role(schema.RoleTenantAdmin)
	return n.requireRoleOn(p, admin, "*", "adding a sign-in provider, which can sign in as any identity it links to, needs what the")
}
