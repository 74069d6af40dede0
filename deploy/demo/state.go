package demo

// State is the JSON written to Config.StateFile. Its field names are stable: scripts,
// benchmarks and `keyplane chaos run --state-file` read them.
type State struct {
	DatabaseURL string `json:"database_url"`
	// FrontURL is the global front every tenant's issuer is under: a proxy sending each
	// request to a healthy node (of the region named by a Keyplane-Region request
	// header, when given), so that no node's or region's death breaks discovery.
	FrontURL           string   `json:"front_url"`
	OperatorSecretFile string   `json:"operator_secret_file"`
	Regions            []Region `json:"regions"`
	Tenants            []Tenant `json:"tenants"`
	// ClientURLs[from][to] are the URLs an application placed in region from uses to
	// reach the nodes of region to, through the simulated round trip.
	ClientURLs map[string]map[string][]string `json:"client_urls"`
	// RTTMillis[a][b] is the simulated round trip between regions a and b.
	RTTMillis map[string]map[string]int64 `json:"rtt_ms"`
}

// Region is one region of the demo cluster.
type Region struct {
	Name string `json:"name"`
	// URL is what an application in this region calls: the region's first node, through
	// the region's simulated client latency (1 ms). URLs lists every node that way.
	URL  string   `json:"url"`
	URLs []string `json:"urls"`
	// NodeURLs are the nodes' own addresses, without simulated latency.
	NodeURLs []string `json:"node_urls"`
	// OperatorURLs are the nodes' operator listeners (/metrics, /members,
	// /debug/pprof), in NodeURLs' order.
	OperatorURLs []string `json:"operator_urls"`
}

// Tenant is a seeded tenant: its admin identity and an admin OAuth client that may
// get, introspect and revoke the tenant's tokens; and its tenant admin's OAuth client
// (built-in role tenant-admin), whose tokens do the tenant's admin work.
type Tenant struct {
	ID                string `json:"id"`
	HomeRegion        string `json:"home_region"`
	AdminID           string `json:"admin_identity_id"`
	Issuer            string `json:"issuer"`
	ClientID          string `json:"client_id"`
	ClientSecret      string `json:"client_secret"`
	TenantAdminID     string `json:"tenant_admin_identity_id"`
	TenantAdminClient string `json:"tenant_admin_client_id"`
	TenantAdminSecret string `json:"tenant_admin_client_secret"`
}
