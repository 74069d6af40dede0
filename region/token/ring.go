// Package token mints and verifies access tokens: JWTs in the RFC 9068 profile
// ("typ": "at+jwt"), signed with EdDSA over Ed25519 and built and checked with go-jose.
//
// A [Ring] is an immutable snapshot of the verification keys of every region plus,
// optionally, the private key this node signs with. Rotating keys means building a new
// Ring. [Ring.JWKS] publishes the verification keys for other parties.
//
// The package is pure: no I/O and no clock; the current time is always passed in.
package token

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
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

// PublicKey is a verification key published in JWKS.
type PublicKey struct {
	ID        string // kid
	Region    string // region whose nodes sign with the matching private key
	Key       ed25519.PublicKey
	ExpiresAt time.Time // zero: no expiry; keys past ExpiresAt are neither published nor accepted
}

// usable reports whether k may verify tokens and be published at now.
func (k PublicKey) usable(now time.Time) bool {
	return k.ExpiresAt.IsZero() || now.Before(k.ExpiresAt)
}

// SigningKey is a private key a node signs with. Its ID is the kid of the matching
// [PublicKey].
type SigningKey struct {
	ID  string
	Key ed25519.PrivateKey
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
	kid := region + "-" + now.UTC().Format("20060102") + "-" + strings.ToLower(rand.Text()[:8])
	return SigningKey{ID: kid, Key: priv}, PublicKey{ID: kid, Region: region, Key: pub}, nil
}

// Ring is an immutable snapshot of verification keys plus, optionally, the key this
// node signs with. It is safe for concurrent use.
type Ring struct {
	keys   map[string]PublicKey // by kid; Key slices are private copies
	signer *SigningKey          // nil: cannot mint
}

// NewRing returns a Ring holding copies of keys and signer (which may be nil).
//
// Keys with an empty ID or a Key that is not [ed25519.PublicKeySize] bytes are
// ignored; when IDs repeat, the last key wins. The signer is not added to the
// verification keys: to verify its own tokens a node includes its public key in keys.
func NewRing(keys []PublicKey, signer *SigningKey) *Ring {
	r := &Ring{keys: make(map[string]PublicKey, len(keys))}
	for _, k := range keys {
		if k.ID == "" || len(k.Key) != ed25519.PublicKeySize {
			continue
		}
		k.Key = bytes.Clone(k.Key)
		r.keys[k.ID] = k
	}
	if signer != nil {
		r.signer = &SigningKey{ID: signer.ID, Key: bytes.Clone(signer.Key)}
	}
	return r
}

// Signer returns the kid of the signing key, and whether the ring has one.
func (r *Ring) Signer() (kid string, ok bool) {
	if r.signer == nil {
		return "", false
	}
	return r.signer.ID, true
}

// Has reports whether the ring holds a verification key with this kid, expired or not.
func (r *Ring) Has(kid string) bool {
	_, ok := r.keys[kid]
	return ok
}

// Mint signs c with the ring's signing key and returns the compact JWT. The header is
// {"alg":"EdDSA","kid":<signer kid>,"typ":"at+jwt"}; nbf is written equal to iat.
//
// It returns [ErrNoSigningKey] if the ring has no signer and an error wrapping
// [ErrIncompleteClaims] if a required claim is missing (see [Claims]).
func (r *Ring) Mint(c Claims) (string, error) {
	if r.signer == nil {
		return "", ErrNoSigningKey
	}
	if r.signer.ID == "" {
		return "", errors.New("mint token: signing key has an empty ID")
	}
	if n := len(r.signer.Key); n != ed25519.PrivateKeySize {
		return "", fmt.Errorf("mint token: signing key %q is %d bytes, want %d", r.signer.ID, n, ed25519.PrivateKeySize)
	}
	w := c.wire()
	if m := w.missing(); m != "" {
		return "", fmt.Errorf("mint token: %w: %s", ErrIncompleteClaims, m)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: r.signer.Key, KeyID: r.signer.ID}},
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
// format, alg (EdDSA only), typ (at+jwt), kid (known, unexpired key), signature, then
// the claims: completeness, issuer, audience and time. Every error is an [*Error]; use
// [ReasonOf] to get its [Reason]. Verify never panics, whatever raw holds.
func (r *Ring) Verify(raw string, o VerifyOptions) (Claims, error) {
	if err := checkFormat(raw); err != nil {
		return Claims{}, err
	}
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		var bad *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &bad) {
			return Claims{}, reject(ReasonBadAlgorithm, "alg %s is not EdDSA", quote(string(bad.Got)))
		}
		return Claims{}, reject(ReasonMalformed, "not a valid JWS")
	}
	if len(jws.Signatures) != 1 {
		return Claims{}, reject(ReasonMalformed, "want exactly one signature")
	}
	h := jws.Signatures[0].Protected
	if h.Algorithm != string(jose.EdDSA) { // already enforced by go-jose; belt and braces
		return Claims{}, reject(ReasonBadAlgorithm, "alg %s is not EdDSA", quote(h.Algorithm))
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

	payload, err := jws.Verify(key.Key)
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
