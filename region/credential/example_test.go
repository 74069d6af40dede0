package credential_test

import (
	"fmt"

	"github.com/keyplane/keyplane/region/credential"
)

func ExampleNewSecret() {
	// Issue an API key: show s.Text to its owner once; store s.KeyID and s.Hash.
	s, err := credential.NewSecret(credential.PrefixAPIKey)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(s.Text), s.Text[:4])

	// Authenticate a presented key: parse it, look the stored hash up by key id,
	// then compare.
	keyID, err := credential.ParseSecret(credential.PrefixAPIKey, s.Text)
	if err != nil {
		panic(err)
	}
	fmt.Println(keyID == s.KeyID, credential.SecretMatches(s.Hash, s.Text))

	// A secret of another kind, or a mangled one, is refused before any lookup.
	_, err = credential.ParseSecret(credential.PrefixRefreshToken, s.Text)
	fmt.Println(err)
	_, err = credential.ParseSecret(credential.PrefixAPIKey, s.Text[:40])
	fmt.Println(err)
	// Output:
	// 64 kpk_
	// true true
	// refresh token malformed: wrong prefix
	// api key malformed: wrong length: want 64 characters
}
