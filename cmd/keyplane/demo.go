package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/deploy"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// demoState is the JSON written to --state-file. Its fields are stable: scripts,
// benchmarks and chaos drills read them.
type demoState struct {
	DatabaseURL        string        `json:"database_url"`
	OperatorSecretFile string        `json:"operator_secret_file"`
	Regions            []stateRegion `json:"regions"`
	Tenants            []stateTenant `json:"tenants"`
}

type stateRegion struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

type stateTenant struct {
	ID           string `json:"id"`
	HomeRegion   string `json:"home_region"`
	AdminID      string `json:"admin_identity_id"`
	Issuer       string `json:"issuer"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
}

func runDemo(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "demo", "Start a local keyplane cluster on an automatically started private PostgreSQL, seed a demo tenant with an admin identity, print what to try, and run until Ctrl-C.", `
Everything the demo starts (PostgreSQL, nodes, temporary directories) is stopped and
removed when it exits. PostgreSQL's server binaries must be installed (make demo
installs them).`)
	fs := c.flags
	regions := fs.String("regions", strings.Join(deploy.DefaultRegions[:1], ","), "comma-separated regions to run, primary first")
	nodes := fs.Int("nodes-per-region", 1, "keyplane serve processes per region")
	stateFile := fs.String("state-file", "", "write the cluster's URLs and credentials to this JSON file")
	tenant := fs.String("tenant", "demo", "id of the demo tenant")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	if *nodes < 1 || *nodes > 5 {
		return usageErr("--nodes-per-region must be between 1 and 5")
	}
	fmt.Fprintln(stdout, "starting PostgreSQL and the keyplane nodes…")
	cl, err := deploy.Start(ctx, deploy.Config{Regions: splitList(*regions), NodesPerRegion: *nodes, Durable: true})
	if err != nil {
		return err
	}
	defer cl.Stop()

	first := cl.Nodes[0]
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, first.URL,
		connect.WithInterceptors(bearer(cl.OperatorSecret)))
	t, err := admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{
		Id: *tenant, Name: "Demo tenant", HomeRegion: first.Region}))
	if err != nil {
		return fmt.Errorf("seed tenant: %w", err)
	}
	id, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{
		TenantId: *tenant, Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Demo Admin", Email: "admin@demo.example"}))
	if err != nil {
		return fmt.Errorf("seed admin identity: %w", err)
	}

	sa, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{
		TenantId: *tenant, Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, DisplayName: "demo admin client",
		OwnerId: id.Msg.Identity.Id, Purpose: "the demo's OAuth client: gets tokens, introspects and revokes them",
		ExpireTime: timestamppb.New(time.Now().Add(30 * 24 * time.Hour))}))
	if err != nil {
		return fmt.Errorf("seed service account: %w", err)
	}
	cli, err := admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{
		TenantId: *tenant, IdentityId: sa.Msg.Identity.Id, Name: "demo admin client", Admin: true}))
	if err != nil {
		return fmt.Errorf("seed OAuth client: %w", err)
	}
	state := demoState{DatabaseURL: cl.DatabaseURL, OperatorSecretFile: cl.SecretFile(),
		Tenants: []stateTenant{{ID: t.Msg.Tenant.Id, HomeRegion: t.Msg.Tenant.HomeRegion, AdminID: id.Msg.Identity.Id,
			Issuer: t.Msg.Tenant.Issuer, ClientID: cli.Msg.ClientId, ClientSecret: cli.Msg.ClientSecret}}}
	seen := map[string]bool{}
	for _, n := range cl.Nodes {
		if !seen[n.Region] {
			seen[n.Region] = true
			state.Regions = append(state.Regions, stateRegion{Name: n.Region, URL: n.URL})
		}
	}
	if *stateFile != "" {
		b, _ := json.MarshalIndent(state, "", "  ")
		if err := os.WriteFile(*stateFile, append(b, '\n'), 0o600); err != nil {
			return fmt.Errorf("write state file: %w", err)
		}
		defer os.Remove(*stateFile)
	}
	printTour(stdout, cl, state, *stateFile)
	<-ctx.Done()
	fmt.Fprintln(stdout, "\nstopping the nodes and PostgreSQL…")
	return nil
}

func printTour(w io.Writer, cl *deploy.Cluster, st demoState, stateFile string) {
	n := cl.Nodes[0]
	fmt.Fprintf(w, "\nkeyplane demo is running (Ctrl-C stops it and removes everything it started).\n\n")
	for _, node := range cl.Nodes {
		fmt.Fprintf(w, "  node %-12s region %-10s %s   (logs: %s)\n", node.ID, node.Region, node.URL, node.LogFile)
	}
	fmt.Fprintf(w, "  database       %s\n", redactURL(st.DatabaseURL))
	fmt.Fprintf(w, "  tenant         %s (home region %s), admin identity %s\n", st.Tenants[0].ID, st.Tenants[0].HomeRegion, st.Tenants[0].AdminID)
	fmt.Fprintf(w, "  issuer         %s\n", st.Tenants[0].Issuer)
	if stateFile != "" {
		fmt.Fprintf(w, "  state file     %s\n", stateFile)
	}
	fmt.Fprintf(w, `
Try it from another terminal:

  export KP=%[1]s
  export AUTH="Authorization: Bearer $(cat %[2]s)"
  export ISS=%[6]s CLIENT='%[7]s:%[8]s'

  # OAuth 2.0: get a token (client credentials), check it (RFC 7662), revoke it (RFC 7009)
  TOKEN=$(curl -s -u "$CLIENT" -d grant_type=client_credentials $ISS/oauth2/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  curl -s -u "$CLIENT" -d token=$TOKEN $ISS/oauth2/introspect      # "active":true
  curl -s -u "$CLIENT" -d token=$TOKEN $ISS/oauth2/revoke
  curl -s -u "$CLIENT" -d token=$TOKEN $ISS/oauth2/introspect      # {"active":false}: at once, everywhere

  # any JOSE library can verify the token: discovery and keys
  curl -s $ISS/.well-known/openid-configuration; curl -s $ISS/.well-known/jwks.json

  # health and readiness
  curl -s $KP/healthz; curl -s $KP/readyz

  # the admin API speaks Connect (JSON over HTTP POST), gRPC and gRPC-Web
  curl -s -H "$AUTH" -H 'Content-Type: application/json' $KP/keyplane.v1.AdminService/ListTenants -d '{}'
  curl -s -H "$AUTH" -H 'Content-Type: application/json' $KP/keyplane.v1.AdminService/CreateIdentity \
    -d '{"tenantId":"%[3]s","kind":"IDENTITY_KIND_SERVICE_ACCOUNT","displayName":"ci-bot","ownerId":"%[4]s","purpose":"deploys","expireTime":"%[5]s"}'
  curl -s -H "$AUTH" -H 'Content-Type: application/json' $KP/keyplane.v1.AdminService/ListAuditEvents -d '{"tenantId":"%[3]s"}'

  # a non-human identity without an owner is refused, naming the field
  curl -s -H "$AUTH" -H 'Content-Type: application/json' $KP/keyplane.v1.AdminService/CreateIdentity \
    -d '{"tenantId":"%[3]s","kind":"IDENTITY_KIND_AGENT","displayName":"rogue"}'

  # with buf (server reflection, no protos needed)
  buf curl --http2-prior-knowledge --protocol grpc -H "$AUTH" $KP/keyplane.v1.AdminService/ListRegions

  # Prometheus metrics
  curl -s $KP/metrics | grep keyplane_rpc
`, n.URL, cl.SecretFile(), st.Tenants[0].ID, st.Tenants[0].AdminID, time.Now().Add(90*24*time.Hour).UTC().Format(time.RFC3339),
		st.Tenants[0].Issuer, st.Tenants[0].ClientID, st.Tenants[0].ClientSecret)
}

// bearer adds the operator secret to every call.
func bearer(secret string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+secret)
			return next(ctx, req)
		}
	}
}

// redactURL hides the password in a database URL.
func redactURL(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 {
		return u
	}
	userinfo := u[scheme+3 : at]
	if name, _, ok := strings.Cut(userinfo, ":"); ok {
		return u[:scheme+3] + name + ":***" + u[at:]
	}
	return u
}
