package region

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"regexp"
	"time"

	"connectrpc.com/connect"
	oteltrace "go.opentelemetry.io/otel/trace"
)

type requestIDKey struct{}

// RequestIDHeader carries the request id in both directions.
const RequestIDHeader = "X-Request-Id"

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// incomingRequestID keeps a well-formed caller-supplied id and makes one otherwise.
func incomingRequestID(h string) string {
	if requestIDPattern.MatchString(h) {
		return h
	}
	return rand.Text()
}

// observe is the outermost interceptor: request id, metrics, and a log line for every
// failed call; successful calls are logged at debug, or at info with Config.AccessLog.
func (n *Node) observe() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			start := time.Now()
			id := incomingRequestID(req.Header().Get(RequestIDHeader))
			ctx = context.WithValue(ctx, requestIDKey{}, id)
			var resp connect.AnyResponse
			err := checkTenantHeader(req)
			if err == nil {
				err = n.rehomeFence(ctx, req)
			}
			if err == nil {
				resp, err = next(ctx, req)
			}
			code := "ok"
			if err != nil {
				ce := connectError(ctx, n.log, err)
				code = ce.Code().String()
				ce.Meta().Set(RequestIDHeader, id)
				err = ce
			} else {
				resp.Header().Set(RequestIDHeader, id)
			}
			elapsed := time.Since(start)
			n.metrics.observeRPCIn(ctx, req.Spec().Procedure, code, elapsed)
			level := slog.LevelInfo
			if err == nil && !n.cfg.AccessLog {
				level = slog.LevelDebug
				if !n.log.Enabled(ctx, level) {
					return resp, err
				}
			}
			attrs := []slog.Attr{slog.String("request_id", id), slog.String("procedure", req.Spec().Procedure),
				slog.String("code", code), slog.Duration("elapsed", elapsed), slog.String("peer", req.Peer().Addr)}
			if n.metrics.traced {
				if sc := oteltrace.SpanContextFromContext(ctx); sc.IsSampled() {
					attrs = append(attrs, slog.String("trace_id", sc.TraceID().String())) // the log line leads to the trace
				}
			}
			n.log.LogAttrs(ctx, level, "rpc", attrs...)
			return resp, err
		}
	}
}

// isOperator compares a presented secret with the operator secret in constant time
// (SHA-256 of both first, so lengths leak nothing). No secret configured: never.
func (n *Node) isOperator(presented string) bool {
	if n.cfg.OperatorSecret == "" {
		return false
	}
	want := sha256.Sum256([]byte(n.cfg.OperatorSecret))
	got := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}
