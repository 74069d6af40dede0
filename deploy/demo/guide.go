package demo

import (
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/keyplane/keyplane/deploy"
)

// writeGuide writes where everything runs and how to try the cluster by hand.
func writeGuide(w io.Writer, cl *deploy.Cluster, st State, stateFile string) {
	fmt.Fprintf(w, "\nkeyplane demo is running (Ctrl-C stops it and removes everything it started).\n\n")
	fmt.Fprintf(w, "  global front   %s   every tenant's issuer: sends each request to a healthy node\n", st.FrontURL)
	for _, r := range st.Regions {
		fmt.Fprintf(w, "  region %-10s clients there call %s\n", r.Name, r.URL)
	}
	for _, node := range cl.Nodes {
		fmt.Fprintf(w, "  node %-12s region %-10s %s   (operator: %s, logs: %s)\n", node.ID, node.Region, node.URL, node.OperatorURL, node.LogFile)
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

  export KP=%[1]s OPS=%[9]s
  export ISS=%[6]s CLIENT='%[7]s:%[8]s' ADMIN='%[10]s:%[11]s'
  # cluster work (tenants, regions) takes the operator secret
  export AUTH="Authorization: Bearer $(cat %[2]s)"
  # tenant work takes a tenant admin's token: CreateTenant made this client, bound to
  # the built-in role tenant-admin (docs/administration.md)
  export TAUTH="Authorization: Bearer $(curl -s -u "$ADMIN" -d grant_type=client_credentials $ISS/oauth2/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')"

  # OAuth 2.0: get a token (client credentials), check it (RFC 7662), revoke it (RFC 7009)
  TOKEN=$(curl -s -u "$CLIENT" -d grant_type=client_credentials $ISS/oauth2/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  curl -s -u "$CLIENT" -d token=$TOKEN $ISS/oauth2/introspect      # "active":true
  curl -s -u "$CLIENT" -d token=$TOKEN $ISS/oauth2/revoke
  curl -s -u "$CLIENT" -d token=$TOKEN $ISS/oauth2/introspect      # {"active":false}: at once, everywhere

  # any JOSE library can verify the token: discovery and keys
  curl -s $ISS/.well-known/openid-configuration; curl -s $ISS/.well-known/jwks.json

  # ISS is under the global front (%[12]s), the demo's stand-in for a production
  # global name (GeoDNS, anycast, GSLB): it sends each request to a healthy node, of the
  # region a Keyplane-Region header names when given. Kill any node, or a whole region,
  # and discovery, keys, tokens and introspection keep answering through it; every
  # node answers discovery and keys itself (Keyplane-Front-Node: where it entered)
  curl -s -o /dev/null -D - -H 'Keyplane-Region: %[13]s' $ISS/.well-known/jwks.json | grep -i '^keyplane-'

  # health and readiness
  curl -s $KP/healthz; curl -s $KP/readyz

  # the admin API speaks Connect (JSON over HTTP POST), gRPC and gRPC-Web; a call for a
  # tenant names it in the Keyplane-Tenant header too, which routing goes by; the audit
  # log names the tenant admin as the actor
  curl -s -H "$AUTH" -H 'Content-Type: application/json' $KP/keyplane.v1.AdminService/ListTenants -d '{}'
  curl -s -H "$TAUTH" -H 'Keyplane-Tenant: %[3]s' -H 'Content-Type: application/json' $KP/keyplane.v1.AdminService/CreateIdentity \
    -d '{"tenantId":"%[3]s","kind":"IDENTITY_KIND_SERVICE_ACCOUNT","displayName":"ci-bot","ownerId":"%[4]s","purpose":"deploys","expireTime":"%[5]s"}'
  curl -s -H "$TAUTH" -H 'Keyplane-Tenant: %[3]s' -H 'Content-Type: application/json' $KP/keyplane.v1.AdminService/ListAuditEvents -d '{"tenantId":"%[3]s"}'

  # a permission check, explained; read "decision" (DECISION_ALLOW or DECISION_DENY):
  # protobuf JSON leaves out a false "allowed". WhoCan lists who Check would allow
  curl -s -H "$TAUTH" -H 'Keyplane-Tenant: %[3]s' -H 'Content-Type: application/json' $KP/keyplane.v1.CheckService/Check \
    -d '{"tenantId":"%[3]s","identityId":"%[4]s","permission":"docs.document.read","resource":"docs/1","explain":true}'
  curl -s -H "$TAUTH" -H 'Keyplane-Tenant: %[3]s' -H 'Content-Type: application/json' $KP/keyplane.v1.CheckService/WhoCan \
    -d '{"tenantId":"%[3]s","permission":"docs.document.read","resource":"docs/1"}'

  # the NHI inventory (docs/governance.md): every non-human identity with its owner's
  # state, credentials and risk findings; here the ones whose owner is gone (the tour's
  # casey-sync, frozen by the sweeper)
  curl -s -H "$TAUTH" -H 'Keyplane-Tenant: %[3]s' -H 'Content-Type: application/json' $KP/keyplane.v1.GovernanceService/ListInventory \
    -d '{"tenantId":"%[3]s","finding":"orphaned"}'

  # a non-human identity without an owner is refused, naming the field
  curl -s -H "$TAUTH" -H 'Keyplane-Tenant: %[3]s' -H 'Content-Type: application/json' $KP/keyplane.v1.AdminService/CreateIdentity \
    -d '{"tenantId":"%[3]s","kind":"IDENTITY_KIND_AGENT","displayName":"rogue"}'

  # with buf (server reflection, no protos needed)
  buf curl --http2-prior-knowledge --protocol grpc -H "$AUTH" $KP/keyplane.v1.AdminService/ListRegions

  # the operator listener (not the API port): Prometheus metrics, gossip members, pprof
  curl -s $OPS/metrics | grep keyplane_rpc; curl -s $OPS/members
`, st.Regions[0].URL, cl.SecretFile(), st.Tenants[0].ID, st.Tenants[0].AdminID, time.Now().Add(90*24*time.Hour).UTC().Format(time.RFC3339),
		st.Tenants[0].Issuer, st.Tenants[0].ClientID, st.Tenants[0].ClientSecret, st.Regions[0].OperatorURLs[0],
		st.Tenants[0].TenantAdminClient, st.Tenants[0].TenantAdminSecret, st.FrontURL, st.Regions[len(st.Regions)-1].Name)
}

// redactURL hides the password in a database URL.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(a database URL that does not parse)"
	}
	return p.Redacted()
}
