package token

import (
	"encoding/base64"
	"encoding/json"
	"math/big"
	"slices"
	"strings"
	"time"
)

// jwk is a verification key in RFC 7517 form: an Ed25519 key (RFC 8037: crv, x) or an
// RSA key (RFC 7518 §6.3.1: n, e).
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
}

type jwkSet struct {
	Keys []jwk `json:"keys"`
}

// JWKS returns the ring's verification keys usable at now as an RFC 7517 JWK Set:
// {"keys":[{"kty":"OKP","crv":"Ed25519","x":...,"kid":...,"use":"sig","alg":"EdDSA"},
// {"kty":"RSA","n":...,"e":"AQAB","kid":...,"use":"sig","alg":"RS256"}]}, sorted by
// kid. Every key names its one algorithm. Expired keys are omitted; an empty ring
// gives {"keys":[]}.
func (r *Ring) JWKS(now time.Time) []byte {
	set := jwkSet{Keys: []jwk{}}
	for _, k := range r.keys {
		if !k.usable(now) {
			continue
		}
		if k.Alg == RS256 {
			set.Keys = append(set.Keys, jwk{
				Kty: "RSA",
				N:   base64.RawURLEncoding.EncodeToString(k.RSA.N.Bytes()),
				E:   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.RSA.E)).Bytes()),
				Kid: k.ID,
				Use: "sig",
				Alg: string(RS256),
			})
			continue
		}
		set.Keys = append(set.Keys, jwk{
			Kty: "OKP",
			Crv: "Ed25519",
			X:   base64.RawURLEncoding.EncodeToString(k.Key),
			Kid: k.ID,
			Use: "sig",
			Alg: string(EdDSA),
		})
	}
	slices.SortFunc(set.Keys, func(a, b jwk) int { return strings.Compare(a.Kid, b.Kid) })
	// Marshaling a struct of strings cannot fail.
	b, _ := json.Marshal(set)
	return b
}
