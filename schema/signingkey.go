package schema

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// SigningKey is a row of the GLOBAL signing_keys table: a region's token-signing
// public key and its life cycle. A region has one current key per algorithm.
type SigningKey struct {
	KID       string
	Region    string
	Alg       string // SigningEdDSA or SigningRS256
	PublicKey []byte // EdDSA: the 32-byte Ed25519 key; RS256: PKIX (SubjectPublicKeyInfo) DER
	CreatedAt time.Time
	ActiveAt  time.Time // the region signs with its newest key whose ActiveAt has passed
	RetiredAt time.Time // zero while current
	ExpiresAt time.Time // zero while current; after it the key is neither published nor accepted
}

// ListSigningKeys returns every key that has not expired, of every region.
func (s *Store) ListSigningKeys(ctx context.Context) ([]SigningKey, error) {
	rows, err := s.pool.Query(ctx, `
SELECT kid, region, alg, public_key, created_at, active_at, coalesce(retired_at, 'epoch'), coalesce(expires_at, 'epoch')
FROM signing_keys WHERE expires_at IS NULL OR expires_at > now() ORDER BY active_at, kid`)
	if err != nil {
		return nil, classify(err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SigningKey, error) {
		var k SigningKey
		err := r.Scan(&k.KID, &k.Region, &k.Alg, &k.PublicKey, &k.CreatedAt, &k.ActiveAt, &k.RetiredAt, &k.ExpiresAt)
		k.RetiredAt, k.ExpiresAt = zeroEpoch(k.RetiredAt), zeroEpoch(k.ExpiresAt)
		return k, err
	})
	return keys, classify(err)
}

func zeroEpoch(t time.Time) time.Time {
	if t.Equal(time.Unix(0, 0)) {
		return time.Time{}
	}
	return t
}

// SealedSigningKey returns a key's private half as sealed under the key-encryption
// key kekID. It reads the key's own region's partition.
func (s *Store) SealedSigningKey(ctx context.Context, region, kid string) (sealed []byte, kekID string, err error) {
	err = s.pool.QueryRow(ctx, `SELECT sealed, kek_id FROM signing_key_secrets WHERE crdb_region = $1 AND kid = $2`, region, kid).
		Scan(&sealed, &kekID)
	if err != nil {
		return nil, "", classify(fmt.Errorf("read signing key %s: %w", kid, err))
	}
	return sealed, kekID, nil
}

// NewSigningKey is the input of AddSigningKey.
type NewSigningKey struct {
	KID       string
	Region    string
	Alg       string // "" means SigningEdDSA
	PublicKey []byte // see SigningKey.PublicKey
	Sealed    []byte // private half sealed under the KEK (EdDSA: the seed; RS256: PKCS #8 DER)
	KEKID     string
	ActiveAt  time.Time // when it starts signing; publish it first (ActiveAt > now)
	// RetireAfter: the region's current keys of the same algorithm retire at ActiveAt
	// and expire this long after it, once every token they signed has expired.
	RetireAfter time.Duration
}

// AddSigningKey publishes a new key for a region and schedules the retirement of the
// region's current ones of its algorithm. When onlyIfNone is set it adds the key only
// if the region has no unexpired key of that algorithm, and reports whether it did
// (used by nodes at start and before a tenant's first RS256 token).
func (s *Store) AddSigningKey(ctx context.Context, k NewSigningKey, onlyIfNone bool) (bool, error) {
	if k.Alg == "" {
		k.Alg = SigningEdDSA
	}
	if err := checkSigningAlg("alg", k.Alg); err != nil {
		return false, err
	}
	added := false
	err := s.tx(ctx, func(tx pgx.Tx) error {
		added = false
		if onlyIfNone {
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM signing_keys WHERE region = $1 AND alg = $2 AND (expires_at IS NULL OR expires_at > now())`,
				k.Region, k.Alg).Scan(&n); err != nil {
				return fmt.Errorf("count signing keys: %w", err)
			}
			if n > 0 {
				return nil
			}
		}
		if _, err := tx.Exec(ctx, `
UPDATE signing_keys SET retired_at = $2, expires_at = $2::TIMESTAMPTZ + $3 * INTERVAL '1 second'
WHERE region = $1 AND alg = $4 AND (retired_at IS NULL OR retired_at > $2)`, k.Region, k.ActiveAt, int64(k.RetireAfter/time.Second), k.Alg); err != nil {
			return fmt.Errorf("retire signing keys: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO signing_keys (kid, region, alg, public_key, active_at) VALUES ($1, $2, $3, $4, $5)`,
			k.KID, k.Region, k.Alg, k.PublicKey, k.ActiveAt); err != nil {
			return fmt.Errorf("insert signing key: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO signing_key_secrets (kid, crdb_region, sealed, kek_id) VALUES ($1, $2, $3, $4)`,
			k.KID, k.Region, k.Sealed, k.KEKID); err != nil {
			return fmt.Errorf("insert signing key secret: %w", err)
		}
		added = true
		return nil
	})
	return added, err
}
