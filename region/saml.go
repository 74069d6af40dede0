package region

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/crewjam/saml"

	"github.com/keyplane/keyplane/region/credential"
	"github.com/keyplane/keyplane/schema"
)

// SAML 2.0 sign-in (docs/saml.md): keyplane is the service provider of a tenant's SAML
// identity providers. GET /t/{tenant}/saml/{idp}/login?req=<authorization request>
// sends the browser to the IdP with an AuthnRequest (HTTP-Redirect binding) whose id
// is sealed in a cookie; the IdP posts its Response to /t/{tenant}/saml/{idp}/acs
// (HTTP-POST binding), crewjam/saml checks it (signature, audience, recipient and
// destination, validity window, InResponseTo), keyplane refuses a replayed
// assertion, finds or creates the identity, opens the same browser session the
// password login does and continues the authorization request.

const (
	samlStateCookie = "kp_saml"
	samlStateTTL    = 10 * time.Minute
	// samlMaxReplayWindow bounds how long an assertion id is kept (a backstop: crewjam
	// accepts an assertion for at most saml.MaxIssueDelay after its IssueInstant).
	samlMaxReplayWindow = 24 * time.Hour
	// samlReplayMargin is how much longer than its acceptance window an assertion id
	// is kept, for the clocks of the other nodes.
	samlReplayMargin = 5 * time.Minute
)

// mountSAML mounts the SP's endpoints under each tenant's issuer.
func (n *Node) mountSAML(mux *http.ServeMux) {
	mux.HandleFunc("GET /t/{tenant}/saml/{idp}/metadata", n.pageHandler(n.samlMetadata))
	mux.HandleFunc("GET /t/{tenant}/saml/{idp}/login", n.limitHTTP(n.guards.token, n.pageHandler(n.samlLogin)))
	mux.HandleFunc("POST /t/{tenant}/saml/{idp}/acs", n.limitHTTP(n.guards.token, n.pageHandler(n.samlACS)))
}

// samlBase is the URL prefix of an IdP's SP endpoints; its metadata URL is the SP's
// entity id.
func (n *Node) samlBase(tenantID, idpName string) string {
	return strings.TrimSuffix(n.cfg.IssuerBase, "/") + "/t/" + tenantID + "/saml/" + url.PathEscape(idpName) + "/"
}

func samlKeyAD(tenantID, idpID string) []byte {
	return []byte("keyplane-saml-sp-key/" + tenantID + "/" + idpID)
}

// newSAMLKeyPair makes the SP's RSA key and a self-signed certificate for it, the key
// sealed with the node's KEK.
func (n *Node) newSAMLKeyPair(tenantID, idpID, entityID string) (cert, sealed []byte, err error) {
	if n.cfg.KEK == nil {
		return nil, nil, ErrNoKEK
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("generate saml sp key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, fmt.Errorf("generate saml sp key: %w", err)
	}
	now := n.now()
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: truncateString(entityID, 64)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
	cert, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("make saml sp certificate: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode saml sp key: %w", err)
	}
	return cert, n.cfg.KEK.Seal(der, samlKeyAD(tenantID, idpID)), nil
}

func truncateString(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// parseIdPMetadata parses and checks an IdP's metadata: one EntityDescriptor with an
// IDPSSODescriptor that has a signing certificate and an HTTP-Redirect
// SingleSignOnService. It returns the IdP's entity id.
func parseIdPMetadata(text string) (*saml.EntityDescriptor, error) {
	if text == "" {
		return nil, errors.New("required")
	}
	if len(text) > 256<<10 {
		return nil, errors.New("at most 256 KiB")
	}
	if root, err := rootElement(text); err != nil || root.Local != "EntityDescriptor" || root.Space != "urn:oasis:names:tc:SAML:2.0:metadata" {
		return nil, errors.New("not SAML metadata: the root must be an md:EntityDescriptor")
	}
	var ed saml.EntityDescriptor
	if err := xml.Unmarshal([]byte(text), &ed); err != nil {
		return nil, fmt.Errorf("not SAML metadata (an EntityDescriptor): %s", truncateString(err.Error(), 200))
	}
	if ed.EntityID == "" || len(ed.EntityID) > 1024 {
		return nil, errors.New("entityID: required, at most 1024 bytes")
	}
	if len(ed.IDPSSODescriptors) != 1 {
		return nil, fmt.Errorf("want exactly one IDPSSODescriptor, got %d", len(ed.IDPSSODescriptors))
	}
	d := ed.IDPSSODescriptors[0]
	signing := 0
	for _, kd := range d.KeyDescriptors {
		if kd.Use != "" && kd.Use != "signing" {
			continue
		}
		for _, c := range kd.KeyInfo.X509Data.X509Certificates {
			der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(c.Data), ""))
			if err != nil {
				return nil, errors.New("a signing certificate is not base64")
			}
			if _, err := x509.ParseCertificate(der); err != nil {
				return nil, errors.New("a signing certificate is not an X.509 certificate")
			}
			signing++
		}
	}
	if signing == 0 {
		return nil, errors.New("the IDPSSODescriptor has no signing certificate")
	}
	sso := ""
	for _, s := range d.SingleSignOnServices {
		if s.Binding == saml.HTTPRedirectBinding {
			sso = s.Location
		}
	}
	u, err := url.Parse(sso)
	if sso == "" || err != nil || !u.IsAbs() || (u.Scheme != "https" && !(u.Scheme == "http" && schema.LoopbackHost(u.Hostname()))) {
		return nil, errors.New("the IDPSSODescriptor needs an HTTP-Redirect SingleSignOnService at an https URL (http only on a loopback host)")
	}
	return &ed, nil
}

// rootElement is the name of an XML document's first element.
func rootElement(text string) (xml.Name, error) {
	d := xml.NewDecoder(strings.NewReader(text))
	for {
		tok, err := d.Token()
		if err != nil {
			return xml.Name{}, err
		}
		if se, ok := tok.(xml.StartElement); ok {
			return se.Name, nil
		}
	}
}

// samlSP is crewjam's service provider for one IdP of a tenant.
func (n *Node) samlSP(t schema.Tenant, p schema.SAMLIdP) (*saml.ServiceProvider, error) {
	if n.cfg.KEK == nil {
		return nil, ErrNoKEK
	}
	der, err := n.cfg.KEK.Open(p.SPKeySealed, samlKeyAD(t.ID, p.ID))
	if err != nil {
		return nil, fmt.Errorf("open saml sp key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse saml sp key: %w", err)
	}
	key, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("saml sp key is not RSA")
	}
	cert, err := x509.ParseCertificate(p.SPCert)
	if err != nil {
		return nil, fmt.Errorf("parse saml sp certificate: %w", err)
	}
	md, err := parseIdPMetadata(p.Metadata)
	if err != nil {
		return nil, fmt.Errorf("saml idp metadata: %w", err)
	}
	base := n.samlBase(t.ID, p.Name)
	mdURL, err := url.Parse(base + "metadata")
	if err != nil {
		return nil, err
	}
	acsURL, err := url.Parse(base + "acs")
	if err != nil {
		return nil, err
	}
	return &saml.ServiceProvider{EntityID: mdURL.String(), Key: key, Certificate: cert, MetadataURL: *mdURL, AcsURL: *acsURL,
		IDPMetadata: md, AuthnNameIDFormat: saml.UnspecifiedNameIDFormat}, nil
}

// samlIdP resolves the {idp} of the path, answering a page when there is none.
func (n *Node) samlIdP(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant) (schema.SAMLIdP, *saml.ServiceProvider, bool) {
	p, err := n.store.GetSAMLIdPByName(ctx, t.Scope(), r.PathValue("idp"))
	if errors.Is(err, schema.ErrNotFound) {
		messagePage(w, http.StatusNotFound, "Unknown identity provider", "This organization has no SAML identity provider of that name.")
		return p, nil, false
	}
	if err != nil {
		n.failPage(ctx, w, err)
		return p, nil, false
	}
	sp, err := n.samlSP(t, p)
	if err != nil {
		n.failPage(ctx, w, err)
		return p, nil, false
	}
	return p, sp, true
}

// samlMetadata serves the SP's metadata for one IdP.
func (n *Node) samlMetadata(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant) {
	_, sp, ok := n.samlIdP(ctx, w, r, t)
	if !ok {
		return
	}
	b, err := xml.MarshalIndent(sp.Metadata(), "", "  ")
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	w.Header().Set("Content-Type", "application/samlmetadata+xml")
	_, _ = w.Write(append([]byte(xml.Header), b...))
}

// samlState is what the state cookie seals: the AuthnRequest's id and the
// authorization request to continue.
type samlState struct {
	TenantID  string    `json:"t"`
	IdPID     string    `json:"i"`
	RequestID string    `json:"r"`
	Request   string    `json:"q"`
	ExpiresAt time.Time `json:"e"`
}

func samlStateAD(tenantID, idpID string) []byte {
	return []byte("keyplane-saml-state/" + tenantID + "/" + idpID)
}

// samlLogin starts a sign-in at the IdP.
func (n *Node) samlLogin(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant) {
	p, sp, ok := n.samlIdP(ctx, w, r, t)
	if !ok {
		return
	}
	query := r.URL.Query().Get("req")
	if _, _, ok := n.authorizeRequest(ctx, w, r, t, query); !ok {
		return
	}
	ar, err := sp.MakeAuthenticationRequest(sp.GetSSOBindingLocation(saml.HTTPRedirectBinding), saml.HTTPRedirectBinding, saml.HTTPPostBinding)
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	b, err := json.Marshal(samlState{TenantID: t.ID, IdPID: p.ID, RequestID: ar.ID, Request: query, ExpiresAt: n.now().Add(samlStateTTL)})
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	to, err := ar.Redirect("", sp)
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	// The IdP posts back cross-site: a SameSite=Lax cookie would not come along, so
	// the state cookie is SameSite=None (which browsers honour only when Secure, that
	// is behind https, as keyplane runs in production).
	http.SetCookie(w, &http.Cookie{Name: samlStateCookie, Value: base64.RawURLEncoding.EncodeToString(n.cfg.KEK.Seal(b, samlStateAD(t.ID, p.ID))),
		Path: n.samlPath(t.ID, p.Name), HttpOnly: true, Secure: n.secureCookies(), SameSite: n.samlSameSite(), MaxAge: int(samlStateTTL / time.Second)})
	http.Redirect(w, r, to.String(), http.StatusFound)
}

func (n *Node) samlPath(tenantID, idpName string) string {
	return n.cookiePath(tenantID) + "saml/" + url.PathEscape(idpName) + "/"
}

func (n *Node) samlSameSite() http.SameSite {
	if n.secureCookies() {
		return http.SameSiteNoneMode
	}
	return http.SameSiteLaxMode
}

// openSAMLState opens the state cookie; "" and false when it is missing, tampered
// with, for another IdP or expired.
func (n *Node) openSAMLState(r *http.Request, tenantID, idpID string) (samlState, bool) {
	ck, err := r.Cookie(samlStateCookie)
	if err != nil || len(ck.Value) > 4096 {
		return samlState{}, false
	}
	sealed, err := base64.RawURLEncoding.DecodeString(ck.Value)
	if err != nil {
		return samlState{}, false
	}
	b, err := n.cfg.KEK.Open(sealed, samlStateAD(tenantID, idpID))
	if err != nil {
		return samlState{}, false
	}
	var s samlState
	if json.Unmarshal(b, &s) != nil || s.TenantID != tenantID || s.IdPID != idpID || s.RequestID == "" || !n.now().Before(s.ExpiresAt) {
		return samlState{}, false
	}
	return s, true
}

// samlRule names why crewjam refused a response, from its private error, for the
// audit event and the page.
func samlRule(err error) (rule, msg string) {
	text := err.Error()
	var ire *saml.InvalidResponseError
	if errors.As(err, &ire) && ire.PrivateErr != nil {
		text = ire.PrivateErr.Error()
	}
	lower := strings.ToLower(text)
	switch {
	case strings.Contains(lower, "inresponseto") || strings.Contains(lower, "request id"):
		return "in_response_to", "The response answers no sign-in this browser started."
	case strings.Contains(lower, "audience"):
		return "audience", "The assertion is meant for another service provider (audience)."
	case strings.Contains(lower, "recipient"), strings.Contains(lower, "destination"):
		return "recipient", "The response is addressed to another endpoint (recipient or destination)."
	case strings.Contains(lower, "expired"), strings.Contains(lower, "notonorafter"), strings.Contains(lower, "notbefore"), strings.Contains(lower, "not yet valid"):
		return "validity", "The assertion has expired or is not valid yet."
	case strings.Contains(lower, "signature"), strings.Contains(lower, "signed"), strings.Contains(lower, "digest"), strings.Contains(lower, "certificate"):
		return "signature", "The response is not signed by the identity provider's key."
	}
	return "invalid_response", "The identity provider's response is malformed or invalid."
}

// samlRefuse answers a refused sign-in with a page and writes its audit event.
func (n *Node) samlRefuse(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant, p schema.SAMLIdP, status int, rule, msg, reason string) {
	if err := n.store.RecordSAMLRefusal(ctx, schema.Change{Actor: "system", ActorKind: "system", RequestID: requestID(ctx)}, t.Scope(),
		schema.SAMLRefusal{IdPID: p.ID, IdPName: p.Name, Rule: rule, Reason: reason}); err != nil {
		n.failPage(ctx, w, err)
		return
	}
	messagePage(w, status, "Sign-in refused", msg)
}

// samlACS receives the IdP's Response (HTTP-POST binding).
func (n *Node) samlACS(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant) {
	p, sp, ok := n.samlIdP(ctx, w, r, t)
	if !ok {
		return
	}
	// The state is single use: whatever happens next, it is spent.
	http.SetCookie(w, &http.Cookie{Name: samlStateCookie, Value: "", Path: n.samlPath(t.ID, p.Name), HttpOnly: true,
		Secure: n.secureCookies(), SameSite: n.samlSameSite(), MaxAge: -1})
	if r.PostForm.Get("SAMLResponse") == "" || r.Form.Has("SAMLart") || r.Form.Has("Signature") {
		n.samlRefuse(ctx, w, r, t, p, http.StatusBadRequest, "binding", "SAMLResponse: required (HTTP-POST binding only).",
			"no SAMLResponse, or another binding (artifact, simple sign)")
		return
	}
	st, ok := n.openSAMLState(r, t.ID, p.ID)
	if !ok {
		n.samlRefuse(ctx, w, r, t, p, http.StatusBadRequest, "in_response_to",
			"This browser started no sign-in with this identity provider, or it took too long: start again.", "no valid SAML state cookie")
		return
	}
	as, err := sp.ParseResponse(r, []string{st.RequestID})
	if err != nil {
		rule, msg := samlRule(err)
		reason := err.Error()
		var ire *saml.InvalidResponseError
		if errors.As(err, &ire) && ire.PrivateErr != nil {
			reason = ire.PrivateErr.Error()
		}
		n.samlRefuse(ctx, w, r, t, p, http.StatusForbidden, rule, msg, reason)
		return
	}
	// crewjam judged the assertion's validity by the real clock: so is how long it
	// stays acceptable.
	in := samlSignIn(p, as, time.Now())
	if (p.LinkBy == schema.SAMLLinkEmail || p.JIT) && in.Email == "" || p.LinkBy == schema.SAMLLinkExternalID && in.ExternalID == "" {
		n.samlRefuse(ctx, w, r, t, p, http.StatusForbidden, "attributes", "The assertion lacks the attribute this organization links people by.",
			"the assertion carries no "+p.LinkBy)
		return
	}
	secret, err := credential.NewSecret(credential.PrefixBrowserSession)
	if err != nil {
		n.failPage(ctx, w, err)
		return
	}
	expires := n.now().Add(refreshTTL)
	c := schema.Change{Actor: "saml:" + p.Name, ActorKind: "system", RequestID: requestID(ctx)}
	_, err = n.store.CompleteSAMLLogin(ctx, c, t.Scope(), in,
		schema.NewSession{GrantType: "saml", AMR: []string{"ext"}, ExpiresAt: expires},
		schema.NewBrowserSession{ID: secret.KeyID, Hash: secret.Hash, ExpiresAt: expires})
	switch {
	case errors.Is(err, schema.ErrAssertionReplay):
		n.samlRefuse(ctx, w, r, t, p, http.StatusForbidden, "replay", "This assertion was used already: sign in again.", err.Error())
		return
	case errors.Is(err, schema.ErrNotFound):
		n.samlRefuse(ctx, w, r, t, p, http.StatusForbidden, "no_identity", "No account of this organization matches you.", err.Error())
		return
	case errors.Is(err, schema.ErrPrecondition), errors.Is(err, schema.ErrConflict):
		n.samlRefuse(ctx, w, r, t, p, http.StatusForbidden, "identity", "Your account cannot sign in (it is disabled or does not match).", err.Error())
		return
	case err != nil:
		var fe *schema.FieldError
		if errors.As(err, &fe) {
			n.samlRefuse(ctx, w, r, t, p, http.StatusForbidden, "attributes", "The assertion's attributes do not make a valid account.", err.Error())
			return
		}
		n.failPage(ctx, w, err)
		return
	}
	n.metrics.loginAttempts.WithLabelValues("success").Inc()
	n.setSessionCookie(w, t.ID, secret.Text, expires)
	http.Redirect(w, r, n.cookiePath(t.ID)+"oauth2/authorize?"+st.Request, http.StatusSeeOther)
}

// samlSignIn maps a verified assertion by the IdP's attribute mapping. Its id is kept
// for replay for as long as crewjam would still accept it, judged at now: at most
// saml.MaxIssueDelay after its IssueInstant (NotOnOrAfter is no bound: crewjam accepts
// an assertion saml.MaxClockSkew past it), and samlReplayMargin more.
func samlSignIn(p schema.SAMLIdP, as *saml.Assertion, now time.Time) schema.SAMLSignIn {
	in := schema.SAMLSignIn{IdP: p, AssertionID: as.ID,
		KeepFor: min(max(as.IssueInstant.Add(saml.MaxIssueDelay).Sub(now), 0), samlMaxReplayWindow) + samlReplayMargin}
	if as.Subject != nil && as.Subject.NameID != nil {
		in.NameID = strings.TrimSpace(as.Subject.NameID.Value)
	}
	attr := func(name string) string {
		if name == "" {
			return in.NameID
		}
		for _, st := range as.AttributeStatements {
			for _, a := range st.Attributes {
				if (a.Name == name || a.FriendlyName == name) && len(a.Values) > 0 {
					return strings.TrimSpace(a.Values[0].Value)
				}
			}
		}
		return ""
	}
	in.Email, in.ExternalID = attr(p.EmailAttribute), attr(p.ExternalIDAttribute)
	if p.NameAttribute != "" {
		in.DisplayName = attr(p.NameAttribute)
	}
	return in
}
