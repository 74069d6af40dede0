package routing

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
)

// NewGossipKey returns a new random gossip key (32 bytes), base64-encoded as
// ParseGossipKeys reads it.
func NewGossipKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error
	return base64.StdEncoding.EncodeToString(b)
}

// ParseGossipKeys parses MembershipConfig.Keys from text: base64 keys separated by
// newlines or commas, the one that encrypts first. Blank lines and lines starting
// with # are ignored.
func ParseGossipKeys(text string) ([][]byte, error) {
	var keys [][]byte
	for _, line := range strings.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == ',' }) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("gossip key %d: not base64", len(keys)+1)
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("gossip key %d: %d bytes, want 16, 24 or 32", len(keys)+1, n)
		}
		keys = append(keys, k)
	}
	return keys, nil
}
