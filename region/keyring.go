package region

import (
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
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

// loadedRing is a snapshot and when it was loaded, with when this region's current
// key of each algorithm began signing (exported as a metric: rotation age).
type loadedRing struct {
	ring      *token.Ring
	at        time.Time
	signsFrom map[token.Algorithm]time.Time
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
	err = k.shared(ctx, "forced", func(ctx context.Context) error {
		now := time.Now()
		if now.Sub(time.Unix(0, k.lastForced.Load())) < time.Second {
			return nil
		}
		k.lastForced.Store(now.UnixNano())
		_, err := k.load(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	return k.cur.Load().ring, nil
}

// keyLoadTimeout bounds a shared key load, which no single caller's deadline does.
const keyLoadTimeout = 10 * time.Second

// shared runs fn once for the concurrent callers of key, under a context detached from
// the caller that started it (bounded by keyLoadTimeout): a caller with a 1 ms deadline
// must not fail the load for every request waiting on it. Each caller stops waiting
// when its own ctx ends. A key created here is not part of the caller's idempotent
// call (its other waiters need it committed).
func (k *keyring) shared(ctx context.Context, key string, fn func(context.Context) error) error {
	ch := k.loads.DoChan(key, func() (any, error) {
		lctx, cancel := context.WithTimeout(schema.WithoutIdempotentCall(context.WithoutCancel(ctx)), keyLoadTimeout)
		defer cancel()
		return nil, fn(lctx)
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// load reloads the snapshot, sharing one load among concurrent callers.
func (k *keyring) load(ctx context.Context) (*token.Ring, error) {
	err := k.shared(ctx, "load", func(ctx context.Context) error {
		r, from, err := k.read(ctx)
		if err == nil {
			k.cur.Store(&loadedRing{ring: r, at: time.Now(), signsFrom: from})
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return k.cur.Load().ring, nil
}

// read reads the signing keys and opens this region's current private key of each
// algorithm, returning with the ring when each of those keys became active. A region
// always has an EdDSA key (created here on first use); its RS256 key is created by
// signer when a tenant first needs one.
func (k *keyring) read(ctx context.Context) (*token.Ring, map[token.Algorithm]time.Time, error) {
	if k.kek == nil {
		return nil, nil, ErrNoKEK
	}
	for attempt := 0; attempt < 2; attempt++ {
		rows, err := k.store.ListSigningKeys(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("load signing keys: %w", err)
		}
		now := time.Now()
		var pubs []token.PublicKey
		current := map[token.Algorithm]*schema.SigningKey{}
		for i, r := range rows {
			pub, err := publicKey(r)
			if err != nil {
				return nil, nil, err
			}
			pubs = append(pubs, pub)
			if r.Region == k.region && !r.ActiveAt.After(now) && (r.RetiredAt.IsZero() || r.RetiredAt.After(now)) {
				if c := current[pub.Alg]; c == nil || r.ActiveAt.After(c.ActiveAt) {
					current[pub.Alg] = &rows[i]
				}
			}
		}
		if current[token.EdDSA] == nil {
			if attempt > 0 {
				return nil, nil, fmt.Errorf("region %s has no active signing key", k.region)
			}
			if err := k.createFirstKey(ctx); err != nil {
				return nil, nil, err
			}
			continue
		}
		var signers []*token.SigningKey
		from := map[token.Algorithm]time.Time{}
		for _, alg := range token.Algorithms() {
			if cur := current[alg]; cur != nil {
				s, err := k.open(ctx, alg, cur.KID)
				if err != nil {
					return nil, nil, err
				}
				signers = append(signers, &s)
				from[alg] = cur.ActiveAt
			}
		}
		return token.NewRing(pubs, signers...), from, nil
	}
	return nil, nil, errors.New("unreachable")
}

// publicKey decodes a signing_keys row: an Ed25519 key as is, an RSA key from PKIX DER.
func publicKey(r schema.SigningKey) (token.PublicKey, error) {
	alg, err := token.EdDSA, error(nil)
	if r.Alg != "" {
		alg, err = token.ParseAlgorithm(r.Alg)
	}
	if err != nil {
		return token.PublicKey{}, fmt.Errorf("signing key %s: %w", r.KID, err)
	}
	pub := token.PublicKey{ID: r.KID, Region: r.Region, Alg: alg, ExpiresAt: r.ExpiresAt}
	if alg == token.EdDSA {
		pub.Key = ed25519.PublicKey(r.PublicKey)
		return pub, nil
	}
	parsed, err := x509.ParsePKIXPublicKey(r.PublicKey)
	rk, ok := parsed.(*rsa.PublicKey)
	if err != nil || !ok {
		return token.PublicKey{}, fmt.Errorf("signing key %s: not a PKIX RSA public key", r.KID)
	}
	pub.RSA = rk
	return pub, nil
}

// open unseals this region's private key kid of alg.
func (k *keyring) open(ctx context.Context, alg token.Algorithm, kid string) (token.SigningKey, error) {
	sealed, kekID, err := k.store.SealedSigningKey(ctx, k.region, kid)
	if err != nil {
		return token.SigningKey{}, err
	}
	if !k.kek.Has(kekID) {
		return token.SigningKey{}, fmt.Errorf("signing key %s is sealed under KEK %s, which this node does not hold (its KEK seals with %s)", kid, kekID, k.kek.ID())
	}
	plain, err := k.kek.Open(sealed, []byte(kid))
	corrupt := func(err error) error {
		return fmt.Errorf("open signing key %s: %w", kid, errors.Join(err, errors.New("wrong KEK or corrupt key")))
	}
	if err != nil {
		return token.SigningKey{}, corrupt(err)
	}
	if alg == token.EdDSA {
		if len(plain) != ed25519.SeedSize {
			return token.SigningKey{}, corrupt(nil)
		}
		return token.SigningKey{ID: kid, Alg: alg, Key: ed25519.NewKeyFromSeed(plain)}, nil
	}
	parsed, err := x509.ParsePKCS8PrivateKey(plain)
	rk, ok := parsed.(*rsa.PrivateKey)
	if err != nil || !ok {
		return token.SigningKey{}, corrupt(err)
	}
	return token.SigningKey{ID: kid, Alg: alg, RSA: rk}, nil
}

// signer returns a snapshot that can sign with alg. A region's first key of an
// algorithm other than EdDSA is made here, when a tenant that uses it first needs a
// token (active at once; racing nodes insert one between them).
func (k *keyring) signer(ctx context.Context, alg token.Algorithm) (*token.Ring, error) {
	r, err := k.get(ctx)
	if err != nil {
		return nil, err
	}
	if _, ok := r.SignerFor(alg); ok {
		return r, nil
	}
	err = k.shared(ctx, "create "+string(alg), func(ctx context.Context) error {
		if _, err := AddSigningKeyAlg(ctx, k.store, k.kek, k.region, alg, 0, true); err != nil {
			return err
		}
		_, err := k.load(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	r = k.cur.Load().ring
	if _, ok := r.SignerFor(alg); !ok {
		return nil, fmt.Errorf("region %s has no active %s signing key", k.region, alg)
	}
	return r, nil
}

// createFirstKey gives a region its first signing key, active at once. Two nodes
// racing both try; the serializable transaction lets only one insert.
func (k *keyring) createFirstKey(ctx context.Context) error {
	_, err := AddSigningKey(ctx, k.store, k.kek, k.region, 0, true)
	return err
}

// AddSigningKey adds an EdDSA signing key; see AddSigningKeyAlg.
func AddSigningKey(ctx context.Context, store KeyPublisher, k *kek.KEK, region string, publishDelay time.Duration, onlyIfNone bool) (string, error) {
	return AddSigningKeyAlg(ctx, store, k, region, token.EdDSA, publishDelay, onlyIfNone)
}

// AddSigningKeyAlg generates a signing key of alg for region, seals its private half
// under kek (an Ed25519 seed, or an RSA key as PKCS #8 DER) and publishes it. It
// starts signing after publishDelay (so verifiers that cache JWKS learn it first); the
// region's current keys of alg then retire and stay published until every token they
// signed has expired. With onlyIfNone it does nothing when the region already has a
// key of alg. It returns the new key's id ("" when nothing was added).
func AddSigningKeyAlg(ctx context.Context, store KeyPublisher, k *kek.KEK, region string, alg token.Algorithm, publishDelay time.Duration, onlyIfNone bool) (string, error) {
	if k == nil {
		return "", ErrNoKEK
	}
	now := time.Now()
	priv, pub, err := token.GenerateKeyAlg(region, alg, now)
	if err != nil {
		return "", err
	}
	var public, secret []byte
	switch pub.Alg {
	case token.RS256:
		if public, err = x509.MarshalPKIXPublicKey(pub.RSA); err != nil {
			return "", fmt.Errorf("encode signing key: %w", err)
		}
		if secret, err = x509.MarshalPKCS8PrivateKey(priv.RSA); err != nil {
			return "", fmt.Errorf("encode signing key: %w", err)
		}
	default:
		public, secret = pub.Key, priv.Key.Seed()
	}
	added, err := store.AddSigningKey(ctx, schema.NewSigningKey{
		KID: pub.ID, Region: region, Alg: string(alg), PublicKey: public,
		Sealed: k.Seal(secret, []byte(pub.ID)), KEKID: k.ID(),
		ActiveAt: now.Add(publishDelay), RetireAfter: schema.MaxAccessTokenTTL + time.Minute,
	}, onlyIfNone)
	if err != nil || !added {
		return "", err
	}
	return pub.ID, nil
}
