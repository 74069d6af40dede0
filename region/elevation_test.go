package region_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// loginAs gives a human a password and TOTP and returns an ElevationService client
// acting as them, logged in with both factors.
func (f *policyFixture) loginAs(t *testing.T, identity, email string) keyplanev1connect.ElevationServiceClient {
	t.Helper()
	ctx := context.Background()
	if email != "" {
		if _, err := f.admin.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: identity, Email: &email})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.admin.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: identity, Password: "a long enough password"})); err != nil {
		t.Fatal(err)
	}
	// Approving is sensitive: log in with a second factor, as a human approver must.
	tok := mfaLogin(t, f.url, "acme", identity, email, "a long enough password")
	return keyplanev1connect.NewElevationServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearerInterceptor(tok)))
}

func TestElevationLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPolicyFixture(t)
	alice := f.loginAs(t, f.alice, "alice@acme.example")
	owner := f.loginAs(t, f.owner, "owner@acme.example")
	approver, err := f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "approver",
		Permissions: []string{"iam.elevations.approve"}}))
	if err != nil {
		t.Fatal(err)
	}
	may := func() bool {
		return f.allowed(t, f.alice, "docs.document.delete", "prod/db", nil).Allowed
	}
	if may() {
		t.Fatal("alice may delete before any elevation")
	}
	req, err := alice.RequestElevation(ctx, connect.NewRequest(&keyplanev1.RequestElevationRequest{TenantId: "acme", RoleId: f.editor,
		Scope: "prod/", Duration: durationpb.New(30 * time.Minute), Justification: "incident 42"}))
	if err != nil || req.Msg.Elevation.Status != "pending" || req.Msg.Elevation.RequesterId != f.alice {
		t.Fatalf("request: %v %v", req, err)
	}
	id := req.Msg.Elevation.Id
	_, err = alice.ApproveElevation(ctx, connect.NewRequest(&keyplanev1.ApproveElevationRequest{TenantId: "acme", ElevationId: id}))
	wantCode(t, err, connect.CodePermissionDenied, "iam.elevations.approve")
	_, err = owner.ApproveElevation(ctx, connect.NewRequest(&keyplanev1.ApproveElevationRequest{TenantId: "acme", ElevationId: id}))
	wantCode(t, err, connect.CodePermissionDenied, "iam.elevations.approve")
	// Alice herself holds the approval permission: still not her own request.
	f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: f.alice, RoleId: approver.Msg.Role.Id, Scope: "*"})
	_, err = alice.ApproveElevation(ctx, connect.NewRequest(&keyplanev1.ApproveElevationRequest{TenantId: "acme", ElevationId: id}))
	wantCode(t, err, connect.CodePermissionDenied, "own elevation")
	// The owner approves: it holds the approval permission and every permission of the
	// role on the elevation's scope.
	f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: f.owner, RoleId: approver.Msg.Role.Id, Scope: "*"})
	f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: f.owner, RoleId: f.editor, Scope: "prod/"})
	ok, err := owner.ApproveElevation(ctx, connect.NewRequest(&keyplanev1.ApproveElevationRequest{TenantId: "acme", ElevationId: id}))
	if err != nil || ok.Msg.Elevation.Status != "active" || ok.Msg.Elevation.BindingId == "" || ok.Msg.Elevation.EndTime == nil {
		t.Fatalf("approve: %v %v", ok, err)
	}
	if !may() {
		t.Fatal("alice may not delete after approval")
	}
	if got := f.allowed(t, f.alice, "docs.document.delete", "staging/db", nil); got.Allowed {
		t.Fatal("the elevation leaks beyond its scope")
	}
	end, err := alice.EndElevation(ctx, connect.NewRequest(&keyplanev1.EndElevationRequest{TenantId: "acme", ElevationId: id}))
	if err != nil || end.Msg.Elevation.Status != "ended" {
		t.Fatalf("end: %v %v", end, err)
	}
	if may() {
		t.Fatal("alice may still delete after the elevation ended")
	}
	_, err = alice.EndElevation(ctx, connect.NewRequest(&keyplanev1.EndElevationRequest{TenantId: "acme", ElevationId: id}))
	wantCode(t, err, connect.CodeFailedPrecondition, "not active")
	_, err = alice.RequestElevation(ctx, connect.NewRequest(&keyplanev1.RequestElevationRequest{TenantId: "acme", RoleId: f.editor,
		Scope: "prod/", Duration: durationpb.New(48 * time.Hour), Justification: "x"}))
	wantCode(t, err, connect.CodeInvalidArgument, "duration")

	evs, err := f.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", PageSize: 1000}))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range evs.Msg.Events {
		seen[e.Action]++
	}
	for _, a := range []string{"elevation.request", "elevation.approve", "elevation.end"} {
		if seen[a] != 1 {
			t.Fatalf("audit %s: %d events (%v)", a, seen[a], seen)
		}
	}
}
