package credential

import (
	"crypto/subtle"
	"encoding/base32"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"
)

// TOTP parameters: those of Google Authenticator and RFC 6238's defaults.
const (
	totpPeriod      = 30 // seconds
	totpDigits      = 6
	totpSkew        = 1  // steps accepted either side of the current one
	totpSecretBytes = 20 // 160 bits, RFC 4226 section 4 recommendation
	totpMinSecret   = 16 // 128 bits, RFC 4226 section 4 requirement
)

// TOTPKey is a freshly generated TOTP secret. Secret is stored (encrypted) by the
// caller; URL is shown once, usually as a QR code. String, GoString and LogValue
// redact both.
type TOTPKey struct {
	Secret string // the shared secret in unpadded upper-case base32
	URL    string // otpauth://totp/... key URI for authenticator apps
}

// String returns a placeholder that contains neither field.
func (k TOTPKey) String() string { return "TOTPKey{[REDACTED]}" }

// GoString is String, so that %#v does not print the secret either.
func (k TOTPKey) GoString() string { return k.String() }

// LogValue returns String, so that log/slog handlers do not print the secret.
func (k TOTPKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// NewTOTP generates a 160-bit TOTP secret for account at issuer (SHA-1, 6 digits,
// 30 second period) and its otpauth:// URL. Issuer and account must be non-empty
// and free of colons (the key URI format uses a colon to separate them); otherwise
// the error wraps ErrInvalidArgument.
func NewTOTP(issuer, account string) (TOTPKey, error) {
	if issuer == "" || account == "" || strings.Contains(issuer, ":") || strings.Contains(account, ":") {
		return TOTPKey{}, fmt.Errorf("new totp: issuer and account must be non-empty and contain no colon: %w", ErrInvalidArgument)
	}
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer:      issuer,
		AccountName: account,
		Period:      totpPeriod,
		SecretSize:  totpSecretBytes,
		Digits:      otp.DigitsSix,
		Algorithm:   otp.AlgorithmSHA1,
	})
	if err != nil {
		return TOTPKey{}, fmt.Errorf("new totp: %w", err)
	}
	return TOTPKey{Secret: key.Secret(), URL: key.URL()}, nil
}

// CheckTOTP reports whether code is the TOTP for secret at now or one 30 second
// step either side, and returns the time step (Unix seconds / 30, rounded down) it
// matched. To refuse replays the caller must accept a code only when step is
// greater than the last step it accepted for this secret, then record step. Should
// a code match more than one step, the earliest is returned, the choice that
// refuses more replays.
//
// The code must be exactly 6 ASCII digits once surrounding white space is
// trimmed. Any other code, a secret that is not base32 of at least 16 bytes, or a
// step before the Unix epoch does not match. CheckTOTP never panics.
func CheckTOTP(secret, code string, now time.Time) (step int64, ok bool) {
	code = strings.TrimSpace(code)
	if len(code) != totpDigits || strings.Trim(code, "0123456789") != "" || !validTOTPSecret(secret) {
		return 0, false
	}
	current := now.Unix() / totpPeriod
	if now.Unix()%totpPeriod < 0 {
		current-- // round toward minus infinity
	}
	opts := hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}
	for s := current - totpSkew; s <= current+totpSkew; s++ {
		if s < 0 {
			continue
		}
		want, err := hotp.GenerateCodeCustom(secret, uint64(s), opts)
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 && !ok {
			step, ok = s, true
		}
	}
	return step, ok
}

// validTOTPSecret reports whether secret decodes as the otp library decodes it
// (trimmed, upper-cased, padding optional) to at least totpMinSecret bytes.
func validTOTPSecret(secret string) bool {
	secret = strings.ToUpper(strings.TrimSpace(secret))
	if n := len(secret) % 8; n != 0 {
		secret += strings.Repeat("=", 8-n)
	}
	b, err := base32.StdEncoding.DecodeString(secret)
	return err == nil && len(b) >= totpMinSecret
}
