package token_test

import (
	"errors"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyplane/keyplane/region/token"
)

// FuzzVerify checks that Verify and PeekKeyID never panic, that every error is a *token.Error
// with a reason, and that the only string that verifies is the token minted for the
// seed: no mutation of a valid token (re-encoding, whitespace, header tricks) passes.
func FuzzVerify(f *testing.F) {
	fx := newFixture()
	valid := mint(f, fx.ring, fullClaims())
	parts := strings.Split(valid, ".")
	claims := mustJSON(f, claimsMap())

	f.Add(valid)
	f.Add(valid[:len(valid)-1])
	f.Add(valid + "A")
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add(parts[0] + ".." + parts[2])
	f.Add("." + parts[1] + "." + parts[2])
	f.Add(strings.ToUpper(valid))
	f.Add(handBuilt(f, map[string]any{"alg": "none", "typ": "at+jwt", "kid": kidA}, claims, ""))
	f.Add(handBuilt(f, map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": kidA, "crit": []string{"b64"}, "b64": false}, claims, parts[2]))
	f.Add(handBuilt(f, map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": kidA, "jwk": map[string]any{"kty": "OKP"}}, claims, parts[2]))
	f.Add(handBuilt(f, map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": kidA, "x5c": []string{"AAAA"}}, claims, parts[2]))
	f.Add(sign(f, jose.HS256, []byte(fx.pubA.Key), map[string]any{"typ": "at+jwt", "kid": kidA}, claims))
	f.Add(signEd(f, fx.signA, kidA, "JWT", claims))
	f.Add(signEd(f, fx.signA, kidA, "at+jwt", []byte(`{"exp":1e400,"iat":"x"}`)))
	f.Add("")
	f.Add("..")
	f.Add("a.b.c")
	f.Add(`{"payload":"","signatures":[]}`)
	f.Add(strings.Repeat(".", 100))

	f.Fuzz(func(t *testing.T, raw string) {
		kid := token.PeekKeyID(raw) // must not panic either
		got, err := fx.ring.Verify(raw, opts())
		if err != nil {
			var te *token.Error
			if !errors.As(err, &te) || te.Reason == "" {
				t.Fatalf("Verify(%q) error %v (%T) is not a *token.Error with a reason", raw, err, err)
			}
			return
		}
		if raw != valid {
			t.Fatalf("Verify(%q) accepted a string other than the minted token:\n%+v", raw, got)
		}
		if kid != kidA {
			t.Fatalf("PeekKeyID of a verified token = %q, want %q", kid, kidA)
		}
	})
}

// handBuilt hand-builds a token from a header, payload and base64url signature.
func handBuilt(t testing.TB, header map[string]any, payload []byte, sig string) string {
	t.Helper()
	return b64(mustJSON(t, header)) + "." + b64(payload) + "." + sig
}
