package token

import (
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// IDClaims are the claims of an OpenID Connect ID token (OIDC Core §2). Issuer,
// Subject, Audience (the client id), ExpiresAt, IssuedAt and AuthTime are required.
type IDClaims struct {
	Issuer    string    // iss
	Subject   string    // sub
	Audience  string    // aud: the client id
	ExpiresAt time.Time // exp
	IssuedAt  time.Time // iat
	AuthTime  time.Time // auth_time
	Nonce     string    // nonce, as the authorization request sent it; omitted when empty
	ACR       string    // acr
	AMR       []string  // amr
	AZP       string    // azp: the client id
	SessionID string    // sid (OIDC Front-Channel Logout's session id)
	Name      string    // name (scope profile); omitted when empty
	Email     string    // email (scope email); omitted when empty
}

type wireIDClaims struct {
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"`
	Audience  string           `json:"aud"`
	Expiry    *jwt.NumericDate `json:"exp"`
	IssuedAt  *jwt.NumericDate `json:"iat"`
	AuthTime  *jwt.NumericDate `json:"auth_time"`
	Nonce     string           `json:"nonce,omitempty"`
	ACR       string           `json:"acr,omitempty"`
	AMR       []string         `json:"amr,omitempty"`
	AZP       string           `json:"azp,omitempty"`
	SessionID string           `json:"sid,omitempty"`
	Name      string           `json:"name,omitempty"`
	Email     string           `json:"email,omitempty"`
}

// MintIDToken signs an ID token with the ring's signing key of alg. Its header is
// {"alg":<alg>,"kid":<kid>,"typ":"JWT"}: an ID token is never an access token, and
// [Ring.Verify] refuses it (ReasonWrongType).
func (r *Ring) MintIDToken(alg Algorithm, c IDClaims) (string, error) {
	alg = alg.or()
	s, ok := r.signers[alg]
	if !ok {
		return "", ErrNoSigningKey
	}
	key := s.signer()
	if key == nil || s.ID == "" {
		return "", fmt.Errorf("mint ID token: signing key %s is not a well-formed %s key", quote(s.ID), alg)
	}
	switch {
	case c.Issuer == "" || c.Subject == "" || c.Audience == "":
		return "", fmt.Errorf("mint ID token: %w: iss, sub and aud are required", ErrIncompleteClaims)
	case c.AuthTime.IsZero() || !c.ExpiresAt.After(c.IssuedAt):
		return "", fmt.Errorf("mint ID token: %w: auth_time is required and exp must be after iat", ErrIncompleteClaims)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: jose.JSONWebKey{Key: key, KeyID: s.ID}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return "", fmt.Errorf("mint ID token: %w", err)
	}
	raw, err := jwt.Signed(signer).Claims(wireIDClaims{
		Issuer: c.Issuer, Subject: c.Subject, Audience: c.Audience,
		Expiry: jwt.NewNumericDate(c.ExpiresAt), IssuedAt: jwt.NewNumericDate(c.IssuedAt), AuthTime: jwt.NewNumericDate(c.AuthTime),
		Nonce: c.Nonce, ACR: c.ACR, AMR: c.AMR, AZP: c.AZP, SessionID: c.SessionID, Name: c.Name, Email: c.Email,
	}).Serialize()
	if err != nil {
		return "", fmt.Errorf("mint ID token: %w", err)
	}
	return raw, nil
}

// VerifyIDToken checks an ID token this ring signed (an id_token_hint at logout):
// signature by a known key, typ JWT, alg EdDSA or RS256. Expiry is not checked: a
// hint may be expired (OpenID RP-Initiated Logout 1.0 §2). It returns the issuer,
// subject, audience and sid.
func (r *Ring) VerifyIDToken(raw string) (IDClaims, error) {
	if len(raw) > 8192 {
		return IDClaims{}, errors.New("ID token too long")
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.EdDSA, jose.RS256})
	if err != nil || len(tok.Headers) != 1 {
		return IDClaims{}, errors.New("ID token malformed")
	}
	h := tok.Headers[0]
	if t, _ := h.ExtraHeaders[jose.HeaderType].(string); t != "JWT" {
		return IDClaims{}, errors.New("not an ID token (typ)")
	}
	k, ok := r.keys[h.KeyID]
	if !ok || string(k.Alg.or()) != h.Algorithm {
		return IDClaims{}, errors.New("ID token signed by an unknown key")
	}
	var w wireIDClaims
	if err := tok.Claims(k.verifier(), &w); err != nil {
		return IDClaims{}, errors.New("ID token signature invalid")
	}
	return IDClaims{Issuer: w.Issuer, Subject: w.Subject, Audience: w.Audience, SessionID: w.SessionID}, nil
}
