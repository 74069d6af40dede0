package region

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keyplane/keyplane/schema"
)

//go:embed templates/page.html
var templateFS embed.FS

var pageTemplate = template.Must(template.ParseFS(templateFS, "templates/page.html"))

// Cookies of the OpenID Provider's pages, scoped to the tenant's issuer path.
const (
	sessionCookie = "kp_session" // the browser session (kpb_… secret), HttpOnly, SameSite=Lax
	csrfCookie    = "kp_csrf"    // the CSRF key forms are bound to, HttpOnly, SameSite=Strict
)

// page is what the page template renders.
type page struct {
	Kind       string // login, totp, consent, message
	Title      string
	Client     string
	Error      string
	Message    string
	Action     string
	CSRF       string
	Request    string
	Email      string
	Pending    string
	Scopes     []string
	StyleNonce string
	// SignInOptions are the external sign-ins the login page offers (upstream OIDC).
	SignInOptions []signInOption
	// The logout confirmation's fields.
	LogoutClient, LogoutTarget, LogoutState string
}

// renderPage writes a page with the headers every page carries: a strict CSP (no
// script at all, styles by nonce, forms only to this origin and formOrigin, no
// framing), no caching, no referrer.
func renderPage(w http.ResponseWriter, status int, p page, formOrigin string) {
	nonce := randomToken(16)
	p.StyleNonce = nonce
	formAction := "'self'"
	if formOrigin != "" {
		formAction += " " + formOrigin
	}
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+nonce+"'; form-action "+formAction+
		"; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = pageTemplate.Execute(w, p)
}

// randomToken is n random bytes, base64url.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// secureCookies reports whether cookies get the Secure attribute: when the issuer is
// https (a deployment), not for a loopback http issuer (tests, the demo).
func (n *Node) secureCookies() bool { return strings.HasPrefix(n.cfg.IssuerBase, "https://") }

func (n *Node) cookiePath(tenantID string) string { return "/t/" + tenantID + "/" }

// csrfKey returns the browser's CSRF key (its cookie), setting a new one when absent.
func (n *Node) csrfKey(w http.ResponseWriter, r *http.Request, tenantID string) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	key := randomToken(32)
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: key, Path: n.cookiePath(tenantID), HttpOnly: true,
		Secure: n.secureCookies(), SameSite: http.SameSiteStrictMode})
	return key
}

// csrfToken is a fresh per-form token bound to the CSRF key: a random nonce and its
// HMAC under the key. Only a page that saw the cookie's value can make one.
func csrfToken(key string) string {
	nonce := randomToken(16)
	return nonce + "." + csrfMAC(key, nonce)
}

func csrfMAC(key, nonce string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte("keyplane-csrf/" + nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// boundCSRFToken is a per-form token like csrfToken, bound besides to what the form
// may do (binding): only a page rendered for that can make one.
func boundCSRFToken(key, binding string) string {
	nonce := randomToken(16)
	return nonce + "." + csrfMAC(key, nonce+"\x00"+binding)
}

// checkCSRF verifies a form's csrf_token against the browser's CSRF cookie.
func checkCSRF(r *http.Request) error { return checkBoundCSRF(r, "") }

// checkBoundCSRF verifies a form's csrf_token against the browser's CSRF cookie and,
// unless binding is "", against the binding its page was rendered for
// (boundCSRFToken).
func checkBoundCSRF(r *http.Request, binding string) error {
	c, err := r.Cookie(csrfCookie)
	if err != nil || c.Value == "" {
		return errors.New("the CSRF cookie is missing: enable cookies and start again")
	}
	tok := r.PostForm.Get("csrf_token")
	nonce, mac, ok := strings.Cut(tok, ".")
	if tok == "" || !ok {
		return errors.New("csrf_token is missing: start again from the application")
	}
	if binding != "" {
		nonce += "\x00" + binding
	}
	if subtle.ConstantTimeCompare([]byte(mac), []byte(csrfMAC(c.Value, nonce))) != 1 {
		if binding != "" {
			return errors.New("csrf_token does not match this browser, its sign-in or this request: start again from the application")
		}
		return errors.New("csrf_token does not match this browser: start again from the application")
	}
	return nil
}

// consentBinding is what a consent form's CSRF token is bound to: the session and the
// authorization request the authorization endpoint showed the page for, after its
// checks (login, max_age, prompt, acr_values). The form answers that request only.
func consentBinding(sessionID, request string) string {
	return "consent/" + sessionID + "/" + request
}

// pendingLogin is a login whose password checked out and whose second factor is
// still to come: sealed under the KEK (bound to the tenant and the browser's CSRF
// key) into the TOTP form, so the second step neither asks for nor carries the
// password.
type pendingLogin struct {
	TenantID   string    `json:"t"`
	IdentityID string    `json:"i"`
	PasswordID string    `json:"p"`
	Email      string    `json:"e"`
	ExpiresAt  time.Time `json:"x"`
}

// pendingTTL is how long the second step may take.
const pendingTTL = 5 * time.Minute

func pendingAD(tenantID, csrfKey string) []byte {
	return []byte("oidc-pending/" + tenantID + "/" + csrfKey)
}

func (n *Node) sealPending(p pendingLogin, csrfKey string) (string, error) {
	if n.cfg.KEK == nil {
		return "", ErrNoKEK
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(n.cfg.KEK.Seal(b, pendingAD(p.TenantID, csrfKey))), nil
}

func (n *Node) openPending(text, tenantID, csrfKey string) (pendingLogin, error) {
	bad := errors.New("the sign-in took too long or was tampered with: start again")
	if n.cfg.KEK == nil {
		return pendingLogin{}, ErrNoKEK
	}
	sealed, err := base64.RawURLEncoding.DecodeString(text)
	if err != nil || len(text) > 4096 {
		return pendingLogin{}, bad
	}
	b, err := n.cfg.KEK.Open(sealed, pendingAD(tenantID, csrfKey))
	if err != nil {
		return pendingLogin{}, bad
	}
	var p pendingLogin
	if json.Unmarshal(b, &p) != nil || p.TenantID != tenantID || !n.now().Before(p.ExpiresAt) {
		return pendingLogin{}, bad
	}
	return p, nil
}

// originOf is scheme://host of a URI (a redirect URI, already validated).
func originOf(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// scopeDescriptions are what the consent page says a scope lets the client do.
var scopeDescriptions = map[string]string{
	"openid":         "Know who you are (your keyplane identity)",
	"profile":        "See your name",
	"email":          "See your email address",
	"offline_access": "Stay signed in to it while you are away",
}

func describeScopes(scopes []string) []string {
	out := make([]string, 0, len(scopes))
	for _, s := range scopes {
		if d, ok := scopeDescriptions[s]; ok {
			out = append(out, d)
		} else {
			out = append(out, "Use the scope "+s)
		}
	}
	return out
}

// browserSessionCookie sets the session cookie for a browser session secret.
func (n *Node) setSessionCookie(w http.ResponseWriter, tenantID, value string, expires time.Time) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: value, Path: n.cookiePath(tenantID), HttpOnly: true,
		Secure: n.secureCookies(), SameSite: http.SameSiteLaxMode, Expires: expires})
}

func (n *Node) clearSessionCookie(w http.ResponseWriter, tenantID string) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: n.cookiePath(tenantID), HttpOnly: true,
		Secure: n.secureCookies(), SameSite: http.SameSiteLaxMode, MaxAge: -1})
}

// loginPage renders the password step.
func (n *Node) loginPage(w http.ResponseWriter, r *http.Request, t schema.Tenant, c schema.OAuthClient, req authRequest, status int, email, msg string) {
	key := n.csrfKey(w, r, t.ID)
	renderPage(w, status, page{Kind: "login", Title: "Sign in", Client: c.Name, Error: msg, Action: n.cookiePath(t.ID) + "oauth2/login",
		CSRF: csrfToken(key), Request: requestQuery(r), Email: email, SignInOptions: n.signInOptions(r.Context(), t, requestQuery(r))},
		originOf(req.RedirectURI))
}

// requestQuery is the authorization request a page carries along: the GET's query,
// or the request field a form posted back.
func requestQuery(r *http.Request) string {
	if r.Method == http.MethodPost {
		return r.PostForm.Get("request")
	}
	return r.URL.RawQuery
}

// messagePage renders an error or information page (nothing to submit).
func messagePage(w http.ResponseWriter, status int, title, msg string) {
	renderPage(w, status, page{Kind: "message", Title: title, Message: msg}, "")
}
