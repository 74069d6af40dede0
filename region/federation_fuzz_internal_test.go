package region

import (
	"encoding/base64"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// FuzzPeekToken: reading an external token's iss, aud and alg before verification
// never panics, and whatever it accepts has an issuer and came from three parts.
func FuzzPeekToken(f *testing.F) {
	enc := base64.RawURLEncoding.EncodeToString
	for _, s := range []string{
		enc([]byte(`{"alg":"RS256","kid":"k"}`)) + "." + enc([]byte(`{"iss":"https://ci.test","aud":"keyplane"}`)) + ".sig",
		enc([]byte(`{"alg":"ES256"}`)) + "." + enc([]byte(`{"iss":"https://k8s.test","aud":["a","b"]}`)) + ".",
		enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(`{"iss":"x","aud":7}`)) + ".",
		enc([]byte(`{}`)) + "." + enc([]byte(`{}`)) + ".",
		"a.b.c", "", "...", "e30.e30.e30", "not a jwt",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := peekToken(raw)
		if err != nil {
			return
		}
		if p.Issuer == "" || strings.Count(raw, ".") != 2 {
			t.Fatalf("peekToken(%q) accepted %+v", raw, p)
		}
	})
}

// FuzzParseExchangeForm: any form body either is refused with invalid_request or has
// a subject token within the limit, a supported subject token type and no actor token.
func FuzzParseExchangeForm(f *testing.F) {
	for _, s := range []string{
		"subject_token=a.b.c&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt",
		"subject_token=a.b.c&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token",
		"subject_token=a.b.c&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&actor_token=x",
		"subject_token_type=x", "", "subject_token=%zz", "subject_token=a&subject_token=b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		got, err := parseExchangeForm(form)
		if err != nil {
			var oe *oauthError
			if !errors.As(err, &oe) || oe.Code != "invalid_request" || oe.Description == "" {
				t.Fatalf("parseExchangeForm(%q): %v, want an invalid_request with a description", body, err)
			}
			return
		}
		if got.subjectToken == "" || len(got.subjectToken) > maxSubjectToken || form.Get("actor_token") != "" ||
			!slices.Contains([]string{tokenTypeJWT, tokenTypeIDToken}, form.Get("subject_token_type")) {
			t.Fatalf("parseExchangeForm(%q) accepted %+v", body, got)
		}
	})
}
