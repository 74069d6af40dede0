package deploy

import (
	"crypto/rand"
	"encoding/base64"
)

// randomSecret returns a new operator secret (130 random bits).
func randomSecret() string { return "kp-op-" + rand.Text() }

// randomKey returns a new random 32-byte key, base64: the form `keyplane serve` reads
// key-encryption keys and gossip keys in.
func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}
