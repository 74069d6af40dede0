package region

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/region/credential"
	"github.com/keyplane/keyplane/schema"
)

// FuzzClientCredentials feeds arbitrary Authorization headers and form bodies to the
// OAuth client authentication parser. It must never panic; whatever it accepts is
// one well-formed client id and client secret from exactly one method, and every
// refusal is invalid_client or invalid_request.
func FuzzClientCredentials(f *testing.F) {
	sec, err := credential.NewSecret(credential.PrefixClientSecret)
	if err != nil {
		f.Fatal(err)
	}
	basic := func(id, secret string) string {
		r, _ := http.NewRequest(http.MethodPost, "/", nil)
		r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
		return r.Header.Get("Authorization")
	}
	f.Add(basic(sec.KeyID, sec.Text), "grant_type=client_credentials")
	f.Add("", "client_id="+sec.KeyID+"&client_secret="+url.QueryEscape(sec.Text))
	f.Add(basic(sec.KeyID, sec.Text), "client_id=x")
	f.Add(basic("%zz", sec.Text), "")
	f.Add("Basic !!!", "")
	f.Add("Basic "+strings.Repeat("QUFB", 40), "client_secret=")
	f.Add(basic(strings.Repeat("a", 65), sec.Text), "")
	f.Add("Bearer x", "client_id=a&client_secret=kpc_a_b")
	f.Fuzz(func(t *testing.T, authorization, body string) {
		r, err := http.NewRequest(http.MethodPost, "/t/acme/oauth2/token", strings.NewReader(body))
		if err != nil {
			t.Skip()
		}
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Authorization", authorization)
		if r.ParseForm() != nil {
			return // serveOAuth answers invalid_request before authentication
		}
		id, secret, _, err := clientCredentials(r)
		if err != nil {
			var oe *oauthError
			if !errors.As(err, &oe) || (oe.Code != "invalid_client" && oe.Code != "invalid_request") {
				t.Fatalf("refusal %v is not invalid_client or invalid_request", err)
			}
			return
		}
		if id == "" || len(id) > 64 {
			t.Fatalf("accepted client id %q", id)
		}
		if _, err := credential.ParseSecret(credential.PrefixClientSecret, secret); err != nil {
			t.Fatalf("accepted a secret that does not parse: %v", err)
		}
		_, _, isBasic := r.BasicAuth()
		if isBasic && (r.PostForm.Has("client_id") || r.PostForm.Has("client_secret")) {
			t.Fatal("accepted two authentication methods at once")
		}
	})
}

// FuzzRequestedTarget feeds arbitrary resource, audience and scope parameters and
// allow-lists to the token endpoint's audience/scope check. It must never panic;
// whatever it grants is the issuer or an allowed audience and only allowed scope
// tokens, each once; every refusal is invalid_target or invalid_scope.
func FuzzRequestedTarget(f *testing.F) {
	const iss = "https://iam.test/t/acme"
	f.Add("", "", "", "", "")
	f.Add("https://api.test", "", "read write", "https://api.test", "read write")
	f.Add("", "api", "read  read", "api", "read")
	f.Add(iss, "", "", "", "")
	f.Add(iss+"#f", "", "", iss+"#f", "")
	f.Add("https://api.test", "other", "", "https://api.test other", "")
	f.Add("", "", "a\"b", "", "a\"b")
	f.Add("", "", "x\ty", "", "x\ty")
	f.Fuzz(func(t *testing.T, resource, audience, scope, allowedAuds, allowedScopes string) {
		form := url.Values{}
		if resource != "" {
			form.Set("resource", resource)
		}
		if audience != "" {
			form.Set("audience", audience)
		}
		if scope != "" {
			form.Set("scope", scope)
		}
		c := schema.Credential{AllowedAudiences: strings.Fields(allowedAuds), AllowedScopes: strings.Fields(allowedScopes)}
		aud, granted, err := requestedTarget(iss, c, form)
		if err != nil {
			var oe *oauthError
			if !errors.As(err, &oe) || (oe.Code != "invalid_target" && oe.Code != "invalid_scope") || oe.status != http.StatusBadRequest {
				t.Fatalf("refusal %v is not a 400 invalid_target or invalid_scope", err)
			}
			return
		}
		if aud != iss && !slices.Contains(c.AllowedAudiences, aud) {
			t.Fatalf("granted audience %q outside the list %q", aud, c.AllowedAudiences)
		}
		if !schema.ValidAudience(aud) {
			t.Fatalf("granted malformed audience %q", aud)
		}
		seen := map[string]bool{}
		for _, s := range strings.Split(granted, " ") {
			if granted == "" {
				break
			}
			if seen[s] || !slices.Contains(c.AllowedScopes, s) || !schema.ValidScopeToken(s) {
				t.Fatalf("granted scope %q (of %q) is repeated, not allowed or malformed; allowed %q", s, granted, c.AllowedScopes)
			}
			seen[s] = true
		}
	})
}
