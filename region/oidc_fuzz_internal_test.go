package region

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/schema"
)

// FuzzParseAuthRequest: any query parses without panicking; an accepted request has
// a valid redirect URI and client id, the openid scope and an S256 challenge; an error
// that may not be redirected is about client_id or redirect_uri only, and one that may
// comes with a redirect URI that is at least well formed.
func FuzzParseAuthRequest(f *testing.F) {
	f.Add("response_type=code&client_id=abc&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&scope=openid&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&state=x&nonce=y")
	f.Add("response_type=code&client_id=abc&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&scope=openid+profile&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=plain&prompt=none+login&max_age=10&acr_values=mfa")
	f.Add("client_id=a&client_id=b")
	f.Add("redirect_uri=javascript:alert(1)&client_id=x")
	f.Add("response_type=token&client_id=x&redirect_uri=https://a.example/&request=eyJ")
	f.Add("%zz=1&max_age=-5")
	f.Fuzz(func(t *testing.T, query string) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		req, aerr := parseAuthRequest(q)
		if aerr == nil {
			if !schema.ValidRedirectURI(req.RedirectURI) || req.ClientID == "" || !slices.Contains(req.Scopes, "openid") ||
				len(req.CodeChallenge) != 43 || q.Get("code_challenge_method") != "S256" || q.Get("response_type") != "code" {
				t.Fatalf("accepted %q as %+v", query, req)
			}
			if req.prompt("none") && len(req.Prompt) > 1 {
				t.Fatalf("accepted prompt none with others: %q", query)
			}
			return
		}
		if aerr.Code == "" || aerr.Description == "" {
			t.Fatalf("error without code or description for %q", query)
		}
		if !aerr.redirectable && !strings.Contains(aerr.Description, "client_id") && !strings.Contains(aerr.Description, "redirect_uri") {
			t.Fatalf("non-redirectable error %q not about client_id or redirect_uri", aerr.Description)
		}
		if aerr.redirectable && (!schema.ValidRedirectURI(req.RedirectURI) || req.ClientID == "") {
			t.Fatalf("redirectable error %q with redirect URI %q", aerr.Description, req.RedirectURI)
		}
	})
}
