package tracing

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Propagator is the one propagator keyplane uses, in both directions: W3C Trace
// Context (traceparent, tracestate). Baggage is not among it: a caller's baggage is
// never read, so it cannot steer anything.
func Propagator() propagation.TextMapPropagator { return propagation.TraceContext{} }

// noMeters keeps the instrumentation libraries' own metrics off (keyplane's metrics
// are Prometheus collectors) without reaching for the global meter provider.
var noMeters = noopmetric.NewMeterProvider()

// Handler wraps h so that every request it serves is a server span of tp named
// name(r) (keep names few: a route, never a raw path with ids in it), except those
// skip reports (probes and scrapes; nil skips none). A request's W3C traceparent is
// its span's parent (a caller joins its own trace); anything else a caller sends is
// ignored. The span is in the context h sees.
func Handler(tp trace.TracerProvider, h http.Handler, name func(*http.Request) string, skip func(*http.Request) bool) http.Handler {
	opts := []otelhttp.Option{otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(Propagator()), otelhttp.WithMeterProvider(noMeters),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return name(r) })}
	if skip != nil {
		opts = append(opts, otelhttp.WithFilter(func(r *http.Request) bool { return !skip(r) }))
	}
	return otelhttp.NewHandler(h, "keyplane", opts...)
}

// Interceptor makes each Connect call a span of tp with the rpc.* attributes, as a
// child of the span already in its context ([Handler]'s); a handler without one takes
// the request's traceparent as parent.
func Interceptor(tp trace.TracerProvider) (connect.Interceptor, error) {
	return otelconnect.NewInterceptor(otelconnect.WithTracerProvider(tp), otelconnect.WithPropagator(Propagator()),
		otelconnect.WithMeterProvider(noMeters), otelconnect.WithoutMetrics(), otelconnect.WithTrustRemote())
}

// TransportOptions name and annotate [Transport]'s client spans.
type TransportOptions struct {
	// Name names a request's span; nil means "HTTP <method>".
	Name func(*http.Request) string
	// Attributes are added to a request's span; nil adds none.
	Attributes func(*http.Request) []attribute.KeyValue
}

// Transport makes every request sent through base a client span of tp, a child of the
// span in the request's context, and sets the request's traceparent (and tracestate)
// to that span. The request's query string stays out of the span (url.full has none):
// queries carry authorization codes and other values that do not belong in a trace
// store.
func Transport(tp trace.TracerProvider, base http.RoundTripper, o TransportOptions) http.RoundTripper {
	opts := []otelhttp.Option{otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(Propagator()), otelhttp.WithMeterProvider(noMeters)}
	if o.Name != nil {
		opts = append(opts, otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return o.Name(r) }))
	}
	return hideQuery{next: otelhttp.NewTransport(restoreQuery{next: base, attrs: o.Attributes}, opts...)}
}

type queryKey struct{}

// hideQuery sends a request on without its query, which rides in the context to
// restoreQuery, below the tracing transport.
type hideQuery struct{ next http.RoundTripper }

func (t hideQuery) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.RawQuery == "" {
		return t.next.RoundTrip(r)
	}
	u := *r.URL
	u.RawQuery = ""
	out := r.WithContext(context.WithValue(r.Context(), queryKey{}, r.URL.RawQuery)) // a shallow copy: r is not ours to change
	out.URL = &u
	return t.next.RoundTrip(out)
}

// restoreQuery puts the query hideQuery took back, and annotates the client span.
type restoreQuery struct {
	next  http.RoundTripper
	attrs func(*http.Request) []attribute.KeyValue
}

func (t restoreQuery) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.attrs != nil {
		if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
			span.SetAttributes(t.attrs(r)...)
		}
	}
	q, _ := r.Context().Value(queryKey{}).(string)
	if q == "" {
		return t.next.RoundTrip(r)
	}
	u := *r.URL
	u.RawQuery = q
	out := r.WithContext(r.Context())
	out.URL = &u
	return t.next.RoundTrip(out)
}

// QueryTracer makes every statement, batch and connection acquisition of a pgx pool a
// client span of tp, with the statement's text (never its arguments). Spans are made
// only under a sampled span: background work outside any request records nothing.
// Set it as the pool's ConnConfig.Tracer.
func QueryTracer(tp trace.TracerProvider) pgx.QueryTracer {
	return otelpgx.NewTracer(otelpgx.WithTracerProvider(tp), otelpgx.WithMeterProvider(noMeters))
}

// ExemplarLabel is the exemplar label that carries a trace id.
const ExemplarLabel = "trace_id"

// Observe records v in o with, when ctx's span is sampled (its trace is exported),
// the span's trace id as the observation's exemplar, so a latency bucket on a
// dashboard leads to a trace of a request that fell in it.
func Observe(ctx context.Context, o prometheus.Observer, v float64) {
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		if eo, ok := o.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(v, prometheus.Labels{ExemplarLabel: sc.TraceID().String()})
			return
		}
	}
	o.Observe(v)
}
