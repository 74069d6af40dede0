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

// TestAuditExport streams a tenant's audit events from a real node as JSON lines,
// page by page, with filters, and fails loudly on a wrong credential.
func TestAuditExport(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "operator-secret")
	if err := os.WriteFile(secretFile, []byte("audit-export-operator-secret-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	api := startServe(t, "--db-file", dbFile(t, schematest.NewDatabase(t)), "--region", schematest.Regions[0],
		"--listen", "127.0.0.1:0", "--operator-secret-file", secretFile, "--log-level", "error")
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, api, connect.WithInterceptors(
		connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, r connect.AnyRequest) (connect.AnyResponse, error) {
				r.Header().Set("Authorization", "Bearer audit-export-operator-secret-0123")
				return next(ctx, r)
			}
		})))
	if _, err := admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "Acme", HomeRegion: schematest.Regions[0]})); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Ann", "Bob", "Cy"} {
		if _, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
			Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: name})); err != nil {
			t.Fatal(err)
		}
	}
	export := func(extra ...string) []*keyplanev1.AuditEvent {
		t.Helper()
		code, out, errs := runCLI(t, append([]string{"audit", "export", "--url", api, "--tenant", "acme", "--token-file", secretFile}, extra...)...)
		if code != 0 {
			t.Fatalf("audit export %v: exit %d: %s", extra, code, errs)
		}
		var evs []*keyplanev1.AuditEvent
		for line := range strings.Lines(out) {
			e := &keyplanev1.AuditEvent{}
			if err := protojson.Unmarshal([]byte(line), e); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			evs = append(evs, e)
		}
		return evs
	}
	evs := export("--action", "identity.", "--page-size", "2", "--since", "1h")
	// 5: the three made here, and the tenant's owner and first tenant admin, which
	// CreateTenant makes (issue 13, item 4).
	if len(evs) != 5 {
		t.Fatalf("%d identity events over pages of 2, want 5", len(evs))
	}
	for _, e := range evs {
		if e.Action != "identity.create" || e.Actor != "operator" || e.ActorKind != "operator" || e.TenantId != "acme" {
			t.Errorf("event %+v", e)
		}
	}
	if evs[0].Time.AsTime().Before(evs[2].Time.AsTime()) {
		t.Errorf("events not newest first")
	}
	if old := export("--until", "1h"); len(old) != 0 {
		t.Fatalf("%d events older than an hour, want 0", len(old))
	}
	wrong := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrong, []byte("not-the-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCLI(t, "audit", "export", "--url", api, "--tenant", "acme", "--token-file", wrong)
	if code != 1 || !strings.Contains(errs, "unauthenticated") {
		t.Fatalf("a wrong token: exit %d, %q; want 1 and unauthenticated", code, errs)
	}
}
