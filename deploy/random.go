package deploy

import (
	"crypto/rand"
	"encoding/base64"
)

// randomSecret returns a new operator secret (130 random bits).
func randomSecret() string { return "kp-op-" + rand.Text() }

// randomKEK returns a new key-encryption key in the form `keyplane serve` reads.
func randomKEK() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}
