package region_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/crewjam/saml"
)

// TestSecuritySAMLReplayInsideClockSkew: an assertion is accepted until its
// NotOnOrAfter plus crewjam's clock-skew allowance (saml.MaxClockSkew), within
// saml.MaxIssueDelay of its IssueInstant; keyplane kept its id for replay only until
// NotOnOrAfter, so an assertion whose NotOnOrAfter had passed (but not the skew) was
// forgotten at once, and the same Response posted again (with the state cookie the
// attacker kept) signed in a second time.
func TestSecuritySAMLReplayInsideClockSkew(t *testing.T) {
	t.Parallel()
	f := newSAMLFixture(t)
	_, challenge := pkce()
	// The IdP's clock is a little ahead: NotOnOrAfter has passed for keyplane, within
	// the skew crewjam allows.
	f.idp.set(saml.Session{NameID: "mallory@corp.example", UserName: "E-666", UserEmail: "mallory@corp.example"}, func(a *saml.Assertion) {
		past := time.Now().Add(-10 * time.Second)
		a.Conditions.NotOnOrAfter = past
		for i := range a.Subject.SubjectConfirmations {
			a.Subject.SubjectConfirmations[i].SubjectConfirmationData.NotOnOrAfter = past
		}
	})
	c := browser(t)
	resp, state := samlStart(t, f.opFixture, c, "corp", f.authParams(f.firstParty, challenge))
	if p := samlPost(t, f.opFixture, c, "corp", resp); p.status != http.StatusSeeOther {
		t.Fatalf("first use (inside the skew): want a redirect, got %d: %.300s", p.status, p.body)
	}
	before := countAudit(t, f.fixture, "saml.login", "")
	d := browser(t)
	u, _ := url.Parse(f.url + "/t/acme/saml/corp/")
	d.Jar.SetCookies(u, []*http.Cookie{{Name: state.Name, Value: state.Value, Path: "/t/acme/saml/corp/"}})
	p := samlPost(t, f.opFixture, d, "corp", resp)
	if p.status != http.StatusForbidden || p.location != nil {
		t.Fatalf("replay: want a refusal page, got %d %v: %.300s", p.status, p.location, p.body)
	}
	wantAuditAction(t, f.fixture, "saml.login_refused", "replay")
	if after := countAudit(t, f.fixture, "saml.login", ""); after != before {
		t.Fatalf("the replayed assertion signed in again (%d saml.login events, want %d)", after, before)
	}
}
