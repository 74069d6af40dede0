package credential

import "errors"

// Sentinel errors, returned wrapped; test them with errors.Is.
var (
	// ErrMalformedHash: an encoded password hash cannot be parsed, uses an
	// unsupported algorithm or version, or carries out-of-range parameters.
	ErrMalformedHash = errors.New("malformed password hash")
	// ErrInvalidArgument: the caller passed a value the function does not accept,
	// such as an unknown secret prefix or an out-of-range count. It signals a
	// programming error, not bad user input.
	ErrInvalidArgument = errors.New("invalid argument")
)

// PolicyError reports a password that the password policy rejects. Reason says
// what is wrong without repeating the password.
type PolicyError struct {
	Reason string // for example "too short: at least 12 characters"
}

// Error returns "password " followed by the reason.
func (e *PolicyError) Error() string { return "password " + e.Reason }

// FormatError reports a secret that does not have the expected format. Neither
// field ever contains any part of the secret.
type FormatError struct {
	Kind   string // what was expected: "api key", "client secret", "refresh token"
	Reason string // what is wrong, for example "wrong prefix"
}

// Error returns, for example, "api key malformed: wrong prefix".
func (e *FormatError) Error() string { return e.Kind + " malformed: " + e.Reason }
