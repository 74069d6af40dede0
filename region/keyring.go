package region

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/keyplane/keyplane/region/kek"
	"github.com/keyplane/keyplane/region/token"
	"github.com/keyplane/keyplane/schema"
)

// keyring keeps the node's snapshot of the signing keys: every region's public keys
// (to verify) and this region's current private key (to sign). Keys are not revocation
// state, so caching them is safe; the snapshot is refreshed every refreshEvery and at
// once (at most once a second) when a token names a kid the snapshot lacks.
// Safe for concurrent use.
type keyring struct {
	store        *schema.Store
	kek          *kek.KEK
	region       string
	refreshEvery time.Duration

	mu         sync.Mutex
	ring       *token.Ring
	loadedAt   time.Time
	lastForced time.Time
}

// ErrNoKEK: the node has no key-encryption key, so it can neither sign nor open keys.
var ErrNoKEK = errors.New("this node has no key-encryption key: start it with --kek-file or KEYPLANE_KEK")

func (k *keyring) get(ctx context.Context) (*token.Ring, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ring != nil && time.Since(k.loadedAt) < k.refreshEvery {
		return k.ring, nil
	}
	return k.loadLocked(ctx)
}

// forKid returns a snapshot that has kid if one can be had, reloading when the current
// snapshot lacks it (a key published by another region since the last refresh).
func (k *keyring) forKid(ctx context.Context, kid string) (*token.Ring, error) {
	r, err := k.get(ctx)
	if err != nil || kid == "" || r.Has(kid) {
		return r, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if time.Since(k.lastForced) < time.Second {
		return k.ring, nil
	}
	k.lastForced = time.Now()
	return k.loadLocked(ctx)
}

func (k *keyring) loadLocked(ctx context.Context) (*token.Ring, error) {
	if k.kek == nil {
		return nil, ErrNoKEK
	}
	for attempt := 0; attempt < 2; attempt++ {
		rows, err := k.store.ListSigningKeys(ctx)
		if err != nil {
			return nil, fmt.Errorf("load signing keys: %w", err)
		}
		now := time.Now()
		var pubs []token.PublicKey
		var current *schema.SigningKey
		for i, r := range rows {
			pubs = append(pubs, token.PublicKey{ID: r.KID, Region: r.Region, Key: ed25519.PublicKey(r.PublicKey), ExpiresAt: r.ExpiresAt})
			if r.Region == k.region && !r.ActiveAt.After(now) && (r.RetiredAt.IsZero() || r.RetiredAt.After(now)) {
				if current == nil || r.ActiveAt.After(current.ActiveAt) {
					current = &rows[i]
				}
			}
		}
		if current == nil {
			if attempt > 0 {
				return nil, fmt.Errorf("region %s has no active signing key", k.region)
			}
			if err := k.createFirstKey(ctx); err != nil {
				return nil, err
			}
			continue
		}
		sealed, kekID, err := k.store.SealedSigningKey(ctx, k.region, current.KID)
		if err != nil {
			return nil, err
		}
		if kekID != k.kek.ID() {
			return nil, fmt.Errorf("signing key %s is sealed under KEK %s, this node has KEK %s", current.KID, kekID, k.kek.ID())
		}
		seed, err := k.kek.Open(sealed, []byte(current.KID))
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("open signing key %s: %w", current.KID, errors.Join(err, errors.New("wrong KEK or corrupt key")))
		}
		signer := token.SigningKey{ID: current.KID, Key: ed25519.NewKeyFromSeed(seed)}
		k.ring, k.loadedAt = token.NewRing(pubs, &signer), time.Now()
		return k.ring, nil
	}
	return nil, errors.New("unreachable")
}

// createFirstKey gives a region its first signing key, active at once. Two nodes
// racing both try; the serializable transaction lets only one insert.
func (k *keyring) createFirstKey(ctx context.Context) error {
	_, err := AddSigningKey(ctx, k.store, k.kek, k.region, 0, true)
	return err
}

// AddSigningKey generates a signing key for region, seals its private half under kek
// and publishes it. It starts signing after publishDelay (so verifiers that cache JWKS
// learn it first); the region's current keys then retire and stay published until
// every token they signed has expired. With onlyIfNone it does nothing when the region
// already has a key. It returns the new key's id ("" when nothing was added).
func AddSigningKey(ctx context.Context, store *schema.Store, k *kek.KEK, region string, publishDelay time.Duration, onlyIfNone bool) (string, error) {
	now := time.Now()
	priv, pub, err := token.GenerateKey(region, now)
	if err != nil {
		return "", err
	}
	added, err := store.AddSigningKey(ctx, schema.NewSigningKey{
		KID: pub.ID, Region: region, PublicKey: pub.Key,
		Sealed: k.Seal(priv.Key.Seed(), []byte(pub.ID)), KEKID: k.ID(),
		ActiveAt: now.Add(publishDelay), RetireAfter: schema.MaxAccessTokenTTL + time.Minute,
	}, onlyIfNone)
	if err != nil || !added {
		return "", err
	}
	return pub.ID, nil
}
