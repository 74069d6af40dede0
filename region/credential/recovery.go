package credential

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"strings"
	"unicode"
)

// MaxRecoveryCodes is the most recovery codes NewRecoveryCodes makes at once.
const MaxRecoveryCodes = 20

// A recovery code is three groups of four base32 characters: 60 random bits.
const (
	recoveryGroups    = 3
	recoveryGroupLen  = 4
	recoveryCodeChars = recoveryGroups * recoveryGroupLen
)

// NewRecoveryCodes generates n distinct recovery codes, 1 <= n <= MaxRecoveryCodes,
// in the form "xxxx-xxxx-xxxx" of lowercase base32 characters (a-z, 2-7; 60
// random bits each), and their hashes, hashes[i] = HashRecoveryCode(codes[i]). The
// codes are shown once; only the hashes are stored. An n out of range is an error
// wrapping ErrInvalidArgument.
func NewRecoveryCodes(n int) (codes []string, hashes [][]byte, err error) {
	if n < 1 || n > MaxRecoveryCodes {
		return nil, nil, fmt.Errorf("new recovery codes: n = %d, want 1 to %d: %w", n, MaxRecoveryCodes, ErrInvalidArgument)
	}
	codes = make([]string, 0, n)
	hashes = make([][]byte, 0, n)
	seen := make(map[string]bool, n)
	for len(codes) < n {
		code, err := newRecoveryCode()
		if err != nil {
			return nil, nil, fmt.Errorf("new recovery codes: %w", err)
		}
		if seen[code] { // about 2^-60 per pair; kept so that codes are distinct
			continue
		}
		seen[code] = true
		codes = append(codes, code)
		hashes = append(hashes, HashRecoveryCode(code))
	}
	return codes, hashes, nil
}

// newRecoveryCode returns one random code "xxxx-xxxx-xxxx".
func newRecoveryCode() (string, error) {
	var b [recoveryCodeChars]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	var sb strings.Builder
	for i, c := range b {
		if i > 0 && i%recoveryGroupLen == 0 {
			sb.WriteByte('-')
		}
		sb.WriteByte(keyIDAlphabet[c%byte(len(keyIDAlphabet))]) // 256 is a multiple of 32: uniform
	}
	return sb.String(), nil
}

// NormalizeRecoveryCode returns s in lower case with white space and dashes
// removed, the form that is hashed: "ABCD-efgh 2345" becomes "abcdefgh2345".
func NormalizeRecoveryCode(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || unicode.IsSpace(r) {
			return -1
		}
		return unicode.ToLower(r)
	}, s)
}

// HashRecoveryCode returns the SHA-256 digest of NormalizeRecoveryCode(s), the
// form in which recovery codes are stored. Compare digests with
// crypto/subtle.ConstantTimeCompare.
func HashRecoveryCode(s string) []byte {
	sum := sha256.Sum256([]byte(NormalizeRecoveryCode(s)))
	return sum[:]
}
