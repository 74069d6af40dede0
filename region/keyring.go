package region

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/keyplane/keyplane/region/kek"
	"github.com/keyplane/keyplane/region/token"
	"github.com/keyplane/keyplane/schema"
)

// keyring keeps the node's snapshot of the signing keys: every region's public keys
// (to verify) and this region's current private key (to sign). Keys are not revocation
// state, so caching them is safe; the snapshot is refreshed every refreshEvery and at
// once (at most once a second) when a token names a kid the snapshot lacks.
//
// Readers never wait behind a refresh of a snapshot they already have: when it is
// stale, one caller reloads it while the others go on with the current one. Only the
// first load, and a forced load for a missing kid, are waited for (one load shared by
// every caller). Safe for concurrent use.
type keyring struct {
	store        keyStore
	kek          *kek.KEK
	region       string
	refreshEvery time.Duration

	cur        atomic.Pointer[loadedRing] // nil until the first load
	loads      singleflight.Group
	refreshing atomic.Bool  // a caller is reloading a stale snapshot
	lastForced atomic.Int64 // unix nanoseconds of the last forced load
}

// loadedRing is a snapshot and when it was loaded.
type loadedRing struct {
	ring *token.Ring
	at   time.Time
}

// keyStore is what the keyring needs of the store. *schema.Store satisfies it.
type keyStore interface {
	ListSigningKeys(ctx context.Context) ([]schema.SigningKey, error)
	SealedSigningKey(ctx context.Context, region, kid string) (sealed []byte, kekID string, err error)
	KeyPublisher
}

// KeyPublisher publishes signing keys. *schema.Store satisfies it.
type KeyPublisher interface {
	AddSigningKey(ctx context.Context, k schema.NewSigningKey, onlyIfNone bool) (bool, error)
}

var _ keyStore = (*schema.Store)(nil)

// ErrNoKEK: the node has no key-encryption key, so it can neither sign nor open keys.
var ErrNoKEK = errors.New("this node has no key-encryption key: start it with --kek-file or KEYPLANE_KEK")

func (k *keyring) get(ctx context.Context) (*token.Ring, error) {
	cur := k.cur.Load()
	if cur == nil {
		return k.load(ctx)
	}
	if time.Since(cur.at) >= k.refreshEvery && k.refreshing.CompareAndSwap(false, true) {
		defer k.refreshing.Store(false)
		return k.load(ctx)
	}
	return cur.ring, nil
}

// forKid returns a snapshot that has kid if one can be had, reloading when the current
// snapshot lacks it (a key published by another region since the last refresh).
// Callers that come while such a load runs wait for it.
func (k *keyring) forKid(ctx context.Context, kid string) (*token.Ring, error) {
	r, err := k.get(ctx)
	if err != nil || kid == "" || r.Has(kid) {
		return r, err
	}
	_, err, _ = k.loads.Do("forced", func() (any, error) {
		now := time.Now()
		if now.Sub(time.Unix(0, k.lastForced.Load())) < time.Second {
			return nil, nil
		}
		k.lastForced.Store(now.UnixNano())
		return k.load(ctx)
	})
	if err != nil {
		return nil, err
	}
	return k.cur.Load().ring, nil
}

// load reloads the snapshot, sharing one load among concurrent callers.
func (k *keyring) load(ctx context.Context) (*token.Ring, error) {
	_, err, _ := k.loads.Do("load", func() (any, error) {
		r, err := k.read(ctx)
		if err == nil {
			k.cur.Store(&loadedRing{ring: r, at: time.Now()})
		}
		return nil, err
	})
	if err != nil {
		return nil, err
	}
	return k.cur.Load().ring, nil
}

// read reads the signing keys and opens this region's current private key.
func (k *keyring) read(ctx context.Context) (*token.Ring, error) {
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
		if !k.kek.Has(kekID) {
			return nil, fmt.Errorf("signing key %s is sealed under KEK %s, which this node does not hold (its KEK seals with %s)", current.KID, kekID, k.kek.ID())
		}
		seed, err := k.kek.Open(sealed, []byte(current.KID))
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("open signing key %s: %w", current.KID, errors.Join(err, errors.New("wrong KEK or corrupt key")))
		}
		signer := token.SigningKey{ID: current.KID, Key: ed25519.NewKeyFromSeed(seed)}
		return token.NewRing(pubs, &signer), nil
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
func AddSigningKey(ctx context.Context, store KeyPublisher, k *kek.KEK, region string, publishDelay time.Duration, onlyIfNone bool) (string, error) {
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
