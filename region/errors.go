package region

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/schema"
)

// Credential failures. They are plain sentinels, not *connect.Error values, because
// the request id is written into a Connect error's metadata: connectError builds a
// fresh one per call.
var (
	errBadLogin      = errors.New("invalid email or password")
	errInvalidAPIKey = errors.New("api_key: invalid, expired or revoked")
	errInvalidClient = errors.New("invalid client credentials")
)

// connectError maps a non-nil error from the layers below to a Connect error. It is
// the only place that chooses codes for sentinel errors. Unknown errors become
// Internal with the request id only: their text may hold SQL or data and is logged,
// never sent.
func connectError(ctx context.Context, log *slog.Logger, err error) *connect.Error {
	var ce *connect.Error
	var fe *schema.FieldError
	var rl *rateLimited
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.As(err, &rl):
		return exhausted(rl.Error(), rl.retryAfter)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("request canceled"))
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("deadline exceeded"))
	case errors.Is(err, schema.ErrConflict):
		if errors.As(err, &fe) {
			return connect.NewError(connect.CodeAlreadyExists, fe)
		}
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.As(err, &fe):
		return connect.NewError(connect.CodeInvalidArgument, fe)
	case errors.Is(err, schema.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, ErrNoKEK):
		return connect.NewError(connect.CodeFailedPrecondition, ErrNoKEK)
	case errors.Is(err, schema.ErrPrecondition):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, errBadLogin), errors.Is(err, errInvalidAPIKey), errors.Is(err, errInvalidClient):
		return connect.NewError(connect.CodeUnauthenticated, err)
	case errors.Is(err, schema.ErrReplay):
		// The same answer as a wrong code: a replay reveals nothing more.
		return connect.NewError(connect.CodeUnauthenticated, errors.New("invalid one-time code"))
	case errors.Is(err, schema.ErrRefreshReuse):
		return connect.NewError(connect.CodeUnauthenticated, errors.New("refresh_token: "+schema.ErrRefreshReuse.Error()))
	case errors.Is(err, schema.ErrRehoming):
		return rehomingError(err.Error() + "; nothing was written, retry in a few seconds")
	case errors.Is(err, schema.ErrMoved):
		return connect.NewError(connect.CodeAborted, fmt.Errorf("%w; nothing was written, retry", err))
	case errors.Is(err, schema.ErrUnavailable):
		var amb *schema.AmbiguousCommitError
		if errors.As(err, &amb) {
			log.WarnContext(ctx, "ambiguous commit", "request_id", requestID(ctx), "err", err)
			return connect.NewError(connect.CodeUnavailable, errors.New("database connection lost while committing: the change may or may not be applied; read before retrying"))
		}
		log.WarnContext(ctx, "database unavailable", "request_id", requestID(ctx), "err", err)
		return connect.NewError(connect.CodeUnavailable, errors.New("database unavailable; retry later"))
	}
	log.ErrorContext(ctx, "internal error", "request_id", requestID(ctx), "err", err)
	return connect.NewError(connect.CodeInternal, errors.New("internal error; request id "+requestID(ctx)))
}

// fieldError is a bad request field detected in this package.
func fieldError(field, reason string) error {
	return connect.NewError(connect.CodeInvalidArgument, &schema.FieldError{Field: field, Reason: reason})
}
