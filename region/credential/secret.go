package credential

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
)

// Secret prefixes: the first field of a secret names its kind, so that a leaked
// secret can be recognised by scanners and a secret of one kind is never accepted
// as another.
const (
	PrefixAPIKey       = "kpk"
	PrefixClientSecret = "kpc"
	PrefixRefreshToken = "kpr"
	// PrefixAuthCode: an OAuth authorization code (single use, short-lived).
	PrefixAuthCode = "kpa"
	// PrefixBrowserSession: a browser's session cookie at the OpenID Provider.
	PrefixBrowserSession = "kpb"
)

// Lengths of the fields of a secret <prefix>_<keyid>_<secret>.
const (
	keyIDBytes     = 10
	keyIDChars     = 16 // base32 of 10 bytes, unpadded
	secretBytes    = 32
	secretChars    = 43 // base64url of 32 bytes, unpadded
	prefixChars    = 3
	secretTextLen  = prefixChars + 1 + keyIDChars + 1 + secretChars
	keyIDAlphabet  = "abcdefghijklmnopqrstuvwxyz234567"
	secretAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)

// Secret is a freshly generated high-entropy secret: an API key, an OAuth client
// secret or a refresh token. Text is shown to its owner once; KeyID and Hash are
// stored. String, GoString and LogValue redact the secret part of Text, so a Secret
// can be printed or logged without leaking it.
type Secret struct {
	Text  string // the full secret, <prefix>_<keyid>_<secret>, shown once to the user
	KeyID string // public lookup id: 16 characters of lowercase base32
	Hash  []byte // SHA-256 of Text; what is stored
}

// String returns Text with its secret part replaced by "[REDACTED]", or "" for
// the zero Secret.
func (s Secret) String() string {
	if s.Text == "" {
		return ""
	}
	return fmt.Sprintf("%s_%s_[REDACTED]", strings.SplitN(s.Text, "_", 2)[0], s.KeyID)
}

// GoString is String, so that %#v does not print Text either.
func (s Secret) GoString() string { return s.String() }

// LogValue returns String, so that log/slog handlers do not print Text.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// NewSecret generates a secret with the given prefix, one of PrefixAPIKey,
// PrefixClientSecret and PrefixRefreshToken, in the form <prefix>_<keyid>_<secret>:
// keyid is 10 random bytes in lowercase unpadded base32 (16 characters), secret is
// 32 random bytes in unpadded base64url (43 characters). An unknown prefix is an
// error wrapping ErrInvalidArgument.
func NewSecret(prefix string) (Secret, error) {
	if secretKind(prefix) == "" {
		return Secret{}, fmt.Errorf("new secret: unknown prefix %q: %w", prefix, ErrInvalidArgument)
	}
	var b [keyIDBytes + secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Secret{}, fmt.Errorf("new secret: %w", err)
	}
	keyID := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:keyIDBytes]))
	text := prefix + "_" + keyID + "_" + base64.RawURLEncoding.EncodeToString(b[keyIDBytes:])
	return Secret{Text: text, KeyID: keyID, Hash: HashSecret(text)}, nil
}

// ParseSecret checks that text is a well-formed secret with the given prefix and
// returns its key id. It is strict: the prefix must match exactly, the key id must
// be 16 characters of lowercase base32 (a-z, 2-7) and the secret 43 characters of
// unpadded base64url encoding exactly 32 bytes. A malformed text is reported as a
// *FormatError whose message never contains any part of the secret; an unknown
// prefix argument is an error wrapping ErrInvalidArgument.
//
// ParseSecret does not authenticate: look the credential up by key id and compare
// with SecretMatches.
func ParseSecret(prefix, text string) (keyID string, err error) {
	kind := secretKind(prefix)
	if kind == "" {
		return "", fmt.Errorf("parse secret: unknown prefix %q: %w", prefix, ErrInvalidArgument)
	}
	bad := func(reason string) (string, error) {
		return "", &FormatError{Kind: kind, Reason: reason}
	}
	switch {
	case text == "":
		return bad("empty")
	case !strings.HasPrefix(text, prefix+"_"):
		return bad("wrong prefix")
	case len(text) != secretTextLen:
		return bad(fmt.Sprintf("wrong length: want %d characters", secretTextLen))
	}
	keyID, rest := text[prefixChars+1:prefixChars+1+keyIDChars], text[prefixChars+1+keyIDChars:]
	if !only(keyID, keyIDAlphabet) {
		return bad("key id not lowercase base32")
	}
	if rest[0] != '_' {
		return bad("missing separator after key id")
	}
	if !only(rest[1:], secretAlphabet) {
		return bad("secret not base64url")
	}
	if _, err := base64.RawURLEncoding.Strict().DecodeString(rest[1:]); err != nil {
		return bad("secret not canonical base64url")
	}
	return keyID, nil
}

// HashSecret returns the SHA-256 digest of text, the form in which secrets are
// stored. A plain hash suffices because secrets carry 256 random bits.
func HashSecret(text string) []byte {
	sum := sha256.Sum256([]byte(text))
	return sum[:]
}

// SecretMatches reports whether text hashes to hash. The digests are compared in
// constant time.
func SecretMatches(hash []byte, text string) bool {
	sum := sha256.Sum256([]byte(text))
	return subtle.ConstantTimeCompare(hash, sum[:]) == 1
}

// secretKind names the kind of secret for prefix, or returns "" for an unknown
// prefix.
func secretKind(prefix string) string {
	switch prefix {
	case PrefixAPIKey:
		return "api key"
	case PrefixClientSecret:
		return "client secret"
	case PrefixRefreshToken:
		return "refresh token"
	case PrefixAuthCode:
		return "authorization code"
	case PrefixBrowserSession:
		return "browser session"
	}
	return ""
}

// only reports whether every byte of s is in alphabet.
func only(s, alphabet string) bool {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(alphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}
