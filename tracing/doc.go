// Package tracing is keyplane's OpenTelemetry tracing: the tracer provider a node
// builds from the standard OTEL_* environment, and the instrumentation of the places a
// request crosses.
//
//   - [ParseEnv] reads OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_*, OTEL_TRACES_SAMPLER
//     and the rest, and [New] builds from them a tracer provider exporting over OTLP,
//     or nil: tracing is off unless the environment asks for it, and off means no
//     instrumentation at all, not instrumentation that records nothing.
//   - [Handler] makes a node's HTTP edge (the API and peer listeners) one server span
//     per request (otelhttp); [Interceptor] adds the RPC span of a Connect procedure
//     under it (otelconnect); [Transport] makes each forward to another node a client
//     span (otelhttp) and carries its traceparent; [QueryTracer] makes each SQL
//     statement a span (pgx, through otelpgx).
//   - [Observe] records a histogram observation with the request's trace id as its
//     exemplar when the request is sampled.
//
// Only W3C Trace Context crosses a boundary ([Propagator]): traceparent and
// tracestate. A caller's traceparent becomes the parent of its request's span, as the
// standard says, and changes nothing else: baggage is neither read nor forwarded.
//
// Nothing here touches OpenTelemetry's global state (otel.SetTracerProvider and
// friends): every provider, propagator and meter is passed explicitly, so two nodes
// in one process trace independently.
package tracing
