package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TenantHeader names the tenant of a call, so a node can route it without decoding
// the body. The interceptor sets it from the request's tenant_id field.
const TenantHeader = "Keyplane-Tenant"

// IdempotencyKeyHeader carries a call's idempotency key: the serving node applies a
// keyed call at most once and answers its copies with the first answer. The
// interceptor sets a fresh key on every tenant-scoped call that has side effects,
// unless the caller set one, and then retries it like a safe call.
const IdempotencyKeyHeader = "Idempotency-Key"

// ServeRegionsHeader, on the answers about a residency-strict tenant, lists the
// regions whose nodes may serve it. The client then sends that tenant's calls, and
// fails them over, only to endpoints of those regions (when it has any).
const ServeRegionsHeader = "Keyplane-Serve-Regions"

// interceptor sets the tenant header and runs each unary call as up to MaxAttempts
// attempts on successive endpoints. Streaming calls pass through. Safe for
// concurrent use.
type interceptor struct {
	c *Client
}

var _ connect.Interceptor = (*interceptor)(nil)

func (i *interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (i *interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if !req.Spec().IsClient {
			return next(ctx, req)
		}
		setTenant(req)
		setIdempotencyKey(req)
		return i.c.call(ctx, req, next)
	}
}

// tenantCreators are the requests that create the tenant they name, by the field
// naming it: they carry its header too, so that they take an idempotency key (the
// node records the call as the new tenant's).
var tenantCreators = map[protoreflect.FullName]protoreflect.Name{"keyplane.v1.CreateTenantRequest": "id"}

// setTenant sets TenantHeader, unless already set, from the request message's
// top-level string field tenant_id (or the id of a tenant it creates), when it has
// one and it is not empty.
func setTenant(req connect.AnyRequest) {
	if req.Header().Get(TenantHeader) != "" {
		return
	}
	msg, ok := req.Any().(proto.Message)
	if !ok {
		return
	}
	m := msg.ProtoReflect()
	field := protoreflect.Name("tenant_id")
	if f, ok := tenantCreators[m.Descriptor().FullName()]; ok {
		field = f
	}
	fd := m.Descriptor().Fields().ByName(field)
	if fd == nil || fd.Kind() != protoreflect.StringKind || fd.Cardinality() == protoreflect.Repeated {
		return
	}
	if t := m.Get(fd).String(); t != "" {
		req.Header().Set(TenantHeader, t)
	}
}

// setIdempotencyKey gives a tenant-scoped call with side effects a random idempotency
// key, unless it has one. Nodes take keys only on tenant-scoped calls.
func setIdempotencyKey(req connect.AnyRequest) {
	spec := req.Spec()
	if spec.IdempotencyLevel != connect.IdempotencyUnknown || req.Header().Get(TenantHeader) == "" || req.Header().Get(IdempotencyKeyHeader) != "" {
		return
	}
	req.Header().Set(IdempotencyKeyHeader, rand.Text())
}

// call runs the attempts of one unary call. An attempt that failed is retried, on
// the most preferred endpoint not yet tried, when all of these hold:
//   - it failed with Unavailable, or with DeadlineExceeded because of the attempt
//     timeout (not the caller's deadline), or got no answer at all (the connection
//     broke: connect may then report Canceled or Unknown);
//   - the procedure is safe to repeat (idempotency level NO_SIDE_EFFECTS or
//     IDEMPOTENT), or the call carries an idempotency key (the node applies it at
//     most once), or the request provably never left the client;
//   - attempts and the caller's context remain, and the retry budget has a token.
func (c *Client) call(ctx context.Context, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
	spec := req.Spec()
	safe := spec.IdempotencyLevel == connect.IdempotencyNoSideEffects ||
		spec.IdempotencyLevel == connect.IdempotencyIdempotent ||
		req.Header().Get(IdempotencyKeyHeader) != ""
	tenant := req.Header().Get(TenantHeader)
	tried := make([]bool, len(c.eps))
	var trail []string // one "endpoint: code" per failed attempt
	for n := 1; ; n++ {
		att := &attempt{ep: c.next(tried, c.serveRegions(tenant))}
		tried[att.ep.index] = true
		res, timedOut, err := c.try(ctx, req, next, att)
		if err == nil {
			c.learnServeRegions(tenant, res.Header())
			c.budget.success()
			return res, nil
		}
		var ce *connect.Error
		if errors.As(err, &ce) && att.answered.Load() {
			c.learnServeRegions(tenant, ce.Meta())
		}
		code := connect.CodeOf(err)
		trail = append(trail, fmt.Sprintf("%v: %v", att.ep, code))
		unsent := att.unsent.Load() || isUnsent(err)
		if ctx.Err() == nil && att.sending.Load() && (timedOut || !att.answered.Load()) {
			c.markDown(ctx, att.ep, err) // the endpoint did not answer, or not in time
		}
		// No answer at all (a connection reset or closed mid-call: a proxy in front of a
		// dead node) is a transport failure whatever code connect gave it.
		lost := ctx.Err() == nil && att.sending.Load() && !att.answered.Load()
		retryable := code == connect.CodeUnavailable || (code == connect.CodeDeadlineExceeded && timedOut) || lost
		if !retryable {
			c.budget.success() // the server (or the caller) decided; nothing to throttle
			return nil, finalError(err, trail)
		}
		log := c.log.With(slog.String("procedure", spec.Procedure), slog.Int("attempt", n),
			slog.String("region", att.ep.region), slog.String("url", att.ep.url), slog.Any("error", err))
		switch {
		case !safe && !unsent:
			log.LogAttrs(ctx, slog.LevelDebug, "keyplane call not retried: it has side effects and may have been received")
			return nil, finalError(err, trail)
		case n >= c.cfg.MaxAttempts || ctx.Err() != nil:
			return nil, finalError(err, trail)
		case !c.budget.spend():
			log.LogAttrs(ctx, slog.LevelDebug, "keyplane call not retried: retry budget exhausted")
			return nil, finalError(err, trail)
		}
		log.LogAttrs(ctx, slog.LevelDebug, "keyplane call failing over")
		if !sleep(ctx, backoff(n, c.cfg.BackoffBase, c.cfg.BackoffMax)) {
			return nil, finalError(err, trail)
		}
	}
}

// try runs one attempt under the attempt timeout, and reports whether that timeout,
// rather than the caller's deadline, ended it.
func (c *Client) try(ctx context.Context, req connect.AnyRequest, next connect.UnaryFunc, att *attempt) (connect.AnyResponse, bool, error) {
	actx, cancel := context.WithTimeout(withAttempt(ctx, att), c.cfg.AttemptTimeout)
	defer cancel()
	res, err := next(actx, req)
	callerDeadline, bounded := ctx.Deadline()
	attemptDeadline, _ := actx.Deadline()
	// The attempt's deadline is its own when it comes before the caller's; then a
	// DeadlineExceeded (ours, or the server's from the propagated timeout) is the
	// attempt timeout's doing, unless the caller's context ended meanwhile.
	timedOut := err != nil && ctx.Err() == nil &&
		(!bounded || attemptDeadline.Before(callerDeadline)) &&
		connect.CodeOf(err) == connect.CodeDeadlineExceeded
	return res, timedOut, err
}

// finalError returns the last attempt's error, as is after a single attempt, or
// with the same code, details and metadata and a message listing every attempt.
func finalError(last error, trail []string) error {
	var ce *connect.Error
	if len(trail) < 2 || !errors.As(last, &ce) {
		return last
	}
	out := connect.NewError(ce.Code(), fmt.Errorf("%d attempts (%s), last: %w", len(trail), strings.Join(trail, "; "), last))
	for _, d := range ce.Details() {
		out.AddDetail(d)
	}
	maps.Copy(out.Meta(), ce.Meta())
	return out
}
