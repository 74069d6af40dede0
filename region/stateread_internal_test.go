package region

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// gatedReads wraps the store's decision read: each read runs its statement, then
// reports its keys on ran and waits for release before returning, so a test can hold
// a read in flight after its statement executed.
type gatedReads struct {
	store   *schema.Store
	ran     chan int
	release chan struct{}
	fail    error // returned instead of the states when set
}

func (g *gatedReads) read(ctx context.Context, region string, keys []schema.StateKey) ([]schema.DecisionState, error) {
	st, err := g.store.ReadDecisionStates(ctx, region, keys)
	g.ran <- len(keys)
	<-g.release
	if g.fail != nil {
		return nil, g.fail
	}
	return st, err
}

// pending is how many requests wait in region's queue.
func (r *stateReader) pending(region string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.queues[region]; q != nil {
		return len(q.pending)
	}
	return 0
}

func waitPending(t *testing.T, r *stateReader, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.pending("us-east") != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", r.pending("us-east"), n)
		}
		time.Sleep(time.Millisecond)
	}
}

type stateResult struct {
	st  []schema.DecisionState
	err error
}

// TestStateReaderSharesOnlyLaterReads holds a read in flight after its statement ran,
// queues requests behind it, revokes the session they ask about, and checks that the
// queued requests are served together by one later read that sees the revocation:
// a request never joins a read that started before it arrived.
func TestStateReaderSharesOnlyLaterReads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := schematest.NewStore(t, "us-east")
	op := schema.Change{Actor: "operator"}
	tn, err := store.CreateTenant(ctx, op, schema.NewTenant{ID: "acme", Name: "Acme", HomeRegion: "us-east"})
	if err != nil {
		t.Fatal(err)
	}
	alice, err := store.CreateIdentity(ctx, op, tn.Scope(), schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "Alice"})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := store.CreateSession(ctx, op, tn.Scope(), schema.NewSession{IdentityID: alice.ID, GrantType: "password", ExpiresAt: time.Now().Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := schema.StateKey{TenantID: "acme", IdentityID: alice.ID, SessionID: sess.ID}

	g := &gatedReads{store: store, ran: make(chan int, 10), release: make(chan struct{})}
	var mu sync.Mutex
	var observed []int
	r := newStateReader(store, 1, 128, 10*time.Second, func(keys int, err error) {
		mu.Lock()
		observed = append(observed, keys)
		mu.Unlock()
	})
	r.readStates = g.read

	first := make(chan stateResult, 1)
	go func() {
		st, err := r.read(ctx, "us-east", key)
		first <- stateResult{st, err}
	}()
	if n := <-g.ran; n != 1 {
		t.Fatalf("a lone request's read carried %d keys, want 1", n)
	}
	// The first read's statement has run and it is still in flight: these arrive now.
	const later = 10
	results := make(chan stateResult, later)
	for range later {
		go func() {
			st, err := r.read(ctx, "us-east", key, key)
			results <- stateResult{st, err}
		}()
	}
	waitPending(t, r, later)
	if _, err := store.RevokeSession(ctx, op, tn.Scope(), sess.ID, ""); err != nil {
		t.Fatal(err)
	}
	g.release <- struct{}{} // the first read returns; the next starts with every queued request
	if res := <-first; res.err != nil || !res.st[0].SessionFound || res.st[0].SessionRevoked {
		t.Fatalf("first request: %+v, %v; want the live session it read before the revocation", res.st, res.err)
	}
	if n := <-g.ran; n != 2*later {
		t.Fatalf("the second read carried %d keys, want all %d queued requests' %d", n, later, 2*later)
	}
	g.release <- struct{}{}
	for range later {
		res := <-results
		if res.err != nil || len(res.st) != 2 {
			t.Fatalf("queued request: %+v, %v; want its two states", res.st, res.err)
		}
		for _, st := range res.st {
			if !st.SessionRevoked {
				t.Fatalf("a request queued before the revocation was acknowledged read the session live: it joined an older read")
			}
		}
	}
	mu.Lock()
	if len(observed) != 2 || observed[0] != 1 || observed[1] != 2*later {
		t.Errorf("reads observed %v, want [1 %d]", observed, 2*later)
	}
	mu.Unlock()
}

// TestStateReaderFailsClosed: a failed read fails every request it served, a request
// whose context ends stops waiting, and the queue goes on serving later requests.
func TestStateReaderFailsClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := schematest.NewStore(t, "us-east")
	if _, err := store.CreateTenant(ctx, schema.Change{Actor: "operator"}, schema.NewTenant{ID: "acme", Name: "Acme", HomeRegion: "us-east"}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("database gone")
	g := &gatedReads{store: store, ran: make(chan int, 10), release: make(chan struct{}), fail: boom}
	r := newStateReader(store, 1, 4, 10*time.Second, nil)
	r.readStates = g.read
	key := schema.StateKey{TenantID: "acme"}

	first := make(chan error, 1)
	go func() {
		_, err := r.read(ctx, "us-east", key)
		first <- err
	}()
	<-g.ran
	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() {
		_, err := r.read(cctx, "us-east", key)
		gaveUp <- err
	}()
	waitPending(t, r, 1)
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v, want context.Canceled", err)
	}
	// More keys than one read carries are refused, not split.
	if _, err := r.read(ctx, "us-east", key, key, key, key, key); !errors.Is(err, errTooManyKeys) {
		t.Fatalf("5 keys with at most 4 a read: %v", err)
	}
	g.release <- struct{}{}
	if err := <-first; !errors.Is(err, boom) {
		t.Fatalf("request of a failed read: %v, want its error", err)
	}
	// The cancelled waiter's keys are still read (its read was due); then the queue is
	// empty and a new request starts its own read, which succeeds.
	<-g.ran
	g.fail = nil
	g.release <- struct{}{}
	done := make(chan stateResult, 1)
	go func() {
		st, err := r.read(ctx, "us-east", key)
		done <- stateResult{st, err}
	}()
	<-g.ran
	g.release <- struct{}{}
	if res := <-done; res.err != nil || !res.st[0].TenantFound {
		t.Fatalf("after a failed read: %+v, %v; want the tenant read", res.st, res.err)
	}
}
