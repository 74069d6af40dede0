package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/keyplane/keyplane/schema/schematest"
)

// TestServeTracing runs serve with the OTEL_* environment pointing at an OTLP/HTTP
// receiver: a request's spans, named by the node's region, reach it by the time serve
// has returned (the flush at shutdown); a malformed variable is a usage error naming
// it. Not parallel: it sets the process environment (restored before the package's
// parallel tests run).
func TestServeTracing(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_TRACES_SAMPLER", "bogus")
	if code, out, errs := runCLI(t, "serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east"); code != 2 || !strings.Contains(out+errs, "OTEL_TRACES_SAMPLER:") {
		t.Fatalf("serve with a bogus sampler: exit %d, want 2 naming OTEL_TRACES_SAMPLER:\n%s%s", code, out, errs)
	}

	var (
		mu    sync.Mutex
		names []string
		res   = map[string]string{}
	)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, rs := range req.GetResourceSpans() {
			for _, kv := range rs.GetResource().GetAttributes() {
				res[kv.GetKey()] = kv.GetValue().GetStringValue()
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					names = append(names, s.GetName())
				}
			}
		}
		mu.Unlock()
		b, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(b)
	}))
	defer collector.Close()
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000") // an hour: only the flush at shutdown exports

	url, stop := serveUntilStopped(t, "--db-file", dbFile(t, schematest.NewDatabase(t)), "--region", schematest.Regions[0],
		"--node-id", "traced-1", "--listen", "127.0.0.1:0", "--log-level", "error")
	for _, path := range []string{"/healthz", "/t/acme/.well-known/openid-configuration"} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	mu.Lock()
	early := len(names)
	mu.Unlock()
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if early != 0 {
		t.Logf("%d spans arrived before shutdown", early)
	}
	want := "GET /t/{tenant}/.well-known/openid-configuration"
	found := false
	for _, n := range names {
		found = found || n == want
		if strings.Contains(n, "healthz") {
			t.Errorf("span %q: probes make no span", n)
		}
	}
	if !found {
		t.Errorf("the collector received spans %q, want one named %q", names, want)
	}
	for k, v := range map[string]string{"service.name": "keyplane", "keyplane.region": schematest.Regions[0], "keyplane.node": "traced-1"} {
		if res[k] != v {
			t.Errorf("resource %s = %q, want %q", k, res[k], v)
		}
	}
}
