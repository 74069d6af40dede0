package demo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/deploy/demo"
	"github.com/keyplane/keyplane/deploy/deploytest"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"
)

func TestMain(m *testing.M) { os.Exit(deploytest.Run(m)) }

// TestStartAndStop runs the whole scenario on two regions of one node each: the tour
// (which fails Start on any wrong answer), the guide, the state file and its removal.
func TestStartAndStop(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stateFile := filepath.Join(t.TempDir(), "state.json")
	var out bytes.Buffer
	d, err := demo.Start(ctx, demo.Config{Regions: []string{"us-east", "eu-west"}, NodesPerRegion: 1, StateFile: stateFile,
		Binary: deploytest.Binary, Out: &out})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, out.String())
	}
	stopped := false
	defer func() {
		if !stopped {
			d.Stop()
		}
	}()

	b, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	var got demo.State
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, d.State) {
		t.Errorf("state file does not round-trip:\n got %+v\nwant %+v", got, d.State)
	}
	st := d.State
	var regions, tenants []string
	for _, r := range st.Regions {
		regions = append(regions, r.Name)
		if len(r.NodeURLs) != 1 || len(r.OperatorURLs) != 1 || len(r.URLs) != 1 || r.URL != r.URLs[0] {
			t.Errorf("region %s: url %q, urls %v, node urls %v; want one node", r.Name, r.URL, r.URLs, r.NodeURLs)
		}
	}
	for _, tn := range st.Tenants {
		tenants = append(tenants, tn.ID+"@"+tn.HomeRegion)
		if tn.AdminID == "" || tn.Issuer == "" || tn.ClientID == "" || !strings.HasPrefix(tn.ClientSecret, "kpc_") {
			t.Errorf("tenant %s lacks its admin or its client: %+v", tn.ID, tn)
		}
		if st.FrontURL == "" || tn.Issuer != st.FrontURL+"/t/"+tn.ID {
			t.Errorf("tenant %s: issuer %q, want it under the global front %q", tn.ID, tn.Issuer, st.FrontURL)
		}
	}
	if want := []string{"us-east", "eu-west"}; !slices.Equal(regions, want) {
		t.Errorf("regions %v, want %v", regions, want)
	}
	if want := []string{"demo-us-east@us-east", "demo-eu-west@eu-west"}; !slices.Equal(tenants, want) {
		t.Errorf("tenants %v, want %v", tenants, want)
	}
	for _, from := range regions {
		for _, to := range regions {
			if n := len(st.ClientURLs[from][to]); n != 1 {
				t.Errorf("client_urls[%s][%s]: %d URLs, want 1", from, to, n)
			}
		}
	}
	if rtt := st.RTTMillis["us-east"]["eu-west"]; rtt != 70 {
		t.Errorf("rtt_ms[us-east][eu-west] = %d, want 70", rtt)
	}

	// The operator secret in the state file opens the admin API of every region.
	secret, err := os.ReadFile(st.OperatorSecretFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Regions {
		admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, r.URL,
			connect.WithInterceptors(client.Bearer(strings.TrimSpace(string(secret)))))
		resp, err := admin.GetTenant(ctx, connect.NewRequest(&keyplanev1.GetTenantRequest{Id: "demo-us-east"}))
		if err != nil {
			t.Fatalf("GetTenant from %s: %v", r.Name, err)
		}
		if home := resp.Msg.Tenant.HomeRegion; home != "us-east" {
			t.Errorf("GetTenant from %s: home region %q, want us-east", r.Name, home)
		}
	}

	// The tour: issued and revoked in eu-west and forwarded to the tenant's home,
	// checked in us-east locally, then inactive from both regions.
	text := out.String()
	for _, want := range []string{
		"tour: tenant demo-us-east lives in us-east",
		"token issued by an app in eu-west  forwarded → us-east/us-east-1",
		"checked by an app in us-east       local     → us-east/us-east-1",
		"revoked by an app in eu-west       forwarded → us-east/us-east-1",
		"leaver: an HR system in eu-west provisions people into demo-us-east over SCIM.",
		"HR marks dana inactive (SCIM PATCH active=False)",
		"dana-reports now belongs to morgan, dana's manager",
		"federation: a CI job in eu-west gets keyplane tokens for demo-us-east with no secret anywhere.",
		"the job exchanges its CI token (RFC 8693)",
		"with it the job calls Check: deploy.release.create on services/api/releases/42 allowed",
		"refused: the same CI token again (replay) and a feature branch's (token exchange refused: invalid_grant: condition:",
		"keyplane demo is running",
		"tenant         demo-eu-west (home region eu-west)",
		"state file     " + stateFile,
		"export KP=" + st.Regions[0].URL,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, "dana's token inactive, dana-reports' token active"); n != 2 {
		t.Errorf("the leaver tour shows %d regions with the leaver's token dead and the handed-over one alive, want 2:\n%s", n, text)
	}
	if n := strings.Count(text, " inactive\n"); n != 2 {
		t.Errorf("tour shows %d inactive answers, want 2:\n%s", n, text)
	}
	if !strings.Contains(text, "database       postgres://") || strings.Contains(text, st.DatabaseURL) {
		t.Errorf("output shows the database URL unredacted or not at all:\n%s", text)
	}

	// Every example the guide prints works as printed.
	runGuide(t, text)

	clusterDir := filepath.Dir(st.OperatorSecretFile)
	d.Stop()
	stopped = true
	for _, p := range []string{clusterDir, stateFile} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists after Stop (%v)", p, err)
		}
	}
	if resp, err := http.Get(st.Regions[0].NodeURLs[0] + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("a node still answers after Stop")
	}
}

// TestStateJSON pins the state file's field names: scripts and `keyplane chaos run
// --state-file` read them.
func TestStateJSON(t *testing.T) {
	t.Parallel()
	st := demo.State{
		Regions:    []demo.Region{{Name: "us-east", URLs: []string{"u"}}},
		Tenants:    []demo.Tenant{{ID: "t"}},
		ClientURLs: map[string]map[string][]string{}, RTTMillis: map[string]map[string]int64{},
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var top struct {
		Regions []map[string]any `json:"regions"`
		Tenants []map[string]any `json:"tenants"`
	}
	var fields map[string]any
	if err := json.Unmarshal(b, &fields); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		obj  map[string]any
		want []string
	}{
		{"state", fields, []string{"client_urls", "database_url", "front_url", "operator_secret_file", "regions", "rtt_ms", "tenants"}},
		{"region", top.Regions[0], []string{"name", "node_urls", "operator_urls", "url", "urls"}},
		{"tenant", top.Tenants[0], []string{"admin_identity_id", "client_id", "client_secret", "home_region", "id", "issuer",
			"tenant_admin_client_id", "tenant_admin_client_secret", "tenant_admin_identity_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := slices.Sorted(maps.Keys(tt.obj)); !slices.Equal(got, tt.want) {
				t.Errorf("fields %v, want %v", got, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  demo.Config
		want string // "" for valid
	}{
		{"zero value", demo.Config{}, ""},
		{"default", demo.DefaultConfig(), ""},
		{"one region, five nodes", demo.Config{Regions: []string{"a"}, NodesPerRegion: 5}, ""},
		{"six nodes", demo.Config{NodesPerRegion: 6}, "between 1 and 5"},
		{"negative nodes", demo.Config{NodesPerRegion: -1}, "between 1 and 5"},
		{"seven regions", demo.Config{Regions: strings.Split("a,b,c,d,e,f,g", ",")}, "1 to 6"},
		{"region twice", demo.Config{Regions: []string{"a", "b", "a"}}, `"a" is empty or named twice`},
		{"empty region", demo.Config{Regions: []string{"a", ""}}, `"" is empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
}
