package region_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region"
	"github.com/keyplane/keyplane/region/credential"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestMain lowers the cost of new password hashes for this test binary: its tests
// log in thousands of times under the race detector (region/credential's own tests
// pin the production parameters).
func TestMain(m *testing.M) {
	credential.UseTestHashParams()
	os.Exit(schematest.Run(m))
}

const secret = "test-operator-secret-0123456789"

// testNode serves a node on a real listener and returns its base URL.
func testNode(t *testing.T, store *schema.Store, cfg region.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.IssuerBase == "" {
		cfg.IssuerBase = "http://" + ln.Addr().String()
	}
	n, err := region.New(cfg, store, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})), prometheus.NewRegistry())
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func nodeConfig() region.Config {
	return region.Config{Region: "us-east", NodeID: "us-east-1", OperatorSecret: secret}
}

func adminClient(url, token string) keyplanev1connect.AdminServiceClient {
	return keyplanev1connect.NewAdminServiceClient(http.DefaultClient, url, connect.WithInterceptors(
		connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				if token != "" {
					req.Header().Set("Authorization", "Bearer "+token)
				}
				req.Header().Set("X-Request-Id", "test-req-42")
				return next(ctx, req)
			}
		})))
}

func wantCode(t *testing.T, err error, code connect.Code, msgPart string) {
	t.Helper()
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("got code %v (%v), want %v", got, err, code)
	}
	if !strings.Contains(err.Error(), msgPart) {
		t.Fatalf("error %q does not mention %q", err, msgPart)
	}
}

func TestAdminAuth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := schematest.NewStore(t, "us-east")
	url := testNode(t, store, nodeConfig())
	req := connect.NewRequest(&keyplanev1.ListTenantsRequest{})
	_, err := adminClient(url, "").ListTenants(ctx, req)
	wantCode(t, err, connect.CodeUnauthenticated, "missing credentials")
	_, err = adminClient(url, secret+"x").ListTenants(ctx, req)
	wantCode(t, err, connect.CodeUnauthenticated, "invalid operator credentials")
	if _, err = adminClient(url, secret).ListTenants(ctx, req); err != nil {
		t.Fatalf("with the operator secret: %v", err)
	}

	closed := nodeConfig()
	closed.OperatorSecret = ""
	closedURL := testNode(t, store, closed)
	_, err = adminClient(closedURL, "").ListTenants(ctx, req)
	wantCode(t, err, connect.CodeUnauthenticated, "admin API is disabled")
	_, err = adminClient(closedURL, "anything").ListTenants(ctx, req)
	wantCode(t, err, connect.CodeUnauthenticated, "admin API is disabled")
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	const iss = "https://iam.test"
	for _, c := range []region.Config{
		{Region: "", NodeID: "n1", IssuerBase: iss},
		{Region: "us_east", NodeID: "n1", IssuerBase: iss}, // schema.CheckRegionName's rule, not the node id's
		{Region: "us-east", NodeID: "n1"},                  // no issuer base
		{Region: "us-east", NodeID: "Bad Node", IssuerBase: iss},
		{Region: "us-east", NodeID: "n1", OperatorSecret: "short", IssuerBase: iss},
		{Region: "us-east", NodeID: "n1", IssuerBase: iss, APIAudience: "two words"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("config %+v: want an error", c)
		}
	}
	c := region.Config{Region: "us-east", NodeID: "n1", OperatorSecret: secret, IssuerBase: iss}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if s := c.OperatorSecret.String(); strings.Contains(s, "secret") {
		t.Fatalf("secret printed as %q", s)
	}
}

func TestAdminTenantsAndIdentities(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := schematest.NewStore(t, "us-east")
	c := adminClient(testNode(t, store, nodeConfig()), secret)

	tr, err := c.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "Acme", HomeRegion: "eu-west"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.Msg.Tenant; got.HomeRegion != "eu-west" || got.Residency != keyplanev1.Residency_RESIDENCY_REGION || got.Status != keyplanev1.Status_STATUS_ACTIVE {
		t.Fatalf("tenant: %v", got)
	}
	if tr.Header().Get("X-Request-Id") != "test-req-42" {
		t.Errorf("request id not echoed: %q", tr.Header().Get("X-Request-Id"))
	}
	if _, err := c.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "other", Name: "Other", HomeRegion: "us-east"})); err != nil {
		t.Fatal(err)
	}
	attrs, _ := structpb.NewStruct(map[string]any{"team": "platform"})
	alice, err := c.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Alice", Email: "alice@acme.example", Attributes: attrs}))
	if err != nil {
		t.Fatal(err)
	}
	exp := timestamppb.New(time.Now().Add(30 * 24 * time.Hour))
	bot, err := c.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_WORKLOAD, DisplayName: "etl", OwnerId: alice.Msg.Identity.Id, Purpose: "nightly ETL", ExpireTime: exp}))
	if err != nil {
		t.Fatal(err)
	}
	if bot.Msg.Identity.OwnerId != alice.Msg.Identity.Id || bot.Msg.Identity.Kind != keyplanev1.IdentityKind_IDENTITY_KIND_WORKLOAD {
		t.Fatalf("NHI: %v", bot.Msg.Identity)
	}
	got, err := c.GetIdentity(ctx, connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: alice.Msg.Identity.Id}))
	if err != nil || got.Msg.Identity.Attributes.AsMap()["team"] != "platform" {
		t.Fatalf("get: %v %v", got, err)
	}
	name := "Alice A."
	up, err := c.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: alice.Msg.Identity.Id, DisplayName: &name}))
	if err != nil || up.Msg.Identity.DisplayName != name || up.Msg.Identity.Email != "alice@acme.example" {
		t.Fatalf("update: %v %v", up, err)
	}
	dis, err := c.DisableIdentity(ctx, connect.NewRequest(&keyplanev1.DisableIdentityRequest{TenantId: "acme", Id: bot.Msg.Identity.Id}))
	if err != nil || dis.Msg.Identity.Status != keyplanev1.Status_STATUS_DISABLED || dis.Msg.Identity.TokensValidAfter == nil {
		t.Fatalf("disable: %v %v", dis, err)
	}

	// Tenant isolation through the API: tenant "other" cannot see or change acme's rows.
	_, err = c.GetIdentity(ctx, connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "other", Id: alice.Msg.Identity.Id}))
	wantCode(t, err, connect.CodeNotFound, "identity")
	_, err = c.DisableIdentity(ctx, connect.NewRequest(&keyplanev1.DisableIdentityRequest{TenantId: "other", Id: alice.Msg.Identity.Id}))
	wantCode(t, err, connect.CodeNotFound, "identity")
	_, err = c.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "other",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_AGENT, DisplayName: "spy", OwnerId: alice.Msg.Identity.Id, Purpose: "x", ExpireTime: exp}))
	wantCode(t, err, connect.CodeInvalidArgument, "owner_id")

	evs, err := c.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range evs.Msg.Events {
		actions = append(actions, e.Action)
		if e.RequestId != "test-req-42" || e.Actor != "operator" || e.Node != "us-east-test" || e.Region != "us-east" {
			t.Errorf("audit event %s: %v", e.Action, e)
		}
	}
	// The tenant's creation also made its owner and first tenant admin, in one
	// transaction (one timestamp, so in no particular order among themselves).
	if len(actions) > 4 {
		slices.Sort(actions[4:])
	}
	if want := "identity.disable,identity.update,identity.create,identity.create," +
		"binding.create,credential.create,identity.create,identity.create,tenant.create"; strings.Join(actions, ",") != want {
		t.Fatalf("audit (newest first): got %v, want %v", strings.Join(actions, ","), want)
	}
}

func TestAdminBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := schematest.NewStore(t, "us-east")
	c := adminClient(testNode(t, store, nodeConfig()), secret)
	if _, err := c.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "Acme", HomeRegion: "us-east"})); err != nil {
		t.Fatal(err)
	}
	type call func() error
	tests := []struct {
		name string
		call call
		code connect.Code
		msg  string
	}{
		{"unknown region", func() error {
			_, err := c.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "x1", Name: "X", HomeRegion: "mars"}))
			return err
		}, connect.CodeInvalidArgument, "home_region"},
		{"duplicate tenant", func() error {
			_, err := c.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "X", HomeRegion: "us-east"}))
			return err
		}, connect.CodeAlreadyExists, "acme"},
		{"bad residency enum", func() error {
			_, err := c.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "x2", Name: "X", HomeRegion: "us-east", Residency: 99}))
			return err
		}, connect.CodeInvalidArgument, "residency"},
		{"invalid tenant id", func() error {
			_, err := c.GetTenant(ctx, connect.NewRequest(&keyplanev1.GetTenantRequest{Id: "Not A Slug"}))
			return err
		}, connect.CodeInvalidArgument, "tenant_id"},
		{"missing tenant", func() error {
			_, err := c.GetTenant(ctx, connect.NewRequest(&keyplanev1.GetTenantRequest{Id: "nobody"}))
			return err
		}, connect.CodeNotFound, "nobody"},
		{"identity without kind", func() error {
			_, err := c.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme", DisplayName: "x"}))
			return err
		}, connect.CodeInvalidArgument, "kind"},
		{"NHI without owner", func() error {
			_, err := c.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
				Kind: keyplanev1.IdentityKind_IDENTITY_KIND_AGENT, DisplayName: "rogue"}))
			return err
		}, connect.CodeInvalidArgument, "owner_id"},
		{"bad identity id", func() error {
			_, err := c.GetIdentity(ctx, connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: "42"}))
			return err
		}, connect.CodeInvalidArgument, "id"},
		{"identity in unknown tenant", func() error {
			_, err := c.ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: "ghost"}))
			return err
		}, connect.CodeNotFound, "ghost"},
		{"missing tenant id", func() error {
			_, err := c.ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{}))
			return err
		}, connect.CodeInvalidArgument, "tenant_id"},
		{"invalid timestamp", func() error {
			_, err := c.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
				Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "x", ExpireTime: &timestamppb.Timestamp{Seconds: 1 << 62}}))
			return err
		}, connect.CodeInvalidArgument, "expire_time"},
		{"page size", func() error {
			_, err := c.ListTenants(ctx, connect.NewRequest(&keyplanev1.ListTenantsRequest{PageSize: 100000}))
			return err
		}, connect.CodeInvalidArgument, "page_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantCode(t, tt.call(), tt.code, tt.msg) })
	}
	ts, err := c.ListTenants(ctx, connect.NewRequest(&keyplanev1.ListTenantsRequest{}))
	if err != nil || len(ts.Msg.Tenants) != 1 {
		t.Fatalf("after bad input: %v tenants (%v), want only acme", len(ts.Msg.GetTenants()), err)
	}
}

// TestGRPCInterop talks to the node with grpc-go: health checks and server reflection
// work without the protos, as grpcurl and buf curl need.
func TestGRPCInterop(t *testing.T) {
	t.Parallel()
	store := schematest.NewStore(t, "us-east")
	url := testNode(t, store, nodeConfig())
	conn, err := grpc.NewClient(strings.TrimPrefix(url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
	stream, err := reflectpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	if !strings.Contains(strings.Join(names, ","), "keyplane.v1.AdminService") {
		t.Fatalf("reflection lists %v, want keyplane.v1.AdminService", names)
	}
}

func TestHTTPEndpoints(t *testing.T) {
	t.Parallel()
	store := schematest.NewStore(t, "us-east")
	url := testNode(t, store, nodeConfig())
	_, _ = adminClient(url, secret).ListRegions(context.Background(), connect.NewRequest(&keyplanev1.ListRegionsRequest{}))
	for path, want := range map[string]string{
		"/healthz": `"status":"ok"`,
		"/readyz":  `"ready":true`,
		"/metrics": `keyplane_rpc_duration_seconds_count{code="ok",node="us-east-1",procedure="/keyplane.v1.AdminService/ListRegions",region="us-east"} 1`,
	} {
		req, err := http.NewRequest(http.MethodGet, url+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+secret) // /metrics is for operators
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body lacks %q:\n%.600s", path, resp.StatusCode, want, body)
		}
		if got := resp.Header.Get("Keyplane-Served-By"); got != "us-east/us-east-1" {
			t.Errorf("GET %s: Keyplane-Served-By %q", path, got)
		}
	}
}
