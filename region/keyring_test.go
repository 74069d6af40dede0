package region

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/region/kek"
	"github.com/keyplane/keyplane/region/token"
	"github.com/keyplane/keyplane/schema"
)

// gatedKeys is a keyStore in memory whose ListSigningKeys can be held (a slow
// database).
type gatedKeys struct {
	kek *kek.KEK

	mu      sync.Mutex
	rows    []schema.SigningKey
	sealed  map[string][]byte
	gate    chan struct{} // not nil: ListSigningKeys reports on entered, then waits for gate
	entered chan struct{}
}

func (g *gatedKeys) add(t *testing.T, region string) string {
	t.Helper()
	priv, pub, err := token.GenerateKey(region, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rows = append(g.rows, schema.SigningKey{KID: pub.ID, Region: region, PublicKey: pub.Key, ActiveAt: time.Now().Add(-time.Minute)})
	g.sealed[pub.ID] = g.kek.Seal(priv.Key.Seed(), []byte(pub.ID))
	return pub.ID
}

func (g *gatedKeys) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate, g.entered = make(chan struct{}), make(chan struct{}, 1)
}

func (g *gatedKeys) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.gate)
	g.gate = nil
}

func (g *gatedKeys) ListSigningKeys(ctx context.Context) ([]schema.SigningKey, error) {
	g.mu.Lock()
	gate, entered := g.gate, g.entered
	g.mu.Unlock()
	if gate != nil {
		entered <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]schema.SigningKey(nil), g.rows...), nil
}

func (g *gatedKeys) SealedSigningKey(_ context.Context, _, kid string) ([]byte, string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sealed[kid], g.kek.ID(), nil
}

func (g *gatedKeys) AddSigningKey(context.Context, schema.NewSigningKey, bool) (bool, error) {
	return false, errors.New("gatedKeys: no writes")
}

// newGatedKeys returns an empty gatedKeys under a fresh KEK.
func newGatedKeys(t *testing.T) *gatedKeys {
	t.Helper()
	text, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	kk, err := kek.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return &gatedKeys{kek: kk, sealed: map[string][]byte{}}
}

// TestKeyringServesDuringSlowRefresh: while one caller reloads a stale snapshot from a
// slow store, every other caller gets the current snapshot at once.
func TestKeyringServesDuringSlowRefresh(t *testing.T) {
	t.Parallel()
	store := newGatedKeys(t)
	kk := store.kek
	store.add(t, "us-east")
	k := &keyring{store: store, kek: kk, region: "us-east", refreshEvery: time.Nanosecond} // always stale
	ctx := context.Background()
	first, err := k.get(ctx)
	if err != nil {
		t.Fatal(err)
	}

	store.hold()
	newKid := store.add(t, "eu-west")
	refreshed := make(chan *token.Ring, 1)
	go func() {
		r, err := k.get(ctx)
		if err != nil {
			t.Error(err)
		}
		refreshed <- r
	}()
	<-store.entered // that caller is reloading, held by the store

	served := make(chan error, 1)
	go func() {
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for range 50 {
			wg.Go(func() {
				if r, err := k.get(ctx); err != nil || r != first {
					errs <- errors.Join(err, errors.New("not the current snapshot"))
				}
			})
		}
		wg.Wait()
		close(errs)
		served <- <-errs
	}()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("readers waited behind the refresh")
	}

	store.release()
	if r := <-refreshed; r == nil || !r.Has(newKid) {
		t.Fatal("the refresh did not load the new key")
	}
	if r, err := k.forKid(ctx, newKid); err != nil || !r.Has(newKid) {
		t.Fatalf("after the refresh: %v, want a snapshot with %s", err, newKid)
	}
}

// TestKeyringLoadOutlivesItsFirstCaller: a caller that gives up (a 1 ms deadline) while
// its load is running does not fail the load for the callers waiting on it, and itself
// stops waiting at once.
func TestKeyringLoadOutlivesItsFirstCaller(t *testing.T) {
	t.Parallel()
	store := newGatedKeys(t)
	kid := store.add(t, "us-east")
	k := &keyring{store: store, kek: store.kek, region: "us-east", refreshEvery: time.Hour}
	store.hold()
	impatient, giveUp := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := k.get(impatient)
		first <- err
	}()
	<-store.entered // the impatient caller's load is reading the store
	second := make(chan error, 1)
	go func() {
		r, err := k.get(context.Background())
		if err == nil && !r.Has(kid) {
			err = errors.New("the snapshot lacks the region's key")
		}
		second <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the second caller join the load (if it joins late, it loads anew: still no error)
	giveUp()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller that gave up got %v, want context.Canceled", err)
	}
	store.release()
	if err := <-second; err != nil {
		t.Fatalf("a waiting caller failed with the first caller's cancellation: %v", err)
	}
}
