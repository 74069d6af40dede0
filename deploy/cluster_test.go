package deploy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/keyplane/keyplane/deploy"
	"github.com/keyplane/keyplane/deploy/deploytest"
	"github.com/keyplane/keyplane/deploy/seed"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/routing/client"
)

func TestMain(m *testing.M) { os.Exit(deploytest.Run(m)) }

// tenantHeader sets Keyplane-Tenant the way the app-side client does.
func tenantHeader(tenant string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set(routing.TenantHeader, tenant)
			return next(ctx, req)
		}
	}
}

type multiRegion struct {
	cl     *deploy.Cluster
	homes  map[string]string    // tenant → home region
	apiKey map[string]string    // tenant → API key of a service account
	svc    map[string]string    // tenant → that service account's identity id
	oauth  map[string][2]string // tenant → an admin OAuth client of that account: id, secret
}

func (mr *multiRegion) auth(url, tenant string) keyplanev1connect.AuthServiceClient {
	return keyplanev1connect.NewAuthServiceClient(http.DefaultClient, url, connect.WithInterceptors(tenantHeader(tenant)))
}

func (mr *multiRegion) admin(url, tenant string) keyplanev1connect.AdminServiceClient {
	return keyplanev1connect.NewAdminServiceClient(http.DefaultClient, url,
		connect.WithInterceptors(client.Bearer(mr.cl.OperatorSecret), tenantHeader(tenant)))
}

// token exchanges the tenant's API key for an access token at url.
func (mr *multiRegion) token(t *testing.T, url, tenant string) string {
	t.Helper()
	resp, err := mr.auth(url, tenant).ExchangeAPIKey(context.Background(),
		connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: tenant, ApiKey: mr.apiKey[tenant]}))
	if err != nil {
		t.Fatalf("exchange at %s: %v", url, err)
	}
	return resp.Msg.Token.AccessToken
}

type validation struct {
	active          bool
	reason          string
	route, servedBy string
	via             string
	err             error
}

func (mr *multiRegion) validate(url, tenant, token string) validation {
	resp, err := mr.auth(url, tenant).ValidateToken(context.Background(),
		connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: tenant, Token: token}))
	if err != nil {
		return validation{err: err}
	}
	return validation{active: resp.Msg.Active, reason: resp.Msg.Reason, route: resp.Header().Get(routing.RouteHeader),
		servedBy: resp.Header().Get("Keyplane-Served-By"), via: resp.Header().Get(routing.ViaHeader)}
}

func startMultiRegion(t *testing.T) *multiRegion {
	t.Helper()
	ctx := context.Background()
	cl, err := deploy.Start(ctx, deploy.Config{Binary: deploytest.Binary, Regions: deploy.DefaultRegions, NodesPerRegion: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	mr := &multiRegion{cl: cl, homes: map[string]string{}, apiKey: map[string]string{}, svc: map[string]string{}, oauth: map[string][2]string{}}
	for i, r := range deploy.DefaultRegions {
		tenant := []string{"acme", "globex", "initech"}[i]
		mr.homes[tenant] = r
		// Seed through a node of another region: the writes are forwarded home.
		admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, cl.Nodes[(2*i+2)%len(cl.Nodes)].URL,
			connect.WithInterceptors(client.Bearer(cl.OperatorSecret), client.Tenant()))
		st, err := seed.NewTenant(ctx, admin, seed.Spec{ID: tenant, Home: r, OwnerEmail: "owner@" + tenant + ".example",
			Purpose: "multi-region test", ServiceName: "svc"})
		if err != nil {
			t.Fatal(err)
		}
		key, err := st.APIKey(ctx, admin)
		if err != nil {
			t.Fatal(err)
		}
		mr.apiKey[tenant] = key
		mr.svc[tenant] = st.ServiceAccountID
		id, secret, err := st.Client(ctx, admin, "oauth client", true)
		if err != nil {
			t.Fatal(err)
		}
		mr.oauth[tenant] = [2]string{id, secret}
	}
	return mr
}

func TestMultiRegionRouting(t *testing.T) {
	mr := startMultiRegion(t)
	cl := mr.cl
	ctx := context.Background()

	t.Run("forwarded once to the home region", func(t *testing.T) {
		for tenant, home := range mr.homes {
			tok := mr.token(t, cl.Nodes[0].URL, tenant)
			for _, n := range cl.Nodes {
				got := mr.validate(n.URL, tenant, tok)
				if got.err != nil || !got.active {
					t.Fatalf("%s at %s: active %v err %v", tenant, n.ID, got.active, got.err)
				}
				wantRoute := routing.RouteForwarded
				if n.Region == home {
					wantRoute = routing.RouteLocal
				}
				if got.route != wantRoute {
					t.Errorf("%s at %s: route %q, want %q", tenant, n.ID, got.route, wantRoute)
				}
				if !strings.HasPrefix(got.servedBy, home+"/") {
					t.Errorf("%s at %s: served by %q, want a node of %s", tenant, n.ID, got.servedBy, home)
				}
				if wantRoute == routing.RouteForwarded && got.via != n.Region+"/"+n.ID {
					t.Errorf("%s at %s: via %q, want exactly one hop through %s", tenant, n.ID, got.via, n.ID)
				}
			}
		}
	})

	t.Run("request.region is where the request entered, forwarded or not", func(t *testing.T) {
		// acme lives in us-east. A binding that allows only requests entering at
		// eu-west must allow a check sent to an eu-west node (forwarded to us-east and
		// evaluated there) and deny the same check sent to a us-east node; a binding on
		// request.serving_region sees us-east either way.
		const tenant = "acme"
		admin := mr.admin(cl.Nodes[0].URL, tenant)
		role, err := admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: tenant, Name: "region-reader",
			Permissions: []string{"docs.document.read", "docs.folder.list"}}))
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range []struct{ scope, cond string }{
			{"entered/", `request.region == "eu-west"`},
			{"served/", `request.serving_region == "us-east"`},
		} {
			if _, err := admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: tenant, PrincipalKind: "identity",
				PrincipalId: mr.svc[tenant], RoleId: role.Msg.Role.Id, Scope: b.scope, Condition: b.cond, Justification: "request.region test"})); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range cl.Nodes {
			check := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, n.URL,
				connect.WithInterceptors(client.Bearer(mr.cl.OperatorSecret), tenantHeader(tenant)))
			for _, tt := range []struct {
				resource string
				want     bool
			}{
				{"entered/doc", n.Region == "eu-west"},
				{"served/doc", true},
			} {
				resp, err := check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: tenant,
					Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: mr.svc[tenant]}, Permission: "docs.document.read", Resource: tt.resource}))
				if err != nil {
					t.Fatalf("check %s at %s: %v", tt.resource, n.ID, err)
				}
				if served := resp.Header().Get("Keyplane-Served-By"); !strings.HasPrefix(served, "us-east/") {
					t.Errorf("check at %s served by %q, want a us-east node", n.ID, served)
				}
				if resp.Msg.Allowed != tt.want {
					t.Errorf("check of %s entering at %s (%s): allowed %v, want %v: %s", tt.resource, n.ID, n.Region, resp.Msg.Allowed, tt.want, resp.Msg.Reason)
				}
			}
		}
	})

	t.Run("authorization cases from an outside client speaking Connect JSON", func(t *testing.T) {
		outsideClientCases(t, mr)
	})

	t.Run("OAuth endpoints route by the /t/ path; discovery and JWKS are answered anywhere", func(t *testing.T) {
		n := cl.RegionNodes("ap-south")[0]
		for _, path := range []string{"/t/acme/.well-known/jwks.json", "/t/acme/.well-known/openid-configuration"} {
			resp, err := http.Get(n.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get(routing.RouteHeader) != routing.RouteLocal ||
				resp.Header.Get("Keyplane-Served-By") != "ap-south/"+n.ID {
				t.Errorf("%s via ap-south: %s route %q served by %q, want answered there", path, resp.Status, resp.Header.Get(routing.RouteHeader), resp.Header.Get("Keyplane-Served-By"))
			}
		}
		req, err := http.NewRequest(http.MethodPost, n.URL+"/t/acme/oauth2/introspect", strings.NewReader(url.Values{"token": {"x"}}.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(mr.oauth["acme"][0], mr.oauth["acme"][1])
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get(routing.RouteHeader) != routing.RouteForwarded ||
			!strings.HasPrefix(resp.Header.Get("Keyplane-Served-By"), "us-east/") {
			t.Errorf("introspect via ap-south: %s route %q served by %q, want forwarded to us-east", resp.Status, resp.Header.Get(routing.RouteHeader), resp.Header.Get("Keyplane-Served-By"))
		}
	})

	t.Run("gRPC clients are forwarded too", func(t *testing.T) {
		n := cl.RegionNodes("eu-west")[0]
		conn, err := grpc.NewClient(strings.TrimPrefix(n.URL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		tok := mr.token(t, n.URL, "acme")
		var hdr metadata.MD
		out := new(keyplanev1.ValidateTokenResponse)
		gctx := metadata.AppendToOutgoingContext(ctx, strings.ToLower(routing.TenantHeader), "acme")
		err = conn.Invoke(gctx, keyplanev1connect.AuthServiceValidateTokenProcedure,
			&keyplanev1.ValidateTokenRequest{TenantId: "acme", Token: tok}, out, grpc.Header(&hdr))
		if err != nil || !out.Active {
			t.Fatalf("grpc ValidateToken via eu-west: active %v err %v", out.Active, err)
		}
		if got := hdr.Get("keyplane-route"); len(got) != 1 || got[0] != routing.RouteForwarded {
			t.Errorf("grpc route header %v, want forwarded", got)
		}
		// A gRPC error status (trailers) survives the hop.
		err = conn.Invoke(gctx, keyplanev1connect.AuthServiceValidateTokenProcedure,
			&keyplanev1.ValidateTokenRequest{TenantId: "acme"}, out)
		if err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
			t.Errorf("grpc ValidateToken without token via eu-west: %v, want InvalidArgument", err)
		}
	})

	t.Run("a body naming another tenant than the header is refused", func(t *testing.T) {
		n := cl.RegionNodes("us-east")[0]
		_, err := mr.auth(n.URL, "acme").ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "globex", Token: "x"}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "tenant_id") {
			t.Errorf("mismatched tenant: %v, want InvalidArgument naming tenant_id", err)
		}
	})

	t.Run("revocation in one region is seen by the next validation everywhere", func(t *testing.T) {
		for tenant := range mr.homes {
			tok := mr.token(t, cl.RegionNodes("ap-south")[0].URL, tenant)
			if _, err := mr.auth(cl.RegionNodes("eu-west")[1].URL, tenant).RevokeToken(ctx,
				connect.NewRequest(&keyplanev1.RevokeTokenRequest{TenantId: tenant, Token: tok})); err != nil {
				t.Fatalf("revoke %s via eu-west: %v", tenant, err)
			}
			for _, n := range cl.Nodes {
				if got := mr.validate(n.URL, tenant, tok); got.err != nil || got.active {
					t.Errorf("%s token after revoke, at %s: active %v reason %q err %v", tenant, n.ID, got.active, got.reason, got.err)
				}
			}
		}
	})

	t.Run("offboarding through one region: the leaver's tokens are inactive everywhere, its NHI goes to the manager", func(t *testing.T) {
		offboardingAcrossRegions(t, mr)
	})

	t.Run("revocation canary: no stale read from any region, and a stale region is caught", func(t *testing.T) {
		canaryAcrossRegions(t, mr)
	})

	t.Run("rehoming a tenant reroutes its requests to the new home", func(t *testing.T) {
		tok := mr.token(t, cl.Nodes[0].URL, "globex")
		moved, err := mr.admin(cl.RegionNodes("us-east")[0].URL, "").RehomeTenant(ctx,
			connect.NewRequest(&keyplanev1.RehomeTenantRequest{Id: "globex", HomeRegion: "ap-south"}))
		if err != nil {
			t.Fatal(err)
		}
		if moved.Msg.Tenant.HomeRegion != "ap-south" {
			t.Fatalf("rehome answered home %q", moved.Msg.Tenant.HomeRegion)
		}
		// The move is gossiped; every node routes to ap-south once it hears it.
		for _, n := range cl.Nodes {
			var last validation
			for range 50 {
				if last = mr.validate(n.URL, "globex", tok); last.err == nil && strings.HasPrefix(last.servedBy, "ap-south/") {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if !last.active || !strings.HasPrefix(last.servedBy, "ap-south/") {
				t.Errorf("globex at %s after the move: %+v, want active, served by ap-south", n.ID, last)
			}
		}
		// A write sent to a node of the old home lands in the new home.
		id, err := mr.admin(cl.RegionNodes("eu-west")[0].URL, "globex").CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{
			TenantId: "globex", Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "After the move"}))
		if err != nil {
			t.Fatalf("create identity after the move: %v", err)
		}
		if !strings.HasPrefix(id.Header().Get("Keyplane-Served-By"), "ap-south/") {
			t.Errorf("write after the move served by %q, want ap-south", id.Header().Get("Keyplane-Served-By"))
		}
		mr.homes["globex"] = "ap-south"
	})

	t.Run("partition: requests across the cut are served degraded", func(t *testing.T) {
		tok := mr.token(t, cl.Nodes[0].URL, "acme")
		if err := cl.Partition("eu-west", "us-east", false); err != nil {
			t.Fatal(err)
		}
		for _, n := range cl.RegionNodes("eu-west") {
			got := mr.validate(n.URL, "acme", tok)
			if got.err != nil || !got.active || got.route != routing.RouteDegraded || !strings.HasPrefix(got.servedBy, "eu-west/") {
				t.Errorf("acme at %s during partition: %+v, want active, degraded, served by eu-west", n.ID, got)
			}
		}
		// A check entering at eu-west and served there, degraded, sees the same
		// request.region as when it was forwarded to us-east (the request.region
		// subtest's bindings): the entry region, whoever evaluates it.
		for _, n := range cl.RegionNodes("eu-west") {
			check := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, n.URL,
				connect.WithInterceptors(client.Bearer(mr.cl.OperatorSecret), tenantHeader("acme")))
			for resource, want := range map[string]bool{"entered/doc": true, "served/doc": false} {
				resp, err := check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
					Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: mr.svc["acme"]}, Permission: "docs.document.read", Resource: resource}))
				if err != nil {
					t.Fatalf("check %s at %s during partition: %v", resource, n.ID, err)
				}
				if route := resp.Header().Get(routing.RouteHeader); route != routing.RouteDegraded || resp.Msg.Allowed != want {
					t.Errorf("check %s at %s during partition: route %q allowed %v, want degraded and %v: %s", resource, n.ID, route, resp.Msg.Allowed, want, resp.Msg.Reason)
				}
			}
		}
		// ap-south still reaches us-east.
		if got := mr.validate(cl.RegionNodes("ap-south")[0].URL, "acme", tok); got.route != routing.RouteForwarded {
			t.Errorf("acme at ap-south during an eu-west partition: route %q, want forwarded", got.route)
		}
		if err := cl.Heal("eu-west", "us-east"); err != nil {
			t.Fatal(err)
		}
		waitRoute(t, func() validation { return mr.validate(cl.RegionNodes("eu-west")[0].URL, "acme", tok) }, routing.RouteForwarded)
	})

	t.Run("app-side client: spreads over its region, fails over when the region dies", func(t *testing.T) {
		var eps []client.Endpoint
		for _, r := range cl.Regions() {
			for _, u := range cl.ClientURLs("eu-west", r) {
				eps = append(eps, client.Endpoint{Region: r, URL: u})
			}
		}
		cfg := client.DefaultConfig()
		cfg.Endpoints, cfg.Prefer, cfg.ProbeInterval = eps, []string{"eu-west"}, 200*time.Millisecond
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		auth := keyplanev1connect.NewAuthServiceClient(c.HTTPClient(), client.BaseURL, c.Options()...)
		tok := mr.token(t, cl.Nodes[0].URL, "acme")
		via := map[string]int{}
		for range 20 {
			resp, err := auth.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "acme", Token: tok}))
			if err != nil || !resp.Msg.Active {
				t.Fatalf("validate through the client: %v", err)
			}
			via[resp.Header().Get(routing.ViaHeader)]++
		}
		if len(via) != 2 || via["eu-west/eu-west-1"] == 0 || via["eu-west/eu-west-2"] == 0 {
			t.Errorf("calls entered through %v, want both eu-west nodes", via)
		}
		west := cl.RegionNodes("eu-west")
		for _, n := range west {
			if err := n.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		// No call fails. The clients reach eu-west through proxies (like a load
		// balancer) that accept the connection and then drop it, so a validation
		// (safe to repeat) fails over at once, and marks eu-west down; exchanges
		// (not safe to repeat) then go straight to the next region.
		for i := range 10 {
			resp, err := auth.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "acme", Token: tok}))
			if err != nil || !resp.Msg.Active {
				t.Fatalf("validate %d with eu-west down: %v", i, err)
			}
			if got := resp.Header().Get("Keyplane-Served-By"); !strings.HasPrefix(got, "us-east/") {
				t.Errorf("validate %d with eu-west down served by %q", i, got)
			}
			if _, err := auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "acme",
				ApiKey: mr.apiKey["acme"]})); err != nil {
				t.Fatalf("exchange %d with eu-west down: %v", i, err)
			}
		}
		for _, n := range west {
			if err := cl.StartNode(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.WaitRouted(ctx, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("home nodes killed: another home node, then degraded", func(t *testing.T) {
		tok := mr.token(t, cl.Nodes[0].URL, "acme")
		east := cl.RegionNodes("us-east")
		if err := east[0].Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// Until gossip notices, the router learns from the failed dial and retries the
		// other home node: no request fails and none leaves the home region.
		for i := range 20 {
			n := cl.RegionNodes("eu-west")[i%2]
			got := mr.validate(n.URL, "acme", tok)
			if got.err != nil || !got.active || got.servedBy != "us-east/"+east[1].ID {
				t.Fatalf("call %d after killing %s: %+v, want served by %s", i, east[0].ID, got, east[1].ID)
			}
		}
		if err := east[1].Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for _, n := range append(cl.RegionNodes("eu-west"), cl.RegionNodes("ap-south")...) {
			got := mr.validate(n.URL, "acme", tok)
			if got.err != nil || !got.active || got.route != routing.RouteDegraded || got.servedBy != n.Region+"/"+n.ID {
				t.Errorf("acme at %s with us-east down: %+v, want active, degraded, served locally", n.ID, got)
			}
		}
		// Revocation still holds: revoke in ap-south, every survivor says inactive.
		if _, err := mr.auth(cl.RegionNodes("ap-south")[0].URL, "acme").RevokeToken(ctx,
			connect.NewRequest(&keyplanev1.RevokeTokenRequest{TenantId: "acme", Token: tok})); err != nil {
			t.Fatalf("revoke while us-east is down: %v", err)
		}
		for _, n := range append(cl.RegionNodes("eu-west"), cl.RegionNodes("ap-south")...) {
			if got := mr.validate(n.URL, "acme", tok); got.err != nil || got.active {
				t.Errorf("revoked acme token at %s with us-east down: %+v", n.ID, got)
			}
		}
	})

	// Last: it kills eu-west too.
	t.Run("global front: standard OIDC clients survive a node's and a region's death", func(t *testing.T) {
		frontCases(t, mr)
	})
}

// waitRoute polls until a call reports the route (gossip and the routers' failure
// memory take a moment to forget a healed fault), for at most ten seconds.
func waitRoute(t *testing.T, call func() validation, want string) {
	t.Helper()
	var last validation
	for range 100 {
		if last = call(); last.err == nil && last.route == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("route never became %q: last %+v", want, last)
}

// TestSecurityNodeArgvHoldsNoSecrets (issue 12, finding 14): `keyplane serve --db
// postgres://user:password@…` put the database password in the node's argv, which
// every user of the machine reads (ps, /proc/<pid>/cmdline). A node the local cluster
// starts has no secret in its argv: not the database URL or its password, the operator
// secret, the KEK or the gossip key (it gets them by file or environment, which only
// its user reads). Its /members and /metrics are on the operator listener, not the API
// port.
func TestSecurityNodeArgvHoldsNoSecrets(t *testing.T) {
	t.Parallel()
	cl, err := deploy.Start(context.Background(), deploy.Config{Binary: deploytest.Binary, Regions: deploy.DefaultRegions[:1]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	u, err := url.Parse(cl.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	dbPassword, _ := u.User.Password()
	for _, n := range cl.Nodes {
		argv, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", n.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", n.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		secrets := map[string]string{"database URL": cl.DatabaseURL, "database password": dbPassword,
			"operator secret": cl.OperatorSecret, "KEK": cl.KEK}
		for _, kv := range strings.Split(string(environ), "\x00") {
			if v, ok := strings.CutPrefix(kv, "KEYPLANE_GOSSIP_KEYS="); ok {
				secrets["gossip key"] = v
			}
		}
		for what, secret := range secrets {
			if len(secret) < 8 {
				t.Fatalf("%s: %q is too short to look for (the test would prove nothing)", what, secret)
			}
			if strings.Contains(string(argv), secret) {
				t.Errorf("node %s: its argv (ps) shows the %s: %q", n.ID, what, strings.ReplaceAll(string(argv), "\x00", " "))
			}
		}
		if len(secrets) != 5 {
			t.Errorf("node %s: found %d of 5 secrets to look for (no gossip key in its environment?)", n.ID, len(secrets))
		}
		for _, path := range []string{"/members", "/metrics"} {
			for base, want := range map[string]int{n.URL: http.StatusNotFound, n.OperatorURL: http.StatusOK} {
				resp, err := http.Get(base + path)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("node %s: GET %s%s: %s, want %d", n.ID, base, path, resp.Status, want)
				}
			}
		}
	}
}
