package token_test

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyplane/keyplane/region/token"
)

func TestJWKSFormat(t *testing.T) {
	t.Parallel()
	_, pub := keyPair(1, kidA, "eu-west")
	got := string(token.NewRing([]token.PublicKey{pub}, nil).JWKS(now))
	want := `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + base64.RawURLEncoding.EncodeToString(pub.Key) +
		`","kid":"` + kidA + `","use":"sig","alg":"EdDSA"}]}`
	if got != want {
		t.Errorf("JWKS =\n%s\nwant\n%s", got, want)
	}
}

func TestJWKSKeys(t *testing.T) {
	t.Parallel()
	_, a := keyPair(1, "c-key", "eu-west")
	_, b := keyPair(2, "a-key", "us-east")
	_, c := keyPair(3, "b-key", "ap-south")
	_, d := keyPair(4, "d-key", "eu-west")
	b.ExpiresAt = now.Add(time.Hour)
	c.ExpiresAt = now.Add(-time.Hour)
	d.ExpiresAt = now
	r := token.NewRing([]token.PublicKey{a, b, c, d}, nil)

	tests := []struct {
		name string
		now  time.Time
		want []string
	}{
		{"now", now, []string{"a-key", "c-key"}},
		{"before any expiry", now.Add(-2 * time.Hour), []string{"a-key", "b-key", "c-key", "d-key"}},
		{"after every expiry", now.Add(2 * time.Hour), []string{"c-key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var set jose.JSONWebKeySet
			if err := json.Unmarshal(r.JWKS(tt.now), &set); err != nil {
				t.Fatalf("parse JWKS with go-jose: %v", err)
			}
			var got []string
			for _, k := range set.Keys {
				got = append(got, k.KeyID)
				if !k.Valid() || !k.IsPublic() || k.Use != "sig" || k.Algorithm != "EdDSA" {
					t.Errorf("key %q: valid %v, public %v, use %q, alg %q; want a public EdDSA signing key",
						k.KeyID, k.Valid(), k.IsPublic(), k.Use, k.Algorithm)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("JWKS kids = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestJWKSInterop checks that a standard JOSE library can verify our tokens with the
// published keys, and that we accept access tokens it builds.
func TestJWKSInterop(t *testing.T) {
	t.Parallel()
	f := newFixture()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(f.ring.JWKS(now), &set); err != nil {
		t.Fatalf("parse JWKS with go-jose: %v", err)
	}

	t.Run("go-jose verifies Mint", func(t *testing.T) {
		t.Parallel()
		raw := mint(t, f.ring, fullClaims())
		tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.EdDSA})
		if err != nil {
			t.Fatalf("jwt.ParseSigned: %v", err)
		}
		kid := tok.Headers[0].KeyID
		keys := set.Key(kid)
		if len(keys) != 1 {
			t.Fatalf("JWKS has %d keys with kid %q, want 1", len(keys), kid)
		}
		var std jwt.Claims
		var extra struct {
			Tenant string   `json:"tenant"`
			AMR    []string `json:"amr"`
		}
		if err := tok.Claims(keys[0], &std, &extra); err != nil {
			t.Fatalf("verify with the published key: %v", err)
		}
		err = std.ValidateWithLeeway(jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{audience}, Time: now}, 0)
		if err != nil {
			t.Errorf("go-jose claim validation: %v", err)
		}
		if got, want := tok.Headers[0].ExtraHeaders[jose.HeaderType], "at+jwt"; got != want {
			t.Errorf("typ = %v, want %q", got, want)
		}
		if extra.Tenant != "acme" || !slices.Equal(extra.AMR, []string{"pwd", "otp", "mfa"}) {
			t.Errorf("private claims = %+v, want tenant acme and amr [pwd otp mfa]", extra)
		}
	})

	t.Run("Verify accepts go-jose tokens", func(t *testing.T) {
		t.Parallel()
		signer, err := jose.NewSigner(
			jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: f.signB.Key, KeyID: kidB}},
			(&jose.SignerOptions{}).WithType("at+jwt"),
		)
		if err != nil {
			t.Fatal(err)
		}
		std := jwt.Claims{
			Issuer:   issuer,
			Subject:  "identity-9",
			Audience: jwt.Audience{audience},
			Expiry:   jwt.NewNumericDate(now.Add(time.Minute)),
			IssuedAt: jwt.NewNumericDate(now),
			ID:       "jti-go-jose",
		}
		extra := map[string]any{"tenant": "acme", "sid": "s-1", "client_id": "c-1"}
		raw, err := jwt.Signed(signer).Claims(std).Claims(extra).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		got, err := f.ring.Verify(raw, opts())
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if got.Subject != "identity-9" || got.ClientID != "c-1" || got.SessionID != "s-1" || !got.ExpiresAt.Equal(now.Add(time.Minute)) {
			t.Errorf("Verify claims = %+v", got)
		}
	})
}
