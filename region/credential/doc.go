// Package credential holds the credential primitives of the data plane: password
// hashing (argon2id in PHC string format), high-entropy secrets (API keys, OAuth
// client secrets, refresh tokens), TOTP (RFC 6238) and recovery codes.
//
// The package is pure: it does no I/O beyond reading crypto/rand, keeps no state,
// and every function is safe for concurrent use. Secrets are returned once, for
// showing to their owner; only their hashes are meant to be stored. Error messages
// never contain a secret, a password or a stored hash.
package credential
