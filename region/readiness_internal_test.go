package region

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/pglocal"
)

// TestReadinessSharesOnePing: concurrent probes cause one database ping per interval
// (pings of a real PostgreSQL, counted), a fresh answer is reused only within the
// interval, and a database that goes down turns readiness red on the next interval.
func TestReadinessSharesOnePing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg, err := pglocal.Start(ctx, pglocal.Config{})
	if err != nil {
		t.Fatalf("private postgres: %v", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = pg.Stop()
		}
	}()
	pool, err := schema.Open(ctx, pg.URL("postgres"), schema.PoolConfig{ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := schema.New(pool, schema.Config{Region: "us-east", Node: "n1"})
	var pings atomic.Int64
	ping := func(ctx context.Context) error {
		pings.Add(1)
		return store.Ping(ctx)
	}
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	r := newReadiness(ping, time.Second, clock)

	probe := func(n int) []error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = r.check(ctx) })
		}
		wg.Wait()
		return errs
	}
	for i, err := range probe(64) {
		if err != nil {
			t.Fatalf("probe %d with the database up: %v", i, err)
		}
	}
	if got := pings.Load(); got != 1 {
		t.Fatalf("64 concurrent probes sent %d pings, want 1", got)
	}
	advance(999 * time.Millisecond)
	probe(16)
	if got := pings.Load(); got != 1 {
		t.Fatalf("probes within the interval sent %d pings in all, want 1", got)
	}
	advance(time.Millisecond) // the answer is now a full interval old: never reused
	probe(16)
	if got := pings.Load(); got != 2 {
		t.Fatalf("probes after the interval sent %d pings in all, want 2", got)
	}

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	for i, err := range probe(8) {
		if err != nil {
			t.Fatalf("probe %d within the interval of the last success: %v (the answer is shared for the interval)", i, err)
		}
	}
	advance(time.Second)
	for i, err := range probe(16) {
		if err == nil {
			t.Fatalf("probe %d an interval after the database went down: ready, want an error", i)
		}
	}
	if got := pings.Load(); got != 3 {
		t.Fatalf("%d pings in all, want 3 (the failure is shared too)", got)
	}
}

// TestReadinessCallerGivesUp: a probe whose context ends gets its context's error; the
// ping it started still answers the others.
func TestReadinessCallerGivesUp(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var pings atomic.Int64
	r := newReadiness(func(ctx context.Context) error {
		pings.Add(1)
		select {
		case <-release:
			return ctx.Err() // nil: the ping's context is not the first caller's
		case <-time.After(10 * time.Second):
			return context.DeadlineExceeded
		}
	}, time.Second, time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.check(ctx) }()
	for pings.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("the canceled probe got %v, want context.Canceled", err)
	}
	other := make(chan error, 1)
	go func() { other <- r.check(context.Background()) }()
	close(release)
	if err := <-other; err != nil {
		t.Fatalf("the other probe got %v, want the shared ping's nil", err)
	}
	if got := pings.Load(); got != 1 {
		t.Fatalf("%d pings, want 1", got)
	}
}
