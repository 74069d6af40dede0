package region_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// adminFixture is a node with tenant acme made by CreateTenant: its bootstrap tenant
// admin's client and a token from acme's token endpoint (client_credentials).
type adminFixture struct {
	url      string
	op       keyplanev1connect.AdminServiceClient // the operator secret (break-glass on tenant calls)
	boot     *keyplanev1.CreateTenantResponse
	bootTok  string
	owner    string                               // a human, the accountable owner of the service accounts tests make
	tenantAd keyplanev1connect.AdminServiceClient // the bootstrap tenant admin's token
}

func newAdminFixture(t *testing.T, configure func(*region.Config)) *adminFixture {
	t.Helper()
	cfg := authConfig(testKEK(t), "us-east-1")
	if configure != nil {
		configure(&cfg)
	}
	f := &adminFixture{url: testNode(t, schematest.NewStore(t, "us-east"), cfg)}
	f.op = adminClient(f.url, secret)
	r, err := f.op.CreateTenant(context.Background(), connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "Acme", HomeRegion: "us-east"}))
	if err != nil {
		t.Fatal(err)
	}
	f.boot = r.Msg
	f.bootTok = f.token(t, "acme", r.Msg.AdminClientId, r.Msg.AdminClientSecret)
	f.tenantAd = adminClient(f.url, f.bootTok)
	h, err := f.tenantAd.CreateIdentity(context.Background(), connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Owner"}))
	if err != nil {
		t.Fatal(err)
	}
	f.owner = h.Msg.Identity.Id
	return f
}

// token gets an access token for keyplane's API from tenant's token endpoint.
func (f *adminFixture) token(t *testing.T, tenant, clientID, clientSecret string) string {
	t.Helper()
	r := postForm(t, f.url+"/t/"+tenant+"/oauth2/token", clientID, clientSecret, url.Values{"grant_type": {"client_credentials"}})
	tok, _ := r.body["access_token"].(string)
	if r.status != http.StatusOK || tok == "" {
		t.Fatalf("client_credentials: %d %v", r.status, r.body)
	}
	return tok
}

// identityWith makes a service account bound (by the operator) to a new role
// granting perms on scope, and returns its id and an access token for it. No perms:
// no role, no binding.
func (f *adminFixture) identityWith(t *testing.T, name, scope string, perms ...string) (string, string) {
	t.Helper()
	ctx := context.Background()
	i, err := f.op.CreateIdentity(ctx, connect.NewRequest(f.serviceAccount(name)))
	if err != nil {
		t.Fatal(err)
	}
	id := i.Msg.Identity.Id
	if len(perms) > 0 {
		role, err := f.op.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "role-of-" + name, Permissions: perms}))
		if err != nil {
			t.Fatal(err)
		}
		f.bind(t, id, role.Msg.Role.Id, scope)
	}
	cl, err := f.op.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: id, Name: name}))
	if err != nil {
		t.Fatal(err)
	}
	return id, f.token(t, "acme", cl.Msg.ClientId, cl.Msg.ClientSecret)
}

// serviceAccount is a request for a governed service account owned by f.owner.
func (f *adminFixture) serviceAccount(name string) *keyplanev1.CreateIdentityRequest {
	return &keyplanev1.CreateIdentityRequest{TenantId: "acme", Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT,
		DisplayName: name, OwnerId: f.owner, Purpose: "tests", ExpireTime: timestamppb.New(time.Now().Add(24 * time.Hour))}
}

func (f *adminFixture) bind(t *testing.T, identity, role, scope string) string {
	t.Helper()
	b, err := f.op.CreateBinding(context.Background(), connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme",
		PrincipalKind: "identity", PrincipalId: identity, RoleId: role, Scope: scope}))
	if err != nil {
		t.Fatal(err)
	}
	return b.Msg.Binding.Id
}

// call posts a Connect JSON request to procedure with bearer token and returns the
// Connect error code ("" on success) and the body.
func (f *adminFixture) call(t *testing.T, procedure, token string, msg map[string]any) (string, string) {
	t.Helper()
	body, _ := json.Marshal(msg)
	req, _ := http.NewRequest(http.MethodPost, f.url+procedure, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		return "", string(b)
	}
	var e struct{ Code string }
	_ = json.Unmarshal(b, &e)
	return e.Code, string(b)
}

// TestAdminPermissionMatrix calls every tenant-scoped AdminService and CheckService
// procedure (and RevokeIdentityTokens on another identity) twice through the real Connect API, with tokens from the tenant's token
// endpoint: as an identity holding nothing (refused with permission_denied) and as one
// holding exactly the procedure's documented permission (authorized: whatever the
// answer, it is not permission_denied or unauthenticated).
func TestAdminPermissionMatrix(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	n := 0
	// target makes a fresh service account (with an API key and an OAuth client) for
	// a case to act on.
	type target struct{ id, apiKeyCred, clientID, clientCred string }
	newTarget := func(t *testing.T) target {
		n++
		i, err := f.op.CreateIdentity(ctx, connect.NewRequest(f.serviceAccount(fmt.Sprintf("target-%d", n))))
		if err != nil {
			t.Fatal(err)
		}
		k, err := f.op.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: "acme", IdentityId: i.Msg.Identity.Id,
			Name: "k", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}))
		if err != nil {
			t.Fatal(err)
		}
		cl, err := f.op.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: i.Msg.Identity.Id, Name: "c"}))
		if err != nil {
			t.Fatal(err)
		}
		return target{i.Msg.Identity.Id, k.Msg.Credential.Id, cl.Msg.ClientId, cl.Msg.Credential.Id}
	}
	type matrixCase struct {
		procedure, perm string
		body            func(t *testing.T, holderRole string) map[string]any
	}
	admin := func(m string) string { return "/" + keyplanev1connect.AdminServiceName + "/" + m }
	check := func(m string) string { return "/" + keyplanev1connect.CheckServiceName + "/" + m }
	plain := func(extra map[string]any) func(*testing.T, string) map[string]any {
		return func(*testing.T, string) map[string]any {
			m := map[string]any{"tenantId": "acme"}
			for k, v := range extra {
				m[k] = v
			}
			return m
		}
	}
	onTarget := func(mk func(target) map[string]any) func(*testing.T, string) map[string]any {
		return func(t *testing.T, _ string) map[string]any {
			m := mk(newTarget(t))
			m["tenantId"] = "acme"
			return m
		}
	}
	// newRule makes a membership rule over a fresh group that grants nothing.
	newRule := func(t *testing.T) string {
		n++
		g, err := f.op.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: fmt.Sprintf("g-%d", n)}))
		if err != nil {
			t.Fatal(err)
		}
		r, err := f.op.CreateMembershipRule(ctx, connect.NewRequest(&keyplanev1.CreateMembershipRuleRequest{TenantId: "acme",
			Name: fmt.Sprintf("rule-%d", n), Condition: `attributes.team == "x"`, GroupIds: []string{g.Msg.Group.Id}}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Rule.Id
	}
	cases := []matrixCase{
		{admin("CreateIdentity"), region.PermIdentitiesCreate, plain(map[string]any{"kind": "IDENTITY_KIND_HUMAN", "displayName": "new"})},
		{admin("GetIdentity"), region.PermIdentitiesRead, onTarget(func(x target) map[string]any { return map[string]any{"id": x.id} })},
		{admin("ListIdentities"), region.PermIdentitiesRead, plain(nil)},
		{admin("UpdateIdentity"), region.PermIdentitiesUpdate, onTarget(func(x target) map[string]any { return map[string]any{"id": x.id, "purpose": "p"} })},
		{admin("DisableIdentity"), region.PermIdentitiesDisable, onTarget(func(x target) map[string]any { return map[string]any{"id": x.id} })},
		{admin("EnableIdentity"), region.PermIdentitiesDisable, onTarget(func(x target) map[string]any { return map[string]any{"id": x.id} })},
		{admin("OffboardIdentity"), region.PermIdentitiesOffboard, onTarget(func(x target) map[string]any { return map[string]any{"identityId": x.id} })},
		{admin("EraseIdentity"), region.PermIdentitiesErase, onTarget(func(x target) map[string]any { return map[string]any{"identityId": x.id} })},
		{admin("CreateAPIKey"), region.PermCredentialsManage, onTarget(func(x target) map[string]any {
			return map[string]any{"identityId": x.id, "name": "n", "expireTime": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}
		})},
		{admin("RotateAPIKey"), region.PermCredentialsManage, onTarget(func(x target) map[string]any {
			return map[string]any{"credentialId": x.apiKeyCred, "expireTime": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}
		})},
		{admin("CreateClient"), region.PermCredentialsManage, onTarget(func(x target) map[string]any { return map[string]any{"identityId": x.id, "name": "n"} })},
		{admin("UpdateClient"), region.PermCredentialsManage, onTarget(func(x target) map[string]any { return map[string]any{"clientId": x.clientID} })},
		{admin("RotateClientSecret"), region.PermCredentialsManage, onTarget(func(x target) map[string]any { return map[string]any{"credentialId": x.clientCred} })},
		{admin("RevokeCredential"), region.PermCredentialsManage, onTarget(func(x target) map[string]any { return map[string]any{"credentialId": x.apiKeyCred} })},
		{admin("SetPassword"), region.PermCredentialsManage, onTarget(func(x target) map[string]any {
			return map[string]any{"identityId": x.id, "password": "a long enough password"}
		})},
		{admin("ListCredentials"), region.PermCredentialsRead, onTarget(func(x target) map[string]any { return map[string]any{"identityId": x.id} })},
		{admin("ListSessions"), region.PermSessionsRead, onTarget(func(x target) map[string]any { return map[string]any{"identityId": x.id} })},
		{admin("CreateRole"), region.PermRolesWrite, func(*testing.T, string) map[string]any {
			n++
			return map[string]any{"tenantId": "acme", "name": fmt.Sprintf("made-%d", n), "permissions": []string{"docs.document.read"}}
		}},
		{admin("DeleteRole"), region.PermRolesWrite, func(t *testing.T, _ string) map[string]any {
			n++
			r, err := f.op.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: fmt.Sprintf("doomed-%d", n), Permissions: []string{"docs.document.read"}}))
			if err != nil {
				t.Fatal(err)
			}
			return map[string]any{"tenantId": "acme", "roleId": r.Msg.Role.Id}
		}},
		{admin("GetRole"), region.PermRolesRead, plain(map[string]any{"roleId": schema.RoleSecurityAuditor})},
		{admin("ListRoles"), region.PermRolesRead, plain(map[string]any{"namePrefix": "tenant"})},
		{admin("UpdateRole"), region.PermRolesWrite, func(t *testing.T, _ string) map[string]any {
			n++
			r, err := f.op.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: fmt.Sprintf("edited-%d", n), Permissions: []string{"docs.document.read"}}))
			if err != nil {
				t.Fatal(err)
			}
			return map[string]any{"tenantId": "acme", "roleId": r.Msg.Role.Id, "description": "renamed"}
		}},
		{admin("GetGroup"), region.PermGroupsRead, func(t *testing.T, _ string) map[string]any {
			n++
			g, err := f.op.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: fmt.Sprintf("g-%d", n)}))
			if err != nil {
				t.Fatal(err)
			}
			return map[string]any{"tenantId": "acme", "groupId": g.Msg.Group.Id}
		}},
		{admin("ListGroups"), region.PermGroupsRead, plain(nil)},
		{admin("ListGroupMembers"), region.PermGroupsRead, func(t *testing.T, _ string) map[string]any {
			n++
			g, err := f.op.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: fmt.Sprintf("g-%d", n)}))
			if err != nil {
				t.Fatal(err)
			}
			return map[string]any{"tenantId": "acme", "groupId": g.Msg.Group.Id}
		}},
		{admin("UpdateGroup"), region.PermGroupsWrite, func(t *testing.T, _ string) map[string]any {
			n++
			g, err := f.op.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: fmt.Sprintf("g-%d", n)}))
			if err != nil {
				t.Fatal(err)
			}
			return map[string]any{"tenantId": "acme", "groupId": g.Msg.Group.Id, "externalId": "scim-1"}
		}},
		{admin("DeleteGroup"), region.PermGroupsWrite, func(t *testing.T, _ string) map[string]any {
			n++
			g, err := f.op.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: fmt.Sprintf("g-%d", n)}))
			if err != nil {
				t.Fatal(err)
			}
			return map[string]any{"tenantId": "acme", "groupId": g.Msg.Group.Id}
		}},
		{admin("CreateMembershipRule"), region.PermGroupsWrite, func(t *testing.T, _ string) map[string]any {
			n++
			g, err := f.op.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: fmt.Sprintf("g-%d", n)}))
			if err != nil {
				t.Fatal(err)
			}
			return map[string]any{"tenantId": "acme", "name": fmt.Sprintf("rule-%d", n), "condition": `attributes.team == "x"`, "groupIds": []string{g.Msg.Group.Id}}
		}},
		{admin("GetMembershipRule"), region.PermGroupsRead, func(t *testing.T, _ string) map[string]any {
			return map[string]any{"tenantId": "acme", "id": newRule(t)}
		}},
		{admin("ListMembershipRules"), region.PermGroupsRead, plain(nil)},
		{admin("UpdateMembershipRule"), region.PermGroupsWrite, func(t *testing.T, _ string) map[string]any {
			return map[string]any{"tenantId": "acme", "id": newRule(t), "description": "d"}
		}},
		{admin("DeleteMembershipRule"), region.PermGroupsWrite, func(t *testing.T, _ string) map[string]any {
			return map[string]any{"tenantId": "acme", "id": newRule(t)}
		}},
		{admin("CreateGroup"), region.PermGroupsWrite, func(*testing.T, string) map[string]any {
			n++
			return map[string]any{"tenantId": "acme", "name": fmt.Sprintf("group-%d", n)}
		}},
		{admin("AddGroupMember"), region.PermGroupsWrite, func(t *testing.T, _ string) map[string]any {
			n++
			g, err := f.op.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: fmt.Sprintf("g-%d", n)}))
			if err != nil {
				t.Fatal(err)
			}
			return map[string]any{"tenantId": "acme", "groupId": g.Msg.Group.Id, "identityId": newTarget(t).id}
		}},
		{admin("RemoveGroupMember"), region.PermGroupsWrite, func(t *testing.T, _ string) map[string]any {
			n++
			g, err := f.op.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: fmt.Sprintf("g-%d", n)}))
			if err != nil {
				t.Fatal(err)
			}
			who := newTarget(t).id
			if _, err := f.op.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: "acme", GroupId: g.Msg.Group.Id, IdentityId: who})); err != nil {
				t.Fatal(err)
			}
			return map[string]any{"tenantId": "acme", "groupId": g.Msg.Group.Id, "identityId": who}
		}},
		{admin("CreateBinding"), region.PermBindingsWrite, func(t *testing.T, holderRole string) map[string]any {
			return map[string]any{"tenantId": "acme", "principalKind": "identity", "principalId": newTarget(t).id, "roleId": holderRole, "scope": "*"}
		}},
		{admin("DeleteBinding"), region.PermBindingsWrite, func(t *testing.T, holderRole string) map[string]any {
			return map[string]any{"tenantId": "acme", "bindingId": f.bind(t, newTarget(t).id, holderRole, "*")}
		}},
		{admin("ListBindings"), region.PermBindingsRead, plain(nil)},
		{admin("ListAuditEvents"), region.PermAuditRead, plain(nil)},
		// An unknown request: authorized, then not_found (approving a real one also
		// needs the change's own permissions: TestSecurityTwoPersonChangeControl).
		{admin("GetChangeRequest"), region.PermChangesApprove, plain(map[string]any{"changeRequestId": "00000000-0000-4000-8000-000000000001"})},
		{admin("ListChangeRequests"), region.PermChangesApprove, plain(map[string]any{"status": "pending"})},
		{admin("ApproveChangeRequest"), region.PermChangesApprove, plain(map[string]any{"changeRequestId": "00000000-0000-4000-8000-000000000001"})},
		{admin("DenyChangeRequest"), region.PermChangesApprove, plain(map[string]any{"changeRequestId": "00000000-0000-4000-8000-000000000001"})},
		{"/" + keyplanev1connect.AuthServiceName + "/RevokeIdentityTokens", region.PermSessionsRevoke,
			onTarget(func(x target) map[string]any { return map[string]any{"identityId": x.id} })},
		{check("Check"), region.PermPerformChecks, onTarget(func(x target) map[string]any {
			return map[string]any{"identityId": x.id, "permission": "docs.document.read", "resource": "docs/1"}
		})},
		{check("CheckBulk"), region.PermPerformChecks, onTarget(func(x target) map[string]any {
			return map[string]any{"identityId": x.id, "items": []map[string]any{{"permission": "docs.document.read", "resource": "docs/1"}}}
		})},
		{check("WhoCan"), region.PermReviewAccess, plain(map[string]any{"permission": "docs.document.read", "resource": "docs/1"})},
		{check("EffectivePermissions"), region.PermReviewAccess, onTarget(func(x target) map[string]any { return map[string]any{"identityId": x.id} })},
	}
	_, nobodyTok := f.identityWith(t, "nobody", "*")
	for i, c := range cases {
		t.Run(strings.TrimPrefix(c.procedure, "/keyplane.v1."), func(t *testing.T) {
			holder, holderTok := f.identityWith(t, fmt.Sprintf("holder-%d", i), "*", c.perm)
			holderRole := roleOf(t, f, holder)
			if code, body := f.call(t, c.procedure, nobodyTok, c.body(t, holderRole)); code != "permission_denied" {
				t.Errorf("without %s: got %q (%s), want permission_denied", c.perm, code, body)
			}
			if code, body := f.call(t, c.procedure, holderTok, c.body(t, holderRole)); code == "permission_denied" || code == "unauthenticated" {
				t.Errorf("with %s: got %q (%s), want it authorized", c.perm, code, body)
			}
		})
	}
}

// roleOf returns the role of identity's one binding.
func roleOf(t *testing.T, f *adminFixture, identity string) string {
	t.Helper()
	bs, err := f.op.ListBindings(context.Background(), connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs.Msg.Bindings {
		if b.PrincipalId == identity {
			return b.RoleId
		}
	}
	t.Fatalf("identity %s has no binding", identity)
	return ""
}

// tenantProcedures lists every Connect procedure whose request names a tenant and
// that needs a caller's credentials (not the ones a request authenticates itself).
func tenantProcedures(t *testing.T) []string {
	t.Helper()
	public := map[string]bool{"ExchangeAPIKey": true, "Login": true, "Refresh": true, "ValidateToken": true, "RevokeToken": true}
	var out []string
	for _, name := range []string{keyplanev1connect.AdminServiceName, keyplanev1connect.AuthServiceName,
		keyplanev1connect.CheckServiceName, keyplanev1connect.ElevationServiceName, keyplanev1connect.DecisionServiceName} {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			t.Fatal(err)
		}
		ms := d.(protoreflect.ServiceDescriptor).Methods()
		for i := range ms.Len() {
			m := ms.Get(i)
			if m.Input().Fields().ByName("tenant_id") != nil && !public[string(m.Name())] {
				out = append(out, "/"+name+"/"+string(m.Name()))
			}
		}
	}
	if len(out) < 30 {
		t.Fatalf("found %d tenant-scoped procedures; the descriptors were not read", len(out))
	}
	return out
}

// TestSecurityCrossTenantAdminRefused (issue 13, item 1): the bootstrap tenant admin
// of tenant beta holds every permission in beta; its access token, presented on
// every tenant-scoped procedure of every service for tenant acme, must be refused
// (unauthenticated: it is not a token of acme) before any handler runs.
func TestSecurityCrossTenantAdminRefused(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	r, err := f.op.CreateTenant(context.Background(), connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "beta", Name: "Beta", HomeRegion: "us-east"}))
	if err != nil {
		t.Fatal(err)
	}
	betaTok := f.token(t, "beta", r.Msg.AdminClientId, r.Msg.AdminClientSecret)
	for _, p := range tenantProcedures(t) {
		if code, body := f.call(t, p, betaTok, map[string]any{"tenantId": "acme"}); code != "unauthenticated" {
			t.Errorf("%s with beta's admin token on acme: got %q (%s), want unauthenticated", p, code, body)
		}
	}
	// The same token works on beta: the refusal above is about the tenant.
	if code, body := f.call(t, "/"+keyplanev1connect.AdminServiceName+"/ListIdentities", betaTok, map[string]any{"tenantId": "beta"}); code != "" {
		t.Fatalf("beta's admin on beta: %s %s", code, body)
	}
}

// TestSecurityTenantAdminCannotDoClusterWork (issue 13, item 1): a tenant admin's
// token holds every permission of its tenant but is not the operator: cluster calls
// (tenants, regions, rehoming) refuse it.
func TestSecurityTenantAdminCannotDoClusterWork(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	_, err := f.tenantAd.ListTenants(ctx, connect.NewRequest(&keyplanev1.ListTenantsRequest{}))
	wantCode(t, err, connect.CodeUnauthenticated, "invalid operator credentials")
	_, err = f.tenantAd.RehomeTenant(ctx, connect.NewRequest(&keyplanev1.RehomeTenantRequest{Id: "acme", HomeRegion: "us-east"}))
	wantCode(t, err, connect.CodeUnauthenticated, "invalid operator credentials")
	_, err = f.tenantAd.DisableTenant(ctx, connect.NewRequest(&keyplanev1.DisableTenantRequest{Id: "acme"}))
	wantCode(t, err, connect.CodeUnauthenticated, "invalid operator credentials")
}

// breakGlassCount reads keyplane_break_glass_calls_total for procedure and outcome
// from the node's /metrics.
func breakGlassCount(t *testing.T, base, procedure, outcome string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	re := regexp.MustCompile(`(?m)^keyplane_break_glass_calls_total\{[^}]*outcome="` + outcome + `"[^}]*procedure="` + regexp.QuoteMeta(procedure) + `"[^}]*\} (\d+)$`)
	m := re.FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.Atoi(string(m[1]))
	return v
}

// TestSecurityBreakGlass (issue 13, item 1): the operator secret on a tenant-scoped
// call is break-glass. By default it works, every such call is counted, and its audit
// event is marked break-glass (a tenant admin's and a cluster call's are not); on a node
// run with break-glass off (serve --operator-break-glass=false) the same calls are
// refused with permission_denied and counted as refused, while cluster calls and the
// tenant admin's own token keep working.
func TestSecurityBreakGlass(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	proc := "/" + keyplanev1connect.AdminServiceName + "/ListIdentities"
	t.Run("on", func(t *testing.T) {
		t.Parallel()
		f := newAdminFixture(t, nil)
		before := breakGlassCount(t, f.url, proc, "allowed")
		for range 3 {
			if _, err := f.op.ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: "acme"})); err != nil {
				t.Fatal(err)
			}
		}
		if got := breakGlassCount(t, f.url, proc, "allowed") - before; got != 3 {
			t.Fatalf("break-glass calls counted: %d, want 3", got)
		}
		if _, err := f.tenantAd.ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: "acme"})); err != nil {
			t.Fatal(err)
		}
		if got := breakGlassCount(t, f.url, proc, "allowed") - before; got != 3 {
			t.Fatalf("a tenant admin's call counted as break-glass: %d, want 3", got)
		}
		// The audit log marks the operator's tenant change as break-glass, and neither
		// the tenant admin's change nor the operator's cluster change.
		byOp, err := f.op.CreateIdentity(ctx, connect.NewRequest(f.serviceAccount("by the operator")))
		if err != nil {
			t.Fatal(err)
		}
		byAdmin, err := f.tenantAd.CreateIdentity(ctx, connect.NewRequest(f.serviceAccount("by the tenant admin")))
		if err != nil {
			t.Fatal(err)
		}
		evs, err := f.tenantAd.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", PageSize: 100}))
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, e := range evs.Msg.Events {
			switch {
			case e.Action == "identity.create" && e.TargetId == byOp.Msg.Identity.Id:
				seen++
				if e.Actor != "operator" || !e.BreakGlass {
					t.Errorf("operator's tenant change: actor %q break-glass %v, want operator, true", e.Actor, e.BreakGlass)
				}
			case e.Action == "identity.create" && e.TargetId == byAdmin.Msg.Identity.Id:
				seen++
				if e.Actor != "identity:"+f.boot.AdminIdentityId || e.BreakGlass {
					t.Errorf("tenant admin's change: actor %q break-glass %v", e.Actor, e.BreakGlass)
				}
			case e.Action == "tenant.create":
				seen++
				if e.Actor != "operator" || e.BreakGlass {
					t.Errorf("cluster change: actor %q break-glass %v, want operator, false", e.Actor, e.BreakGlass)
				}
			}
		}
		if seen != 3 {
			t.Fatalf("found %d of the 3 audit events looked for", seen)
		}
	})
	t.Run("off", func(t *testing.T) {
		t.Parallel()
		f := newAdminFixture(t, func(c *region.Config) { c.NoBreakGlass = true })
		_, err := f.op.ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: "acme"}))
		wantCode(t, err, connect.CodePermissionDenied, "break-glass is off")
		_, err = f.op.CreateIdentity(ctx, connect.NewRequest(f.serviceAccount("x")))
		wantCode(t, err, connect.CodePermissionDenied, "break-glass is off")
		for _, p := range tenantProcedures(t) {
			if code, body := f.call(t, p, secret, map[string]any{"tenantId": "acme"}); code != "permission_denied" || !strings.Contains(body, "break-glass is off") {
				t.Errorf("%s with the operator secret, break-glass off: %q %s", p, code, body)
			}
		}
		if got := breakGlassCount(t, f.url, proc, "refused"); got != 2 {
			t.Fatalf("refused break-glass calls of ListIdentities counted: %d, want 2", got)
		}
		if _, err := f.op.ListTenants(ctx, connect.NewRequest(&keyplanev1.ListTenantsRequest{})); err != nil {
			t.Fatalf("cluster call with break-glass off: %v", err)
		}
		if _, err := f.tenantAd.CreateIdentity(ctx, connect.NewRequest(f.serviceAccount("made by the tenant admin"))); err != nil {
			t.Fatalf("tenant admin with break-glass off: %v", err)
		}
	})
}

// TestSecurityNoPrivilegeEscalation (issue 13, item 3): an identity may bind only
// roles whose every permission it holds on the binding's scope, may add members only
// to groups whose grants it holds, and may mint credentials only for identities whose
// permissions it holds. Each attempt beyond that is refused with permission_denied and
// writes nothing.
func TestSecurityNoPrivilegeEscalation(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	// An access admin (built-in role) on the whole tenant.
	aaID, aaTok := f.identityWith(t, "access-admin", "*")
	f.bind(t, aaID, schema.RoleAccessAdmin, "*")
	aa := adminClient(f.url, aaTok)
	victim, _ := f.identityWith(t, "victim", "*")
	bind := func(c keyplanev1connect.AdminServiceClient, who, role, scope string) error {
		_, err := c.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme",
			PrincipalKind: "identity", PrincipalId: who, RoleId: role, Scope: scope}))
		return err
	}
	bindingsBefore := countBindings(t, f)
	for _, c := range []struct{ who, role, want string }{
		{aaID, schema.RoleTenantAdmin, `lacks * on *`},
		{victim, schema.RoleTenantAdmin, `lacks * on *`},
		{victim, schema.RoleSecurityAuditor, "lacks iam.audit.read on *"},
		{victim, schema.RoleIdentityManager, "lacks iam.identities.* on *"},
	} {
		wantCode(t, bind(aa, c.who, c.role, "*"), connect.CodePermissionDenied, c.want)
	}
	if got := countBindings(t, f); got != bindingsBefore {
		t.Fatalf("refused bindings wrote: %d bindings, want %d", got, bindingsBefore)
	}
	// Within what it holds, it may bind.
	own, err := f.op.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "binding-reader", Permissions: []string{"iam.bindings.read"}}))
	if err != nil {
		t.Fatal(err)
	}
	if err := bind(aa, victim, own.Msg.Role.Id, "*"); err != nil {
		t.Fatalf("binding a role it holds: %v", err)
	}

	// Delegated administration of a sub-tree: bindings.write and docs.* on projects/alpha/.
	deleg, delegTok := f.identityWith(t, "alpha-admin", "projects/alpha/", "iam.bindings.write", "docs.*")
	_ = deleg
	docs, err := f.op.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "docs-reader", Permissions: []string{"docs.document.read"}}))
	if err != nil {
		t.Fatal(err)
	}
	da := adminClient(f.url, delegTok)
	if err := bind(da, victim, docs.Msg.Role.Id, "projects/alpha/x"); err != nil {
		t.Fatalf("delegated admin binding inside its scope: %v", err)
	}
	wantCode(t, bind(da, victim, docs.Msg.Role.Id, "projects/beta/"), connect.CodePermissionDenied, "lacks iam.bindings.write on projects/beta/")
	wantCode(t, bind(da, victim, docs.Msg.Role.Id, "*"), connect.CodePermissionDenied, "lacks iam.bindings.write on *")
	wantCode(t, bind(da, victim, own.Msg.Role.Id, "projects/alpha/"), connect.CodePermissionDenied, "lacks iam.bindings.read on projects/alpha/")

	// Group membership: a group bound to tenant-admin is off limits to the access admin.
	g, err := f.op.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: "admins"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.op.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "group",
		PrincipalId: g.Msg.Group.Id, RoleId: schema.RoleTenantAdmin, Scope: "*"})); err != nil {
		t.Fatal(err)
	}
	_, err = aa.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: "acme", GroupId: g.Msg.Group.Id, IdentityId: aaID}))
	wantCode(t, err, connect.CodePermissionDenied, "lacks * on *")

	// Credentials: an identity manager may mint for a plain service account, not for
	// the tenant admin (whose credential would carry every permission).
	imID, imTok := f.identityWith(t, "identity-manager", "*")
	f.bind(t, imID, schema.RoleIdentityManager, "*")
	im := adminClient(f.url, imTok)
	_, err = im.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: f.boot.AdminIdentityId, Name: "stolen"}))
	wantCode(t, err, connect.CodePermissionDenied, "no privilege escalation")
	_, err = im.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: aaID, Password: "a long enough password"}))
	wantCode(t, err, connect.CodePermissionDenied, "no privilege escalation")
	if _, err := im.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: victim, Name: "ok"})); err == nil {
		t.Fatal("minting for an identity holding iam.bindings.read, which the identity manager lacks: want refused")
	}
	plainSA, _ := f.identityWith(t, "plain", "*")
	if _, err := im.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: plainSA, Name: "ok"})); err != nil {
		t.Fatalf("identity manager minting for a plain service account: %v", err)
	}
	// An admin OAuth client (introspects and revokes every token of the tenant) needs
	// iam.sessions.revoke besides iam.credentials.manage.
	_, credTok := f.identityWith(t, "credentials-only", "*", "iam.credentials.manage")
	_, err = adminClient(f.url, credTok).CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme",
		IdentityId: plainSA, Name: "admin", Admin: true}))
	wantCode(t, err, connect.CodePermissionDenied, "lacks iam.sessions.revoke")
	// The access admin holds no iam.credentials.manage at all.
	_, err = aa.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: plainSA, Name: "x"}))
	wantCode(t, err, connect.CodePermissionDenied, "lacks iam.credentials.manage")
}

func countBindings(t *testing.T, f *adminFixture) int {
	t.Helper()
	bs, err := f.op.ListBindings(context.Background(), connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	return len(bs.Msg.Bindings)
}

// TestSecurityLastTenantAdmin (issue 13, item 4): a tenant always keeps an active
// tenant admin. Deleting the last tenant-admin binding, disabling its last holder or
// removing it from the group that makes it one is refused with failed_precondition
// (by the admin itself and by the operator) and writes nothing; with a second admin
// the same changes go through.
func TestSecurityLastTenantAdmin(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	bootBinding := ""
	bs, err := f.tenantAd.ListBindings(ctx, connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs.Msg.Bindings {
		if b.PrincipalId == f.boot.AdminIdentityId && b.RoleId == schema.RoleTenantAdmin && b.Scope == "*" {
			bootBinding = b.Id
		}
	}
	if bootBinding == "" {
		t.Fatalf("the bootstrap admin has no tenant-admin binding on *: %v", bs.Msg.Bindings)
	}
	for name, c := range map[string]keyplanev1connect.AdminServiceClient{"tenant admin": f.tenantAd, "operator": f.op} {
		_, err := c.DeleteBinding(ctx, connect.NewRequest(&keyplanev1.DeleteBindingRequest{TenantId: "acme", BindingId: bootBinding}))
		wantCode(t, err, connect.CodeFailedPrecondition, "without an active tenant admin")
		_, err = c.DisableIdentity(ctx, connect.NewRequest(&keyplanev1.DisableIdentityRequest{TenantId: "acme", Id: f.boot.AdminIdentityId}))
		wantCode(t, err, connect.CodeFailedPrecondition, "without an active tenant admin")
		_, err = c.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: f.boot.AdminIdentityId,
			ExpireTime: timestamppb.New(time.Now().Add(-time.Minute))}))
		if connect.CodeOf(err) != connect.CodeFailedPrecondition && connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("%s expiring the last admin: %v", name, err)
		}
	}
	// Nothing was written: the admin still works.
	if _, err := f.tenantAd.ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: "acme"})); err != nil {
		t.Fatalf("the last admin after refused removals: %v", err)
	}
	// Through a group: the group's binding is the only admin grant of a second admin;
	// removing the first admin's binding then leaves one; removing the member is refused.
	second, _ := f.identityWith(t, "second", "*")
	g, err := f.tenantAd.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: "admins"}))
	if err != nil {
		t.Fatal(err)
	}
	// The operator (break-glass) applies these at once; a tenant admin's would be
	// change requests (two-person change control, TestSecurityTwoPersonChangeControl).
	if _, err := f.op.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "group",
		PrincipalId: g.Msg.Group.Id, RoleId: schema.RoleTenantAdmin, Scope: "*"})); err != nil {
		t.Fatalf("binding tenant-admin to the group: %v", err)
	}
	if _, err := f.op.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: "acme", GroupId: g.Msg.Group.Id, IdentityId: second})); err != nil {
		t.Fatal(err)
	}
	if _, err := f.op.DeleteBinding(ctx, connect.NewRequest(&keyplanev1.DeleteBindingRequest{TenantId: "acme", BindingId: bootBinding})); err != nil {
		t.Fatalf("removing one of two admins: %v", err)
	}
	_, err = f.op.RemoveGroupMember(ctx, connect.NewRequest(&keyplanev1.RemoveGroupMemberRequest{TenantId: "acme", GroupId: g.Msg.Group.Id, IdentityId: second}))
	wantCode(t, err, connect.CodeFailedPrecondition, "without an active tenant admin")
}

// TestBuiltinRolesAreFixed: the built-in roles are there in every tenant, bindable,
// and can be neither shadowed by a role of the same name nor deleted.
func TestBuiltinRolesAreFixed(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	for _, r := range schema.BuiltinRoles() {
		_, err := f.tenantAd.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: r.Name, Permissions: []string{"docs.document.read"}}))
		wantCode(t, err, connect.CodeInvalidArgument, "built-in role")
		_, err = f.tenantAd.DeleteRole(ctx, connect.NewRequest(&keyplanev1.DeleteRoleRequest{TenantId: "acme", RoleId: r.ID}))
		wantCode(t, err, connect.CodeFailedPrecondition, "cannot be deleted")
	}
	// A security auditor reads the audit log and changes nothing.
	id, tok := f.identityWith(t, "auditor", "*")
	f.bind(t, id, schema.RoleSecurityAuditor, "*")
	aud := adminClient(f.url, tok)
	if _, err := aud.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme"})); err != nil {
		t.Fatalf("auditor reading the audit log: %v", err)
	}
	_, err := aud.CreateIdentity(ctx, connect.NewRequest(f.serviceAccount("x")))
	wantCode(t, err, connect.CodePermissionDenied, "lacks iam.identities.create")
}

// TestSecurityNHIOwnerManagesOnlyItsOwn (issue 13, items 2 and 3): the built-in role
// nhi-owner lets a human manage the credentials of the non-human identities it owns,
// and nothing else: another owner's service account, a human, and every other admin
// call are refused.
func TestSecurityNHIOwnerManagesOnlyItsOwn(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	email := "owner@acme.test"
	h, err := f.op.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "NHI owner", Email: email}))
	if err != nil {
		t.Fatal(err)
	}
	owner := h.Msg.Identity.Id
	if _, err := f.op.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: owner, Password: "a long enough password"})); err != nil {
		t.Fatal(err)
	}
	f.bind(t, owner, schema.RoleNHIOwner, "*")
	mineReq := f.serviceAccount("mine")
	mineReq.OwnerId = owner
	mine, err := f.op.CreateIdentity(ctx, connect.NewRequest(mineReq))
	if err != nil {
		t.Fatal(err)
	}
	theirs, _ := f.identityWith(t, "theirs", "*")
	// Minting is sensitive: the owner logs in with a second factor.
	c := adminClient(f.url, mfaLogin(t, f.url, "acme", owner, email, "a long enough password"))
	cl, err := c.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: mine.Msg.Identity.Id, Name: "deploy"}))
	if err != nil {
		t.Fatalf("owner minting for its own service account: %v", err)
	}
	if _, err := c.RevokeCredential(ctx, connect.NewRequest(&keyplanev1.RevokeCredentialRequest{TenantId: "acme", CredentialId: cl.Msg.Credential.Id})); err != nil {
		t.Fatalf("owner revoking its own service account's credential: %v", err)
	}
	for name, id := range map[string]string{"another owner's service account": theirs, "a human": f.owner} {
		_, err := c.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: id, Name: "x"}))
		if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "lacks iam.credentials.manage") {
			t.Errorf("nhi-owner minting for %s: %v, want permission_denied", name, err)
		}
	}
	_, err = c.ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: "acme"}))
	wantCode(t, err, connect.CodePermissionDenied, "lacks iam.identities.read")
}

// TestSecurityElevationVisibleToItsParties (issue 13, item 1): an elevation request
// (who wants which role, and why) is read by its requester and by those who may decide
// it, not by any identity of the tenant.
func TestSecurityElevationVisibleToItsParties(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	requester, reqTok := f.identityWith(t, "requester", "*")
	_, nosyTok := f.identityWith(t, "nosy", "*")
	_, approverTok := f.identityWith(t, "approver", "*", "iam.elevations.approve")
	role, err := f.op.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "docs-writer", Permissions: []string{"docs.document.write"}}))
	if err != nil {
		t.Fatal(err)
	}
	elev := func(tok string) keyplanev1connect.ElevationServiceClient {
		return keyplanev1connect.NewElevationServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearerInterceptor(tok)))
	}
	r, err := elev(reqTok).RequestElevation(ctx, connect.NewRequest(&keyplanev1.RequestElevationRequest{TenantId: "acme", RoleId: role.Msg.Role.Id,
		Scope: "docs/", Duration: durationpb.New(time.Hour), Justification: "incident 42"}))
	if err != nil {
		t.Fatal(err)
	}
	if r.Msg.Elevation.RequesterId != requester {
		t.Fatalf("requester %s, want %s", r.Msg.Elevation.RequesterId, requester)
	}
	get := func(tok string) error {
		_, err := elev(tok).GetElevation(ctx, connect.NewRequest(&keyplanev1.GetElevationRequest{TenantId: "acme", ElevationId: r.Msg.Elevation.Id}))
		return err
	}
	if err := get(reqTok); err != nil {
		t.Fatalf("requester: %v", err)
	}
	if err := get(approverTok); err != nil {
		t.Fatalf("approver: %v", err)
	}
	wantCode(t, get(nosyTok), connect.CodePermissionDenied, "lacks iam.elevations.approve")
}

// TestSecurityDenyOnlyWhatYouCouldGrant (issue 13, item 3): a caller allowed to write
// bindings, but not holding `*`, denied the built-in tenant-admin role to the tenant's
// admin: the admin could then remove nothing (its own iam.bindings.write denied), and
// neither could the caller. Creating a deny now needs every permission of the role on
// the scope, as granting it does; a deny of what the caller holds still works.
func TestSecurityDenyOnlyWhatYouCouldGrant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newAdminFixture(t, nil)
	_, tok := f.identityWith(t, "binder", "*", region.PermBindingsWrite, "docs.document.read")
	binder := adminClient(f.url, tok)
	_, err := binder.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", Effect: keyplanev1.Effect_EFFECT_DENY,
		PrincipalKind: "identity", PrincipalId: f.boot.AdminIdentityId, RoleId: schema.RoleTenantAdmin, Scope: "*"}))
	wantCode(t, err, connect.CodePermissionDenied, "denying")
	role, err := f.op.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "reader", Permissions: []string{"docs.document.read"}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := binder.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", Effect: keyplanev1.Effect_EFFECT_DENY,
		PrincipalKind: "identity", PrincipalId: f.owner, RoleId: role.Msg.Role.Id, Scope: "docs/"})); err != nil {
		t.Fatalf("a deny of a role the caller holds: %v", err)
	}
}

// TestSecurityIdentityAttributesAreNotAWayUp (issue 13, item 3): conditions read
// principal.attributes and nhi-owner rights follow owner_id, so an identity allowed to
// update identities could rewrite its own attributes to satisfy a conditional grant,
// or another identity's to widen what it may do, or take over an NHI by naming itself
// its owner. Changing attributes or owner now needs a caller other than the target
// that holds everything the target holds.
func TestSecurityIdentityAttributesAreNotAWayUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newAdminFixture(t, nil)
	me, tok := f.identityWith(t, "manager", "*", region.PermIdentitiesUpdate)
	manager := adminClient(f.url, tok)
	attrs, err := structpb.NewStruct(map[string]any{"clearance": "top"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = manager.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: me, Attributes: attrs}))
	wantCode(t, err, connect.CodePermissionDenied, "its own attributes")
	_, err = manager.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: f.boot.AdminIdentityId, OwnerId: &me}))
	wantCode(t, err, connect.CodePermissionDenied, "no privilege escalation")
	// An identity holding nothing the manager lacks: its attributes may change, and
	// anyone's display name may, attributes untouched.
	if _, err := manager.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: f.owner, Attributes: attrs})); err != nil {
		t.Fatalf("attributes of an identity holding nothing: %v", err)
	}
	name := "Manager (renamed)"
	if _, err := manager.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: me, DisplayName: &name})); err != nil {
		t.Fatalf("its own display name: %v", err)
	}
}
