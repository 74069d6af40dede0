package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestCampaignCommands creates a campaign, lists it and, once closed, prints its
// evidence in Markdown and JSON, against a real node; bad flags are refused.
func TestCampaignCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	const op = "campaign-cli-operator-secret-012345"
	secretFile := filepath.Join(dir, "operator-secret")
	if err := os.WriteFile(secretFile, []byte(op+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	api := startServe(t, "--db-file", dbFile(t, schematest.NewDatabase(t)), "--region", schematest.Regions[0],
		"--listen", "127.0.0.1:0", "--operator-secret-file", secretFile, "--log-level", "error")
	auth := connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, r connect.AnyRequest) (connect.AnyResponse, error) {
			r.Header().Set("Authorization", "Bearer "+op)
			return next(ctx, r)
		}
	}))
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, api, auth)
	if _, err := admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "Acme", HomeRegion: schematest.Regions[0]})); err != nil {
		t.Fatal(err)
	}
	base := []string{"--url", api, "--tenant", "acme", "--token-file", secretFile}
	cli := func(args ...string) string {
		t.Helper()
		code, out, errs := runCLI(t, append(args, base...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		return out
	}
	out := cli("campaign", "create", "--name", "Q3 review", "--scope", "tenant", "--deadline", "336h", "--default", "revoke")
	c := &keyplanev1.Campaign{}
	if err := protojson.Unmarshal([]byte(out), c); err != nil || c.Name != "Q3 review" || c.Items < 1 {
		t.Fatalf("create: %q %v", out, err)
	}
	if out := cli("campaign", "list"); !strings.Contains(out, c.Id) || strings.Count(out, "\n") != 1 {
		t.Fatalf("list: %q", out)
	}
	if code, _, errs := runCLI(t, append([]string{"campaign", "evidence", "--campaign", c.Id}, base...)...); code == 0 || !strings.Contains(errs, "campaign_id") {
		t.Fatalf("evidence of an open campaign: exit %d %s", code, errs)
	}
	reviews := keyplanev1connect.NewReviewServiceClient(http.DefaultClient, api, auth)
	if _, err := reviews.CloseCampaign(ctx, connect.NewRequest(&keyplanev1.CloseCampaignRequest{TenantId: "acme", CampaignId: c.Id})); err != nil {
		t.Fatal(err)
	}
	md := cli("campaign", "evidence", "--campaign", c.Id, "--format", "md")
	if !strings.HasPrefix(md, "# Access review evidence: Q3 review\n") || !strings.Contains(md, "A.5.18") || !strings.Contains(md, "## Defaulted at the deadline") {
		t.Fatalf("markdown evidence:\n%s", md)
	}
	if js := cli("campaign", "evidence", "--campaign", c.Id, "--format", "json"); !strings.Contains(js, `"CC6.2"`) || !strings.Contains(js, c.Id) {
		t.Fatalf("json evidence:\n%s", js)
	}
	for _, bad := range [][]string{
		{"campaign", "create", "--name", "x", "--scope", "everyone", "--deadline", "1h"},
		{"campaign", "create", "--name", "x", "--scope", "tenant"},
		{"campaign", "create", "--name", "x", "--scope", "tenant", "--deadline", "1h", "--default", "modify"},
		{"campaign", "evidence", "--campaign", c.Id, "--format", "pdf"},
		{"campaign", "frobnicate"},
	} {
		if code, _, _ := runCLI(t, append(bad, base...)...); code == 0 {
			t.Errorf("%v: exit 0", bad)
		}
	}
}
