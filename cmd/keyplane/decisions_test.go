package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestDecisionsList prints a tenant's decisions from a real node as JSON lines, with
// filters and a limit, and refuses contradictory flags.
func TestDecisionsList(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	const op = "decisions-list-operator-secret-0123"
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
	check := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, api, auth)
	tr, err := admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "Acme", HomeRegion: schematest.Regions[0]}))
	if err != nil {
		t.Fatal(err)
	}
	// The first tenant admin holds "*": allowed; the owner holds nothing: denied.
	owner, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Ann"}))
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for i, who := range []string{tr.Msg.AdminIdentityId, owner.Msg.Identity.Id, tr.Msg.AdminIdentityId} {
		r, err := check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
			Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: who}, Permission: "docs.document.read", Resource: "docs/" + string(rune('a'+i))}))
		if err != nil {
			t.Fatal(err)
		}
		last = r.Msg.DecisionId
	}
	list := func(extra ...string) []*keyplanev1.LoggedDecision {
		t.Helper()
		code, out, errs := runCLI(t, append([]string{"decisions", "list", "--url", api, "--tenant", "acme", "--token-file", secretFile}, extra...)...)
		if code != 0 {
			t.Fatalf("decisions list %v: exit %d: %s", extra, code, errs)
		}
		var ds []*keyplanev1.LoggedDecision
		for line := range strings.Lines(out) {
			d := &keyplanev1.LoggedDecision{}
			if err := protojson.Unmarshal([]byte(line), d); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			ds = append(ds, d)
		}
		return ds
	}
	// The decision log writes in batches (the tenant admin's, by a sensitive role, at
	// once): wait until all three are there.
	for i := 0; len(list("--since", "1h")) != 3; i++ {
		if i > 100 {
			t.Fatal("the decisions were never logged")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if newest := list("--limit", "1"); len(newest) != 1 || newest[0].Id != last {
		t.Fatalf("--limit 1: %v, want the newest, %s", newest, last)
	}
	denied := list("--denied")
	if len(denied) != 1 || denied[0].PrincipalId != owner.Msg.Identity.Id || denied[0].Decision != keyplanev1.Decision_DECISION_DENY {
		t.Fatalf("denied: %v", denied)
	}
	if got := list("--allowed", "--resource", "docs/c"); len(got) != 1 || got[0].Id != last {
		t.Fatalf("allowed on docs/c: %v, want %s", got, last)
	}
	code, _, errs := runCLI(t, "decisions", "list", "--url", api, "--tenant", "acme", "--token-file", secretFile, "--denied", "--allowed")
	if code != 2 || !strings.Contains(errs, "--denied and --allowed") {
		t.Fatalf("contradictory flags: exit %d, %q", code, errs)
	}
	code, _, errs = runCLI(t, "decisions", "list", "--url", api, "--tenant", "acme", "--token-file", secretFile, "--principal", "ann")
	if code != 1 || !strings.Contains(errs, "principal_id") {
		t.Fatalf("a bad principal: exit %d, %q; want 1 naming principal_id", code, errs)
	}
}
