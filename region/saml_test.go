package region_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/xml"
	"html"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/beevik/etree"
	"github.com/crewjam/saml"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// testIdP is crewjam/saml's own IdentityProvider on a real HTTP server: every
// request is answered for user (no login prompt), and tamper, when set, edits each
// assertion before it is signed.
type testIdP struct {
	mu     sync.Mutex
	idp    *saml.IdentityProvider
	srv    *httptest.Server
	user   saml.Session
	tamper func(*saml.Assertion)
}

func newKeyPair(t *testing.T, cn string) (*rsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

func newTestIdP(t *testing.T) *testIdP {
	t.Helper()
	ti := &testIdP{}
	key, cert := newKeyPair(t, "corp idp")
	mux := http.NewServeMux()
	ti.srv = httptest.NewServer(mux)
	t.Cleanup(ti.srv.Close)
	base, _ := url.Parse(ti.srv.URL)
	ti.idp = &saml.IdentityProvider{Key: key, Signer: key, Certificate: cert,
		MetadataURL: *base.JoinPath("metadata"), SSOURL: *base.JoinPath("sso"),
		ServiceProviderProvider: ti, SessionProvider: ti, AssertionMaker: ti}
	mux.HandleFunc("/metadata", func(w http.ResponseWriter, r *http.Request) { ti.current().ServeMetadata(w, r) })
	mux.HandleFunc("/sso", func(w http.ResponseWriter, r *http.Request) { ti.current().ServeSSO(w, r) })
	return ti
}

func (ti *testIdP) current() *saml.IdentityProvider {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return ti.idp
}

// GetServiceProvider fetches the SP's metadata from keyplane, as an IdP admin would.
func (ti *testIdP) GetServiceProvider(r *http.Request, id string) (*saml.EntityDescriptor, error) {
	resp, err := http.Get(id)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var ed saml.EntityDescriptor
	if err := xml.Unmarshal(b, &ed); err != nil {
		return nil, err
	}
	// Drop the SP's encryption key: the IdP then sends plain assertions, which the
	// attacks below edit (keyplane accepts encrypted ones too).
	for i := range ed.SPSSODescriptors {
		kds := ed.SPSSODescriptors[i].KeyDescriptors[:0]
		for _, kd := range ed.SPSSODescriptors[i].KeyDescriptors {
			if kd.Use != "encryption" {
				kds = append(kds, kd)
			}
		}
		ed.SPSSODescriptors[i].KeyDescriptors = kds
	}
	return &ed, nil
}

func (ti *testIdP) GetSession(w http.ResponseWriter, r *http.Request, req *saml.IdpAuthnRequest) *saml.Session {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	s := ti.user
	s.ID, s.CreateTime, s.ExpireTime, s.Index = "sess-1", time.Now(), time.Now().Add(time.Hour), "1"
	return &s
}

func (ti *testIdP) MakeAssertion(req *saml.IdpAuthnRequest, s *saml.Session) error {
	if err := (saml.DefaultAssertionMaker{}).MakeAssertion(req, s); err != nil {
		return err
	}
	ti.mu.Lock()
	defer ti.mu.Unlock()
	if ti.tamper != nil {
		ti.tamper(req.Assertion)
	}
	return nil
}

// set changes the IdP's user and tamper function.
func (ti *testIdP) set(user saml.Session, tamper func(*saml.Assertion)) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	ti.user, ti.tamper = user, tamper
}

// resign makes the IdP sign with another key than its metadata names, until
// restore is called.
func (ti *testIdP) resign(t *testing.T) (restore func()) {
	key, cert := newKeyPair(t, "attacker")
	ti.mu.Lock()
	defer ti.mu.Unlock()
	orig := ti.idp
	cp := *orig
	cp.Key, cp.Signer, cp.Certificate = key, key, cert
	ti.idp = &cp
	return func() {
		ti.mu.Lock()
		defer ti.mu.Unlock()
		ti.idp = orig
	}
}

var samlFormField = regexp.MustCompile(`name="(SAMLResponse|RelayState)" value="([^"]*)"`)

// samlStart runs the SP-initiated flow up to the IdP's auto-posting form and returns
// the Response (decoded XML) and the state cookie keyplane set.
func samlStart(t *testing.T, o *opFixture, c *http.Client, idp string, q url.Values) (string, *http.Cookie) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, o.issuer+"/saml/"+idp+"/login?"+url.Values{"req": {q.Encode()}}.Encode(), nil)
	p := do(t, c, req)
	if p.status != http.StatusFound || p.location == nil {
		t.Fatalf("login: want a redirect to the IdP, got %d: %.300s", p.status, p.body)
	}
	var state *http.Cookie
	for _, ck := range (&http.Response{Header: p.header}).Cookies() {
		if ck.Name == "kp_saml" {
			state = ck
		}
	}
	if state == nil || !state.HttpOnly {
		t.Fatalf("login: no HttpOnly state cookie in %v", p.header["Set-Cookie"])
	}
	req, _ = http.NewRequest(http.MethodGet, p.location.String(), nil)
	form := do(t, c, req)
	m := samlFormField.FindAllStringSubmatch(form.body, -1)
	if form.status != http.StatusOK || len(m) == 0 || m[0][1] != "SAMLResponse" {
		t.Fatalf("IdP: want a response form, got %d: %.500s", form.status, form.body)
	}
	raw, err := base64.StdEncoding.DecodeString(html.UnescapeString(m[0][2]))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw), state
}

// samlPost posts a Response (XML) to keyplane's ACS.
func samlPost(t *testing.T, o *opFixture, c *http.Client, idp, response string) pageResp {
	t.Helper()
	return o.post(t, c, "/saml/"+idp+"/acs", url.Values{"SAMLResponse": {base64.StdEncoding.EncodeToString([]byte(response))}})
}

// samlFixture is an OP fixture with two SAML IdPs of one crewjam IdP: "corp" (link by
// email, JIT on, email from the mail attribute) and "hr" (link by external id, from
// the uid attribute, JIT off).
type samlFixture struct {
	*opFixture
	idp  *testIdP
	saml keyplanev1connect.SAMLServiceClient
}

func newSAMLFixture(t *testing.T) *samlFixture {
	t.Helper()
	o := newOPFixture(t, "https://app.example/cb", "https://app.example/bye")
	f := &samlFixture{opFixture: o, idp: newTestIdP(t)}
	f.saml = keyplanev1connect.NewSAMLServiceClient(http.DefaultClient, o.url, connect.WithInterceptors(
		connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+secret)
				return next(ctx, req)
			}
		})))
	ctx := context.Background()
	if _, err := f.saml.CreateSAMLIdP(ctx, connect.NewRequest(&keyplanev1.CreateSAMLIdPRequest{TenantId: "acme", Idp: &keyplanev1.SAMLIdP{
		Name: "corp", MetadataUrl: f.idp.srv.URL + "/metadata", EmailAttribute: "mail", NameAttribute: "cn", Jit: true}})); err != nil {
		t.Fatal(err)
	}
	md := f.idp.current().Metadata()
	b, err := xml.Marshal(md)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.saml.CreateSAMLIdP(ctx, connect.NewRequest(&keyplanev1.CreateSAMLIdPRequest{TenantId: "acme", Idp: &keyplanev1.SAMLIdP{
		Name: "hr", Metadata: string(b), EmailAttribute: "mail", ExternalIdAttribute: "uid", LinkBy: "external_id"}})); err != nil {
		t.Fatal(err)
	}
	return f
}

var bob = saml.Session{NameID: "bob@corp.example", UserName: "E-1002", UserEmail: "bob@corp.example", UserCommonName: "Bob Builder"}

// TestSAMLSignIn signs people in through crewjam/saml's IdP over real HTTP: a new
// person is created just in time and gets an authorization code; a SCIM-provisioned
// person is linked by externalId; a disabled one is refused.
func TestSAMLSignIn(t *testing.T) {
	t.Parallel()
	f := newSAMLFixture(t)
	ctx := context.Background()
	_, challenge := pkce()

	t.Run("jit", func(t *testing.T) {
		f.idp.set(bob, nil)
		c := browser(t)
		resp, _ := samlStart(t, f.opFixture, c, "corp", f.authParams(f.firstParty, challenge))
		p := samlPost(t, f.opFixture, c, "corp", resp)
		if p.status != http.StatusSeeOther || p.location == nil || !strings.HasPrefix(p.location.Path, "/t/acme/oauth2/authorize") {
			t.Fatalf("acs: want a redirect to the authorization endpoint, got %d %v: %.300s", p.status, p.location, p.body)
		}
		req, _ := http.NewRequest(http.MethodGet, f.url+p.location.String(), nil)
		f.codeFrom(t, do(t, c, req))
		ids, err := f.admin.ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: "acme", PageSize: 100}))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, id := range ids.Msg.Identities {
			if id.Email == "bob@corp.example" && id.DisplayName == "Bob Builder" {
				found = true
			}
		}
		if !found {
			t.Fatal("no identity bob@corp.example created just in time")
		}
		wantAuditAction(t, f.fixture, "saml.login", "")
	})

	t.Run("link by externalId", func(t *testing.T) {
		tn, err := f.store.GetTenant(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		u, err := f.store.CreateSCIMUser(ctx, schema.Change{Actor: "system"}, tn.Scope(), schema.SCIMUser{UserName: "carol", ExternalID: "E-2001",
			DisplayName: "Carol", Email: "carol@acme.example", Active: true})
		if err != nil {
			t.Fatal(err)
		}
		// The IdP says another email: the identity is found by externalId alone.
		f.idp.set(saml.Session{NameID: "carol", UserName: "E-2001", UserEmail: "carol.new@corp.example"}, nil)
		c := browser(t)
		resp, _ := samlStart(t, f.opFixture, c, "hr", f.authParams(f.firstParty, challenge))
		p := samlPost(t, f.opFixture, c, "hr", resp)
		req, _ := http.NewRequest(http.MethodGet, f.url+p.location.String(), nil)
		f.codeFrom(t, do(t, c, req))
		evs, err := f.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", Action: "saml.login", PageSize: 100}))
		if err != nil {
			t.Fatal(err)
		}
		linked := false
		for _, e := range evs.Msg.Events {
			if e.After.GetFields()["identity_id"].GetStringValue() == u.ID && e.After.GetFields()["saml_idp"].GetStringValue() == "hr" {
				linked = true
			}
		}
		if !linked {
			t.Fatalf("no saml.login of carol (%s) through hr", u.ID)
		}

		// Unknown externalId, JIT off: refused.
		f.idp.set(saml.Session{NameID: "dave", UserName: "E-9999", UserEmail: "dave@corp.example"}, nil)
		c = browser(t)
		resp, _ = samlStart(t, f.opFixture, c, "hr", f.authParams(f.firstParty, challenge))
		wantErrorPage(t, samlPost(t, f.opFixture, c, "hr", resp), http.StatusForbidden, "No account")
		wantAuditAction(t, f.fixture, "saml.login_refused", "no_identity")
	})

	t.Run("disabled identity", func(t *testing.T) {
		if _, err := f.admin.DisableIdentity(ctx, connect.NewRequest(&keyplanev1.DisableIdentityRequest{TenantId: "acme", Id: f.alice})); err != nil {
			t.Fatal(err)
		}
		f.idp.set(saml.Session{NameID: f.email, UserName: "alice", UserEmail: f.email}, nil)
		c := browser(t)
		resp, _ := samlStart(t, f.opFixture, c, "corp", f.authParams(f.firstParty, challenge))
		wantErrorPage(t, samlPost(t, f.opFixture, c, "corp", resp), http.StatusForbidden, "cannot sign in")
		wantAuditAction(t, f.fixture, "saml.login_refused", "identity")
	})
}

// countAudit counts the audit events of action whose rule is rule ("" any).
func countAudit(t *testing.T, f *fixture, action, rule string) int {
	t.Helper()
	evs, err := f.admin.ListAuditEvents(context.Background(), connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", Action: action, PageSize: 1000}))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs.Msg.Events {
		if rule == "" || e.After.GetFields()["rule"].GetStringValue() == rule {
			n++
		}
	}
	return n
}

// wantAuditAction checks an audit event of action whose rule is rule ("" any).
func wantAuditAction(t *testing.T, f *fixture, action, rule string) {
	t.Helper()
	if countAudit(t, f, action, rule) == 0 {
		t.Errorf("no %s audit event with rule %q", action, rule)
	}
}

// TestSecuritySAMLRefusals performs the attacks on the ACS through real servers:
// each is refused with an error page and a saml.login_refused audit event naming the
// rule, and none signs anyone in.
func TestSecuritySAMLRefusals(t *testing.T) {
	t.Parallel()
	f := newSAMLFixture(t)
	_, challenge := pkce()
	q := f.authParams(f.firstParty, challenge)
	mallory := saml.Session{NameID: "mallory@corp.example", UserName: "E-666", UserEmail: "mallory@corp.example"}

	// refused posts response through browser c and checks the refusal.
	refused := func(t *testing.T, c *http.Client, response, rule string) {
		t.Helper()
		before := countAudit(t, f.fixture, "saml.login_refused", rule)
		p := samlPost(t, f.opFixture, c, "corp", response)
		if p.status != http.StatusForbidden && p.status != http.StatusBadRequest || p.location != nil || !strings.Contains(p.body, "Sign-in refused") {
			t.Fatalf("want a refusal page, got %d %v: %.400s", p.status, p.location, p.body)
		}
		if after := countAudit(t, f.fixture, "saml.login_refused", rule); after != before+1 {
			t.Errorf("saml.login_refused events with rule %q: %d, want %d", rule, after, before+1)
		}
		for _, ck := range c.Jar.Cookies(&url.URL{Scheme: "http", Host: strings.TrimPrefix(f.url, "http://"), Path: "/t/acme/"}) {
			if ck.Name == "kp_session" {
				t.Fatal("a refused assertion set a session cookie")
			}
		}
	}
	// tampered has the IdP edit its assertion (before signing it) and checks the
	// refusal.
	tampered := func(rule string, edit func(a *saml.Assertion)) func(t *testing.T) {
		return func(t *testing.T) {
			f.idp.set(mallory, edit)
			defer f.idp.set(mallory, nil)
			c := browser(t)
			resp, _ := samlStart(t, f.opFixture, c, "corp", q)
			refused(t, c, resp, rule)
		}
	}
	t.Run("wrong audience", tampered("audience", func(a *saml.Assertion) {
		a.Conditions.AudienceRestrictions = []saml.AudienceRestriction{{Audience: saml.Audience{Value: "https://other.example/saml/metadata"}}}
	}))
	t.Run("wrong recipient", tampered("recipient", func(a *saml.Assertion) {
		for i := range a.Subject.SubjectConfirmations {
			a.Subject.SubjectConfirmations[i].SubjectConfirmationData.Recipient = "https://other.example/saml/acs"
		}
	}))
	t.Run("expired", tampered("validity", func(a *saml.Assertion) {
		past := time.Now().Add(-10 * time.Minute)
		a.Conditions.NotBefore, a.Conditions.NotOnOrAfter = past.Add(-time.Minute), past
		for i := range a.Subject.SubjectConfirmations {
			a.Subject.SubjectConfirmations[i].SubjectConfirmationData.NotOnOrAfter = past
		}
	}))

	t.Run("InResponseTo mismatch", func(t *testing.T) {
		f.idp.set(mallory, nil)
		// A response to a sign-in browser a started, posted from browser b (which
		// started its own): the request ids differ.
		resp, _ := samlStart(t, f.opFixture, browser(t), "corp", q)
		b := browser(t)
		_, _ = samlStart(t, f.opFixture, b, "corp", q)
		refused(t, b, resp, "in_response_to")
		// And from a browser that started none.
		refused(t, browser(t), resp, "in_response_to")
	})

	t.Run("replayed", func(t *testing.T) {
		f.idp.set(mallory, nil)
		c := browser(t)
		resp, state := samlStart(t, f.opFixture, c, "corp", q)
		p := samlPost(t, f.opFixture, c, "corp", resp)
		if p.status != http.StatusSeeOther {
			t.Fatalf("first use: want a redirect, got %d: %.300s", p.status, p.body)
		}
		// The attacker kept the state cookie keyplane deleted, and posts the same
		// response again: crewjam's checks pass, keyplane's replay check does not.
		d := browser(t)
		u, _ := url.Parse(f.url + "/t/acme/saml/corp/")
		d.Jar.SetCookies(u, []*http.Cookie{{Name: state.Name, Value: state.Value, Path: "/t/acme/saml/corp/"}})
		refused(t, d, resp, "replay")
	})

	t.Run("signature wrapping", func(t *testing.T) {
		f.idp.set(mallory, nil)
		c := browser(t)
		resp, _ := samlStart(t, f.opFixture, c, "corp", q)
		doc := etree.NewDocument()
		if err := doc.ReadFromString(resp); err != nil {
			t.Fatal(err)
		}
		signed := doc.FindElement("//Assertion")
		if signed == nil || signed.FindElement("./Signature") == nil {
			t.Fatal("the IdP's response has no signed assertion")
		}
		// An unsigned copy naming the owner of the tenant, put first; the signed one
		// stays untouched after it.
		evil := signed.Copy()
		evil.RemoveChild(evil.FindElement("./Signature"))
		evil.CreateAttr("ID", "evil-1")
		for _, nid := range evil.FindElements("//NameID") {
			nid.SetText(f.email)
		}
		for _, v := range evil.FindElements("//AttributeValue") {
			if strings.Contains(v.Text(), "@") {
				v.SetText(f.email)
			}
		}
		signed.Parent().InsertChildAt(signed.Index(), evil)
		out, _ := doc.WriteToString()
		refused(t, c, out, "")
		evs, err := f.admin.ListAuditEvents(context.Background(), connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", Action: "saml.login", PageSize: 100}))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Msg.Events {
			if e.After.GetFields()["identity_id"].GetStringValue() == f.alice {
				t.Fatal("the wrapped assertion signed alice in")
			}
		}
	})

	t.Run("unsigned", func(t *testing.T) {
		f.idp.set(mallory, nil)
		c := browser(t)
		resp, _ := samlStart(t, f.opFixture, c, "corp", q)
		doc := etree.NewDocument()
		if err := doc.ReadFromString(resp); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, sig := range doc.FindElements("//Signature") {
			sig.Parent().RemoveChild(sig)
			n++
		}
		if n == 0 {
			t.Fatal("the IdP's response had no signature to remove")
		}
		out, _ := doc.WriteToString()
		refused(t, c, out, "signature")
	})

	t.Run("re-signed by another key", func(t *testing.T) {
		restore := f.idp.resign(t)
		defer restore()
		f.idp.set(mallory, nil)
		c := browser(t)
		resp, _ := samlStart(t, f.opFixture, c, "corp", q)
		refused(t, c, resp, "signature")
	})
}

// TestSAMLService manages IdPs over real HTTP: the generated client for Get, List and
// Delete, plain net/http speaking Connect JSON for a bad create, and each bad input
// refused with invalid_argument naming the field, nothing stored.
func TestSAMLService(t *testing.T) {
	t.Parallel()
	f := newSAMLFixture(t)
	ctx := context.Background()
	list, err := f.saml.ListSAMLIdPs(ctx, connect.NewRequest(&keyplanev1.ListSAMLIdPsRequest{TenantId: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Msg.Idps) != 2 || list.Msg.Idps[0].Name != "corp" || list.Msg.Idps[1].Name != "hr" {
		t.Fatalf("list: %v", list.Msg.Idps)
	}
	corp := list.Msg.Idps[0]
	if corp.IdpEntityId != f.idp.srv.URL+"/metadata" || corp.AcsUrl != f.issuer+"/saml/corp/acs" ||
		!strings.HasPrefix(corp.SpCertificate, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("corp: entity %q acs %q", corp.IdpEntityId, corp.AcsUrl)
	}
	// The SP metadata names the ACS URL and the certificate the API returned.
	resp, err := http.Get(corp.SpEntityId)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var sp saml.EntityDescriptor
	if err := xml.Unmarshal(b, &sp); err != nil || len(sp.SPSSODescriptors) != 1 {
		t.Fatalf("SP metadata: %v: %.300s", err, b)
	}
	if sp.EntityID != corp.SpEntityId || sp.SPSSODescriptors[0].AssertionConsumerServices[0].Location != corp.AcsUrl {
		t.Fatalf("SP metadata: entity %q", sp.EntityID)
	}

	valid := f.idp.current().Metadata()
	good, _ := xml.Marshal(valid)
	for _, tc := range []struct {
		name  string
		idp   *keyplanev1.SAMLIdP
		field string
	}{
		{"no metadata", &keyplanev1.SAMLIdP{Name: "x"}, "idp.metadata"},
		{"both", &keyplanev1.SAMLIdP{Name: "x", Metadata: string(good), MetadataUrl: f.idp.srv.URL + "/metadata"}, "idp.metadata"},
		{"not xml", &keyplanev1.SAMLIdP{Name: "x", Metadata: "<nope"}, "idp.metadata"},
		{"plain http url", &keyplanev1.SAMLIdP{Name: "x", MetadataUrl: "http://idp.example/metadata"}, "idp.metadata_url"},
		{"bad name", &keyplanev1.SAMLIdP{Name: "a/b", Metadata: string(good)}, "name"},
		{"no name", &keyplanev1.SAMLIdP{Metadata: string(good)}, "idp.name"},
		{"bad link_by", &keyplanev1.SAMLIdP{Name: "x", Metadata: string(good), LinkBy: "phone"}, "link_by"},
		{"taken name", &keyplanev1.SAMLIdP{Name: "corp", Metadata: string(good)}, "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.saml.CreateSAMLIdP(ctx, connect.NewRequest(&keyplanev1.CreateSAMLIdPRequest{TenantId: "acme", Idp: tc.idp}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument && connect.CodeOf(err) != connect.CodeAlreadyExists || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v, want invalid_argument naming %s", err, tc.field)
			}
		})
	}

	// Plain net/http speaking Connect JSON.
	req, _ := http.NewRequest(http.MethodPost, f.url+"/keyplane.v1.SAMLService/CreateSAMLIdP",
		strings.NewReader(`{"tenantId":"acme","idp":{"name":"json","metadata":"<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" entityID=\"x\"/>"}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"invalid_argument"`) || !strings.Contains(string(body), "IDPSSODescriptor") {
		t.Fatalf("JSON create: %d %s", r.StatusCode, body)
	}

	if _, err := f.saml.DeleteSAMLIdP(ctx, connect.NewRequest(&keyplanev1.DeleteSAMLIdPRequest{TenantId: "acme", Id: corp.Id})); err != nil {
		t.Fatal(err)
	}
	if _, err := f.saml.GetSAMLIdP(ctx, connect.NewRequest(&keyplanev1.GetSAMLIdPRequest{TenantId: "acme", Id: corp.Id})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("get after delete: %v", err)
	}
	list, err = f.saml.ListSAMLIdPs(ctx, connect.NewRequest(&keyplanev1.ListSAMLIdPsRequest{TenantId: "acme"}))
	if err != nil || len(list.Msg.Idps) != 1 {
		t.Fatalf("list after delete: %v %v", list, err)
	}
	wantAuditAction(t, f.fixture, "saml.idp.delete", "")
	// Its URLs are gone with it.
	c := browser(t)
	lr, _ := http.NewRequest(http.MethodGet, f.issuer+"/saml/corp/login?req=x", nil)
	wantErrorPage(t, do(t, c, lr), http.StatusNotFound, "no SAML identity provider")
}
