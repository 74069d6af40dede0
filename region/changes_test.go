package region_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// admin is a service account bound (by the operator) to a role on "*", with an OAuth
// client so its tokens can be minted again after the test clock moves.
type admin struct {
	id, clientID, secret string
}

func (f *adminFixture) admin(t *testing.T, name, role string) admin {
	t.Helper()
	ctx := context.Background()
	req := f.serviceAccount(name)
	req.ExpireTime = timestamppb.New(time.Now().Add(72 * time.Hour))
	i, err := f.op.CreateIdentity(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	if role != "" {
		f.bind(t, i.Msg.Identity.Id, role, "*")
	}
	cl, err := f.op.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: i.Msg.Identity.Id, Name: name}))
	if err != nil {
		t.Fatal(err)
	}
	return admin{id: i.Msg.Identity.Id, clientID: cl.Msg.ClientId, secret: cl.Msg.ClientSecret}
}

// client is an admin client with a fresh access token of a.
func (f *adminFixture) client(t *testing.T, a admin) keyplanev1connect.AdminServiceClient {
	t.Helper()
	return adminClient(f.url, f.token(t, "acme", a.clientID, a.secret))
}

func hasBinding(t *testing.T, f *adminFixture, principal, role string) bool {
	t.Helper()
	bs, err := f.op.ListBindings(context.Background(), connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs.Msg.Bindings {
		if b.PrincipalId == principal && b.RoleId == role {
			return true
		}
	}
	return false
}

// requestAdmin has c ask for tenant-admin on "*" for who and returns the pending
// change request, checking that nothing was bound.
func requestAdmin(t *testing.T, f *adminFixture, c keyplanev1connect.AdminServiceClient, who string) *keyplanev1.ChangeRequest {
	t.Helper()
	r, err := c.CreateBinding(context.Background(), connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme",
		PrincipalKind: "identity", PrincipalId: who, RoleId: schema.RoleTenantAdmin, Scope: "*", Justification: "on call"}))
	if err != nil {
		t.Fatalf("requesting tenant-admin: %v", err)
	}
	cr := r.Msg.ChangeRequest
	if r.Msg.Binding != nil || cr == nil || cr.Status != "pending" || cr.Kind != "binding.create" || cr.Binding.GetPrincipalId() != who {
		t.Fatalf("binding a privileged role: got %v, want no binding and a pending change request", r.Msg)
	}
	if hasBinding(t, f, who, schema.RoleTenantAdmin) {
		t.Fatal("the privileged binding exists before approval")
	}
	return cr
}

func approve(c keyplanev1connect.AdminServiceClient, id string) (*keyplanev1.ApproveChangeRequestResponse, error) {
	r, err := c.ApproveChangeRequest(context.Background(), connect.NewRequest(&keyplanev1.ApproveChangeRequestRequest{TenantId: "acme", ChangeRequestId: id}))
	if err != nil {
		return nil, err
	}
	return r.Msg, nil
}

func deny(c keyplanev1connect.AdminServiceClient, id string) error {
	_, err := c.DenyChangeRequest(context.Background(), connect.NewRequest(&keyplanev1.DenyChangeRequestRequest{TenantId: "acme", ChangeRequestId: id}))
	return err
}

// TestSecurityTwoPersonChangeControl (issue 13, item 7): one tenant admin alone
// cannot make another identity a tenant admin, nor remove one. The attack: a tenant
// admin's token binds tenant-admin to an identity it controls (or approves its own
// request, or gets a weaker identity that holds only iam.changes.approve to approve
// it). Through the real Connect API, with tokens from the tenant's token endpoint, the
// binding is not made but becomes a change request; self-approval and an approver
// that could not make the change itself are refused and write nothing; a second
// tenant admin's approval applies it in one transaction whose audit event names both;
// a decided request cannot be decided again; removing a tenant admin goes the same
// way; a human approver must step up; the operator's break-glass applies at once.
func TestSecurityTwoPersonChangeControl(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	requester := f.boot.AdminIdentityId
	second := f.admin(t, "second-admin", schema.RoleTenantAdmin)
	approverOnly := f.admin(t, "approver-only", "")
	role, err := f.op.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "approver",
		Permissions: []string{region.PermChangesApprove}}))
	if err != nil {
		t.Fatal(err)
	}
	f.bind(t, approverOnly.id, role.Msg.Role.Id, "*")
	nobody := f.admin(t, "nobody", "")
	target := f.admin(t, "target", "")

	cr := requestAdmin(t, f, f.tenantAd, target.id)
	before := countBindings(t, f)

	_, err = approve(f.tenantAd, cr.Id)
	wantCode(t, err, connect.CodeFailedPrecondition, "requester cannot approve")
	_, err = approve(f.client(t, approverOnly), cr.Id)
	wantCode(t, err, connect.CodePermissionDenied, "lacks iam.bindings.write")
	_, err = approve(f.client(t, nobody), cr.Id)
	wantCode(t, err, connect.CodePermissionDenied, region.PermChangesApprove)
	wantCode(t, deny(f.client(t, nobody), cr.Id), connect.CodePermissionDenied, region.PermChangesApprove)
	if got := countBindings(t, f); got != before {
		t.Fatalf("refused approvals wrote: %d bindings, want %d", got, before)
	}

	// A human approver holding tenant-admin must step up first.
	h, err := f.op.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Hana", Email: "hana@acme.example"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.op.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: h.Msg.Identity.Id,
		Password: "hana's long password"})); err != nil {
		t.Fatal(err)
	}
	f.bind(t, h.Msg.Identity.Id, schema.RoleTenantAdmin, "*")
	login, err := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, f.url).Login(ctx, connect.NewRequest(&keyplanev1.LoginRequest{
		TenantId: "acme", Email: "hana@acme.example", Password: "hana's long password"}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = approve(adminClient(f.url, login.Msg.Token.AccessToken), cr.Id)
	wantStepUp(t, err, "600")

	// The second tenant admin approves: the binding exists, made in the approval.
	got, err := approve(f.client(t, second), cr.Id)
	if err != nil {
		t.Fatalf("a second tenant admin approving: %v", err)
	}
	if got.ChangeRequest.Status != "approved" || got.ChangeRequest.DecidedBy != "identity:"+second.id || got.Binding.GetId() == "" {
		t.Fatalf("approved request: %v", got)
	}
	if !hasBinding(t, f, target.id, schema.RoleTenantAdmin) {
		t.Fatal("approved binding is absent")
	}
	evs, err := f.op.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", Action: "binding.create",
		TargetKind: "binding", TargetId: got.Binding.Id}))
	if err != nil || len(evs.Msg.Events) != 1 {
		t.Fatalf("audit of the approved binding: %v %v", evs, err)
	}
	ev := evs.Msg.Events[0].After.AsMap()
	if ev["requested_by"] != "identity:"+requester || ev["approved_by"] != "identity:"+second.id || ev["change_request_id"] != cr.Id ||
		evs.Msg.Events[0].Actor != "identity:"+second.id {
		t.Fatalf("audit event of the approved binding names %v (actor %s), want requester %s and approver %s",
			ev, evs.Msg.Events[0].Actor, requester, second.id)
	}

	// Decided once, never again.
	_, err = approve(f.client(t, second), cr.Id)
	wantCode(t, err, connect.CodeFailedPrecondition, "is approved, not pending")
	wantCode(t, deny(f.client(t, second), cr.Id), connect.CodeFailedPrecondition, "is approved, not pending")

	// Removing a tenant admin is a change request too: the binding stays until approved.
	var targetBinding string
	bs, err := f.op.ListBindings(ctx, connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs.Msg.Bindings {
		if b.PrincipalId == target.id && b.RoleId == schema.RoleTenantAdmin {
			targetBinding = b.Id
		}
	}
	del, err := f.tenantAd.DeleteBinding(ctx, connect.NewRequest(&keyplanev1.DeleteBindingRequest{TenantId: "acme", BindingId: targetBinding}))
	if err != nil || del.Msg.ChangeRequest.GetKind() != "binding.delete" || del.Msg.ChangeRequest.GetStatus() != "pending" {
		t.Fatalf("removing a tenant admin: %v %v, want a pending change request", del, err)
	}
	if !hasBinding(t, f, target.id, schema.RoleTenantAdmin) {
		t.Fatal("the tenant-admin binding was removed before approval")
	}
	_, err = approve(f.tenantAd, del.Msg.ChangeRequest.Id)
	wantCode(t, err, connect.CodeFailedPrecondition, "requester cannot approve")
	if _, err := approve(f.client(t, second), del.Msg.ChangeRequest.Id); err != nil {
		t.Fatalf("approving the removal: %v", err)
	}
	if hasBinding(t, f, target.id, schema.RoleTenantAdmin) {
		t.Fatal("the approved removal left the binding")
	}

	// Joining a group bound to tenant-admin is a change request too.
	g, err := f.op.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: "admins"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.op.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "group",
		PrincipalId: g.Msg.Group.Id, RoleId: schema.RoleTenantAdmin, Scope: "*"})); err != nil {
		t.Fatal(err)
	}
	members := func() int { // the target's effective grants, as the operator sees them
		code, body := f.call(t, "/"+keyplanev1connect.CheckServiceName+"/EffectivePermissions", secret,
			map[string]any{"tenantId": "acme", "identityId": target.id})
		if code != "" {
			t.Fatalf("effective permissions: %s %s", code, body)
		}
		return strings.Count(body, `"permission"`)
	}
	add, err := f.tenantAd.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: "acme", GroupId: g.Msg.Group.Id, IdentityId: target.id}))
	if err != nil || add.Msg.ChangeRequest.GetKind() != "group.add_member" || add.Msg.ChangeRequest.GetIdentityId() != target.id {
		t.Fatalf("joining an admin group: %v %v, want a pending change request", add, err)
	}
	if n := members(); n != 0 {
		t.Fatalf("the target holds %d grants before approval, want 0", n)
	}
	_, err = approve(f.tenantAd, add.Msg.ChangeRequest.Id)
	wantCode(t, err, connect.CodeFailedPrecondition, "requester cannot approve")
	if _, err := approve(f.client(t, second), add.Msg.ChangeRequest.Id); err != nil {
		t.Fatalf("approving the membership: %v", err)
	}
	if n := members(); n == 0 {
		t.Fatal("the approved membership grants nothing")
	}
	// Leaving it is removing a tenant admin: a change request, the member stays until approved.
	rm, err := f.tenantAd.RemoveGroupMember(ctx, connect.NewRequest(&keyplanev1.RemoveGroupMemberRequest{TenantId: "acme", GroupId: g.Msg.Group.Id, IdentityId: target.id}))
	if err != nil || rm.Msg.ChangeRequest.GetKind() != "group.remove_member" {
		t.Fatalf("removing a member of an admin group: %v %v, want a pending change request", rm, err)
	}
	if n := members(); n == 0 {
		t.Fatal("the member was removed before approval")
	}
	if _, err := approve(f.client(t, second), rm.Msg.ChangeRequest.Id); err != nil {
		t.Fatalf("approving the removal from the group: %v", err)
	}
	if n := members(); n != 0 {
		t.Fatalf("after the approved removal the target holds %d grants, want 0", n)
	}

	// The operator's break-glass applies at once (audited as break-glass).
	ob, err := f.op.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme",
		PrincipalKind: "identity", PrincipalId: target.id, RoleId: schema.RoleTenantAdmin, Scope: "*"}))
	if err != nil || ob.Msg.Binding == nil || ob.Msg.ChangeRequest != nil {
		t.Fatalf("break-glass binding: %v %v, want it made at once", ob, err)
	}
}

// TestChangeRequestDenyExpireList: a denied request binds nothing and cannot be
// approved after; a request past its expiry (24 h, on the node's clock) cannot be
// decided; ListChangeRequests filters by status and pages.
func TestChangeRequestDenyExpireList(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	f := newAdminFixture(t, func(c *region.Config) { c.Now = clock.Now })
	ctx := context.Background()
	requester := f.admin(t, "requester", schema.RoleTenantAdmin)
	approver := f.admin(t, "approver", schema.RoleTenantAdmin)
	a, b, c := f.admin(t, "a", ""), f.admin(t, "b", ""), f.admin(t, "c", "")
	rc := f.client(t, requester)

	denied := requestAdmin(t, f, rc, a.id)
	if err := deny(f.client(t, approver), denied.Id); err != nil {
		t.Fatalf("deny: %v", err)
	}
	_, err := approve(f.client(t, approver), denied.Id)
	wantCode(t, err, connect.CodeFailedPrecondition, "is denied, not pending")
	if hasBinding(t, f, a.id, schema.RoleTenantAdmin) {
		t.Fatal("a denied request bound the role")
	}

	expiring := requestAdmin(t, f, rc, b.id)
	clock.Advance(schema.DefaultChangeExpiry + time.Minute)
	pending := requestAdmin(t, f, f.client(t, requester), c.id)
	ac := f.client(t, approver)
	_, err = approve(ac, expiring.Id)
	wantCode(t, err, connect.CodeFailedPrecondition, "is expired, not pending")
	wantCode(t, deny(ac, expiring.Id), connect.CodeFailedPrecondition, "is expired, not pending")
	if hasBinding(t, f, b.id, schema.RoleTenantAdmin) {
		t.Fatal("an expired request bound the role")
	}
	g, err := ac.GetChangeRequest(ctx, connect.NewRequest(&keyplanev1.GetChangeRequestRequest{TenantId: "acme", ChangeRequestId: expiring.Id}))
	if err != nil || g.Msg.ChangeRequest.Status != "expired" {
		t.Fatalf("get an expired request: %v %v", g, err)
	}

	list := func(status string, size int32, token string) *keyplanev1.ListChangeRequestsResponse {
		t.Helper()
		r, err := ac.ListChangeRequests(ctx, connect.NewRequest(&keyplanev1.ListChangeRequestsRequest{TenantId: "acme", Status: status,
			PageSize: size, PageToken: token}))
		if err != nil {
			t.Fatalf("list %q: %v", status, err)
		}
		return r.Msg
	}
	for status, want := range map[string]string{"pending": pending.Id, "expired": expiring.Id, "denied": denied.Id} {
		got := list(status, 0, "").ChangeRequests
		if len(got) != 1 || got[0].Id != want || got[0].Status != status {
			t.Errorf("list %s: got %v, want only %s", status, got, want)
		}
	}
	var all []string
	for tok, pages := "", 0; ; pages++ {
		p := list("", 1, tok)
		for _, cr := range p.ChangeRequests {
			all = append(all, cr.Id)
		}
		if tok = p.NextPageToken; tok == "" || pages > 5 {
			break
		}
	}
	if len(all) != 3 || all[0] != denied.Id || all[1] != expiring.Id || all[2] != pending.Id {
		t.Fatalf("paging one by one: got %v, want %s %s %s", all, denied.Id, expiring.Id, pending.Id)
	}
	_, err = ac.ListChangeRequests(ctx, connect.NewRequest(&keyplanev1.ListChangeRequestsRequest{TenantId: "acme", Status: "open"}))
	wantCode(t, err, connect.CodeInvalidArgument, "status")

	// Still pending: approved, it applies.
	if _, err := approve(ac, pending.Id); err != nil || !hasBinding(t, f, c.id, schema.RoleTenantAdmin) {
		t.Fatalf("approving the pending request: %v", err)
	}
}

// TestPrivilegedRoles: a role created privileged needs approval to bind; an ordinary
// one binds at once; the built-in admin roles are privileged, security-auditor is not.
func TestPrivilegedRoles(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	who := f.admin(t, "who", "")
	for _, c := range []struct {
		privileged bool
		name       string
	}{{true, "deployers"}, {false, "readers"}} {
		r, err := f.tenantAd.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: c.name,
			Permissions: []string{"deploy.*"}, Privileged: c.privileged}))
		if err != nil || r.Msg.Role.Privileged != c.privileged {
			t.Fatalf("create role %s: %v %v", c.name, r, err)
		}
		b, err := f.tenantAd.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme",
			PrincipalKind: "identity", PrincipalId: who.id, RoleId: r.Msg.Role.Id, Scope: "*"}))
		if err != nil {
			t.Fatal(err)
		}
		if waits := b.Msg.ChangeRequest != nil; waits != c.privileged || (b.Msg.Binding == nil) != c.privileged {
			t.Errorf("binding %s (privileged %v): got %v", c.name, c.privileged, b.Msg)
		}
	}
	for role, want := range map[string]bool{schema.RoleTenantAdmin: true, schema.RoleIdentityManager: true, schema.RoleAccessAdmin: true,
		schema.RoleSecurityAuditor: false, schema.RoleNHIOwner: false} {
		b, err := f.tenantAd.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme",
			PrincipalKind: "identity", PrincipalId: who.id, RoleId: role, Scope: "*"}))
		if err != nil {
			t.Fatal(err)
		}
		if got := b.Msg.ChangeRequest != nil; got != want {
			t.Errorf("built-in role %s: change request %v, want %v", role, got, want)
		}
	}
	// A change that could not apply is refused when asked for, not when approved.
	_, err := f.tenantAd.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme",
		PrincipalKind: "identity", PrincipalId: "00000000-0000-4000-8000-000000000009", RoleId: schema.RoleTenantAdmin, Scope: "*"}))
	wantCode(t, err, connect.CodeInvalidArgument, "principal_id")
}

// TestListElevationsPending (issue 13, item 7): approvers find their work with the
// pending filter; an identity without iam.elevations.approve lists only its own.
func TestListElevationsPending(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	role, err := f.op.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "docs-editor",
		Permissions: []string{"docs.document.write"}}))
	if err != nil {
		t.Fatal(err)
	}
	elev := func(a admin) keyplanev1connect.ElevationServiceClient {
		return keyplanev1connect.NewElevationServiceClient(http.DefaultClient, f.url,
			connect.WithInterceptors(bearerInterceptor(f.token(t, "acme", a.clientID, a.secret))))
	}
	r1, r2 := f.admin(t, "r1", ""), f.admin(t, "r2", "")
	approver := f.admin(t, "approver", schema.RoleTenantAdmin)
	ids := map[string]string{}
	for name, a := range map[string]admin{"r1": r1, "r2": r2} {
		e, err := elev(a).RequestElevation(ctx, connect.NewRequest(&keyplanev1.RequestElevationRequest{TenantId: "acme", RoleId: role.Msg.Role.Id,
			Scope: "docs/", Duration: durationpb.New(time.Hour), Justification: "incident"}))
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = e.Msg.Elevation.Id
	}
	list := func(c keyplanev1connect.ElevationServiceClient, status string) []string {
		t.Helper()
		r, err := c.ListElevations(ctx, connect.NewRequest(&keyplanev1.ListElevationsRequest{TenantId: "acme", Status: status}))
		if err != nil {
			t.Fatalf("list elevations %q: %v", status, err)
		}
		var out []string
		for _, e := range r.Msg.Elevations {
			out = append(out, e.Id)
		}
		return out
	}
	ac := elev(approver)
	if got := list(ac, "pending"); len(got) != 2 {
		t.Fatalf("approver's pending list: %v, want both", got)
	}
	if got := list(elev(r1), ""); len(got) != 1 || got[0] != ids["r1"] {
		t.Fatalf("r1's list: %v, want only its own %s", got, ids["r1"])
	}
	if _, err := ac.ApproveElevation(ctx, connect.NewRequest(&keyplanev1.ApproveElevationRequest{TenantId: "acme", ElevationId: ids["r1"]})); err != nil {
		t.Fatal(err)
	}
	if got := list(ac, "pending"); len(got) != 1 || got[0] != ids["r2"] {
		t.Fatalf("pending after approving r1's: %v, want only %s", got, ids["r2"])
	}
	if got := list(ac, "active"); len(got) != 1 || got[0] != ids["r1"] {
		t.Fatalf("active: %v, want %s", got, ids["r1"])
	}
	_, err = ac.ListElevations(ctx, connect.NewRequest(&keyplanev1.ListElevationsRequest{TenantId: "acme", Status: "open"}))
	wantCode(t, err, connect.CodeInvalidArgument, "status")
}

// TestSecurityChangeRequestAppliesOnce (issue 13, item 7): the attack is a race, many
// approvals of one request at once hoping to apply the change twice (two bindings, one
// of which outlives a later removal). Exactly one approval succeeds; the others are
// failed_precondition and write nothing.
func TestSecurityChangeRequestAppliesOnce(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	second := f.admin(t, "second-admin", schema.RoleTenantAdmin)
	target := f.admin(t, "target", "")
	cr := requestAdmin(t, f, f.tenantAd, target.id)
	sc := f.client(t, second)
	const n = 6
	errs := make(chan error, n)
	for range n {
		go func() { _, err := approve(sc, cr.Id); errs <- err }()
	}
	ok := 0
	for range n {
		switch err := <-errs; {
		case err == nil:
			ok++
		case connect.CodeOf(err) != connect.CodeFailedPrecondition:
			t.Errorf("a losing approval: %v, want failed_precondition", err)
		}
	}
	bound := 0
	bs, err := f.op.ListBindings(context.Background(), connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs.Msg.Bindings {
		if b.PrincipalId == target.id {
			bound++
		}
	}
	if ok != 1 || bound != 1 {
		t.Fatalf("%d concurrent approvals: %d succeeded and %d bindings made, want 1 and 1", n, ok, bound)
	}
}
