package schema_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// seedSkew creates two tenants whose policy revisions the write-skew test reads.
func seedSkew(t *testing.T, s *schema.Store) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Pool().Exec(ctx, `INSERT INTO regions (name) VALUES ('r1') ON CONFLICT DO NOTHING`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, `INSERT INTO tenants (id, name, home_region) VALUES ('skew-a', 'a', 'r1'), ('skew-b', 'b', 'r1')`); err != nil {
		t.Fatal(err)
	}
}

// writeSkew runs two transactions that each read both rows and then update a
// different one, holding both at a barrier between read and write so that under
// SERIALIZABLE one of them must fail with 40001. It returns how many times the
// closures ran and the two results.
func writeSkew(t *testing.T, run func(ctx context.Context, fn func(pgx.Tx) error) error) (int64, [2]error) {
	t.Helper()
	ctx := context.Background()
	var attempts atomic.Int64
	var barrier sync.WaitGroup
	barrier.Add(2)
	var first [2]atomic.Bool
	var errs [2]error
	var wg sync.WaitGroup
	for i, id := range []string{"skew-a", "skew-b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = run(ctx, func(tx pgx.Tx) error {
				attempts.Add(1)
				var sum int64
				if err := tx.QueryRow(ctx, `SELECT sum(policy_revision) FROM tenants WHERE id IN ('skew-a', 'skew-b')`).Scan(&sum); err != nil {
					return err
				}
				if first[i].CompareAndSwap(false, true) {
					barrier.Done()
					barrier.Wait()
				}
				_, err := tx.Exec(ctx, `UPDATE tenants SET policy_revision = $1 + 1 WHERE id = $2`, sum, id)
				return err
			})
		}()
	}
	wg.Wait()
	return attempts.Load(), errs
}

// TestTxRetriesSerializationFailure forces a write skew and checks that the store's
// transaction helper retried the loser (40001) and that both changes are durable.
func TestTxRetriesSerializationFailure(t *testing.T) {
	t.Parallel()
	s := schematest.NewStore(t, "r1")
	seedSkew(t, s)
	attempts, errs := writeSkew(t, s.RunTx)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("transaction %d: %v", i, err)
		}
	}
	if attempts < 3 {
		t.Fatalf("closures ran %d times, want at least 3 (one retry after 40001)", attempts)
	}
	var a, b int64
	if err := s.Pool().QueryRow(context.Background(), `SELECT
  (SELECT policy_revision FROM tenants WHERE id = 'skew-a'),
  (SELECT policy_revision FROM tenants WHERE id = 'skew-b')`).Scan(&a, &b); err != nil {
		t.Fatal(err)
	}
	// Serially: the first writer sets its row to 1+1+1 = 3, the retried one sees it and
	// sets its own to 3+1+1 = 5. Any interleaving that lost an update would differ.
	if !((a == 3 && b == 5) || (a == 5 && b == 3)) {
		t.Fatalf("after both transactions: revisions %d and %d, want 3 and 5 in some order", a, b)
	}
}

func TestAmbiguousCommitErrorIsUnavailable(t *testing.T) {
	t.Parallel()
	err := error(&schema.AmbiguousCommitError{Err: errors.New("connection reset")})
	if !errors.Is(err, schema.ErrUnavailable) {
		t.Fatal("an ambiguous commit must count as unavailable")
	}
}
