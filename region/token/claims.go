package token

import (
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
)

// Claims of an access token (RFC 9068 profile of JWT).
//
// Issuer, Subject, Audience (at least one, none empty), ExpiresAt, IssuedAt, ID,
// Tenant and SessionID are required, and ExpiresAt must be after IssuedAt at second
// precision: [Ring.Mint] refuses claims without them and [Ring.Verify] rejects tokens
// without them as [ReasonMalformed]. Times travel as whole seconds; Verify returns
// them in UTC.
type Claims struct {
	Issuer    string    // iss
	Subject   string    // sub (identity id)
	Audience  []string  // aud (at least one)
	ExpiresAt time.Time // exp
	IssuedAt  time.Time // iat (also written as nbf)
	ID        string    // jti
	ClientID  string    // client_id (RFC 9068)
	Tenant    string    // "tenant"
	SessionID string    // "sid"
	AMR       []string  // "amr" (RFC 8176 values: "pwd", "otp", "mfa", "swk", ...), omitted when empty
	Region    string    // "region": the issuing region
	Scope     string    // "scope" (space-separated), omitted when empty
	AuthTime  time.Time // "auth_time", omitted when zero
	// Act is the actor (RFC 8693 §4.1): for a token minted by token exchange, the
	// external subject and issuer it was exchanged for; nil otherwise.
	Act *Actor
}

// Actor is an RFC 8693 §4.1 "act" claim.
type Actor struct {
	Subject string `json:"sub"`
	Issuer  string `json:"iss,omitempty"`
}

// wireClaims is the JSON form of Claims. It is decoded with go-jose's JSON package,
// which matches member names case-sensitively.
type wireClaims struct {
	Issuer    string           `json:"iss,omitempty"`
	Subject   string           `json:"sub,omitempty"`
	Audience  jwt.Audience     `json:"aud,omitempty"`
	Expiry    *jwt.NumericDate `json:"exp,omitempty"`
	NotBefore *jwt.NumericDate `json:"nbf,omitempty"`
	IssuedAt  *jwt.NumericDate `json:"iat,omitempty"`
	ID        string           `json:"jti,omitempty"`
	ClientID  string           `json:"client_id,omitempty"`
	Tenant    string           `json:"tenant,omitempty"`
	SessionID string           `json:"sid,omitempty"`
	AMR       []string         `json:"amr,omitempty"`
	Region    string           `json:"region,omitempty"`
	Scope     string           `json:"scope,omitempty"`
	AuthTime  *jwt.NumericDate `json:"auth_time,omitempty"`
	Act       *Actor           `json:"act,omitempty"`
}

// wire returns the JSON form of c; nbf is set to iat.
func (c Claims) wire() wireClaims {
	return wireClaims{
		Issuer:    c.Issuer,
		Subject:   c.Subject,
		Audience:  jwt.Audience(c.Audience),
		Expiry:    jwt.NewNumericDate(c.ExpiresAt),
		NotBefore: jwt.NewNumericDate(c.IssuedAt),
		IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
		ID:        c.ID,
		ClientID:  c.ClientID,
		Tenant:    c.Tenant,
		SessionID: c.SessionID,
		AMR:       c.AMR,
		Region:    c.Region,
		Scope:     c.Scope,
		AuthTime:  jwt.NewNumericDate(c.AuthTime),
		Act:       c.Act,
	}
}

// claims returns the Claims carried by w. Absent times stay zero.
func (w wireClaims) claims() Claims {
	return Claims{
		Issuer:    w.Issuer,
		Subject:   w.Subject,
		Audience:  []string(w.Audience),
		ExpiresAt: utc(w.Expiry),
		IssuedAt:  utc(w.IssuedAt),
		ID:        w.ID,
		ClientID:  w.ClientID,
		Tenant:    w.Tenant,
		SessionID: w.SessionID,
		AMR:       w.AMR,
		Region:    w.Region,
		Scope:     w.Scope,
		AuthTime:  utc(w.AuthTime),
		Act:       w.Act,
	}
}

// utc returns d as a UTC time, or the zero time if d is nil.
func utc(d *jwt.NumericDate) time.Time {
	if d == nil {
		return time.Time{}
	}
	return d.Time().UTC()
}

// missing returns a description of the first required claim that w lacks, or "" if it
// is complete.
func (w wireClaims) missing() string {
	switch {
	case w.Issuer == "":
		return "iss is empty"
	case w.Subject == "":
		return "sub is empty"
	case len(w.Audience) == 0:
		return "aud is empty"
	case w.Expiry == nil:
		return "exp is missing"
	case w.IssuedAt == nil:
		return "iat is missing"
	case *w.Expiry <= *w.IssuedAt:
		return "exp is not after iat"
	case w.ID == "":
		return "jti is empty"
	case w.Tenant == "":
		return "tenant is empty"
	case w.SessionID == "":
		return "sid is empty"
	}
	for _, a := range w.Audience {
		if a == "" {
			return "aud holds an empty string"
		}
	}
	return ""
}
