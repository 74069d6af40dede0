package schema

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cockroachdb/cockroach-go/v2/crdb"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestClassifyKeepsSerializationFailuresRetryable: a serialization failure classified
// inside a transaction (by a helper such as getIdentity) must still be one the
// transaction helper retries, and outside one it is ErrUnavailable (retry), not an
// internal error.
func TestClassifyKeepsSerializationFailuresRetryable(t *testing.T) {
	t.Parallel()
	raw := fmt.Errorf("read identity: %w", &pgconn.PgError{Code: "40001", Message: "could not serialize access"})
	got := classify(raw)
	var pgErr *pgconn.PgError
	if !errors.As(got, &pgErr) || pgErr.Code != "40001" {
		t.Fatalf("classify(40001) = %v: the SQLSTATE is lost, so crdb.ExecuteTx would not retry", got)
	}
	if !errors.Is(got, ErrUnavailable) {
		t.Fatalf("classify(40001) = %v, want ErrUnavailable", got)
	}
	if !errors.Is(classify(got), ErrUnavailable) {
		t.Fatal("classifying twice changed the error")
	}
	// The retry loop sees it as retryable: a function failing once with it is run again.
	runs := 0
	err := crdb.Execute(func() error {
		if runs++; runs == 1 {
			return got
		}
		return nil
	})
	if err != nil || runs != 2 {
		t.Fatalf("crdb.Execute with a classified 40001: err %v after %d runs, want success after 2", err, runs)
	}
}
