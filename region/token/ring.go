// Package token mints and verifies access tokens: JWTs in the RFC 9068 profile
// ("typ": "at+jwt"), signed with EdDSA over Ed25519 or with RS256 (RSASSA-PKCS1-v1_5
// with SHA-256, which RFC 9068 §2.1 requires every authorization server to support),
// built and checked with go-jose.
//
// A [Ring] is an immutable snapshot of the verification keys of every region plus,
// optionally, the private keys this node signs with (at most one per [Algorithm]).
// Every key has one algorithm: a token verifies only with a key whose algorithm is
// the token's alg header, so no key is ever used with another algorithm (no RS256/HS256
// confusion with an RSA public key, no EdDSA key tried as RSA). Rotating keys means building a new
// Ring. [Ring.JWKS] publishes the verification keys for other parties.
//
// The package is pure: no I/O and no clock; the current time is always passed in.
package token

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
	"github.com/go-jose/go-jose/v4/jwt"
)

// MaxTokenSize is the largest token, in bytes, that [Ring.Verify] accepts.
const MaxTokenSize = 8 << 10

// DefaultLeeway is the clock skew [Ring.Verify] allows when [VerifyOptions.Leeway]
// is zero.
const DefaultLeeway = 30 * time.Second

// typ is the JOSE type of an access token (RFC 9068 section 2.1).
const typ = "at+jwt"

// Algorithm is a JWS signature algorithm keyplane signs with.
type Algorithm string

// Algorithms. The zero value means [EdDSA].
const (
	EdDSA Algorithm = "EdDSA" // Ed25519 (RFC 8037)
	RS256 Algorithm = "RS256" // RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518), RSA keys of MinRSABits or more
)

// MinRSABits is the smallest RSA modulus a [Ring] accepts and [GenerateKeyAlg] makes.
const MinRSABits = 2048

// Algorithms returns the algorithms keyplane signs with, in a fixed order.
func Algorithms() []Algorithm { return []Algorithm{EdDSA, RS256} }

// ParseAlgorithm returns the Algorithm named s ("EdDSA" or "RS256", exact case).
func ParseAlgorithm(s string) (Algorithm, error) {
	switch a := Algorithm(s); a {
	case EdDSA, RS256:
		return a, nil
	}
	return "", fmt.Errorf("signing algorithm %s: want EdDSA or RS256", quote(s))
}

// or returns a, or EdDSA when a is empty.
func (a Algorithm) or() Algorithm {
	if a == "" {
		return EdDSA
	}
	return a
}

// PublicKey is a verification key published in JWKS. An EdDSA key is Key; an RS256
// key is RSA (and Key is empty).
type PublicKey struct {
	ID        string    // kid
	Region    string    // region whose nodes sign with the matching private key
	Alg       Algorithm // "" means EdDSA
	Key       ed25519.PublicKey
	RSA       *rsa.PublicKey
	ExpiresAt time.Time // zero: no expiry; keys past ExpiresAt are neither published nor accepted
}

// valid reports whether k is a well-formed key of its algorithm.
func (k PublicKey) valid() bool {
	switch k.Alg.or() {
	case EdDSA:
		return len(k.Key) == ed25519.PublicKeySize && k.RSA == nil
	case RS256:
		return len(k.Key) == 0 && k.RSA != nil && k.RSA.N != nil && k.RSA.N.BitLen() >= MinRSABits && k.RSA.E >= 3
	}
	return false
}

// verifier is the key go-jose verifies with.
func (k PublicKey) verifier() any {
	if k.Alg.or() == RS256 {
		return k.RSA
	}
	return k.Key
}

// usable reports whether k may verify tokens and be published at now.
func (k PublicKey) usable(now time.Time) bool {
	return k.ExpiresAt.IsZero() || now.Before(k.ExpiresAt)
}

// SigningKey is a private key a node signs with. Its ID is the kid of the matching
// [PublicKey]. An EdDSA key is Key; an RS256 key is RSA.
type SigningKey struct {
	ID  string
	Alg Algorithm // "" means EdDSA
	Key ed25519.PrivateKey
	RSA *rsa.PrivateKey
}

// signer is the key go-jose signs with, or nil when the key is not well formed.
func (k SigningKey) signer() any {
	switch k.Alg.or() {
	case EdDSA:
		if len(k.Key) == ed25519.PrivateKeySize && k.RSA == nil {
			return k.Key
		}
	case RS256:
		if len(k.Key) == 0 && k.RSA != nil && k.RSA.N != nil && k.RSA.N.BitLen() >= MinRSABits {
			return k.RSA
		}
	}
	return nil
}

// GenerateKey returns a new Ed25519 key pair for region. The kid is
// region + "-" + now in UTC as YYYYMMDD + "-" + 8 random lowercase base32 characters
// (a-z, 2-7), for example "eu-west-20260314-q4lsf3os". The public key has no expiry.
func GenerateKey(region string, now time.Time) (SigningKey, PublicKey, error) {
	if region == "" {
		return SigningKey{}, PublicKey{}, errors.New("generate signing key: region is empty")
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SigningKey{}, PublicKey{}, fmt.Errorf("generate signing key: %w", err)
	}
	kid := keyID(region, now)
	return SigningKey{ID: kid, Key: priv}, PublicKey{ID: kid, Region: region, Key: pub}, nil
}

func keyID(region string, now time.Time) string {
	return region + "-" + now.UTC().Format("20060102") + "-" + strings.ToLower(rand.Text()[:8])
}

// GenerateKeyAlg returns a new key pair of alg for region: [GenerateKey] for EdDSA,
// a MinRSABits-bit RSA key for RS256 (its kid has the same form, with "rs-" before
// the random part so the two kinds are told apart at a glance).
func GenerateKeyAlg(region string, alg Algorithm, now time.Time) (SigningKey, PublicKey, error) {
	switch alg.or() {
	case EdDSA:
		return GenerateKey(region, now)
	case RS256:
	default:
		return SigningKey{}, PublicKey{}, fmt.Errorf("generate signing key: unknown algorithm %s", quote(string(alg)))
	}
	if region == "" {
		return SigningKey{}, PublicKey{}, errors.New("generate signing key: region is empty")
	}
	priv, err := rsa.GenerateKey(rand.Reader, MinRSABits)
	if err != nil {
		return SigningKey{}, PublicKey{}, fmt.Errorf("generate signing key: %w", err)
	}
	kid := region + "-" + now.UTC().Format("20060102") + "-rs-" + strings.ToLower(rand.Text()[:8])
	return SigningKey{ID: kid, Alg: RS256, RSA: priv}, PublicKey{ID: kid, Region: region, Alg: RS256, RSA: &priv.PublicKey}, nil
}

// Ring is an immutable snapshot of verification keys plus, optionally, the keys this
// node signs with (one per algorithm). It is safe for concurrent use.
type Ring struct {
	keys    map[string]PublicKey     // by kid; Key slices are private copies
	signers map[Algorithm]SigningKey // empty: cannot mint
}

// NewRing returns a Ring holding copies of keys and signers (nil signers are skipped;
// for each algorithm the last signer wins).
//
// Keys with an empty ID, an unknown Alg, or a key that is not well formed for its
// algorithm (an Ed25519 key of the wrong length, an RSA key under [MinRSABits]) are
// ignored; when IDs repeat, the last key wins. The signers are not added to the
// verification keys: to verify its own tokens a node includes their public keys in keys.
func NewRing(keys []PublicKey, signers ...*SigningKey) *Ring {
	r := &Ring{keys: make(map[string]PublicKey, len(keys)), signers: map[Algorithm]SigningKey{}}
	for _, k := range keys {
		if k.ID == "" || !k.valid() {
			continue
		}
		k.Alg = k.Alg.or()
		k.Key = bytes.Clone(k.Key)
		r.keys[k.ID] = k
	}
	for _, s := range signers {
		if s == nil {
			continue
		}
		c := *s
		c.Alg = c.Alg.or()
		c.Key = bytes.Clone(c.Key)
		r.signers[c.Alg] = c
	}
	return r
}

// Signer returns the kid of the EdDSA signing key, and whether the ring has one.
func (r *Ring) Signer() (kid string, ok bool) { return r.SignerFor(EdDSA) }

// SignerFor returns the kid of the signing key of alg, and whether the ring has one.
func (r *Ring) SignerFor(alg Algorithm) (kid string, ok bool) {
	s, ok := r.signers[alg.or()]
	return s.ID, ok
}

// Has reports whether the ring holds a verification key with this kid, expired or not.
func (r *Ring) Has(kid string) bool {
	_, ok := r.keys[kid]
	return ok
}

// Mint signs c with the ring's EdDSA signing key; see [Ring.MintWith].
func (r *Ring) Mint(c Claims) (string, error) { return r.MintWith(EdDSA, c) }

// MintWith signs c with the ring's signing key of alg and returns the compact JWT.
// The header is {"alg":<alg>,"kid":<signer kid>,"typ":"at+jwt"}; nbf is written equal
// to iat.
//
// It returns [ErrNoSigningKey] if the ring has no signer of alg and an error wrapping
// [ErrIncompleteClaims] if a required claim is missing (see [Claims]).
func (r *Ring) MintWith(alg Algorithm, c Claims) (string, error) {
	alg = alg.or()
	s, ok := r.signers[alg]
	if !ok {
		return "", ErrNoSigningKey
	}
	if s.ID == "" {
		return "", errors.New("mint token: signing key has an empty ID")
	}
	key := s.signer()
	if key == nil {
		return "", fmt.Errorf("mint token: signing key %s is not a well-formed %s key", quote(s.ID), alg)
	}
	w := c.wire()
	if m := w.missing(); m != "" {
		return "", fmt.Errorf("mint token: %w: %s", ErrIncompleteClaims, m)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: jose.JSONWebKey{Key: key, KeyID: s.ID}},
		(&jose.SignerOptions{}).WithType(typ),
	)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	raw, err := jwt.Signed(signer).Claims(w).Serialize()
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return raw, nil
}

// VerifyOptions are the expectations [Ring.Verify] checks a token against.
type VerifyOptions struct {
	Issuer   string    // required exact match of iss ("" means: do not check)
	Audience string    // if non-empty, must be one of aud
	Now      time.Time // the current time; required (the zero time rejects every token as not yet valid)
	// Leeway is the clock skew allowed for exp, nbf and iat: 0 means [DefaultLeeway],
	// a negative value means none.
	Leeway time.Duration
}

func (o VerifyOptions) leeway() time.Duration {
	switch {
	case o.Leeway == 0:
		return DefaultLeeway
	case o.Leeway < 0:
		return 0
	}
	return o.Leeway
}

// Verify parses and checks raw and returns its claims. It checks, in order: size and
// format, alg (EdDSA or RS256), typ (at+jwt), kid (known, unexpired key whose own
// algorithm is the alg header), signature, then the claims: completeness, issuer,
// audience and time. Every error is an [*Error]; use [ReasonOf] to get its [Reason].
// Verify never panics, whatever raw holds.
func (r *Ring) Verify(raw string, o VerifyOptions) (Claims, error) {
	if err := checkFormat(raw); err != nil {
		return Claims{}, err
	}
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.EdDSA, jose.RS256})
	if err != nil {
		var bad *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &bad) {
			return Claims{}, reject(ReasonBadAlgorithm, "alg %s is not EdDSA or RS256", quote(string(bad.Got)))
		}
		return Claims{}, reject(ReasonMalformed, "not a valid JWS")
	}
	if len(jws.Signatures) != 1 {
		return Claims{}, reject(ReasonMalformed, "want exactly one signature")
	}
	h := jws.Signatures[0].Protected
	alg := Algorithm(h.Algorithm)
	if alg != EdDSA && alg != RS256 { // already enforced by go-jose; belt and braces
		return Claims{}, reject(ReasonBadAlgorithm, "alg %s is not EdDSA or RS256", quote(h.Algorithm))
	}

	t, _ := h.ExtraHeaders[jose.HeaderType].(string)
	if !strings.EqualFold(t, typ) && !strings.EqualFold(t, "application/"+typ) {
		return Claims{}, reject(ReasonWrongType, "typ %s is not %s", quote(t), typ)
	}

	if h.KeyID == "" {
		return Claims{}, reject(ReasonUnknownKey, "kid is missing")
	}
	key, ok := r.keys[h.KeyID]
	if !ok {
		return Claims{}, reject(ReasonUnknownKey, "kid %s is not a known key", quote(h.KeyID))
	}
	if !key.usable(o.Now) {
		return Claims{}, reject(ReasonUnknownKey, "key %s expired at %s", quote(key.ID), key.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if key.Alg != alg {
		return Claims{}, reject(ReasonBadAlgorithm, "alg %s is not the %s of key %s", quote(h.Algorithm), key.Alg, quote(key.ID))
	}

	payload, err := jws.Verify(key.verifier())
	if err != nil {
		return Claims{}, reject(ReasonBadSignature, "signature does not verify with key %s", quote(key.ID))
	}

	var w wireClaims
	if err := json.Unmarshal(payload, &w); err != nil {
		return Claims{}, reject(ReasonMalformed, "claims are not a JSON object of the expected types")
	}
	if m := w.missing(); m != "" {
		return Claims{}, reject(ReasonMalformed, "%s", m)
	}
	if o.Issuer != "" && w.Issuer != o.Issuer {
		return Claims{}, reject(ReasonWrongIssuer, "iss %s, want %s", quote(w.Issuer), quote(o.Issuer))
	}
	if o.Audience != "" && !w.Audience.Contains(o.Audience) {
		return Claims{}, reject(ReasonWrongAudience, "aud does not contain %s", quote(o.Audience))
	}
	c := w.claims()
	leeway := o.leeway()
	if !o.Now.Before(c.ExpiresAt.Add(leeway)) {
		return Claims{}, reject(ReasonExpired, "expired at %s", c.ExpiresAt.Format(time.RFC3339))
	}
	if w.NotBefore != nil {
		if nbf := utc(w.NotBefore); o.Now.Before(nbf.Add(-leeway)) {
			return Claims{}, reject(ReasonNotYetValid, "not valid before %s", nbf.Format(time.RFC3339))
		}
	}
	if o.Now.Before(c.IssuedAt.Add(-leeway)) {
		return Claims{}, reject(ReasonNotYetValid, "issued in the future at %s", c.IssuedAt.Format(time.RFC3339))
	}
	return c, nil
}

// PeekKeyID returns the kid header of raw without verifying anything, or "" if raw is
// not a well-formed compact JWS or has no string kid. It only helps choose which keys
// to load (for example, reloading when a token names a key the ring lacks); the result
// must not be trusted.
func PeekKeyID(raw string) string {
	if checkFormat(raw) != nil {
		return ""
	}
	header, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		return ""
	}
	var h struct {
		KeyID string `json:"kid"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return ""
	}
	return h.KeyID
}

// checkFormat rejects tokens that are too big or not three base64url segments in
// canonical form. Canonical form matters: base64 decoders skip newlines and ignore
// trailing bits, which would let many strings carry one valid signature.
func checkFormat(raw string) *Error {
	if len(raw) > MaxTokenSize {
		return reject(ReasonMalformed, "%d bytes is over the %d-byte limit", len(raw), MaxTokenSize)
	}
	segments := strings.Split(raw, ".")
	if len(segments) != 3 {
		return reject(ReasonMalformed, "not a compact JWS: want 3 dot-separated segments, got %d", len(segments))
	}
	names := [3]string{"header", "payload", "signature"}
	for i, s := range segments {
		if s == "" && i < 2 { // an empty signature is left for the alg check ("none")
			return reject(ReasonMalformed, "%s is empty", names[i])
		}
		for j := 0; j < len(s); j++ {
			if !isBase64URL(s[j]) {
				return reject(ReasonMalformed, "%s is not base64url", names[i])
			}
		}
		if _, err := base64.RawURLEncoding.Strict().DecodeString(s); err != nil {
			return reject(ReasonMalformed, "%s is not canonical base64url", names[i])
		}
	}
	return nil
}

func isBase64URL(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}
