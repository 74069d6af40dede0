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

	"github.com/keyplane/keyplane/deploy"
	"github.com/keyplane/keyplane/deploy/seed"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"
)

// demoState is the JSON written to --state-file. Its fields are stable: scripts,
// benchmarks and chaos drills read them.
type demoState struct {
	DatabaseURL        string        `json:"database_url"`
	OperatorSecretFile string        `json:"operator_secret_file"`
	Regions            []stateRegion `json:"regions"`
	Tenants            []stateTenant `json:"tenants"`
	// ClientURLs[from][to] are the URLs an application placed in region from uses to
	// reach the nodes of region to, through the simulated round trip.
	ClientURLs map[string]map[string][]string `json:"client_urls"`
	// RTTMillis[a][b] is the simulated round trip between regions a and b.
	RTTMillis map[string]map[string]int64 `json:"rtt_ms"`
}

type stateRegion struct {
	Name string `json:"name"`
	// URL is what an application in this region calls: the region's first node, through
	// the region's simulated client latency (1 ms). URLs lists every node that way.
	URL  string   `json:"url"`
	URLs []string `json:"urls"`
	// NodeURLs are the nodes' own addresses, without simulated latency.
	NodeURLs []string `json:"node_urls"`
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
	c := newCommand(stdout, "demo", "Start a local multi-region keyplane cluster on an automatically started private PostgreSQL, seed one tenant homed in each region, show a token issued, checked and revoked across regions, and run until Ctrl-C.", `
Regions talk through latency proxies (toxiproxy) that simulate a WAN: round trips
us-east↔eu-west 70 ms, us-east↔ap-south 200 ms, eu-west↔ap-south 150 ms, 1 ms inside a
region; clients placed in a region see the same latencies to the other regions.

Everything the demo starts (PostgreSQL, nodes, proxies, temporary directories) is
stopped and removed when it exits. PostgreSQL's server binaries must be installed (make
demo installs them).`)
	fs := c.flags
	regions := fs.String("regions", strings.Join(deploy.DefaultRegions, ","), "comma-separated regions to run, primary first")
	nodes := fs.Int("nodes-per-region", 2, "keyplane serve processes per region")
	stateFile := fs.String("state-file", "", "write the cluster's URLs and credentials to this JSON file")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	if *nodes < 1 || *nodes > 5 {
		return usageErr("--nodes-per-region must be between 1 and 5")
	}
	names := splitList(*regions)
	if len(names) < 1 || len(names) > 6 {
		return usageErr("--regions: give 1 to 6 regions")
	}
	fmt.Fprintf(stdout, "starting PostgreSQL, %d keyplane nodes in %d regions and the simulated WAN…\n", len(names)**nodes, len(names))
	cl, err := deploy.Start(ctx, deploy.Config{Regions: names, NodesPerRegion: *nodes, Durable: true})
	if err != nil {
		return err
	}
	defer cl.Stop()

	state := demoState{DatabaseURL: cl.DatabaseURL, OperatorSecretFile: cl.SecretFile(),
		ClientURLs: map[string]map[string][]string{}, RTTMillis: map[string]map[string]int64{}}
	for _, from := range names {
		state.ClientURLs[from], state.RTTMillis[from] = map[string][]string{}, map[string]int64{}
		for _, to := range names {
			state.ClientURLs[from][to] = cl.ClientURLs(from, to)
			state.RTTMillis[from][to] = cl.RTT(from, to).Milliseconds()
		}
		r := stateRegion{Name: from, URLs: cl.ClientURLs(from, from)}
		r.URL = r.URLs[0]
		for _, n := range cl.RegionNodes(from) {
			r.NodeURLs = append(r.NodeURLs, n.URL)
		}
		state.Regions = append(state.Regions, r)
	}
	for _, r := range state.Regions {
		tn, err := seedTenant(ctx, cl, r, "demo-"+r.Name)
		if err != nil {
			return err
		}
		state.Tenants = append(state.Tenants, tn)
	}
	if err := runTour(ctx, stdout, state); err != nil {
		return fmt.Errorf("tour: %w", err)
	}
	printTour(stdout, cl, state, *stateFile)
	// The state file appears last: whoever waits for it finds the cluster seeded.
	if *stateFile != "" {
		b, _ := json.MarshalIndent(state, "", "  ")
		if err := os.WriteFile(*stateFile, append(b, '\n'), 0o600); err != nil {
			return fmt.Errorf("write state file: %w", err)
		}
		defer os.Remove(*stateFile)
	}
	<-ctx.Done()
	fmt.Fprintln(stdout, "\nstopping the nodes, the proxies and PostgreSQL…")
	return nil
}

// seedTenant creates a tenant homed in region r with an admin identity and an admin
// OAuth client, through the region's own node (so the writes are local).
func seedTenant(ctx context.Context, cl *deploy.Cluster, r stateRegion, id string) (stateTenant, error) {
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, r.NodeURLs[0],
		connect.WithInterceptors(client.Bearer(cl.OperatorSecret)))
	t, err := seed.NewTenant(ctx, admin, seed.Spec{ID: id, Home: r.Name, Name: "Demo tenant homed in " + r.Name,
		OwnerName: "Demo Admin", OwnerEmail: "admin@" + id + ".example",
		Purpose: "the demo's OAuth client: gets tokens, introspects and revokes them", ServiceName: "demo admin client"})
	if err != nil {
		return stateTenant{}, err
	}
	clientID, secret, err := t.Client(ctx, admin, "demo admin client", true)
	if err != nil {
		return stateTenant{}, err
	}
	return stateTenant{ID: id, HomeRegion: r.Name, AdminID: t.OwnerID, Issuer: t.Issuer, ClientID: clientID, ClientSecret: secret}, nil
}

func printTour(w io.Writer, cl *deploy.Cluster, st demoState, stateFile string) {
	fmt.Fprintf(w, "\nkeyplane demo is running (Ctrl-C stops it and removes everything it started).\n\n")
	for _, r := range st.Regions {
		fmt.Fprintf(w, "  region %-10s clients there call %s\n", r.Name, r.URL)
	}
	for _, node := range cl.Nodes {
		fmt.Fprintf(w, "  node %-12s region %-10s %s   (logs: %s)\n", node.ID, node.Region, node.URL, node.LogFile)
	}
	fmt.Fprintf(w, "  database       %s\n", redactURL(st.DatabaseURL))
	for _, tn := range st.Tenants {
		fmt.Fprintf(w, "  tenant         %s (home region %s), admin identity %s\n", tn.ID, tn.HomeRegion, tn.AdminID)
	}
	if stateFile != "" {
		fmt.Fprintf(w, "  state file     %s\n", stateFile)
	}
	fmt.Fprintf(w, `
Try it from another terminal (KP is the first region's client URL; any region's works:
requests for a tenant homed elsewhere are forwarded there, see the Keyplane-Route and
Keyplane-Served-By response headers with curl -i):

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
`, st.Regions[0].URL, cl.SecretFile(), st.Tenants[0].ID, st.Tenants[0].AdminID, time.Now().Add(90*24*time.Hour).UTC().Format(time.RFC3339),
		st.Tenants[0].Issuer, st.Tenants[0].ClientID, st.Tenants[0].ClientSecret)
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
