package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestGovernanceInventory prints a real node's NHI inventory as csv, json and a
// table, filtered by finding, and refuses bad flags with the usage exit code.
func TestGovernanceInventory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	const op = "governance-cli-operator-secret-0123"
	secretFile := filepath.Join(dir, "operator-secret")
	if err := os.WriteFile(secretFile, []byte(op+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	api := startServe(t, "--db-file", dbFile(t, schematest.NewDatabase(t)), "--region", schematest.Regions[0],
		"--listen", "127.0.0.1:0", "--operator-secret-file", secretFile, "--log-level", "error", "--governance-sweep-every", "-1s")
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, api, connect.WithInterceptors(connect.UnaryInterceptorFunc(
		func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, r connect.AnyRequest) (connect.AnyResponse, error) {
				r.Header().Set("Authorization", "Bearer "+op)
				return next(ctx, r)
			}
		})))
	if _, err := admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "Acme", HomeRegion: schematest.Regions[0]})); err != nil {
		t.Fatal(err)
	}
	owner, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Ann"}))
	if err != nil {
		t.Fatal(err)
	}
	wl, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_WORKLOAD, DisplayName: "ci runner", OwnerId: owner.Msg.Identity.Id, Purpose: "builds",
		ExpireTime: timestamppb.New(time.Now().Add(3 * 24 * time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: "acme", IdentityId: wl.Msg.Identity.Id,
		Name: "ci", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))})); err != nil {
		t.Fatal(err)
	}
	inventory := func(extra ...string) string {
		t.Helper()
		code, out, errs := runCLI(t, append([]string{"governance", "inventory", "--url", api, "--tenant", "acme", "--token-file", secretFile}, extra...)...)
		if code != 0 {
			t.Fatalf("governance inventory %v: exit %d: %s", extra, code, errs)
		}
		return out
	}
	rows, err := csv.NewReader(strings.NewReader(inventory("--format", "csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	// The tenant's first admin (a service account) and the workload.
	if len(rows) != 3 || !slices.Equal(rows[0], inventoryColumns) {
		t.Fatalf("csv: %v", rows)
	}
	var ci []string
	for _, r := range rows[1:] {
		if r[0] == wl.Msg.Identity.Id {
			ci = r
		}
	}
	col := func(name string) string { return ci[slices.Index(inventoryColumns, name)] }
	if ci == nil || col("kind") != "workload" || col("owner_state") != "active" || col("credential_kinds") != "api_key" ||
		col("findings") != "expiring;static_secret" || col("risk_tier") != "normal" {
		t.Fatalf("csv row of the workload: %v", ci)
	}
	lines := strings.Split(strings.TrimSpace(inventory("--format", "json", "--finding", "static_secret")), "\n")
	e := &keyplanev1.InventoryEntry{}
	if len(lines) != 1 || protojson.Unmarshal([]byte(lines[0]), e) != nil || e.IdentityId != wl.Msg.Identity.Id {
		t.Fatalf("json, static_secret only: %q", lines)
	}
	if table := inventory(); !strings.Contains(table, "ci runner") || !strings.Contains(table, "expiring,static_secret") ||
		!strings.Contains(table, "2 non-human identities") {
		t.Fatalf("table:\n%s", table)
	}
	for _, bad := range [][]string{{"--format", "xml"}, {"--finding", "haunted"}, {"--kind", "human"}, {"--limit", "-1"}} {
		args := append([]string{"governance", "inventory", "--url", api, "--tenant", "acme", "--token-file", secretFile}, bad...)
		if code, _, errs := runCLI(t, args...); code != 2 || !strings.Contains(errs, strings.TrimPrefix(bad[0], "--")) {
			t.Errorf("%v: exit %d, stderr %q; want 2 naming the flag", bad, code, errs)
		}
	}
	if code, _, errs := runCLI(t, "governance", "audit"); code != 2 || !strings.Contains(errs, "unknown subcommand") {
		t.Errorf("unknown subcommand: exit %d %q", code, errs)
	}

	// The report, computed by the node for the call: 2 NHIs on static secrets, both
	// owned by active humans; 2 active humans (the tenant owner and Ann), no MFA.
	out := filepath.Join(dir, "report")
	code, stdout, errs := runCLI(t, "governance", "report", "--url", api, "--tenant", "acme", "--token-file", secretFile, "--out", out, "--days", "30")
	if code != 0 || !strings.Contains(stdout, "report.md") {
		t.Fatalf("governance report: exit %d, %s %s", code, stdout, errs)
	}
	var rep struct {
		Current struct {
			Nhis           int32 `json:"nhis"`
			NhisStaticOnly int32 `json:"nhis_static_only"`
			OrphanedNhis   int32 `json:"orphaned_nhis"`
			Humans         int32 `json:"humans"`
		} `json:"current"`
		Ratios struct {
			MFACoverage *float64 `json:"mfa_coverage"`
		} `json:"ratios"`
	}
	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if c := rep.Current; c.Nhis != 2 || c.NhisStaticOnly != 2 || c.OrphanedNhis != 0 || c.Humans != 2 || rep.Ratios.MFACoverage == nil || *rep.Ratios.MFACoverage != 0 {
		t.Errorf("report.json: %s", b)
	}
	for _, bad := range [][]string{{"--days", "0"}, {"--url", "ftp://x"}} {
		args := append([]string{"governance", "report", "--url", api, "--tenant", "acme", "--token-file", secretFile}, bad...)
		if code, _, errs := runCLI(t, args...); code != 2 || !strings.Contains(errs, strings.TrimPrefix(bad[0], "--")) {
			t.Errorf("report %v: exit %d, stderr %q; want 2 naming the flag", bad, code, errs)
		}
	}
	if code, _, errs := runCLI(t, "serve", "--governance-sweep-every", "0s"); code != 2 || !strings.Contains(errs, "governance-sweep-every") {
		t.Errorf("serve with a zero sweep interval: exit %d %q, want 2 naming the flag", code, errs)
	}
}
