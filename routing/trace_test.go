package routing_test

import (
	"net/http"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/tracing"
)

// A caller's trace context, and baggage it would like passed on.
const (
	callerTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpanID  = "00f067aa0ba902b7"
)

var callerHeaders = map[string]string{
	routing.TenantHeader: "globex",
	"Traceparent":        "00-" + callerTraceID + "-" + callerSpanID + "-01",
	"Tracestate":         "vendor=opaque",
	"Baggage":            "keyplane.hop=forged",
}

// TestRouterTraceContext: without a tracer provider a forward carries no trace
// context at all (not even the caller's, passed through); with one it carries the
// forward's own client span as traceparent, in the caller's trace, never the caller's
// baggage, and the forward latency gets the trace id as exemplar.
func TestRouterTraceContext(t *testing.T) {
	t.Parallel()
	t.Run("tracing off", func(t *testing.T) {
		t.Parallel()
		us1, rec := peer(t, "us", "us-1", nil)
		f := newFixture(t, nil, fakePeers{"us": {us1}}, nil)
		resp, _ := f.do(t, request{target: "/v1/things", header: callerHeaders})
		if resp.Header.Get(routing.RouteHeader) != routing.RouteForwarded || rec.count() != 1 {
			t.Fatalf("route %q, peer saw %d requests; want one forward", resp.Header.Get(routing.RouteHeader), rec.count())
		}
		for _, h := range []string{"Traceparent", "Tracestate", "Baggage"} {
			if v := rec.requests()[0].Header.Get(h); v != "" {
				t.Errorf("the peer got %s: %q, want none", h, v)
			}
		}
	})
	t.Run("tracing on", func(t *testing.T) {
		t.Parallel()
		exp := tracetest.NewInMemoryExporter()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
		us1, rec := peer(t, "us", "us-1", nil)
		f := newFixture(t, nil, fakePeers{"us": {us1}}, func(c *routing.Config) { c.TracerProvider = tp })
		front := startH2C(t, tracing.Handler(tp, f.router, func(r *http.Request) string { return r.Method + " /v1/things" }, nil))
		resp, _ := send(t, front.Client(), front.URL, request{target: "/v1/things", header: callerHeaders})
		if resp.Header.Get(routing.RouteHeader) != routing.RouteForwarded || rec.count() != 1 {
			t.Fatalf("route %q, peer saw %d requests; want one forward", resp.Header.Get(routing.RouteHeader), rec.count())
		}
		var fwd, server tracetest.SpanStub
		for _, s := range exp.GetSpans() {
			switch s.SpanKind {
			case trace.SpanKindClient:
				fwd = s
			case trace.SpanKindServer:
				server = s
			}
		}
		if fwd.Name != "forward us" || fwd.Parent.SpanID() != server.SpanContext.SpanID() || server.Parent.SpanID().String() != callerSpanID {
			t.Fatalf("spans: forward %q under %v, server %q under %v; want forward us under the server span under the caller's",
				fwd.Name, fwd.Parent.SpanID(), server.Name, server.Parent.SpanID())
		}
		got := rec.requests()[0].Header
		if want := "00-" + callerTraceID + "-" + fwd.SpanContext.SpanID().String() + "-01"; got.Get("Traceparent") != want {
			t.Errorf("the peer got traceparent %q, want the forward's span %q", got.Get("Traceparent"), want)
		}
		if got.Get("Tracestate") != "vendor=opaque" {
			t.Errorf("the peer got tracestate %q, want the trace's vendor=opaque", got.Get("Tracestate"))
		}
		if v := got.Get("Baggage"); v != "" {
			t.Errorf("the peer got baggage %q, want none", v)
		}
		mfs, err := f.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		exemplar := ""
		for _, mf := range mfs {
			if mf.GetName() != "keyplane_forward_seconds" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, b := range m.GetHistogram().GetBucket() {
					for _, l := range b.GetExemplar().GetLabel() {
						if l.GetName() == tracing.ExemplarLabel {
							exemplar = l.GetValue()
						}
					}
				}
			}
		}
		if exemplar != callerTraceID {
			t.Errorf("keyplane_forward_seconds exemplar trace_id = %q, want %s", exemplar, callerTraceID)
		}
	})
}
