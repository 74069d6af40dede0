package region_test

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/routing/client"
)

// metricValue reads one sample from the node's /metrics: the series whose name is
// name and whose labels include every one of labels ("k=\"v\""); 0 when absent.
func metricValue(t *testing.T, metricsURL, name string, labels ...string) float64 {
	t.Helper()
	code, body := get(t, metricsURL, "")
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d", metricsURL, code)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		series, value, ok := strings.Cut(line, " ")
		if !ok || !(series == name || strings.HasPrefix(series, name+"{")) {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(series, l) {
				continue next
			}
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		return v
	}
	return 0
}

func routedWithOperator(t *testing.T) served {
	t.Helper()
	cfg := nodeConfig()
	cfg.OperatorListener = true
	return serveRouted(t, cfg, gossipView)
}

// TestSecurityTenantHeaderAgainstPath (issue 12, finding 12): a request whose
// Keyplane-Tenant header names one tenant and whose /t/{tenant}/ path another was
// routed by the header and served for the path, so a caller could make a node that is
// not the path tenant's home serve it. Now it is refused, naming both, and served by
// no one.
func TestSecurityTenantHeaderAgainstPath(t *testing.T) {
	t.Parallel()
	n := routedWithOperator(t)
	for _, tt := range []struct{ method, path, header string }{
		{http.MethodPost, "/t/acme/oauth2/token", "globex"},
		{http.MethodGet, "/t/acme/.well-known/jwks.json", "globex"},
		{http.MethodPost, "/t/acme/oauth2/introspect", "ACME"},
	} {
		req, err := http.NewRequest(tt.method, n.api+tt.path, strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header[routing.TenantHeader] = []string{tt.header}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body strings.Builder
		_, _ = bufio.NewReader(resp.Body).WriteTo(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body.String(), "invalid_request") ||
			!strings.Contains(body.String(), `path names tenant \"acme\"`) || !strings.Contains(body.String(), "header names tenant") {
			t.Errorf("%s %s with %s %q: %d %s; want 400 invalid_request naming both tenants", tt.method, tt.path,
				routing.TenantHeader, tt.header, resp.StatusCode, body.String())
		}
		if route := resp.Header.Get(routing.RouteHeader); route != "" {
			t.Errorf("%s %s: routed %q, want refused before routing", tt.method, tt.path, route)
		}
	}
	metrics := n.ops + "/metrics"
	if got := metricValue(t, metrics, "keyplane_route_requests_total", `route="refused"`); got != 3 {
		t.Errorf("refused routes = %v, want 3", got)
	}
	if got := metricValue(t, metrics, "keyplane_route_requests_total", `route="local"`); got != 0 {
		t.Errorf("local routes = %v, want 0", got)
	}
}

// TestSecurityTenantScopedCallWithoutTenant (issue 12, finding 12): a tenant-scoped
// call that left out Keyplane-Tenant was served by whichever node it reached, counted
// as local. Now Connect and gRPC callers are refused with InvalidArgument naming the
// header, the call is counted as refused (neither local nor served), and the same call
// with the header — as routing/client and gRPC metadata send it — is served.
func TestSecurityTenantScopedCallWithoutTenant(t *testing.T) {
	t.Parallel()
	n := routedWithOperator(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := &keyplanev1.ValidateTokenRequest{TenantId: "acme", Token: "not-a-token"}

	bare := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, n.api)
	_, err := bare.ValidateToken(ctx, connect.NewRequest(msg))
	wantCode(t, err, connect.CodeInvalidArgument, "send its tenant_id in the Keyplane-Tenant header")

	conn, err := grpc.NewClient(strings.TrimPrefix(n.api, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	method := keyplanev1connect.AuthServiceValidateTokenProcedure
	err = conn.Invoke(ctx, method, msg, new(keyplanev1.ValidateTokenResponse))
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "Keyplane-Tenant") {
		t.Fatalf("gRPC without the tenant: %v, want InvalidArgument naming Keyplane-Tenant", err)
	}
	metrics := n.ops + "/metrics"
	if got := metricValue(t, metrics, "keyplane_route_requests_total", `route="refused"`); got != 2 {
		t.Errorf("refused routes = %v, want 2", got)
	}
	for _, route := range []string{"local", "degraded", "forwarded"} {
		if got := metricValue(t, metrics, "keyplane_route_requests_total", `route="`+route+`"`); got != 0 {
			t.Errorf("%s routes = %v, want 0", route, got)
		}
	}
	if got := metricValue(t, metrics, "keyplane_rpc_duration_seconds_count", `procedure="`+method+`"`); got != 0 {
		t.Errorf("ValidateToken served %v times, want none", got)
	}

	// Callers that name the tenant are served (whatever the answer for an unknown
	// tenant, it is not the routing refusal).
	withTenant := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, n.api, connect.WithInterceptors(client.Tenant()))
	if _, err := withTenant.ValidateToken(ctx, connect.NewRequest(msg)); err != nil && strings.Contains(err.Error(), routing.TenantHeader) {
		t.Errorf("Connect with routing/client's tenant header: %v", err)
	}
	gctx := metadata.AppendToOutgoingContext(ctx, strings.ToLower(routing.TenantHeader), "acme")
	if err := conn.Invoke(gctx, method, msg, new(keyplanev1.ValidateTokenResponse)); err != nil && strings.Contains(err.Error(), routing.TenantHeader) {
		t.Errorf("gRPC with the tenant in metadata: %v", err)
	}
	if got := metricValue(t, metrics, "keyplane_rpc_duration_seconds_count", `procedure="`+method+`"`); got != 2 {
		t.Errorf("ValidateToken served %v times with the tenant named, want 2", got)
	}
	if got := metricValue(t, metrics, "keyplane_route_requests_total", `route="local"`); got != 2 {
		t.Errorf("local routes = %v, want 2", got)
	}
}
