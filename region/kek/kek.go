// Package kek holds the key-encryption key (KEK) that encrypts secrets at rest, such as
// token signing private keys and TOTP seeds.
//
// A KEK is 32 random bytes, configured as base64 text (see [Generate] and [Parse]).
// [KEK.Seal] encrypts with AES-256-GCM under a fresh random nonce; the associated data
// binds a sealed blob to its context (for example a table, column and row id) so that
// a blob copied to another row does not open. [KEK.ID] names the KEK without revealing
// it, so a stored blob can record which KEK sealed it.
//
// A KEK may hold several keys, for rotation (see [Parse]): the first seals, every one
// opens, and [KEK.Reseal] moves a blob sealed under an older key to the first.
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

// KEK is a set of 256-bit AES-GCM key-encryption keys: the first (primary) seals,
// every one opens. It is safe for concurrent use. Printing it (fmt %v/%s/%#v, slog)
// shows "[redacted]".
//
// The zero value is not usable; obtain a KEK from [Parse].
type KEK struct {
	keys []key // keys[0] seals
}

type key struct {
	aead cipher.AEAD // AES-256-GCM with random 12-byte nonces prepended
	id   string
}

// Parse parses a KEK from base64 text: standard or URL alphabet, padded or not, one
// key a line (blank lines and lines starting with # are skipped); the first key seals
// and every key opens. Each must decode to exactly [Size] bytes. Errors wrap
// [ErrInvalidKey], name the line, and never contain the text itself.
func Parse(text string) (*KEK, error) {
	k := &KEK{}
	seen := map[string]bool{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		raw, err := decode(line)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: KEK must be %d bytes, base64-encoded; not valid base64", ErrInvalidKey, i+1, Size)
		}
		if len(raw) != Size {
			return nil, fmt.Errorf("%w: line %d: KEK must be %d bytes, base64-encoded; got %d bytes", ErrInvalidKey, i+1, Size, len(raw))
		}
		kk, err := newKey(raw)
		if err != nil {
			return nil, err
		}
		if seen[kk.id] {
			return nil, fmt.Errorf("%w: line %d: the same key twice", ErrInvalidKey, i+1)
		}
		seen[kk.id] = true
		k.keys = append(k.keys, kk)
	}
	if len(k.keys) == 0 {
		return nil, fmt.Errorf("%w: KEK must be %d bytes, base64-encoded; got 0 bytes", ErrInvalidKey, Size)
	}
	return k, nil
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

func newKey(raw []byte) (key, error) {
	block, err := aes.NewCipher(raw)
	if err != nil {
		return key{}, fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return key{}, fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	sum := sha256.Sum256(raw)
	return key{aead: aead, id: hex.EncodeToString(sum[:])[:12]}, nil
}

// Generate returns the standard base64 text of a new random KEK, suitable for [Parse].
func Generate() (string, error) {
	key := make([]byte, Size)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("generate KEK: %w", err)
	}
	return base64.StdEncoding.EncodeToString(key), nil
}

// ID returns the first 12 hex characters of the SHA-256 of the primary key (the one
// that seals). It identifies which KEK sealed a blob and reveals nothing useful about
// the key.
func (k *KEK) ID() string { return k.keys[0].id }

// Has reports whether id (see [KEK.ID]) names one of k's keys: whether k can open
// what that key sealed.
func (k *KEK) Has(id string) bool {
	for _, kk := range k.keys {
		if kk.id == id {
			return true
		}
	}
	return false
}

// Seal encrypts and authenticates plaintext with the primary key, and authenticates
// associatedData, which must be passed again to [KEK.Open]. The result is a random
// 12-byte nonce followed by the AES-GCM ciphertext and tag (28 bytes longer than
// plaintext).
func (k *KEK) Seal(plaintext, associatedData []byte) []byte {
	return k.keys[0].aead.Seal(nil, nil, plaintext, associatedData)
}

// Open decrypts a blob made by [KEK.Seal] (under any of k's keys) with the same
// associatedData. Any failure (another KEK, other associated data, a modified or
// truncated blob) returns an error wrapping [ErrOpen].
func (k *KEK) Open(sealed, associatedData []byte) ([]byte, error) {
	plaintext, _, err := k.open(sealed, associatedData)
	return plaintext, err
}

// open returns the plaintext and the index of the key that opened it. AES-GCM
// authenticates, so at most one key opens a blob.
func (k *KEK) open(sealed, associatedData []byte) ([]byte, int, error) {
	overhead := k.keys[0].aead.Overhead()
	if len(sealed) < overhead {
		return nil, 0, fmt.Errorf("open with KEK %s: %w: %d bytes is shorter than the %d-byte minimum",
			k.ID(), ErrOpen, len(sealed), overhead)
	}
	for i, kk := range k.keys {
		if plaintext, err := kk.aead.Open(nil, nil, sealed, associatedData); err == nil {
			return plaintext, i, nil
		}
	}
	return nil, 0, fmt.Errorf("open with KEK %s: %w: wrong key or associated data, or modified data", k.ID(), ErrOpen)
}

// Reseal returns sealed under the primary key: the same blob and false when the
// primary key sealed it, a new blob and true when an older key did. It fails like
// [KEK.Open] when no key opens it.
func (k *KEK) Reseal(sealed, associatedData []byte) ([]byte, bool, error) {
	plaintext, i, err := k.open(sealed, associatedData)
	if err != nil {
		return nil, false, err
	}
	if i == 0 {
		return sealed, false, nil
	}
	return k.Seal(plaintext, associatedData), true, nil
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
