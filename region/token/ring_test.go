package token_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyplane/keyplane/region/token"
)

// now is the fixed "current time" of these tests.
var now = time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)

const (
	issuer   = "https://eu-west.keyplane.example"
	audience = "https://api.example"
	kidA     = "eu-west-20260101-aaaaaaaa"
	kidB     = "us-east-20260301-bbbbbbbb"
)

// keyPair returns a deterministic Ed25519 key pair derived from seed.
func keyPair(seed byte, kid, region string) (token.SigningKey, token.PublicKey) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return token.SigningKey{ID: kid, Key: priv},
		token.PublicKey{ID: kid, Region: region, Key: priv.Public().(ed25519.PublicKey)}
}

// fullClaims returns claims with every field set, valid from now for 15 minutes.
func fullClaims() token.Claims {
	return token.Claims{
		Issuer:    issuer,
		Subject:   "identity-123",
		Audience:  []string{audience, "https://other.example"},
		ExpiresAt: now.Add(15 * time.Minute),
		IssuedAt:  now,
		ID:        "jti-0001",
		ClientID:  "cli",
		Tenant:    "acme",
		SessionID: "sess-42",
		AMR:       []string{"pwd", "otp", "mfa"},
		Region:    "eu-west",
		Scope:     "openid profile",
		AuthTime:  now.Add(-time.Hour),
	}
}

// minimalClaims returns claims with only the required fields set.
func minimalClaims() token.Claims {
	return token.Claims{
		Issuer:    issuer,
		Subject:   "identity-123",
		Audience:  []string{audience},
		ExpiresAt: now.Add(15 * time.Minute),
		IssuedAt:  now,
		ID:        "jti-0002",
		Tenant:    "acme",
		SessionID: "sess-42",
	}
}

func opts() token.VerifyOptions {
	return token.VerifyOptions{Issuer: issuer, Audience: audience, Now: now}
}

// fixture is a ring that signs with key A and verifies keys A and B.
type fixture struct {
	signA, signB token.SigningKey
	pubA, pubB   token.PublicKey
	ring         *token.Ring
}

func newFixture() fixture {
	var f fixture
	f.signA, f.pubA = keyPair(1, kidA, "eu-west")
	f.signB, f.pubB = keyPair(2, kidB, "us-east")
	f.ring = token.NewRing([]token.PublicKey{f.pubA, f.pubB}, &f.signA)
	return f
}

func mint(t testing.TB, r *token.Ring, c token.Claims) string {
	t.Helper()
	raw, err := r.Mint(c)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	return raw
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// claimsMap returns the JSON members Mint writes for fullClaims, for hand-built tokens.
func claimsMap() map[string]any {
	c := fullClaims()
	return map[string]any{
		"iss": c.Issuer, "sub": c.Subject, "aud": c.Audience,
		"exp": c.ExpiresAt.Unix(), "iat": c.IssuedAt.Unix(), "nbf": c.IssuedAt.Unix(),
		"jti": c.ID, "client_id": c.ClientID, "tenant": c.Tenant, "sid": c.SessionID,
		"amr": c.AMR, "region": c.Region, "scope": c.Scope, "auth_time": c.AuthTime.Unix(),
	}
}

// sign signs payload with go-jose under alg and key, adding the given protected
// headers (nil values are left out).
func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, headers map[string]any, payload []byte) string {
	t.Helper()
	o := &jose.SignerOptions{}
	for k, v := range headers {
		if v != nil {
			o.WithHeader(jose.HeaderKey(k), v)
		}
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, o)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatalf("CompactSerialize: %v", err)
	}
	return raw
}

// signEd signs payload with key under EdDSA with the given kid and typ ("" omits).
func signEd(t testing.TB, key token.SigningKey, kid, typ string, payload []byte) string {
	t.Helper()
	h := map[string]any{}
	if kid != "" {
		h["kid"] = kid
	}
	if typ != "" {
		h["typ"] = typ
	}
	return sign(t, jose.EdDSA, key.Key, h, payload)
}

// segments splits a compact token.
func segments(t testing.TB, raw string) (header, payload map[string]any, parts []string) {
	t.Helper()
	parts = strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments, want 3", len(parts))
	}
	for i, dst := range []*map[string]any{&header, &payload} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
	}
	return header, payload, parts
}

func TestMintVerifyRoundTrip(t *testing.T) {
	t.Parallel()
	f := newFixture()
	oneAud := fullClaims()
	oneAud.Audience = []string{audience}
	subSecond := minimalClaims()
	subSecond.IssuedAt = now.Add(400 * time.Millisecond)
	subSecond.ExpiresAt = now.Add(time.Minute + 900*time.Millisecond)
	subSecondWant := minimalClaims()
	subSecondWant.ExpiresAt = now.Add(time.Minute)

	tests := []struct {
		name string
		in   token.Claims
		want token.Claims
	}{
		{"every claim", fullClaims(), fullClaims()},
		{"required claims only", minimalClaims(), minimalClaims()},
		{"one audience", oneAud, oneAud},
		{"times truncate to seconds", subSecond, subSecondWant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			raw := mint(t, f.ring, tt.in)
			got, err := f.ring.Verify(raw, opts())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Verify claims:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestMintWireFormat(t *testing.T) {
	t.Parallel()
	f := newFixture()
	header, payload, _ := segments(t, mint(t, f.ring, fullClaims()))
	wantHeader := map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": kidA}
	if !reflect.DeepEqual(header, wantHeader) {
		t.Errorf("header = %v, want %v", header, wantHeader)
	}
	c := fullClaims()
	wantPayload := map[string]any{
		"iss": c.Issuer, "sub": c.Subject, "aud": []any{c.Audience[0], c.Audience[1]},
		"exp": float64(c.ExpiresAt.Unix()), "iat": float64(now.Unix()), "nbf": float64(now.Unix()),
		"jti": c.ID, "client_id": c.ClientID, "tenant": c.Tenant, "sid": c.SessionID,
		"amr": []any{"pwd", "otp", "mfa"}, "region": c.Region, "scope": c.Scope,
		"auth_time": float64(c.AuthTime.Unix()),
	}
	if !reflect.DeepEqual(payload, wantPayload) {
		t.Errorf("payload:\n got %v\nwant %v", payload, wantPayload)
	}

	_, payload, _ = segments(t, mint(t, f.ring, minimalClaims()))
	for _, name := range []string{"amr", "scope", "auth_time", "client_id", "region"} {
		if v, ok := payload[name]; ok {
			t.Errorf("payload has %q = %v for an empty claim, want it omitted", name, v)
		}
	}
}

func TestMintErrors(t *testing.T) {
	t.Parallel()
	f := newFixture()
	shortKey := token.SigningKey{ID: kidA, Key: f.signA.Key[:32]}
	tests := []struct {
		name    string
		ring    *token.Ring
		edit    func(*token.Claims)
		wantErr error // nil: any error
	}{
		{"no signer", token.NewRing([]token.PublicKey{f.pubA}, nil), func(*token.Claims) {}, token.ErrNoSigningKey},
		{"bad signer key", token.NewRing(nil, &shortKey), func(*token.Claims) {}, nil},
		{"no iss", f.ring, func(c *token.Claims) { c.Issuer = "" }, token.ErrIncompleteClaims},
		{"no sub", f.ring, func(c *token.Claims) { c.Subject = "" }, token.ErrIncompleteClaims},
		{"no aud", f.ring, func(c *token.Claims) { c.Audience = nil }, token.ErrIncompleteClaims},
		{"empty aud", f.ring, func(c *token.Claims) { c.Audience = []string{audience, ""} }, token.ErrIncompleteClaims},
		{"no exp", f.ring, func(c *token.Claims) { c.ExpiresAt = time.Time{} }, token.ErrIncompleteClaims},
		{"no iat", f.ring, func(c *token.Claims) { c.IssuedAt = time.Time{} }, token.ErrIncompleteClaims},
		{"exp equals iat", f.ring, func(c *token.Claims) { c.ExpiresAt = c.IssuedAt }, token.ErrIncompleteClaims},
		{"exp before iat", f.ring, func(c *token.Claims) { c.ExpiresAt = c.IssuedAt.Add(-time.Second) }, token.ErrIncompleteClaims},
		{"exp within iat's second", f.ring, func(c *token.Claims) { c.ExpiresAt = c.IssuedAt.Add(999 * time.Millisecond) }, token.ErrIncompleteClaims},
		{"no jti", f.ring, func(c *token.Claims) { c.ID = "" }, token.ErrIncompleteClaims},
		{"no tenant", f.ring, func(c *token.Claims) { c.Tenant = "" }, token.ErrIncompleteClaims},
		{"no sid", f.ring, func(c *token.Claims) { c.SessionID = "" }, token.ErrIncompleteClaims},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := fullClaims()
			tt.edit(&c)
			raw, err := tt.ring.Mint(c)
			if err == nil {
				t.Fatalf("Mint = %q, want an error", raw)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Mint error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestVerifyTime(t *testing.T) {
	t.Parallel()
	f := newFixture()
	raw := mint(t, f.ring, minimalClaims()) // iat = nbf = now, exp = now+15m
	exp := now.Add(15 * time.Minute)
	tests := []struct {
		name   string
		now    time.Time
		leeway time.Duration
		want   token.Reason // "": valid
	}{
		{"at iat", now, 0, ""},
		{"just before exp", exp.Add(-time.Second), 0, ""},
		{"after exp within default leeway", exp.Add(29 * time.Second), 0, ""},
		{"at exp plus default leeway", exp.Add(30 * time.Second), 0, token.ReasonExpired},
		{"well after exp", exp.Add(time.Hour), 0, token.ReasonExpired},
		{"before iat within default leeway", now.Add(-30 * time.Second), 0, ""},
		{"before iat beyond default leeway", now.Add(-31 * time.Second), 0, token.ReasonNotYetValid},
		{"after exp within custom leeway", exp.Add(4 * time.Minute), 5 * time.Minute, ""},
		{"after exp beyond custom leeway", exp.Add(5 * time.Minute), 5 * time.Minute, token.ReasonExpired},
		{"before iat within custom leeway", now.Add(-4 * time.Minute), 5 * time.Minute, ""},
		{"no leeway at exp", exp, -1, token.ReasonExpired},
		{"no leeway just before exp", exp.Add(-time.Nanosecond), -1, ""},
		{"no leeway before iat", now.Add(-time.Nanosecond), -1, token.ReasonNotYetValid},
		{"zero now", time.Time{}, 0, token.ReasonNotYetValid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := opts()
			o.Now, o.Leeway = tt.now, tt.leeway
			_, err := f.ring.Verify(raw, o)
			if got := token.ReasonOf(err); got != tt.want {
				t.Errorf("Verify reason = %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}

func TestVerifyNotBefore(t *testing.T) {
	t.Parallel()
	f := newFixture()
	m := claimsMap()
	m["nbf"] = now.Add(time.Minute).Unix() // iat is now; nbf is later
	raw := signEd(t, f.signA, kidA, "at+jwt", mustJSON(t, m))
	if _, err := f.ring.Verify(raw, opts()); token.ReasonOf(err) != token.ReasonNotYetValid {
		t.Errorf("Verify error = %v, want %s", err, token.ReasonNotYetValid)
	}
	o := opts()
	o.Now = now.Add(time.Minute)
	if _, err := f.ring.Verify(raw, o); err != nil {
		t.Errorf("Verify at nbf: %v", err)
	}

	delete(m, "nbf") // nbf is optional for tokens minted elsewhere
	raw = signEd(t, f.signA, kidA, "at+jwt", mustJSON(t, m))
	if _, err := f.ring.Verify(raw, opts()); err != nil {
		t.Errorf("Verify without nbf: %v", err)
	}
}

func TestVerifyOptionalChecks(t *testing.T) {
	t.Parallel()
	f := newFixture()
	raw := mint(t, f.ring, fullClaims())
	tests := []struct {
		name string
		edit func(*token.VerifyOptions)
		want token.Reason
	}{
		{"both checked", func(*token.VerifyOptions) {}, ""},
		{"second audience", func(o *token.VerifyOptions) { o.Audience = "https://other.example" }, ""},
		{"issuer not checked", func(o *token.VerifyOptions) { o.Issuer = "" }, ""},
		{"audience not checked", func(o *token.VerifyOptions) { o.Audience = "" }, ""},
		{"wrong issuer", func(o *token.VerifyOptions) { o.Issuer = "https://evil.example" }, token.ReasonWrongIssuer},
		{"issuer differs by case", func(o *token.VerifyOptions) { o.Issuer = strings.ToUpper(issuer) }, token.ReasonWrongIssuer},
		{"issuer prefix", func(o *token.VerifyOptions) { o.Issuer = issuer[:len(issuer)-1] }, token.ReasonWrongIssuer},
		{"wrong audience", func(o *token.VerifyOptions) { o.Audience = "https://evil.example" }, token.ReasonWrongAudience},
		{"audience prefix", func(o *token.VerifyOptions) { o.Audience = "https://api" }, token.ReasonWrongAudience},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := opts()
			tt.edit(&o)
			_, err := f.ring.Verify(raw, o)
			if got := token.ReasonOf(err); got != tt.want {
				t.Errorf("Verify reason = %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	f := newFixture()
	valid := mint(t, f.ring, fullClaims())
	_, _, parts := segments(t, valid)
	claims := mustJSON(t, claimsMap())

	// Tokens signed with key A by a ring whose key A is no longer accepted.
	expiredPubA := f.pubA
	expiredPubA.ExpiresAt = now.Add(-time.Second)
	expiredKeyRing := token.NewRing([]token.PublicKey{expiredPubA, f.pubB}, nil)
	expiringPubA := f.pubA
	expiringPubA.ExpiresAt = now
	expiringKeyRing := token.NewRing([]token.PublicKey{expiringPubA}, nil)
	onlyB := token.NewRing([]token.PublicKey{f.pubB}, nil)

	// The same kid, signed by a different private key.
	impostor, _ := keyPair(9, kidA, "eu-west")
	impostorRing := token.NewRing(nil, &impostor)

	tamper := func(edit func(map[string]any)) string {
		m := claimsMap()
		edit(m)
		return parts[0] + "." + b64(mustJSON(t, m)) + "." + parts[2]
	}
	withHeader := func(h map[string]any, sig string) string {
		return b64(mustJSON(t, h)) + "." + b64(claims) + "." + sig
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// Flip the last character of the signature within its padding bits: a lenient
	// decoder would yield the same signature.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, parts[2][len(parts[2])-1])
	nonCanonical := parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-1] + string(alphabet[last^1])
	if sig, err := base64.RawURLEncoding.DecodeString(strings.Split(nonCanonical, ".")[2]); err != nil || b64(sig) != parts[2] {
		t.Fatalf("non-canonical signature does not decode to the same bytes: %v", err)
	}

	tests := []struct {
		name string
		ring *token.Ring
		raw  string
		want token.Reason
	}{
		{"valid", f.ring, valid, ""},
		{"valid with typ application/at+jwt", f.ring, signEd(t, f.signA, kidA, "application/at+jwt", claims), ""},
		{"valid with typ in upper case", f.ring, signEd(t, f.signA, kidA, "AT+JWT", claims), ""},
		{"valid signed by second key", f.ring, signEd(t, f.signB, kidB, "at+jwt", claims), ""},

		{"empty", f.ring, "", token.ReasonMalformed},
		{"garbage", f.ring, "hello world", token.ReasonMalformed},
		{"one dot", f.ring, "abc.def", token.ReasonMalformed},
		{"dots only", f.ring, "..", token.ReasonMalformed},
		{"four segments", f.ring, valid + ".AAAA", token.ReasonMalformed},
		{"JWE-like five segments", f.ring, "a.b.c.d.e", token.ReasonMalformed},
		{"not base64", f.ring, "!!!.???.***", token.ReasonMalformed},
		{"header not JSON", f.ring, b64([]byte("not json")) + "." + parts[1] + "." + parts[2], token.ReasonMalformed},
		{"header JSON array", f.ring, b64([]byte("[1,2]")) + "." + parts[1] + "." + parts[2], token.ReasonMalformed},
		{"padded base64", f.ring, parts[0] + "=." + parts[1] + "." + parts[2], token.ReasonMalformed},
		{"standard base64 alphabet", f.ring, strings.NewReplacer("-", "+", "_", "/").Replace(valid) + "+/", token.ReasonMalformed},
		{"newline inside", f.ring, valid[:10] + "\n" + valid[10:], token.ReasonMalformed},
		{"surrounding space", f.ring, " " + valid + " ", token.ReasonMalformed},
		{"non-canonical signature encoding", f.ring, nonCanonical, token.ReasonMalformed},
		{"JWS JSON serialization", f.ring, `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`, token.ReasonMalformed},
		{"9 KiB", f.ring, signEd(t, f.signA, kidA, "at+jwt", mustJSON(t, map[string]any{"pad": strings.Repeat("x", 9<<10)})), token.ReasonMalformed},
		{"9 KiB of garbage", f.ring, strings.Repeat("A", 9<<10), token.ReasonMalformed},

		{"alg none", f.ring, withHeader(map[string]any{"alg": "none", "typ": "at+jwt", "kid": kidA}, ""), token.ReasonBadAlgorithm},
		{"alg None", f.ring, withHeader(map[string]any{"alg": "None", "typ": "at+jwt", "kid": kidA}, ""), token.ReasonBadAlgorithm},
		{"alg none with signature", f.ring, withHeader(map[string]any{"alg": "none", "typ": "at+jwt", "kid": kidA}, parts[2]), token.ReasonBadAlgorithm},
		{"alg missing", f.ring, withHeader(map[string]any{"typ": "at+jwt", "kid": kidA}, parts[2]), token.ReasonBadAlgorithm},
		{"alg eddsa lower case", f.ring, withHeader(map[string]any{"alg": "eddsa", "typ": "at+jwt", "kid": kidA}, parts[2]), token.ReasonBadAlgorithm},
		{"alg Ed25519", f.ring, withHeader(map[string]any{"alg": "Ed25519", "typ": "at+jwt", "kid": kidA}, parts[2]), token.ReasonBadAlgorithm},
		{"alg not a string", f.ring, withHeader(map[string]any{"alg": 1, "typ": "at+jwt", "kid": kidA}, parts[2]), token.ReasonBadAlgorithm},
		{"HS256 with the public key as secret", f.ring,
			sign(t, jose.HS256, []byte(f.pubA.Key), map[string]any{"typ": "at+jwt", "kid": kidA}, claims), token.ReasonBadAlgorithm},
		{"RS256", f.ring, sign(t, jose.RS256, rsaKey, map[string]any{"typ": "at+jwt", "kid": kidA}, claims), token.ReasonBadAlgorithm},
		{"bad alg beats wrong typ and unknown kid", f.ring,
			sign(t, jose.HS256, []byte(f.pubA.Key), map[string]any{"typ": "JWT", "kid": "nope"}, claims), token.ReasonBadAlgorithm},

		{"typ JWT", f.ring, signEd(t, f.signA, kidA, "JWT", claims), token.ReasonWrongType},
		{"typ missing", f.ring, signEd(t, f.signA, kidA, "", claims), token.ReasonWrongType},
		{"typ with parameters", f.ring, signEd(t, f.signA, kidA, "at+jwt; charset=utf-8", claims), token.ReasonWrongType},
		{"typ not a string", f.ring, sign(t, jose.EdDSA, f.signA.Key, map[string]any{"typ": 1, "kid": kidA}, claims), token.ReasonWrongType},
		{"wrong typ beats unknown kid", f.ring, signEd(t, f.signA, "nope", "JWT", claims), token.ReasonWrongType},

		{"kid missing", f.ring, signEd(t, f.signA, "", "at+jwt", claims), token.ReasonUnknownKey},
		{"kid unknown", onlyB, valid, token.ReasonUnknownKey},
		{"kid of another key", f.ring, signEd(t, f.signA, "eu-west-20260101-ffffffff", "at+jwt", claims), token.ReasonUnknownKey},
		{"key expired", expiredKeyRing, valid, token.ReasonUnknownKey},
		{"key expires now", expiringKeyRing, valid, token.ReasonUnknownKey},
		{"unknown kid beats bad signature", onlyB, parts[0] + "." + parts[1] + "." + b64(make([]byte, 64)), token.ReasonUnknownKey},

		{"tampered payload", f.ring, tamper(func(m map[string]any) { m["sub"] = "admin" }), token.ReasonBadSignature},
		{"tampered payload with bad claims", f.ring, tamper(func(m map[string]any) { delete(m, "sub"); m["iss"] = "x" }), token.ReasonBadSignature},
		{"tampered header", f.ring, withHeader(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": kidA, "x": 1}, parts[2]), token.ReasonBadSignature},
		{"signature of another key with the same kid", f.ring, mint(t, impostorRing, fullClaims()), token.ReasonBadSignature},
		{"signed by key B, kid of key A", f.ring, signEd(t, f.signB, kidA, "at+jwt", claims), token.ReasonBadSignature},
		{"zero signature", f.ring, parts[0] + "." + parts[1] + "." + b64(make([]byte, 64)), token.ReasonBadSignature},
		{"empty signature", f.ring, parts[0] + "." + parts[1] + ".", token.ReasonBadSignature},
		{"short signature", f.ring, parts[0] + "." + parts[1] + "." + parts[2][:40], token.ReasonBadSignature},

		{"payload not JSON", f.ring, signEd(t, f.signA, kidA, "at+jwt", []byte("hello")), token.ReasonMalformed},
		{"payload empty", f.ring, signEd(t, f.signA, kidA, "at+jwt", []byte{}), token.ReasonMalformed},
		{"payload JSON null", f.ring, signEd(t, f.signA, kidA, "at+jwt", []byte("null")), token.ReasonMalformed},
		{"payload JSON array", f.ring, signEd(t, f.signA, kidA, "at+jwt", []byte("[]")), token.ReasonMalformed},
	}
	for _, name := range []string{"iss", "sub", "aud", "exp", "iat", "jti", "tenant", "sid"} {
		m := claimsMap()
		delete(m, name)
		tests = append(tests, struct {
			name string
			ring *token.Ring
			raw  string
			want token.Reason
		}{"claim " + name + " missing", f.ring, signEd(t, f.signA, kidA, "at+jwt", mustJSON(t, m)), token.ReasonMalformed})
	}
	for _, tc := range []struct {
		name  string
		value any
	}{
		{"sub", 42}, {"iss", true}, {"aud", 7}, {"aud", []any{"a", 1}}, {"aud", []string{}},
		{"aud", []string{""}}, {"exp", "tomorrow"}, {"exp", 1e300}, {"iat", []int{1}}, {"nbf", "now"},
		{"amr", "pwd"}, {"amr", []int{1}}, {"scope", []string{"a"}}, {"auth_time", "x"},
		{"tenant", nil}, {"sid", map[string]any{}},
	} {
		m := claimsMap()
		m[tc.name] = tc.value
		tests = append(tests, struct {
			name string
			ring *token.Ring
			raw  string
			want token.Reason
		}{fmt.Sprintf("claim %s is %v", tc.name, tc.value), f.ring, signEd(t, f.signA, kidA, "at+jwt", mustJSON(t, m)), token.ReasonMalformed})
	}
	m := claimsMap()
	m["exp"] = m["iat"]
	tests = append(tests, struct {
		name string
		ring *token.Ring
		raw  string
		want token.Reason
	}{"exp equals iat", f.ring, signEd(t, f.signA, kidA, "at+jwt", mustJSON(t, m)), token.ReasonMalformed})

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.ring.Verify(tt.raw, opts())
			if r := token.ReasonOf(err); r != tt.want {
				t.Fatalf("Verify reason = %q (%v), want %q", r, err, tt.want)
			}
			if err == nil {
				return
			}
			var te *token.Error
			if !errors.As(err, &te) {
				t.Errorf("Verify error %T is not a *token.Error", err)
			}
			if !reflect.DeepEqual(got, token.Claims{}) {
				t.Errorf("Verify returned claims %+v with an error, want none", got)
			}
		})
	}
}

// TestVerifyOrder checks that when a token has several faults, the one checked first
// is reported: size/format, alg, typ, kid, signature, then issuer, audience and time.
func TestVerifyOrder(t *testing.T) {
	t.Parallel()
	f := newFixture()
	late := token.VerifyOptions{Issuer: "https://evil.example", Audience: "https://evil.example", Now: now.Add(time.Hour)}
	m := claimsMap()
	m["aud"] = "https://other.example"
	m["iss"] = "https://other.example"
	everythingWrongButSignature := signEd(t, f.signA, kidA, "at+jwt", mustJSON(t, m))
	_, _, parts := segments(t, everythingWrongButSignature)
	badSig := parts[0] + "." + parts[1] + "." + b64(make([]byte, 64))

	tests := []struct {
		name string
		raw  string
		o    token.VerifyOptions
		want token.Reason
	}{
		{"signature before claims", badSig, late, token.ReasonBadSignature},
		{"issuer before audience and time", everythingWrongButSignature, late,
			token.ReasonWrongIssuer},
		{"audience before time", everythingWrongButSignature,
			token.VerifyOptions{Issuer: "https://other.example", Audience: audience, Now: now.Add(time.Hour)},
			token.ReasonWrongAudience},
		{"time last", everythingWrongButSignature,
			token.VerifyOptions{Issuer: "https://other.example", Audience: "https://other.example", Now: now.Add(time.Hour)},
			token.ReasonExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := f.ring.Verify(tt.raw, tt.o)
			if got := token.ReasonOf(err); got != tt.want {
				t.Errorf("Verify reason = %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	oldSigner, oldPub := keyPair(1, "eu-west-20260101-00000001", "eu-west")
	newSigner, newPub := keyPair(2, "eu-west-20260301-00000002", "eu-west")

	before := token.NewRing([]token.PublicKey{oldPub}, &oldSigner)
	during := token.NewRing([]token.PublicKey{oldPub, newPub}, &newSigner)
	after := token.NewRing([]token.PublicKey{newPub}, &newSigner)

	oldToken := mint(t, before, minimalClaims())
	newToken := mint(t, during, minimalClaims())

	tests := []struct {
		name string
		ring *token.Ring
		raw  string
		want token.Reason
	}{
		{"old ring, old token", before, oldToken, ""},
		{"old ring, new token", before, newToken, token.ReasonUnknownKey},
		{"both keys, old token", during, oldToken, ""},
		{"both keys, new token", during, newToken, ""},
		{"old key dropped, old token", after, oldToken, token.ReasonUnknownKey},
		{"old key dropped, new token", after, newToken, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := tt.ring.Verify(tt.raw, opts())
			if got := token.ReasonOf(err); got != tt.want {
				t.Errorf("Verify reason = %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}

func TestGenerateKey(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 14, 23, 30, 0, 0, time.FixedZone("UTC-2", -2*3600)) // 2026-03-15 in UTC
	signer, pub, err := token.GenerateKey("eu-west", at)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	if !regexp.MustCompile(`^eu-west-20260315-[a-z2-7]{8}$`).MatchString(signer.ID) {
		t.Errorf("kid = %q, want eu-west-20260315-<8 base32>", signer.ID)
	}
	if pub.ID != signer.ID || pub.Region != "eu-west" || !pub.ExpiresAt.IsZero() {
		t.Errorf("public key = {%q %q %v}, want {%q \"eu-west\" zero}", pub.ID, pub.Region, pub.ExpiresAt, signer.ID)
	}
	if !pub.Key.Equal(signer.Key.Public()) {
		t.Errorf("public key does not match the private key")
	}
	r := token.NewRing([]token.PublicKey{pub}, &signer)
	if _, err := r.Verify(mint(t, r, minimalClaims()), opts()); err != nil {
		t.Errorf("Verify token of a generated key: %v", err)
	}

	other, _, err := token.GenerateKey("eu-west", at)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	if other.ID == signer.ID || bytes.Equal(other.Key, signer.Key) {
		t.Errorf("two generated keys collide: %q", other.ID)
	}

	if _, _, err := token.GenerateKey("", at); err == nil {
		t.Errorf("GenerateKey with an empty region succeeded, want an error")
	}
}

func TestNewRing(t *testing.T) {
	t.Parallel()
	f := newFixture()
	keys := []token.PublicKey{
		f.pubA,
		{ID: "", Key: f.pubB.Key},           // no kid: ignored
		{ID: "short", Key: f.pubB.Key[:31]}, // bad length: ignored
		{ID: "long", Key: append(bytes.Clone(f.pubB.Key), 0)},       // bad length: ignored
		{ID: kidB, Key: bytes.Clone(f.pubA.Key)},                    // replaced by the next
		{ID: kidB, Region: "us-east", Key: bytes.Clone(f.pubB.Key)}, // last wins
	}
	signer := f.signA
	signer.Key = bytes.Clone(f.signA.Key)
	r := token.NewRing(keys, &signer)

	for kid, want := range map[string]bool{kidA: true, kidB: true, "": false, "short": false, "long": false, "nope": false} {
		if got := r.Has(kid); got != want {
			t.Errorf("Has(%q) = %v, want %v", kid, got, want)
		}
	}
	if kid, ok := r.Signer(); kid != kidA || !ok {
		t.Errorf("Signer() = %q, %v; want %q, true", kid, ok, kidA)
	}
	if kid, ok := token.NewRing(keys, nil).Signer(); kid != "" || ok {
		t.Errorf("Signer() without a signer = %q, %v; want \"\", false", kid, ok)
	}

	// The ring keeps its own copies: later changes to the inputs do not affect it.
	for i := range keys {
		clear(keys[i].Key)
	}
	clear(signer.Key)
	raw := mint(t, r, minimalClaims())
	if _, err := r.Verify(raw, opts()); err != nil {
		t.Errorf("Verify after clearing the input keys: %v", err)
	}
	if _, err := r.Verify(signEd(t, f.signB, kidB, "at+jwt", mustJSON(t, claimsMap())), opts()); err != nil {
		t.Errorf("Verify with the last of duplicate keys: %v", err)
	}
}

func TestZeroRing(t *testing.T) {
	t.Parallel()
	var r token.Ring
	if _, ok := r.Signer(); ok {
		t.Errorf("zero Ring has a signer")
	}
	if _, err := r.Mint(minimalClaims()); !errors.Is(err, token.ErrNoSigningKey) {
		t.Errorf("zero Ring Mint error = %v, want ErrNoSigningKey", err)
	}
	f := newFixture()
	if _, err := r.Verify(mint(t, f.ring, minimalClaims()), opts()); token.ReasonOf(err) != token.ReasonUnknownKey {
		t.Errorf("zero Ring Verify error = %v, want unknown_key", err)
	}
	if got, want := string(r.JWKS(now)), `{"keys":[]}`; got != want {
		t.Errorf("zero Ring JWKS = %s, want %s", got, want)
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	f := newFixture()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			c := minimalClaims()
			c.ID = fmt.Sprint("jti-", i)
			for range 50 {
				raw, err := f.ring.Mint(c)
				if err != nil {
					errs <- err
					return
				}
				got, err := f.ring.Verify(raw, opts())
				if err != nil {
					errs <- err
					return
				}
				if got.ID != c.ID {
					errs <- fmt.Errorf("jti = %q, want %q", got.ID, c.ID)
					return
				}
				_ = f.ring.JWKS(now)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestPeekKeyID(t *testing.T) {
	t.Parallel()
	f := newFixture()
	valid := mint(t, f.ring, minimalClaims())
	tests := []struct {
		name string
		raw  string
		want string
	}{
		{"minted", valid, kidA},
		{"unknown kid", signEd(t, f.signB, "other-kid", "at+jwt", []byte("{}")), "other-kid"},
		{"no kid", signEd(t, f.signA, "", "at+jwt", []byte("{}")), ""},
		{"kid not a string", handBuilt(t, map[string]any{"alg": "EdDSA", "kid": 7}, []byte("{}"), ""), ""},
		{"garbage", "not a token", ""},
		{"empty", "", ""},
		{"header not JSON", b64([]byte("nope")) + ".e30.", ""},
		{"too big", valid + strings.Repeat("A", 9<<10), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := token.PeekKeyID(tt.raw); got != tt.want {
				t.Errorf("PeekKeyID = %q, want %q", got, tt.want)
			}
		})
	}
}
