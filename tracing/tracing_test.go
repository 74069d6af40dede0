package tracing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/keyplane/keyplane/tracing"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestParseEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		want    string // Settings.String()
		wantErr string // the variable the error names
	}{
		{name: "nothing set: off", env: nil, want: "off"},
		{name: "endpoint only: otlp with the default sampler", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
			want: "exporters=otlp protocol=http/protobuf sampler=parentbased_traceidratio(0.1)"},
		{name: "traces endpoint only", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"},
			want: "exporters=otlp protocol=http/protobuf sampler=parentbased_traceidratio(0.1)"},
		{name: "exporter none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, want: "off"},
		{name: "sdk disabled", env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, want: "off"},
		{name: "grpc, always on", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_SAMPLER": "always_on"},
			want: "exporters=otlp protocol=grpc sampler=always_on"},
		{name: "traces protocol wins", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
			"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, want: "exporters=otlp protocol=http/protobuf sampler=parentbased_traceidratio(0.1)"},
		{name: "ratio", env: map[string]string{"OTEL_TRACES_EXPORTER": "console,otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			want: "exporters=console,otlp protocol=http/protobuf sampler=traceidratio(0.25)"},
		{name: "arg ignored by a sampler without a ratio", env: map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "parentbased_always_off", "OTEL_TRACES_SAMPLER_ARG": "x"},
			want: "exporters=console sampler=parentbased_always_off"},
		{name: "unknown exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, wantErr: "OTEL_TRACES_EXPORTER"},
		{name: "unknown protocol", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, wantErr: "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{name: "unknown sampler", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "jaeger_remote"}, wantErr: "OTEL_TRACES_SAMPLER"},
		{name: "ratio above 1", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER_ARG": "2"}, wantErr: "OTEL_TRACES_SAMPLER_ARG"},
		{name: "ratio not a number", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "ten"}, wantErr: "OTEL_TRACES_SAMPLER_ARG"},
		{name: "disabled not a boolean", env: map[string]string{"OTEL_SDK_DISABLED": "maybe"}, wantErr: "OTEL_SDK_DISABLED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := tracing.ParseEnv(env(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr+":") {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s.String(); got != tt.want {
				t.Errorf("settings = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestNewOff: settings that turn tracing off build no provider at all.
func TestNewOff(t *testing.T) {
	t.Parallel()
	tp, err := tracing.New(context.Background(), tracing.Settings{}, tracing.Resource{Region: "us-east", NodeID: "n1"})
	if err != nil || tp != nil {
		t.Fatalf("New(off) = %v, %v; want nil, nil", tp, err)
	}
}

// TestOTLPExport runs the exporter the environment configures against an OTLP/HTTP
// receiver: the span arrives, named by the resource keyplane sets, when the provider
// is shut down (the flush at exit).
func TestOTLPExport(t *testing.T) {
	var (
		mu   sync.Mutex
		reqs []*collectortrace.ExportTraceServiceRequest
	)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || r.URL.Path != "/v1/traces" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		reqs = append(reqs, &req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		_, _ = w.Write(b)
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	s, err := tracing.ParseEnv(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tp, err := tracing.New(ctx, s, tracing.Resource{Region: "eu-west", NodeID: "eu-west-1", Version: "v9"})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("test").Start(ctx, "work")
	span.End()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reqs) == 0 {
		t.Fatal("the collector received nothing")
	}
	rs := reqs[0].GetResourceSpans()
	if len(rs) != 1 || len(rs[0].GetScopeSpans()) != 1 || len(rs[0].GetScopeSpans()[0].GetSpans()) != 1 {
		t.Fatalf("received %v, want one span", reqs[0])
	}
	if name := rs[0].GetScopeSpans()[0].GetSpans()[0].GetName(); name != "work" {
		t.Errorf("span name = %q, want work", name)
	}
	got := map[string]string{}
	for _, kv := range rs[0].GetResource().GetAttributes() {
		got[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	for k, want := range map[string]string{"service.name": "keyplane", "keyplane.region": "eu-west", "keyplane.node": "eu-west-1",
		"service.instance.id": "eu-west-1", "service.version": "v9"} {
		if got[k] != want {
			t.Errorf("resource %s = %q, want %q", k, got[k], want)
		}
	}
}

// recording is a tracer provider that keeps every span, sampling all.
func recording() (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	return sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample())), exp
}

// A caller's traceparent, sampled, and the baggage it tries to pass along.
const (
	callerTraceID   = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpanID    = "00f067aa0ba902b7"
	callerParent    = "00-" + callerTraceID + "-" + callerSpanID + "-01"
	callerTraceSate = "vendor=opaque"
)

// TestEdgeToForward follows a request through the edge handler and a forward: the
// caller's traceparent is the server span's parent, the forward is a client span under
// it, and the next hop receives that client span as its parent, the query string
// intact but not in the span, and none of the caller's baggage.
func TestEdgeToForward(t *testing.T) {
	t.Parallel()
	tp, exp := recording()
	var got http.Header
	var gotQuery string
	next := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, gotQuery = r.Header.Clone(), r.URL.RawQuery
	}))
	defer next.Close()
	forward := &http.Client{Transport: tracing.Transport(tp, http.DefaultTransport, tracing.TransportOptions{
		Name:       func(*http.Request) string { return "forward next" },
		Attributes: func(*http.Request) []attribute.KeyValue { return []attribute.KeyValue{attribute.String("hop", "1")} },
	})}
	edge := tracing.Handler(tp, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/in" {
			return
		}
		out, err := http.NewRequestWithContext(r.Context(), http.MethodGet, next.URL+"/cb?code=s3cret&state=x", nil)
		if err != nil {
			t.Error(err)
			return
		}
		resp, err := forward.Do(out) // the router does not copy trace headers; neither does this
		if err != nil {
			t.Error(err)
			return
		}
		_ = resp.Body.Close()
	}), func(r *http.Request) string { return "GET /in" }, func(r *http.Request) bool { return r.URL.Path == "/healthz" })
	front := httptest.NewServer(edge)
	defer front.Close()
	for _, path := range []string{"/healthz", "/in"} {
		req, _ := http.NewRequest(http.MethodGet, front.URL+path, nil)
		req.Header.Set("Traceparent", callerParent)
		req.Header.Set("Tracestate", callerTraceSate)
		req.Header.Set("Baggage", "role=admin")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}

	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("recorded %d spans (%v), want 2: the skipped /healthz makes none", len(spans), spans)
	}
	client, server := spans[0], spans[1] // in the order they ended
	if server.Name != "GET /in" || server.SpanKind != trace.SpanKindServer || client.Name != "forward next" || client.SpanKind != trace.SpanKindClient {
		t.Fatalf("spans %s (%v) and %s (%v), want server GET /in and client forward next", server.Name, server.SpanKind, client.Name, client.SpanKind)
	}
	if server.Parent.TraceID().String() != callerTraceID || server.Parent.SpanID().String() != callerSpanID {
		t.Errorf("server span's parent = %v, want the caller's %s", server.Parent, callerParent)
	}
	if client.Parent.SpanID() != server.SpanContext.SpanID() || client.SpanContext.TraceID().String() != callerTraceID {
		t.Errorf("client span's parent = %v, want the server span %v", client.Parent, server.SpanContext)
	}
	if want := "00-" + callerTraceID + "-" + client.SpanContext.SpanID().String() + "-01"; got.Get("Traceparent") != want {
		t.Errorf("next hop got traceparent %q, want %q (the client span)", got.Get("Traceparent"), want)
	}
	if got.Get("Tracestate") != callerTraceSate {
		t.Errorf("next hop got tracestate %q, want the caller's %q (part of W3C trace context)", got.Get("Tracestate"), callerTraceSate)
	}
	if b := got.Get("Baggage"); b != "" {
		t.Errorf("next hop got baggage %q, want none", b)
	}
	if gotQuery != "code=s3cret&state=x" {
		t.Errorf("next hop got query %q, want code=s3cret&state=x", gotQuery)
	}
	for _, kv := range client.Attributes {
		if strings.Contains(kv.Value.String(), "s3cret") {
			t.Errorf("client span attribute %s = %q carries the query", kv.Key, kv.Value.String())
		}
		if kv.Key == "hop" && kv.Value.AsString() != "1" {
			t.Errorf("hop = %q, want 1", kv.Value.AsString())
		}
	}
	if !hasAttr(client.Attributes, "hop") || !hasAttr(client.Attributes, "url.full") {
		t.Errorf("client span attributes %v: want hop and url.full", client.Attributes)
	}
}

func hasAttr(kvs []attribute.KeyValue, key string) bool {
	for _, kv := range kvs {
		if string(kv.Key) == key {
			return true
		}
	}
	return false
}

// TestObserve: a sampled context's trace id becomes the exemplar; an unsampled one
// records none.
func TestObserve(t *testing.T) {
	t.Parallel()
	tid, _ := trace.TraceIDFromHex(callerTraceID)
	sid, _ := trace.SpanIDFromHex(callerSpanID)
	for _, tt := range []struct {
		name  string
		flags trace.TraceFlags
		want  string
	}{{"sampled", trace.FlagsSampled, callerTraceID}, {"not sampled", 0, ""}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h_seconds", Help: "h", Buckets: []float64{1}})
			ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: tt.flags}))
			tracing.Observe(ctx, h, 0.5)
			var m dto.Metric
			if err := h.Write(&m); err != nil {
				t.Fatal(err)
			}
			if m.GetHistogram().GetSampleCount() != 1 {
				t.Fatalf("count = %d, want 1", m.GetHistogram().GetSampleCount())
			}
			got := ""
			if ex := m.GetHistogram().GetBucket()[0].GetExemplar(); ex != nil {
				for _, l := range ex.GetLabel() {
					if l.GetName() == tracing.ExemplarLabel {
						got = l.GetValue()
					}
				}
			}
			if got != tt.want {
				t.Errorf("exemplar trace id = %q, want %q", got, tt.want)
			}
		})
	}
}
