package token

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// jwk is an Ed25519 verification key in RFC 7517 / RFC 8037 form.
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
}

type jwkSet struct {
	Keys []jwk `json:"keys"`
}

// JWKS returns the ring's verification keys usable at now as an RFC 7517 JWK Set:
// {"keys":[{"kty":"OKP","crv":"Ed25519","x":...,"kid":...,"use":"sig","alg":"EdDSA"}]},
// sorted by kid. Expired keys are omitted; an empty ring gives {"keys":[]}.
func (r *Ring) JWKS(now time.Time) []byte {
	set := jwkSet{Keys: []jwk{}}
	for _, k := range r.keys {
		if !k.usable(now) {
			continue
		}
		set.Keys = append(set.Keys, jwk{
			Kty: "OKP",
			Crv: "Ed25519",
			X:   base64.RawURLEncoding.EncodeToString(k.Key),
			Kid: k.ID,
			Use: "sig",
			Alg: "EdDSA",
		})
	}
	slices.SortFunc(set.Keys, func(a, b jwk) int { return strings.Compare(a.Kid, b.Kid) })
	// Marshaling a struct of strings cannot fail.
	b, _ := json.Marshal(set)
	return b
}
