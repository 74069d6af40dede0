package schema

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Sentinel errors returned (wrapped) by the store. Callers test them with errors.Is.
var (
	// ErrNotFound: the row does not exist in the caller's tenant.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the row already exists, or the change conflicts with current state.
	ErrConflict = errors.New("conflict")
	// ErrPrecondition: the change is valid but the current state forbids it.
	ErrPrecondition = errors.New("failed precondition")
	// ErrUnavailable: the database could not be reached or did not answer in time.
	// The operation may or may not have been applied only when it is an
	// *AmbiguousCommitError.
	ErrUnavailable = errors.New("database unavailable")
	// ErrMoved: the tenant's home region changed while the change was being made;
	// nothing was written. Retrying routes the change to the new home.
	ErrMoved = errors.New("tenant moved to another region")
	// ErrRehoming: the tenant is being rehomed in batches (it is fenced); nothing was
	// written. Retry after the move finishes.
	ErrRehoming = errors.New("tenant is being rehomed; retry later")
	// ErrRefreshReuse: a refresh token that was already rotated was presented again.
	// The session it belongs to has been revoked (committed) before this error is
	// returned.
	ErrRefreshReuse = errors.New("refresh token already used: its session has been revoked")
	// ErrReplay: a one-time code (TOTP step or recovery code) was already used.
	ErrReplay = errors.New("one-time code already used")
)

// FieldError reports a bad input value. Field is the API field name (snake_case).
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// AmbiguousCommitError means the connection broke while a transaction was committing:
// the change may or may not be durable. Callers must re-read before retrying a
// non-idempotent write.
type AmbiguousCommitError struct{ Err error }

func (e *AmbiguousCommitError) Error() string {
	return "commit outcome unknown: " + e.Err.Error()
}

func (e *AmbiguousCommitError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// classify turns driver errors into the store's sentinels, keeping SQL text away from
// callers. It is applied once, at the edge of every store method.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var fe *FieldError
	if errors.As(err, &fe) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) || errors.Is(err, ErrPrecondition) || errors.Is(err, ErrUnavailable) ||
		errors.Is(err, ErrMoved) || errors.Is(err, ErrRehoming) || errors.Is(err, ErrRefreshReuse) || errors.Is(err, ErrReplay) {
		return err // already classified
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w", ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001": // serialization_failure: kept in the chain, so the transaction helper retries it
			return fmt.Errorf("%w: the change conflicted with a concurrent one; retry: %w", ErrUnavailable, err)
		case "23505": // unique_violation
			return fmt.Errorf("%w: %s", ErrConflict, constraintName(pgErr))
		case "23503": // foreign_key_violation
			return fmt.Errorf("%w: referenced row missing (%s)", ErrNotFound, constraintName(pgErr))
		case "23514", "22001", "22P02", "23502": // check, too long, bad text repr, not null
			return &FieldError{Field: constraintName(pgErr), Reason: "rejected by the database"}
		case "57P01", "57P02", "57P03", "53300", "08000", "08003", "08006", "08001", "08004":
			// admin shutdown, crash shutdown, cannot connect now, too many connections,
			// connection exceptions.
			return fmt.Errorf("%w: %s", ErrUnavailable, pgErr.Code)
		}
		return fmt.Errorf("database error %s", pgErr.Code)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	if errors.As(err, &connErr) || errors.As(err, &netErr) || pgconn.SafeToRetry(err) ||
		errors.Is(err, net.ErrClosed) || isConnClosed(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

func constraintName(e *pgconn.PgError) string {
	if e.ConstraintName != "" {
		return e.ConstraintName
	}
	if e.ColumnName != "" {
		return e.ColumnName
	}
	return e.Code
}

func isConnClosed(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return false
	}
	msg := strings.ToLower(err.Error())
	for _, s := range []string{"conn closed", "unexpected eof", "broken pipe", "connection reset", "failed to connect", "connection refused"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
