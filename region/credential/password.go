package credential

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Password policy limits.
const (
	// MinPasswordLength is the least number of characters (Unicode code points)
	// in an acceptable password.
	MinPasswordLength = 12
	// MaxPasswordBytes is the greatest length in bytes of an acceptable password.
	// It bounds the work an attacker can cause; longer passwords never verify.
	MaxPasswordBytes = 256
)

// Current argon2id parameters for new hashes (OWASP Password Storage Cheat Sheet:
// 19 MiB of memory, 2 iterations, 1 degree of parallelism).
const (
	argonMemory  = 19456 // KiB
	argonTime    = 2
	argonThreads = 1
	argonSaltLen = 16
	argonKeyLen  = 32
)

// Bounds on the parameters VerifyPassword accepts from an encoded hash, so that a
// corrupted or hostile row cannot make verification allocate or loop without end.
const (
	maxArgonMemory  = 1 << 20 // KiB, that is 1 GiB
	maxArgonTime    = 20
	maxArgonThreads = 16
	minArgonKeyLen  = 16
	maxArgonKeyLen  = 64
	minArgonSaltLen = 8
	maxArgonSaltLen = 64
	maxEncodedLen   = 512
	b64Alphabet     = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)

// newHashParams are the parameters of new hashes and the floor NeedsRehash compares
// with: the constants above, unless a test binary lowered them (UseTestHashParams).
var newHashParams = struct{ memory, time uint32 }{argonMemory, argonTime}

// UseTestHashParams makes new hashes cheap (64 KiB, one pass) for the rest of the
// process: for test binaries that log in many times under the race detector, where
// one production hash costs a CPU-second; what they test (throttling, lockout, the
// flows) does not depend on the cost. Call it from TestMain, before any hashing. It
// panics outside a test binary, so a production node always hashes at the constants.
func UseTestHashParams() {
	if !testing.Testing() {
		panic("credential.UseTestHashParams called outside a test binary")
	}
	newHashParams.memory, newHashParams.time = 64, 1
}

// argonParams is a parsed PHC argon2id string.
type argonParams struct {
	memory  uint32 // KiB
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

// CheckPasswordPolicy reports, as a *PolicyError, why pw is not an acceptable
// password: longer than MaxPasswordBytes bytes, not valid UTF-8, containing
// control characters (Unicode category Cc, which includes tab and newline), or
// shorter than MinPasswordLength characters. Characters are counted as Unicode
// code points. It returns nil for an acceptable password.
func CheckPasswordPolicy(pw string) error {
	if len(pw) > MaxPasswordBytes {
		return &PolicyError{Reason: fmt.Sprintf("too long: at most %d bytes", MaxPasswordBytes)}
	}
	if !utf8.ValidString(pw) {
		return &PolicyError{Reason: "not valid UTF-8"}
	}
	if strings.IndexFunc(pw, unicode.IsControl) >= 0 {
		return &PolicyError{Reason: "contains control characters"}
	}
	if utf8.RuneCountInString(pw) < MinPasswordLength {
		return &PolicyError{Reason: fmt.Sprintf("too short: at least %d characters", MinPasswordLength)}
	}
	return nil
}

// HashPassword checks pw against the password policy and returns its argon2id hash
// with a fresh random salt, in PHC string format:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//
// where salt (16 bytes) and hash (32 bytes) are in unpadded standard base64. A
// policy violation is returned as a *PolicyError.
func HashPassword(pw string) (string, error) {
	if err := CheckPasswordPolicy(pw); err != nil {
		return "", err
	}
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: read salt: %w", err)
	}
	p := argonParams{memory: newHashParams.memory, time: newHashParams.time, threads: argonThreads, salt: salt}
	p.key = argon2.IDKey([]byte(pw), p.salt, p.time, p.memory, p.threads, argonKeyLen)
	return p.encode(), nil
}

// VerifyPassword reports whether pw matches the encoded argon2id hash, comparing in
// constant time. It uses the parameters stored in encoded, so hashes made with
// stronger parameters than today's still verify. A wrong password yields
// (false, nil). An encoding that cannot be parsed, is not argon2id version 19, or
// has out-of-range parameters (memory above 1 GiB, more than 20 iterations, more
// than 16 lanes, fewer than 8 KiB per lane, a salt not 8 to 64 bytes long, a key
// not 16 to 64 bytes long) yields an error wrapping ErrMalformedHash. A password longer than MaxPasswordBytes yields (false, nil)
// without hashing. The policy is not otherwise applied, so passwords set under an
// older policy still verify.
func VerifyPassword(encoded, pw string) (bool, error) {
	p, err := parseArgon(encoded)
	if err != nil {
		return false, err
	}
	if len(pw) > MaxPasswordBytes {
		return false, nil
	}
	key := argon2.IDKey([]byte(pw), p.salt, p.time, p.memory, p.threads, uint32(len(p.key)))
	return subtle.ConstantTimeCompare(key, p.key) == 1, nil
}

// NeedsRehash reports whether encoded should be replaced by a fresh HashPassword
// after the next successful verification: because it cannot be parsed, or because
// its memory, iterations, salt length or key length are below the current ones.
// The lane count is not compared: more lanes over the same memory is not weaker.
func NeedsRehash(encoded string) bool {
	p, err := parseArgon(encoded)
	if err != nil {
		return true
	}
	return p.memory < newHashParams.memory || p.time < newHashParams.time ||
		len(p.salt) < argonSaltLen || len(p.key) < argonKeyLen
}

// encode returns p in PHC string format.
func (p argonParams) encode() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.memory, p.time, p.threads,
		base64.RawStdEncoding.EncodeToString(p.salt),
		base64.RawStdEncoding.EncodeToString(p.key))
}

// parseArgon parses a PHC argon2id string strictly: exact field order, canonical
// decimal numbers, unpadded canonical base64, and parameters within bounds. Its
// errors wrap ErrMalformedHash and never quote the input.
func parseArgon(encoded string) (argonParams, error) {
	var p argonParams
	if len(encoded) > maxEncodedLen {
		return p, malformed("too long")
	}
	fields := strings.Split(encoded, "$")
	if len(fields) != 6 || fields[0] != "" {
		return p, malformed("not a PHC string")
	}
	if fields[1] != "argon2id" {
		return p, malformed("unsupported algorithm")
	}
	if fields[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, malformed("unsupported version")
	}
	params := strings.Split(fields[3], ",")
	if len(params) != 3 {
		return p, malformed("want parameters m, t, p")
	}
	m, err := parseParam(params[0], "m", maxArgonMemory)
	if err != nil {
		return p, err
	}
	t, err := parseParam(params[1], "t", maxArgonTime)
	if err != nil {
		return p, err
	}
	threads, err := parseParam(params[2], "p", maxArgonThreads)
	if err != nil {
		return p, err
	}
	if m < 8*threads { // RFC 9106 section 3.1: m >= 8*p
		return p, malformed("memory below 8 KiB per lane")
	}
	p.memory, p.time, p.threads = uint32(m), uint32(t), uint8(threads)
	// The base64 decoder skips CR and LF, so check the alphabet first.
	if !only(fields[4], b64Alphabet) || !only(fields[5], b64Alphabet) {
		return p, malformed("salt or hash not unpadded base64")
	}
	if p.salt, err = base64.RawStdEncoding.Strict().DecodeString(fields[4]); err != nil {
		return p, malformed("salt not unpadded base64")
	}
	if len(p.salt) < minArgonSaltLen || len(p.salt) > maxArgonSaltLen {
		return p, malformed(fmt.Sprintf("salt length not %d to %d bytes", minArgonSaltLen, maxArgonSaltLen))
	}
	if p.key, err = base64.RawStdEncoding.Strict().DecodeString(fields[5]); err != nil {
		return p, malformed("hash not unpadded base64")
	}
	if len(p.key) < minArgonKeyLen || len(p.key) > maxArgonKeyLen {
		return p, malformed(fmt.Sprintf("hash length not %d to %d bytes", minArgonKeyLen, maxArgonKeyLen))
	}
	return p, nil
}

// parseParam parses "name=value" where value is a canonical decimal in 1..limit.
func parseParam(s, name string, limit uint64) (uint64, error) {
	v, ok := strings.CutPrefix(s, name+"=")
	if !ok {
		return 0, malformed("want parameter " + name)
	}
	if v == "" || len(v) > 10 || v[0] == '0' || strings.Trim(v, "0123456789") != "" {
		return 0, malformed("parameter " + name + " not a positive decimal")
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > limit {
		return 0, malformed(fmt.Sprintf("parameter %s out of range 1 to %d", name, limit))
	}
	return n, nil
}

func malformed(reason string) error {
	return fmt.Errorf("%w: %s", ErrMalformedHash, reason)
}
