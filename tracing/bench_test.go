package tracing_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/keyplane/keyplane/tracing"
)

// BenchmarkHandler is the edge span's cost per request: none (tracing off: the
// handler is not wrapped), a request not sampled, and a sampled one whose span is
// exported (to a discarding exporter, through the batch processor a node uses).
func BenchmarkHandler(b *testing.B) {
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	name := func(r *http.Request) string { return r.Method + " /keyplane.v1.CheckService/Check" }
	for _, bc := range []struct {
		name    string
		sampler sdktrace.Sampler
	}{{"off", nil}, {"not-sampled", sdktrace.NeverSample()}, {"sampled", sdktrace.AlwaysSample()}} {
		b.Run(bc.name, func(b *testing.B) {
			h := http.Handler(next)
			if bc.sampler != nil {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(bc.sampler), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
				b.Cleanup(func() { _ = tp.Shutdown(b.Context()) })
				h = tracing.Handler(tp, next, name, nil)
			}
			req := httptest.NewRequest(http.MethodPost, "/keyplane.v1.CheckService/Check", nil)
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
}
