package token

import (
	"errors"
	"fmt"
	"strconv"
)

// ErrNoSigningKey is returned by [Ring.Mint] when the ring has no signing key.
var ErrNoSigningKey = errors.New("token: no signing key")

// ErrIncompleteClaims is returned (wrapped) by [Ring.Mint] when the claims lack a
// required value; see [Claims].
var ErrIncompleteClaims = errors.New("token: incomplete claims")

// Reason says why [Ring.Verify] rejected a token. It is stable and safe to show to
// clients, log and use as a metric label.
type Reason string

// Reasons for rejecting a token, in the order [Ring.Verify] checks them.
const (
	// ReasonMalformed: not a compact JWS, bad base64 or JSON, over [MaxTokenSize]
	// bytes, a required claim missing, or a claim of the wrong type.
	ReasonMalformed Reason = "malformed"
	// ReasonBadAlgorithm: the alg header is not EdDSA or RS256 ("none", HS256, ...),
	// or it is not the algorithm of the key named by kid.
	ReasonBadAlgorithm Reason = "bad_algorithm"
	// ReasonWrongType: the typ header is not "at+jwt" or "application/at+jwt".
	ReasonWrongType Reason = "wrong_type"
	// ReasonUnknownKey: the kid header is missing, not in the ring, or its key expired.
	ReasonUnknownKey Reason = "unknown_key"
	// ReasonBadSignature: the signature does not verify with the key named by kid.
	ReasonBadSignature Reason = "bad_signature"
	// ReasonWrongIssuer: iss differs from [VerifyOptions.Issuer].
	ReasonWrongIssuer Reason = "wrong_issuer"
	// ReasonWrongAudience: aud does not contain [VerifyOptions.Audience].
	ReasonWrongAudience Reason = "wrong_audience"
	// ReasonExpired: exp has passed, beyond the leeway.
	ReasonExpired Reason = "expired"
	// ReasonNotYetValid: nbf or iat is in the future, beyond the leeway.
	ReasonNotYetValid Reason = "not_yet_valid"
)

// Error is a token rejected by [Ring.Verify]. Every error Verify returns is an *Error.
type Error struct {
	Reason Reason // machine-readable cause
	Msg    string // human-readable detail; untrusted token values in it are quoted
}

// Error returns "token <reason>: <msg>".
func (e *Error) Error() string {
	return "token " + string(e.Reason) + ": " + e.Msg
}

// ReasonOf returns the [Reason] of the first [*Error] in err's chain, or "" if there is
// none.
func ReasonOf(err error) Reason {
	var te *Error
	if errors.As(err, &te) {
		return te.Reason
	}
	return ""
}

// reject returns an *Error with a formatted message.
func reject(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Msg: fmt.Sprintf(format, args...)}
}

// quote quotes an untrusted string for an error message, cut to a readable length.
func quote(s string) string {
	const limit = 64 // bytes of quoted output, excluding the ellipsis
	q := strconv.Quote(s)
	if len(q) <= limit {
		return q
	}
	n := min(len(s), limit)
	for n > 0 && len(strconv.Quote(s[:n])) > limit {
		n--
	}
	return strconv.Quote(s[:n]) + "..."
}
