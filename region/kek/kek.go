// Package kek holds the key-encryption key (KEK) that encrypts secrets at rest, such as
// token signing private keys and TOTP seeds.
//
// A KEK is 32 random bytes, configured as base64 text (see [Generate] and [Parse]).
// [KEK.Seal] encrypts with AES-256-GCM under a fresh random nonce; the associated data
// binds a sealed blob to its context (for example a table, column and row id) so that
// a blob copied to another row does not open. [KEK.ID] names the KEK without revealing
// it, so a stored blob can record which KEK sealed it.
//
// The key never prints: fmt, slog and %#v all show "[redacted]".
package kek

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Size is the length of a KEK in bytes (AES-256).
const Size = 32

// redacted is what a KEK prints as.
const redacted = "[redacted]"

// ErrInvalidKey means the KEK text given to [Parse] is not the base64 encoding of
// exactly [Size] bytes.
var ErrInvalidKey = errors.New("invalid KEK")

// ErrOpen means a sealed blob could not be opened: it was sealed under another KEK or
// with other associated data, it was modified, or it is too short. The cases are
// deliberately indistinguishable.
var ErrOpen = errors.New("cannot open sealed data")

// KEK is a 256-bit AES-GCM key-encryption key. It is safe for concurrent use.
// Printing it (fmt %v/%s/%#v, slog) shows "[redacted]".
//
// The zero value is not usable; obtain a KEK from [Parse].
type KEK struct {
	aead cipher.AEAD // AES-256-GCM with random 12-byte nonces prepended
	id   string
}

// Parse parses a KEK from its base64 text: standard or URL alphabet, padded or not.
// Surrounding whitespace is ignored. The text must decode to exactly [Size] bytes.
// Errors wrap [ErrInvalidKey] and never contain the text itself.
func Parse(text string) (*KEK, error) {
	text = strings.TrimSpace(text)
	key, err := decode(text)
	if err != nil {
		return nil, fmt.Errorf("%w: KEK must be %d bytes, base64-encoded; not valid base64", ErrInvalidKey, Size)
	}
	if len(key) != Size {
		return nil, fmt.Errorf("%w: KEK must be %d bytes, base64-encoded; got %d bytes", ErrInvalidKey, Size, len(key))
	}
	return newKEK(key)
}

// decode decodes text in any of the four common base64 variants.
func decode(text string) ([]byte, error) {
	if text == "" {
		return nil, nil
	}
	var firstErr error
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
	} {
		b, err := enc.DecodeString(text)
		if err == nil {
			return b, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

func newKEK(key []byte) (*KEK, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	sum := sha256.Sum256(key)
	return &KEK{aead: aead, id: hex.EncodeToString(sum[:])[:12]}, nil
}

// Generate returns the standard base64 text of a new random KEK, suitable for [Parse].
func Generate() (string, error) {
	key := make([]byte, Size)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("generate KEK: %w", err)
	}
	return base64.StdEncoding.EncodeToString(key), nil
}

// ID returns the first 12 hex characters of the SHA-256 of the key. It identifies
// which KEK sealed a blob and reveals nothing useful about the key.
func (k *KEK) ID() string { return k.id }

// Seal encrypts and authenticates plaintext, and authenticates associatedData, which
// must be passed again to [KEK.Open]. The result is a random 12-byte nonce followed by
// the AES-GCM ciphertext and tag (28 bytes longer than plaintext).
func (k *KEK) Seal(plaintext, associatedData []byte) []byte {
	return k.aead.Seal(nil, nil, plaintext, associatedData)
}

// Open decrypts a blob made by [KEK.Seal] with the same associatedData. Any failure
// (another KEK, other associated data, a modified or truncated blob) returns an error
// wrapping [ErrOpen].
func (k *KEK) Open(sealed, associatedData []byte) ([]byte, error) {
	if len(sealed) < k.aead.Overhead() {
		return nil, fmt.Errorf("open with KEK %s: %w: %d bytes is shorter than the %d-byte minimum",
			k.id, ErrOpen, len(sealed), k.aead.Overhead())
	}
	plaintext, err := k.aead.Open(nil, nil, sealed, associatedData)
	if err != nil {
		return nil, fmt.Errorf("open with KEK %s: %w: wrong key or associated data, or modified data", k.id, ErrOpen)
	}
	return plaintext, nil
}

// The methods below use value receivers so that both KEK and *KEK are redacted.

// String returns "[redacted]".
func (KEK) String() string { return redacted }

// GoString returns "[redacted]", for %#v.
func (KEK) GoString() string { return redacted }

// Format prints "[redacted]" for every verb and flag, including %x and %+v.
func (KEK) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue makes slog print "[redacted]".
func (KEK) LogValue() slog.Value { return slog.StringValue(redacted) }

// Compile-time checks that redaction hooks are in place.
var (
	_ fmt.Stringer   = KEK{}
	_ fmt.GoStringer = KEK{}
	_ fmt.Formatter  = KEK{}
	_ slog.LogValuer = KEK{}
)
