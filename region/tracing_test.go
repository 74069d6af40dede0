package region_test

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/routing/client"
	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/tracing"
)

// tracedNode is one node of a traced cluster: its API URL, its region and its log
// (every call logged, as with --access-log).
type tracedNode struct {
	region, url string
	log         *lockedBuffer
}

// lockedBuffer is a log destination safe for concurrent writes and reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newTracedPair starts two nodes, us-east-1 and eu-west-1, on one database with
// mutual-TLS routing between them, each with its own tracer provider (resource:
// its region and node, as keyplane serve sets it) and its own pool traced by it,
// all exporting into exp synchronously and sampling everything.
func newTracedPair(t *testing.T) (us, eu tracedNode, exp *tracetest.InMemoryExporter) {
	t.Helper()
	exp = tracetest.NewInMemoryExporter()
	logs := map[string]*lockedBuffer{}
	pair := newRoutedPairWith(t, func(regionName, nodeID string) pairNode {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
			sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "keyplane"),
				tracing.RegionKey.String(regionName), tracing.NodeKey.String(nodeID))))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		logs[regionName] = &lockedBuffer{}
		return pairNode{pool: schema.PoolConfig{Tracer: tracing.QueryTracer(tp)}, log: logs[regionName], logLevel: slog.LevelInfo,
			configure: func(c *region.Config) { c.TracerProvider, c.AccessLog = tp, true }}
	})
	return tracedNode{"us-east", pair.us, logs["us-east"]}, tracedNode{"eu-west", pair.eu, logs["eu-west"]}, exp
}

// A caller's own trace: its traceparent (sampled) and baggage it tries to pass on.
const (
	callerTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpanID  = "00f067aa0ba902b7"
)

func spanRegion(s tracetest.SpanStub) string {
	v, _ := s.Resource.Set().Value(tracing.RegionKey)
	return v.AsString()
}

func spanAttr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

// TestTraceAcrossRegions: a call entering us-east for a tenant homed in eu-west is
// one trace: the server span at the entry node, the forward's client span under it,
// the home node's server span under that (the traceparent crossed the mutual-TLS
// forward), its RPC span, and the SQL of the call on the home node, each span
// naming its region. The caller's traceparent is the root's parent; its baggage
// reaches nothing. With the trace recorded, both nodes' latency histograms show
// its id as an exemplar to an OpenMetrics scrape.
func TestTraceAcrossRegions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	us, eu, exp := newTracedPair(t)
	headers := func(h map[string]string) connect.Option {
		return connect.WithInterceptors(client.Tenant(), connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+secret)
				for k, v := range h {
					req.Header().Set(k, v)
				}
				return next(ctx, req)
			}
		}))
	}
	if _, err := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, eu.url, headers(nil)).CreateTenant(ctx,
		connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "globex", Name: "Globex", HomeRegion: "eu-west"})); err != nil {
		t.Fatal(err)
	}
	exp.Reset()
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, us.url, headers(map[string]string{
		"Traceparent": "00-" + callerTraceID + "-" + callerSpanID + "-01",
		"Baggage":     "keyplane.route=local",
	}))
	resp, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "globex",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Ada"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Header().Get(routing.RouteHeader); got != routing.RouteForwarded {
		t.Fatalf("%s = %q, want %q", routing.RouteHeader, got, routing.RouteForwarded)
	}

	var spans []tracetest.SpanStub
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID().String() == callerTraceID {
			spans = append(spans, s)
			byID[s.SpanContext.SpanID()] = s
		}
	}
	find := func(what string, ok func(tracetest.SpanStub) bool) tracetest.SpanStub {
		t.Helper()
		for _, s := range spans {
			if ok(s) {
				return s
			}
		}
		for _, s := range spans {
			t.Logf("span %q kind %v region %s parent %v", s.Name, s.SpanKind, spanRegion(s), s.Parent.SpanID())
		}
		t.Fatalf("no %s among the trace's %d spans", what, len(spans))
		return tracetest.SpanStub{}
	}
	const procedure = "/keyplane.v1.AdminService/CreateIdentity"
	entry := find("server span at the entry node", func(s tracetest.SpanStub) bool {
		return s.SpanKind == trace.SpanKindServer && spanRegion(s) == "us-east" && s.Parent.IsRemote()
	})
	if entry.Name != "POST "+procedure || entry.Parent.SpanID().String() != callerSpanID {
		t.Errorf("entry span %q with parent %v, want POST %s under the caller's span %s", entry.Name, entry.Parent.SpanID(), procedure, callerSpanID)
	}
	if got := spanAttr(entry, "keyplane.route"); got != routing.RouteForwarded {
		t.Errorf("entry span keyplane.route = %q, want %q (the caller's baggage changes nothing)", got, routing.RouteForwarded)
	}
	fwd := find("forward client span", func(s tracetest.SpanStub) bool {
		return s.SpanKind == trace.SpanKindClient && s.Parent.SpanID() == entry.SpanContext.SpanID() && spanAttr(s, "keyplane.forward.region") != ""
	})
	if fwd.Name != "forward eu-west" || spanRegion(fwd) != "us-east" || spanAttr(fwd, "keyplane.forward.node") != "eu-west-1" {
		t.Errorf("forward span %q in %s to node %q, want forward eu-west in us-east to eu-west-1", fwd.Name, spanRegion(fwd), spanAttr(fwd, "keyplane.forward.node"))
	}
	home := find("server span at the home node", func(s tracetest.SpanStub) bool {
		return s.SpanKind == trace.SpanKindServer && s.Parent.SpanID() == fwd.SpanContext.SpanID()
	})
	if spanRegion(home) != "eu-west" || home.Name != "POST "+procedure || !home.Parent.IsRemote() {
		t.Errorf("home span %q in %s (remote parent %v), want POST %s in eu-west under the forward", home.Name, spanRegion(home), home.Parent.IsRemote(), procedure)
	}
	rpc := find("RPC span at the home node", func(s tracetest.SpanStub) bool {
		return s.Parent.SpanID() == home.SpanContext.SpanID() && s.SpanKind == trace.SpanKindServer
	})
	if rpc.Name != strings.TrimPrefix(procedure, "/") || spanAttr(rpc, "rpc.method") == "" {
		t.Errorf("RPC span %q (rpc.method %q), want %s", rpc.Name, spanAttr(rpc, "rpc.method"), strings.TrimPrefix(procedure, "/"))
	}
	// under reports whether s descends from anc (a chain of recorded parents).
	under := func(s, anc tracetest.SpanStub) bool {
		for i := 0; i < len(spans) && s.Parent.IsValid(); i++ {
			if s.Parent.SpanID() == anc.SpanContext.SpanID() {
				return true
			}
			if s = byID[s.Parent.SpanID()]; !s.SpanContext.IsValid() {
				return false
			}
		}
		return false
	}
	sqlOnHome, sqlInCall := 0, 0
	for _, s := range spans {
		if spanAttr(s, "db.system.name") != "postgresql" || spanAttr(s, "db.query.text") == "" {
			continue // not a statement (a connection acquired or dialled)
		}
		if spanRegion(s) == "eu-west" {
			if !under(s, home) { // the peer handler's placement check, then the call's own
				t.Errorf("SQL span %q in eu-west is not under the home node's server span", s.Name)
			}
			if under(s, rpc) {
				sqlInCall++
			}
			if !s.StartTime.After(home.StartTime) || s.SpanKind != trace.SpanKindClient {
				t.Errorf("SQL span %q: kind %v, starts %v after the home span", s.Name, s.SpanKind, s.StartTime.Sub(home.StartTime))
			}
			sqlOnHome++
		} else if !under(s, entry) || under(s, fwd) {
			t.Errorf("SQL span %q in %s is not the entry node's own", s.Name, spanRegion(s))
		}
	}
	if sqlOnHome == 0 || sqlInCall == 0 {
		t.Errorf("%d SQL spans on the home node, %d under the RPC span; want some of each", sqlOnHome, sqlInCall)
	}
	if !entry.StartTime.Before(fwd.StartTime) || !fwd.StartTime.Before(home.StartTime) {
		t.Errorf("spans start out of order: entry %v, forward %v, home %v", entry.StartTime, fwd.StartTime, home.StartTime)
	}

	t.Run("log line", func(t *testing.T) {
		want := regexp.MustCompile(`msg=rpc .*procedure=` + procedure + ` .*trace_id=` + callerTraceID)
		if !want.MatchString(eu.log.String()) {
			t.Errorf("the home node's log has no rpc line for %s with trace_id=%s:\n%s", procedure, callerTraceID, eu.log.String())
		}
	})
	t.Run("exemplars", func(t *testing.T) {
		for _, tt := range []struct {
			node   tracedNode
			metric string
		}{
			{eu, `keyplane_rpc_duration_seconds_bucket{.*procedure="` + procedure + `"`},
			{us, `keyplane_forward_seconds_bucket{.*home_region="eu-west"`},
		} {
			lines, contentType := scrape(t, tt.node.url)
			if !strings.HasPrefix(contentType, "application/openmetrics-text") {
				t.Fatalf("%s /metrics answered %q, want OpenMetrics", tt.node.region, contentType)
			}
			want := regexp.MustCompile("^" + tt.metric + `.*# \{trace_id="` + callerTraceID + `"\}`)
			found := false
			for _, l := range lines {
				found = found || want.MatchString(l)
			}
			if !found {
				t.Errorf("%s /metrics: no %s bucket with exemplar trace_id %s", tt.node.region, tt.metric, callerTraceID)
			}
		}
	})
}

// scrape reads a node's /metrics asking for OpenMetrics, as a Prometheus with
// exemplar storage does.
func scrape(t *testing.T, base string) ([]string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, resp.Header.Get("Content-Type")
}
