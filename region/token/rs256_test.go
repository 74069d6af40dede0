package token_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyplane/keyplane/region/token"
)

// rsaPair is one RS256 key pair shared by the tests of this file (RSA key generation
// is slow under -race).
var rsaPair = sync.OnceValues(func() (token.SigningKey, token.PublicKey) {
	s, p, err := token.GenerateKeyAlg("eu-west", token.RS256, now)
	if err != nil {
		panic(err)
	}
	return s, p
})

// rsFixture is a ring that signs with both an EdDSA and an RS256 key and verifies both.
func rsFixture(t *testing.T) (*token.Ring, token.SigningKey, token.PublicKey, fixture) {
	t.Helper()
	f := newFixture()
	rs, rp := rsaPair()
	return token.NewRing([]token.PublicKey{f.pubA, f.pubB, rp}, &f.signA, &rs), rs, rp, f
}

func TestRS256MintVerifyAndJWKS(t *testing.T) {
	t.Parallel()
	ring, rs, rp, f := rsFixture(t)
	if kid, ok := ring.SignerFor(token.RS256); !ok || kid != rs.ID {
		t.Fatalf("SignerFor(RS256) = %q, %v; want %q", kid, ok, rs.ID)
	}
	if kid, ok := ring.Signer(); !ok || kid != f.signA.ID {
		t.Fatalf("Signer() = %q, %v; want the EdDSA key %q", kid, ok, f.signA.ID)
	}
	raw, err := ring.MintWith(token.RS256, fullClaims())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ring.Verify(raw, opts())
	if err != nil {
		t.Fatalf("Verify RS256 token: %v", err)
	}
	if c.Subject != fullClaims().Subject {
		t.Fatalf("sub %q", c.Subject)
	}

	// A standard verifier restricted to RS256 accepts it with the JWKS key, and
	// refuses the EdDSA token of the same ring.
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(ring.JWKS(now), &set); err != nil {
		t.Fatal(err)
	}
	algs := map[string]string{}
	for _, k := range set.Keys {
		algs[k.KeyID] = k.Algorithm
	}
	if algs[rp.ID] != "RS256" || algs[f.pubA.ID] != "EdDSA" || len(set.Keys) != 3 {
		t.Fatalf("JWKS algs %v, want %s RS256 and the two EdDSA keys", algs, rp.ID)
	}
	parsed, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var std jwt.Claims
	if err := parsed.Claims(set.Key(rp.ID)[0].Key, &std); err != nil || std.Subject != fullClaims().Subject {
		t.Fatalf("RS256-only verifier: %v %+v", err, std)
	}
	ed := mint(t, ring, fullClaims())
	if _, err := jwt.ParseSigned(ed, []jose.SignatureAlgorithm{jose.RS256}); err == nil {
		t.Fatal("an RS256-only verifier accepted an EdDSA token")
	}
}

// TestRS256AlgConfusion: every way of pairing a key with another algorithm than its
// own is refused as bad_algorithm: HS256 keyed with the RSA public key (the classic
// confusion), RS256 naming an Ed25519 kid, EdDSA naming the RSA kid.
func TestRS256AlgConfusion(t *testing.T) {
	t.Parallel()
	ring, rs, rp, f := rsFixture(t)
	claims := mustJSON(t, claimsMap())
	der, err := x509.MarshalPKIXPublicKey(rp.RSA)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		raw  string
	}{
		{"HS256 keyed with the RSA public key", sign(t, jose.HS256, der, map[string]any{"typ": "at+jwt", "kid": rp.ID}, claims)},
		{"RS256 header naming an Ed25519 kid", sign(t, jose.RS256, rs.RSA, map[string]any{"typ": "at+jwt", "kid": f.pubA.ID}, claims)},
		{"EdDSA header naming the RSA kid", sign(t, jose.EdDSA, f.signA.Key, map[string]any{"typ": "at+jwt", "kid": rp.ID}, claims)},
		{"PS256 with the RSA key", sign(t, jose.PS256, rs.RSA, map[string]any{"typ": "at+jwt", "kid": rp.ID}, claims)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ring.Verify(tc.raw, opts())
			if got := token.ReasonOf(err); got != token.ReasonBadAlgorithm {
				t.Fatalf("reason %q (%v), want %q", got, err, token.ReasonBadAlgorithm)
			}
		})
	}
}

func TestRS256KeysValidated(t *testing.T) {
	t.Parallel()
	_, rp := rsaPair()
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	small := rp
	small.ID = "small"
	small.RSA = &weak.PublicKey
	mixed := rp
	mixed.ID = "mixed"
	mixed.Key = newFixture().pubA.Key // an RS256 key must not also carry an Ed25519 key
	unknown := rp
	unknown.ID = "unknown"
	unknown.Alg = "HS256"
	r := token.NewRing([]token.PublicKey{small, mixed, unknown}, nil)
	if r.Has("small") || r.Has("mixed") || r.Has("unknown") {
		t.Fatalf("Has(small, mixed, unknown) = %v, %v, %v; want all false", r.Has("small"), r.Has("mixed"), r.Has("unknown"))
	}
	if !token.NewRing([]token.PublicKey{rp}, nil).Has(rp.ID) {
		t.Fatal("a well-formed RS256 key was dropped")
	}
	if _, err := r.MintWith(token.RS256, fullClaims()); !errors.Is(err, token.ErrNoSigningKey) {
		t.Fatalf("MintWith without an RS256 signer: %v, want ErrNoSigningKey", err)
	}
	if _, err := token.ParseAlgorithm("none"); err == nil {
		t.Fatal(`ParseAlgorithm("none") succeeded`)
	}
	if _, _, err := token.GenerateKeyAlg("eu-west", "HS256", now); err == nil {
		t.Fatal("GenerateKeyAlg(HS256) succeeded")
	}
}
