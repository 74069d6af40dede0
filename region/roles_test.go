package region_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// Tests of the role and group calls of issue 14 (item 3), over a real node with the
// generated Connect client and, where noted, plain net/http speaking Connect JSON.

func (f *adminFixture) revision(t *testing.T) int64 {
	t.Helper()
	r, err := f.op.GetTenant(context.Background(), connect.NewRequest(&keyplanev1.GetTenantRequest{Id: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg.Tenant.PolicyRevision
}

// auditOf lists every audit event of acme about target (kind, id), oldest last.
func (f *adminFixture) auditOf(t *testing.T, kind, id string) []*keyplanev1.AuditEvent {
	t.Helper()
	var out []*keyplanev1.AuditEvent
	req := &keyplanev1.ListAuditEventsRequest{TenantId: "acme", TargetKind: kind, TargetId: id}
	for {
		r, err := f.op.ListAuditEvents(context.Background(), connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r.Msg.Events...)
		if r.Msg.NextPageToken == "" {
			return out
		}
		req.PageToken = r.Msg.NextPageToken
	}
}

func (f *adminFixture) allAuditCount(t *testing.T) int {
	t.Helper()
	n := 0
	req := &keyplanev1.ListAuditEventsRequest{TenantId: "acme", PageSize: 1000}
	for {
		r, err := f.op.ListAuditEvents(context.Background(), connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		n += len(r.Msg.Events)
		if r.Msg.NextPageToken == "" {
			return n
		}
		req.PageToken = r.Msg.NextPageToken
	}
}

func (f *adminFixture) role(t *testing.T, c keyplanev1connect.AdminServiceClient, req *keyplanev1.CreateRoleRequest) *keyplanev1.Role {
	t.Helper()
	req.TenantId = "acme"
	r, err := c.CreateRole(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("create role %s: %v", req.Name, err)
	}
	return r.Msg.Role
}

func (f *adminFixture) group(t *testing.T, name, externalID string) string {
	t.Helper()
	g, err := f.op.CreateGroup(context.Background(), connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: name, ExternalId: externalID}))
	if err != nil {
		t.Fatal(err)
	}
	return g.Msg.Group.Id
}

func (f *adminFixture) bindAs(t *testing.T, effect keyplanev1.Effect, kind, principal, role, scope string) string {
	t.Helper()
	b, err := f.op.CreateBinding(context.Background(), connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", Effect: effect,
		PrincipalKind: kind, PrincipalId: principal, RoleId: role, Scope: scope}))
	if err != nil {
		t.Fatal(err)
	}
	return b.Msg.Binding.Id
}

func (f *adminFixture) addMember(t *testing.T, group, identity string) {
	t.Helper()
	if _, err := f.op.AddGroupMember(context.Background(), connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: "acme", GroupId: group,
		IdentityId: identity})); err != nil {
		t.Fatal(err)
	}
}

// pages collects every item of a listing, one page of size at a time, and how many
// pages it took.
func pages[T any](t *testing.T, list func(token string) ([]T, string, error)) ([]T, int) {
	t.Helper()
	var out []T
	token := ""
	for n := 1; ; n++ {
		items, next, err := list(token)
		if err != nil {
			t.Fatalf("page %d: %v", n, err)
		}
		out = append(out, items...)
		if next == "" {
			return out, n
		}
		if n > 100 {
			t.Fatal("the listing never ends")
		}
		token = next
	}
}

// TestRolesAndGroupsReadAndUpdate: ListRoles shows the built-in roles (marked) with
// the tenant's own, ordered by name, across pages and filtered by prefix; UpdateRole and
// UpdateGroup change only the fields they set, bump the revision and write an audit
// event, and change nothing (no revision, no event) when nothing differs; ListGroups
// pages and filters; ListGroupMembers shows who is in a group; bad input is refused
// naming the field.
func TestRolesAndGroupsReadAndUpdate(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	c := f.tenantAd
	own := map[string]*keyplanev1.Role{}
	for _, name := range []string{"docs-reader", "docs-writer", "billing-viewer"} {
		own[name] = f.role(t, c, &keyplanev1.CreateRoleRequest{Name: name, Permissions: []string{"docs.document.read"}})
	}

	t.Run("ListRoles", func(t *testing.T) {
		roles, n := pages(t, func(tok string) ([]*keyplanev1.Role, string, error) {
			r, err := c.ListRoles(ctx, connect.NewRequest(&keyplanev1.ListRolesRequest{TenantId: "acme", PageSize: 3, PageToken: tok}))
			if err != nil {
				return nil, "", err
			}
			return r.Msg.Roles, r.Msg.NextPageToken, nil
		})
		var names, builtIn []string
		for _, r := range roles {
			names = append(names, r.Name)
			if r.BuiltIn {
				builtIn = append(builtIn, r.Name)
			}
		}
		want := []string{"access-admin", "billing-viewer", "docs-reader", "docs-writer", "identity-manager", "nhi-owner", "security-auditor", "tenant-admin"}
		if !slices.Equal(names, want) || n != 3 {
			t.Fatalf("roles over %d pages: %v, want %v over 3", n, names, want)
		}
		if wantBuiltIn := []string{"access-admin", "identity-manager", "nhi-owner", "security-auditor", "tenant-admin"}; !slices.Equal(builtIn, wantBuiltIn) {
			t.Fatalf("built_in roles: %v, want %v", builtIn, wantBuiltIn)
		}
		r, err := c.ListRoles(ctx, connect.NewRequest(&keyplanev1.ListRolesRequest{TenantId: "acme", NamePrefix: "docs-"}))
		if err != nil || len(r.Msg.Roles) != 2 || r.Msg.Roles[0].Name != "docs-reader" || r.Msg.Roles[1].Name != "docs-writer" || r.Msg.NextPageToken != "" {
			t.Fatalf("prefix docs-: %v %v", r, err)
		}
		// Plain net/http, Connect JSON: a built-in role says so.
		code, body := f.call(t, "/keyplane.v1.AdminService/ListRoles", f.bootTok, map[string]any{"tenantId": "acme", "namePrefix": "tenant-"})
		if code != "" || !strings.Contains(body, `"name":"tenant-admin"`) || !strings.Contains(body, `"builtIn":true`) || strings.Contains(body, "docs-") {
			t.Fatalf("ListRoles over JSON: %q %s", code, body)
		}
	})

	t.Run("GetRole", func(t *testing.T) {
		r, err := c.GetRole(ctx, connect.NewRequest(&keyplanev1.GetRoleRequest{TenantId: "acme", RoleId: schema.RoleTenantAdmin}))
		if err != nil || !r.Msg.Role.BuiltIn || !r.Msg.Role.Privileged || !slices.Equal(r.Msg.Role.Permissions, []string{"*"}) {
			t.Fatalf("GetRole tenant-admin: %v %v", r, err)
		}
		r, err = c.GetRole(ctx, connect.NewRequest(&keyplanev1.GetRoleRequest{TenantId: "acme", RoleId: own["docs-reader"].Id}))
		if err != nil || r.Msg.Role.BuiltIn || r.Msg.Role.Name != "docs-reader" {
			t.Fatalf("GetRole docs-reader: %v %v", r, err)
		}
		_, err = c.GetRole(ctx, connect.NewRequest(&keyplanev1.GetRoleRequest{TenantId: "acme", RoleId: "00000000-0000-4000-8000-000000000009"}))
		wantCode(t, err, connect.CodeNotFound, "role")
		_, err = c.GetRole(ctx, connect.NewRequest(&keyplanev1.GetRoleRequest{TenantId: "acme", RoleId: "docs-reader"}))
		wantCode(t, err, connect.CodeInvalidArgument, "role_id")
	})

	t.Run("UpdateRole", func(t *testing.T) {
		id := own["docs-writer"].Id
		rev := f.revision(t)
		r, err := c.UpdateRole(ctx, connect.NewRequest(&keyplanev1.UpdateRoleRequest{TenantId: "acme", RoleId: id, Description: proto.String("writes docs")}))
		if err != nil {
			t.Fatal(err)
		}
		got := r.Msg.Role
		if got.Description != "writes docs" || got.Name != "docs-writer" || !slices.Equal(got.Permissions, []string{"docs.document.read"}) || r.Msg.PolicyRevision != rev+1 {
			t.Fatalf("description only: %v (revision %d, want %d)", r.Msg, r.Msg.PolicyRevision, rev+1)
		}
		// The same again changes nothing: no revision, no event.
		r, err = c.UpdateRole(ctx, connect.NewRequest(&keyplanev1.UpdateRoleRequest{TenantId: "acme", RoleId: id, Description: proto.String("writes docs")}))
		if err != nil || r.Msg.PolicyRevision != rev+1 {
			t.Fatalf("no-op update: %v %v, want revision %d", r, err, rev+1)
		}
		r, err = c.UpdateRole(ctx, connect.NewRequest(&keyplanev1.UpdateRoleRequest{TenantId: "acme", RoleId: id,
			Permissions: []string{"docs.document.read", "docs.document.write"}, Sensitive: proto.Bool(true)}))
		if err != nil || !r.Msg.Role.Sensitive || len(r.Msg.Role.Permissions) != 2 || r.Msg.Role.Description != "writes docs" || r.Msg.PolicyRevision != rev+2 {
			t.Fatalf("permissions and sensitive: %v %v", r, err)
		}
		var updates []*keyplanev1.AuditEvent
		for _, e := range f.auditOf(t, "role", id) {
			if e.Action == "role.update" {
				updates = append(updates, e)
			}
		}
		if len(updates) != 2 {
			t.Fatalf("role.update events: %d, want 2 (the no-op writes none)", len(updates))
		}
		last := updates[0] // newest first
		if last.Before.AsMap()["sensitive"] != false || last.After.AsMap()["sensitive"] != true || last.After.AsMap()["policy_revision"] != float64(rev+2) {
			t.Fatalf("role.update event: before %v after %v", last.Before.AsMap(), last.After.AsMap())
		}
		for _, tc := range []struct {
			name string
			req  *keyplanev1.UpdateRoleRequest
			code connect.Code
			msg  string
		}{
			{"bad pattern", &keyplanev1.UpdateRoleRequest{RoleId: id, Permissions: []string{"docs.document.read", "Docs Read"}}, connect.CodeInvalidArgument, "permissions[1]"},
			{"built-in name", &keyplanev1.UpdateRoleRequest{RoleId: id, Name: proto.String("tenant-admin")}, connect.CodeInvalidArgument, "name"},
			{"empty name", &keyplanev1.UpdateRoleRequest{RoleId: id, Name: proto.String(" ")}, connect.CodeInvalidArgument, "name"},
			{"taken name", &keyplanev1.UpdateRoleRequest{RoleId: id, Name: proto.String("docs-reader")}, connect.CodeAlreadyExists, "name"},
			{"built-in role", &keyplanev1.UpdateRoleRequest{RoleId: schema.RoleSecurityAuditor, Description: proto.String("x")}, connect.CodeFailedPrecondition, "role_id"},
			{"unknown role", &keyplanev1.UpdateRoleRequest{RoleId: "00000000-0000-4000-8000-000000000009", Description: proto.String("x")}, connect.CodeNotFound, "role"},
			{"bad id", &keyplanev1.UpdateRoleRequest{RoleId: "x", Description: proto.String("x")}, connect.CodeInvalidArgument, "role_id"},
		} {
			tc.req.TenantId = "acme"
			_, err := c.UpdateRole(ctx, connect.NewRequest(tc.req))
			if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%s: %v, want %v naming %s", tc.name, err, tc.code, tc.msg)
			}
		}
		if f.revision(t) != rev+2 {
			t.Fatal("a refused update moved the revision")
		}
	})

	groups := map[string]string{}
	for name, ext := range map[string]string{"eng-a": "", "eng-b": "", "ops": "scim-ops", "sales": ""} {
		groups[name] = f.group(t, name, ext)
	}

	t.Run("ListGroups", func(t *testing.T) {
		gs, n := pages(t, func(tok string) ([]*keyplanev1.Group, string, error) {
			r, err := c.ListGroups(ctx, connect.NewRequest(&keyplanev1.ListGroupsRequest{TenantId: "acme", PageSize: 1, PageToken: tok}))
			if err != nil {
				return nil, "", err
			}
			return r.Msg.Groups, r.Msg.NextPageToken, nil
		})
		var names []string
		for _, g := range gs {
			names = append(names, g.Name)
		}
		if want := []string{"eng-a", "eng-b", "ops", "sales"}; !slices.Equal(names, want) || n != 4 {
			t.Fatalf("groups over %d pages: %v, want %v over 4", n, names, want)
		}
		r, err := c.ListGroups(ctx, connect.NewRequest(&keyplanev1.ListGroupsRequest{TenantId: "acme", NamePrefix: "eng-"}))
		if err != nil || len(r.Msg.Groups) != 2 {
			t.Fatalf("prefix eng-: %v %v", r, err)
		}
		r, err = c.ListGroups(ctx, connect.NewRequest(&keyplanev1.ListGroupsRequest{TenantId: "acme", ExternalId: "scim-ops"}))
		if err != nil || len(r.Msg.Groups) != 1 || r.Msg.Groups[0].Id != groups["ops"] {
			t.Fatalf("external_id scim-ops: %v %v", r, err)
		}
		g, err := c.GetGroup(ctx, connect.NewRequest(&keyplanev1.GetGroupRequest{TenantId: "acme", GroupId: groups["ops"]}))
		if err != nil || g.Msg.Group.Name != "ops" || g.Msg.Group.ExternalId != "scim-ops" {
			t.Fatalf("GetGroup: %v %v", g, err)
		}
	})

	t.Run("UpdateGroup", func(t *testing.T) {
		id := groups["ops"]
		rev := f.revision(t)
		r, err := c.UpdateGroup(ctx, connect.NewRequest(&keyplanev1.UpdateGroupRequest{TenantId: "acme", GroupId: id, Description: proto.String("on call")}))
		if err != nil || r.Msg.Group.ExternalId != "scim-ops" || r.Msg.Group.Name != "ops" || r.Msg.Group.Description != "on call" || r.Msg.PolicyRevision != rev+1 {
			t.Fatalf("description only: %v %v", r, err)
		}
		r, err = c.UpdateGroup(ctx, connect.NewRequest(&keyplanev1.UpdateGroupRequest{TenantId: "acme", GroupId: id, ExternalId: proto.String(""),
			Name: proto.String("operations")}))
		if err != nil || r.Msg.Group.ExternalId != "" || r.Msg.Group.Name != "operations" || r.Msg.Group.Description != "on call" {
			t.Fatalf("clear external_id, rename: %v %v", r, err)
		}
		r, err = c.UpdateGroup(ctx, connect.NewRequest(&keyplanev1.UpdateGroupRequest{TenantId: "acme", GroupId: id, Name: proto.String("operations")}))
		if err != nil || r.Msg.PolicyRevision != rev+2 {
			t.Fatalf("no-op: %v %v, want revision %d", r, err, rev+2)
		}
		if evs := f.auditOf(t, "group", id); len(evs) != 3 || evs[0].Action != "group.update" || evs[0].Before.AsMap()["external_id"] != "scim-ops" {
			t.Fatalf("group events: %v", evs)
		}
		_, err = c.UpdateGroup(ctx, connect.NewRequest(&keyplanev1.UpdateGroupRequest{TenantId: "acme", GroupId: id, Name: proto.String("sales")}))
		wantCode(t, err, connect.CodeAlreadyExists, "name")
		_, err = c.UpdateGroup(ctx, connect.NewRequest(&keyplanev1.UpdateGroupRequest{TenantId: "acme", GroupId: id, Description: proto.String("a\nb")}))
		wantCode(t, err, connect.CodeInvalidArgument, "description")
		_, err = c.UpdateGroup(ctx, connect.NewRequest(&keyplanev1.UpdateGroupRequest{TenantId: "acme", GroupId: "00000000-0000-4000-8000-000000000009", Name: proto.String("z")}))
		wantCode(t, err, connect.CodeNotFound, "group")
	})

	t.Run("ListGroupMembers", func(t *testing.T) {
		id := groups["eng-a"]
		var want []string
		for _, email := range []string{"ann@acme.test", "bo@acme.test", "cy@acme.test"} {
			i, err := f.op.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme", Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN,
				DisplayName: strings.TrimSuffix(email, "@acme.test"), Email: email}))
			if err != nil {
				t.Fatal(err)
			}
			f.addMember(t, id, i.Msg.Identity.Id)
			want = append(want, i.Msg.Identity.Id)
		}
		slices.Sort(want)
		if _, err := f.op.DisableIdentity(ctx, connect.NewRequest(&keyplanev1.DisableIdentityRequest{TenantId: "acme", Id: want[0]})); err != nil {
			t.Fatal(err)
		}
		ms, n := pages(t, func(tok string) ([]*keyplanev1.GroupMember, string, error) {
			r, err := c.ListGroupMembers(ctx, connect.NewRequest(&keyplanev1.ListGroupMembersRequest{TenantId: "acme", GroupId: id, PageSize: 2, PageToken: tok}))
			if err != nil {
				return nil, "", err
			}
			return r.Msg.Members, r.Msg.NextPageToken, nil
		})
		var got []string
		for _, m := range ms {
			got = append(got, m.IdentityId)
			if m.Kind != keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN || !strings.HasSuffix(m.Email, "@acme.test") || m.DisplayName == "" || m.AddTime == nil {
				t.Errorf("member %v lacks its kind, email, name or time", m)
			}
			if wantStatus := keyplanev1.Status_STATUS_ACTIVE; m.IdentityId == want[0] {
				if m.Status != keyplanev1.Status_STATUS_DISABLED {
					t.Errorf("disabled member %s shows %v", m.IdentityId, m.Status)
				}
			} else if m.Status != wantStatus {
				t.Errorf("member %s shows %v", m.IdentityId, m.Status)
			}
		}
		if !slices.Equal(got, want) || n != 2 {
			t.Fatalf("members over %d pages: %v, want %v over 2", n, got, want)
		}
		_, err := c.ListGroupMembers(ctx, connect.NewRequest(&keyplanev1.ListGroupMembersRequest{TenantId: "acme", GroupId: "00000000-0000-4000-8000-000000000009"}))
		wantCode(t, err, connect.CodeNotFound, "group")
	})

	t.Run("ListBindings", func(t *testing.T) {
		who := f.owner
		r1 := own["docs-reader"].Id
		ids := []string{
			f.bindAs(t, keyplanev1.Effect_EFFECT_ALLOW, "identity", who, r1, "docs/"),
			f.bindAs(t, keyplanev1.Effect_EFFECT_ALLOW, "identity", who, own["billing-viewer"].Id, "billing/"),
			f.bindAs(t, keyplanev1.Effect_EFFECT_DENY, "group", groups["sales"], r1, "docs/secret/"),
		}
		list := func(req *keyplanev1.ListBindingsRequest) []string {
			t.Helper()
			bs, _ := pages(t, func(tok string) ([]*keyplanev1.Binding, string, error) {
				req.TenantId, req.PageToken, req.PageSize = "acme", tok, 1
				r, err := c.ListBindings(ctx, connect.NewRequest(req))
				if err != nil {
					return nil, "", err
				}
				return r.Msg.Bindings, r.Msg.NextPageToken, nil
			})
			var out []string
			for _, b := range bs {
				out = append(out, b.Id)
			}
			return out
		}
		if got := list(&keyplanev1.ListBindingsRequest{PrincipalKind: "identity", PrincipalId: who}); !slices.Equal(got, ids[:2]) {
			t.Errorf("bindings of the owner: %v, want %v", got, ids[:2])
		}
		if got := list(&keyplanev1.ListBindingsRequest{RoleId: r1}); !slices.Equal(got, []string{ids[0], ids[2]}) {
			t.Errorf("bindings of docs-reader: %v, want %v", got, []string{ids[0], ids[2]})
		}
		if got := list(&keyplanev1.ListBindingsRequest{PrincipalKind: "group", PrincipalId: groups["sales"], RoleId: r1}); !slices.Equal(got, ids[2:]) {
			t.Errorf("bindings of sales and docs-reader: %v, want %v", got, ids[2:])
		}
		all, err := c.ListBindings(ctx, connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme"}))
		if err != nil || len(all.Msg.Bindings) < 4 || all.Msg.NextPageToken != "" {
			t.Fatalf("every binding (page_size 0): %v %v", all, err)
		}
		_, err = c.ListBindings(ctx, connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme", PrincipalKind: "robot", PrincipalId: who}))
		wantCode(t, err, connect.CodeInvalidArgument, "principal_kind")
		_, err = c.ListBindings(ctx, connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme", RoleId: "docs-reader"}))
		wantCode(t, err, connect.CodeInvalidArgument, "role_id")
	})

	t.Run("bad page tokens", func(t *testing.T) {
		tampered := base64.RawURLEncoding.EncodeToString([]byte(`{"a":"2020-01-01T00:00:00Z","i":"not-a-uuid"}`))
		calls := map[string]func(page int32, token string) error{
			"ListRoles": func(p int32, tok string) error {
				_, err := c.ListRoles(ctx, connect.NewRequest(&keyplanev1.ListRolesRequest{TenantId: "acme", PageSize: p, PageToken: tok}))
				return err
			},
			"ListGroups": func(p int32, tok string) error {
				_, err := c.ListGroups(ctx, connect.NewRequest(&keyplanev1.ListGroupsRequest{TenantId: "acme", PageSize: p, PageToken: tok}))
				return err
			},
			"ListGroupMembers": func(p int32, tok string) error {
				_, err := c.ListGroupMembers(ctx, connect.NewRequest(&keyplanev1.ListGroupMembersRequest{TenantId: "acme", GroupId: groups["eng-a"], PageSize: p, PageToken: tok}))
				return err
			},
			"ListBindings": func(p int32, tok string) error {
				_, err := c.ListBindings(ctx, connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme", PageSize: p, PageToken: tok}))
				return err
			},
		}
		for name, call := range calls {
			t.Run(name, func(t *testing.T) {
				for _, tok := range []string{"!!not base64!!", base64.RawURLEncoding.EncodeToString([]byte("[1,2")), strings.Repeat("A", 600)} {
					wantCode(t, call(0, tok), connect.CodeInvalidArgument, "page_token")
				}
				wantCode(t, call(-1, ""), connect.CodeInvalidArgument, "page_size")
				wantCode(t, call(1001, ""), connect.CodeInvalidArgument, "page_size")
			})
		}
		wantCode(t, calls["ListBindings"](0, tampered), connect.CodeInvalidArgument, "page_token")
		wantCode(t, calls["ListGroupMembers"](0, base64.RawURLEncoding.EncodeToString([]byte(`"not-a-uuid"`))), connect.CodeInvalidArgument, "page_token")
	})
}

// TestSecurityAuditorReadsRolesAndGroups: the built-in security-auditor reads roles,
// groups and members (iam.roles.read, iam.groups.read) and changes none of them.
func TestSecurityAuditorReadsRolesAndGroups(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	auditor := f.admin(t, "auditor", schema.RoleSecurityAuditor)
	c := f.client(t, auditor)
	g := f.group(t, "readers", "")
	f.addMember(t, g, f.owner)
	if _, err := c.ListRoles(ctx, connect.NewRequest(&keyplanev1.ListRolesRequest{TenantId: "acme"})); err != nil {
		t.Fatalf("ListRoles: %v", err)
	}
	if _, err := c.GetGroup(ctx, connect.NewRequest(&keyplanev1.GetGroupRequest{TenantId: "acme", GroupId: g})); err != nil {
		t.Fatalf("GetGroup: %v", err)
	}
	if r, err := c.ListGroupMembers(ctx, connect.NewRequest(&keyplanev1.ListGroupMembersRequest{TenantId: "acme", GroupId: g})); err != nil || len(r.Msg.Members) != 1 {
		t.Fatalf("ListGroupMembers: %v %v", r, err)
	}
	_, err := c.UpdateGroup(ctx, connect.NewRequest(&keyplanev1.UpdateGroupRequest{TenantId: "acme", GroupId: g, Name: proto.String("mine")}))
	wantCode(t, err, connect.CodePermissionDenied, "iam.groups.write")
	_, err = c.DeleteGroup(ctx, connect.NewRequest(&keyplanev1.DeleteGroupRequest{TenantId: "acme", GroupId: g}))
	wantCode(t, err, connect.CodePermissionDenied, "iam.groups.write")
}

// TestDeleteRoleInUse: a role still bound, or with pending or active elevations, is
// refused naming every binding and elevation, and nothing changes; with cascade the
// bindings go, the active elevation ends and the pending one is denied, in one
// transaction with one audit event (role.delete) that lists all of it.
func TestDeleteRoleInUse(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	role := f.role(t, f.tenantAd, &keyplanev1.CreateRoleRequest{Name: "docs-editor", Permissions: []string{"docs.document.write"}})
	g := f.group(t, "editors", "")
	bindings := []string{
		f.bindAs(t, keyplanev1.Effect_EFFECT_ALLOW, "identity", f.owner, role.Id, "docs/"),
		f.bindAs(t, keyplanev1.Effect_EFFECT_DENY, "group", g, role.Id, "docs/frozen/"),
	}
	elev := func(a admin) keyplanev1connect.ElevationServiceClient {
		return keyplanev1connect.NewElevationServiceClient(http.DefaultClient, f.url,
			connect.WithInterceptors(bearerInterceptor(f.token(t, "acme", a.clientID, a.secret))))
	}
	request := func(a admin) string {
		e, err := elev(a).RequestElevation(ctx, connect.NewRequest(&keyplanev1.RequestElevationRequest{TenantId: "acme", RoleId: role.Id,
			Scope: "docs/", Duration: durationpb.New(time.Hour), Justification: "incident"}))
		if err != nil {
			t.Fatal(err)
		}
		return e.Msg.Elevation.Id
	}
	pending, active := request(f.admin(t, "waiting", "")), request(f.admin(t, "elevated", ""))
	approver := keyplanev1connect.NewElevationServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearerInterceptor(f.bootTok)))
	a, err := approver.ApproveElevation(ctx, connect.NewRequest(&keyplanev1.ApproveElevationRequest{TenantId: "acme", ElevationId: active}))
	if err != nil {
		t.Fatal(err)
	}
	bindings = append(bindings, a.Msg.Elevation.BindingId)

	rev, events := f.revision(t), f.allAuditCount(t)
	_, err = f.tenantAd.DeleteRole(ctx, connect.NewRequest(&keyplanev1.DeleteRoleRequest{TenantId: "acme", RoleId: role.Id}))
	wantCode(t, err, connect.CodeFailedPrecondition, "role_id")
	for _, id := range append(slices.Clone(bindings), pending, active) {
		if !strings.Contains(err.Error(), id) {
			t.Errorf("the refusal %q does not name %s", err, id)
		}
	}
	if f.revision(t) != rev || f.allAuditCount(t) != events || !hasBinding(t, f, f.owner, role.Id) {
		t.Fatal("a refused DeleteRole wrote something")
	}

	r, err := f.tenantAd.DeleteRole(ctx, connect.NewRequest(&keyplanev1.DeleteRoleRequest{TenantId: "acme", RoleId: role.Id, Cascade: true}))
	if err != nil {
		t.Fatalf("cascade: %v", err)
	}
	if got := r.Msg.DeletedBindingIds; len(got) != 3 || !slices.Contains(got, bindings[0]) || !slices.Contains(got, bindings[1]) || !slices.Contains(got, bindings[2]) {
		t.Errorf("deleted bindings %v, want %v", got, bindings)
	}
	if !slices.Equal(r.Msg.EndedElevationIds, []string{active}) || !slices.Equal(r.Msg.DeniedElevationIds, []string{pending}) || r.Msg.PolicyRevision != rev+1 {
		t.Errorf("cascade answer %v, want %s ended, %s denied, revision %d", r.Msg, active, pending, rev+1)
	}
	_, err = f.tenantAd.GetRole(ctx, connect.NewRequest(&keyplanev1.GetRoleRequest{TenantId: "acme", RoleId: role.Id}))
	wantCode(t, err, connect.CodeNotFound, "role")
	if left, err := f.tenantAd.ListBindings(ctx, connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme", RoleId: role.Id})); err != nil || len(left.Msg.Bindings) != 0 {
		t.Fatalf("bindings of the deleted role: %v %v", left, err)
	}
	for id, want := range map[string]string{pending: "denied", active: "ended"} {
		e, err := approver.GetElevation(ctx, connect.NewRequest(&keyplanev1.GetElevationRequest{TenantId: "acme", ElevationId: id}))
		if err != nil || e.Msg.Elevation.Status != want {
			t.Errorf("elevation %s after cascade: %v %v, want %s", id, e, err, want)
		}
	}
	if got := f.allAuditCount(t); got != events+1 {
		t.Fatalf("audit events: %d new, want exactly 1", got-events)
	}
	evs := f.auditOf(t, "role", role.Id)
	if len(evs) == 0 || evs[0].Action != "role.delete" {
		t.Fatalf("role events: %v", evs)
	}
	after := evs[0].After.AsMap()
	var gone []string
	for _, b := range after["deleted_bindings"].([]any) {
		gone = append(gone, b.(map[string]any)["id"].(string))
	}
	slices.Sort(gone)
	want := slices.Clone(bindings)
	slices.Sort(want)
	if !slices.Equal(gone, want) || after["cascade"] != true || !slices.Equal(asStrings(after["ended_elevations"]), []string{active}) ||
		!slices.Equal(asStrings(after["denied_elevations"]), []string{pending}) || evs[0].Before.AsMap()["name"] != "docs-editor" {
		t.Fatalf("role.delete event: before %v after %v", evs[0].Before.AsMap(), after)
	}
	// The role's decided elevations stay readable; a new request for it is refused.
	_, err = elev(f.admin(t, "late", "")).RequestElevation(ctx, connect.NewRequest(&keyplanev1.RequestElevationRequest{TenantId: "acme", RoleId: role.Id,
		Scope: "docs/", Duration: durationpb.New(time.Hour), Justification: "late"}))
	wantCode(t, err, connect.CodeInvalidArgument, "role_id")
}

func asStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestDeleteGroupInUse: a group that is still a binding's principal is refused naming
// its bindings; with cascade its bindings and memberships go with it under one audit
// event; an unbound group is deleted with its memberships.
func TestDeleteGroupInUse(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	role := f.role(t, f.tenantAd, &keyplanev1.CreateRoleRequest{Name: "docs-reader", Permissions: []string{"docs.document.read"}})
	g := f.group(t, "readers", "")
	member, _ := f.identityWith(t, "member", "*")
	f.addMember(t, g, f.owner)
	f.addMember(t, g, member)
	bindings := []string{
		f.bindAs(t, keyplanev1.Effect_EFFECT_ALLOW, "group", g, role.Id, "docs/"),
		f.bindAs(t, keyplanev1.Effect_EFFECT_DENY, "group", g, role.Id, "docs/secret/"),
	}
	rev, events := f.revision(t), f.allAuditCount(t)
	_, err := f.tenantAd.DeleteGroup(ctx, connect.NewRequest(&keyplanev1.DeleteGroupRequest{TenantId: "acme", GroupId: g}))
	wantCode(t, err, connect.CodeFailedPrecondition, "group_id")
	for _, id := range bindings {
		if !strings.Contains(err.Error(), id) {
			t.Errorf("the refusal %q does not name binding %s", err, id)
		}
	}
	if f.revision(t) != rev || f.allAuditCount(t) != events {
		t.Fatal("a refused DeleteGroup wrote something")
	}
	r, err := f.tenantAd.DeleteGroup(ctx, connect.NewRequest(&keyplanev1.DeleteGroupRequest{TenantId: "acme", GroupId: g, Cascade: true}))
	if err != nil {
		t.Fatalf("cascade: %v", err)
	}
	wantMembers := []string{f.owner, member}
	slices.Sort(wantMembers)
	gotMembers := slices.Clone(r.Msg.RemovedMemberIds)
	slices.Sort(gotMembers)
	if !slices.Equal(r.Msg.DeletedBindingIds, bindings) || !slices.Equal(gotMembers, wantMembers) || r.Msg.PolicyRevision != rev+1 {
		t.Fatalf("cascade answer %v, want bindings %v, members %v, revision %d", r.Msg, bindings, wantMembers, rev+1)
	}
	_, err = f.tenantAd.GetGroup(ctx, connect.NewRequest(&keyplanev1.GetGroupRequest{TenantId: "acme", GroupId: g}))
	wantCode(t, err, connect.CodeNotFound, "group")
	if left, err := f.tenantAd.ListBindings(ctx, connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme", PrincipalKind: "group", PrincipalId: g})); err != nil || len(left.Msg.Bindings) != 0 {
		t.Fatalf("bindings of the deleted group: %v %v", left, err)
	}
	if got := f.allAuditCount(t); got != events+1 {
		t.Fatalf("audit events: %d new, want exactly 1", got-events)
	}
	ev := f.auditOf(t, "group", g)[0]
	after := ev.After.AsMap()
	removed := asStrings(after["removed_members"])
	slices.Sort(removed)
	if ev.Action != "group.delete" || len(after["deleted_bindings"].([]any)) != 2 || !slices.Equal(removed, wantMembers) || ev.Before.AsMap()["name"] != "readers" {
		t.Fatalf("group.delete event %s: before %v after %v", ev.Action, ev.Before.AsMap(), after)
	}
	// An unbound group goes with its members, no cascade needed.
	g2 := f.group(t, "empty-handed", "")
	f.addMember(t, g2, f.owner)
	r, err = f.tenantAd.DeleteGroup(ctx, connect.NewRequest(&keyplanev1.DeleteGroupRequest{TenantId: "acme", GroupId: g2}))
	if err != nil || !slices.Equal(r.Msg.RemovedMemberIds, []string{f.owner}) || len(r.Msg.DeletedBindingIds) != 0 {
		t.Fatalf("unbound group: %v %v", r, err)
	}
	_, err = f.tenantAd.DeleteGroup(ctx, connect.NewRequest(&keyplanev1.DeleteGroupRequest{TenantId: "acme", GroupId: g2}))
	wantCode(t, err, connect.CodeNotFound, "group")
}

// TestDeleteGroupCascadeIsAllOrNothing: a cascade that fails after its bindings and
// memberships were deleted inside the transaction (the group is the tenant's last
// tenant-admin grant, found only after the deletes) leaves everything as it was; and a
// tenant identity cannot cascade away a tenant-admin binding at all (removing a
// tenant admin takes a second person).
func TestDeleteGroupCascadeIsAllOrNothing(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	second, _ := f.identityWith(t, "second", "*")
	g := f.group(t, "admins", "")
	gb := f.bindAs(t, keyplanev1.Effect_EFFECT_ALLOW, "group", g, schema.RoleTenantAdmin, "*")
	f.addMember(t, g, second)
	_, err := f.tenantAd.DeleteGroup(ctx, connect.NewRequest(&keyplanev1.DeleteGroupRequest{TenantId: "acme", GroupId: g, Cascade: true}))
	wantCode(t, err, connect.CodeFailedPrecondition, "tenant-admin")
	// Make the group the last tenant-admin grant: the bootstrap admin's own binding goes.
	bs, err := f.op.ListBindings(ctx, connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme", PrincipalKind: "identity",
		PrincipalId: f.boot.AdminIdentityId, RoleId: schema.RoleTenantAdmin}))
	if err != nil || len(bs.Msg.Bindings) != 1 {
		t.Fatalf("the bootstrap admin's binding: %v %v", bs, err)
	}
	if _, err := f.op.DeleteBinding(ctx, connect.NewRequest(&keyplanev1.DeleteBindingRequest{TenantId: "acme", BindingId: bs.Msg.Bindings[0].Id})); err != nil {
		t.Fatal(err)
	}
	rev, events := f.revision(t), f.allAuditCount(t)
	_, err = f.op.DeleteGroup(ctx, connect.NewRequest(&keyplanev1.DeleteGroupRequest{TenantId: "acme", GroupId: g, Cascade: true}))
	wantCode(t, err, connect.CodeFailedPrecondition, "without an active tenant admin")
	if f.revision(t) != rev || f.allAuditCount(t) != events {
		t.Fatal("the failed cascade moved the revision or wrote an audit event")
	}
	if _, err := f.op.GetGroup(ctx, connect.NewRequest(&keyplanev1.GetGroupRequest{TenantId: "acme", GroupId: g})); err != nil {
		t.Fatalf("the group after a failed cascade: %v", err)
	}
	ms, err := f.op.ListGroupMembers(ctx, connect.NewRequest(&keyplanev1.ListGroupMembersRequest{TenantId: "acme", GroupId: g}))
	if err != nil || len(ms.Msg.Members) != 1 || ms.Msg.Members[0].IdentityId != second {
		t.Fatalf("members after a failed cascade: %v %v", ms, err)
	}
	left, err := f.op.ListBindings(ctx, connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme", PrincipalKind: "group", PrincipalId: g}))
	if err != nil || len(left.Msg.Bindings) != 1 || left.Msg.Bindings[0].Id != gb {
		t.Fatalf("bindings after a failed cascade: %v %v", left, err)
	}
}

// TestSecurityRoleUpdateNoEscalation: a role writer cannot use UpdateRole or a
// cascading delete to grant (or un-deny) what it does not hold. The attacks, each
// through the real API with the attacker's own token: add a permission it lacks to a
// role bound to someone (or to its own role); remove a permission it lacks from a
// role bound as a deny; clear sensitive on a bound role; widen or un-privilege a
// privileged role (even a tenant admin, alone); cascade-delete a deny binding it could
// not delete. Each is refused with permission_denied and changes nothing; the same
// edits within what the caller holds succeed.
func TestSecurityRoleUpdateNoEscalation(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	attacker, tok := f.identityWith(t, "role-writer", "*", "iam.roles.*", "iam.bindings.*", "docs.document.read")
	c := adminClient(f.url, tok)
	own := roleOf(t, f, attacker)
	target := f.role(t, f.op, &keyplanev1.CreateRoleRequest{Name: "reader", Permissions: []string{"docs.document.read"}})
	f.bindAs(t, keyplanev1.Effect_EFFECT_ALLOW, "identity", f.owner, target.Id, "docs/")
	denied := f.role(t, f.op, &keyplanev1.CreateRoleRequest{Name: "no-money", Permissions: []string{"docs.document.read", "billing.invoice.read"}})
	denyBinding := f.bindAs(t, keyplanev1.Effect_EFFECT_DENY, "identity", f.owner, denied.Id, "*")
	audited := f.role(t, f.op, &keyplanev1.CreateRoleRequest{Name: "audited", Permissions: []string{"billing.invoice.read"}, Sensitive: true})
	f.bindAs(t, keyplanev1.Effect_EFFECT_ALLOW, "identity", f.owner, audited.Id, "billing/")
	privileged := f.role(t, f.op, &keyplanev1.CreateRoleRequest{Name: "guarded", Permissions: []string{"docs.document.read", "docs.document.write"}, Privileged: true})

	update := func(c keyplanev1connect.AdminServiceClient, req *keyplanev1.UpdateRoleRequest) error {
		req.TenantId = "acme"
		_, err := c.UpdateRole(ctx, connect.NewRequest(req))
		return err
	}
	get := func(id string) *keyplanev1.Role {
		r, err := f.op.GetRole(ctx, connect.NewRequest(&keyplanev1.GetRoleRequest{TenantId: "acme", RoleId: id}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Role
	}
	rev := f.revision(t)
	for _, tc := range []struct {
		name string
		c    keyplanev1connect.AdminServiceClient
		req  *keyplanev1.UpdateRoleRequest
		msg  string
	}{
		{"add a permission it lacks", c, &keyplanev1.UpdateRoleRequest{RoleId: target.Id, Permissions: []string{"docs.document.read", "docs.document.delete"}}, "docs.document.delete"},
		{"widen its own role to *", c, &keyplanev1.UpdateRoleRequest{RoleId: own, Permissions: []string{"*"}}, "lacks *"},
		{"lift a deny it could not", c, &keyplanev1.UpdateRoleRequest{RoleId: denied.Id, Permissions: []string{"docs.document.read"}}, "billing.invoice.read"},
		{"clear sensitive", c, &keyplanev1.UpdateRoleRequest{RoleId: audited.Id, Sensitive: proto.Bool(false)}, "billing.invoice.read"},
		{"widen a privileged role", f.tenantAd, &keyplanev1.UpdateRoleRequest{RoleId: privileged.Id, Permissions: []string{"docs.*"}}, "privileged"},
		{"un-privilege a role", f.tenantAd, &keyplanev1.UpdateRoleRequest{RoleId: privileged.Id, Privileged: proto.Bool(false)}, "privileged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, update(tc.c, tc.req), connect.CodePermissionDenied, tc.msg)
		})
	}
	_, err := c.DeleteRole(ctx, connect.NewRequest(&keyplanev1.DeleteRoleRequest{TenantId: "acme", RoleId: denied.Id, Cascade: true}))
	wantCode(t, err, connect.CodePermissionDenied, denyBinding)
	if f.revision(t) != rev {
		t.Fatal("a refused escalation moved the policy revision")
	}
	if got := get(target.Id).Permissions; !slices.Equal(got, []string{"docs.document.read"}) {
		t.Fatalf("target role after refusals: %v", got)
	}
	if got := get(privileged.Id); !got.Privileged || len(got.Permissions) != 2 {
		t.Fatalf("privileged role after refusals: %v", got)
	}
	// Within what the caller holds, the same kinds of edit go through.
	for name, req := range map[string]*keyplanev1.UpdateRoleRequest{
		"add a permission it holds":    {RoleId: target.Id, Permissions: []string{"docs.document.read", "iam.roles.read"}},
		"narrow a deny it could grant": {RoleId: denied.Id, Permissions: []string{"billing.invoice.read"}},
		"clear sensitive of an unbound role": {RoleId: f.role(t, f.op, &keyplanev1.CreateRoleRequest{Name: "loose", Permissions: []string{"x.y.z"},
			Sensitive: true}).Id, Sensitive: proto.Bool(false)},
	} {
		if err := update(c, req); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Narrowing a privileged role takes away: one tenant admin may.
	if err := update(f.tenantAd, &keyplanev1.UpdateRoleRequest{RoleId: privileged.Id, Permissions: []string{"docs.document.read"}}); err != nil {
		t.Fatalf("narrowing a privileged role: %v", err)
	}
	// The operator's break-glass is not bound by the rule.
	if err := update(f.op, &keyplanev1.UpdateRoleRequest{RoleId: privileged.Id, Permissions: []string{"docs.*"}, Privileged: proto.Bool(false)}); err != nil {
		t.Fatalf("operator widening a privileged role: %v", err)
	}
}

// TestRoleChangesTakeEffect: Check sees an UpdateRole and a cascading DeleteGroup as
// soon as they return (the revision bump reaches the policy cache), for a grant
// through a group.
func TestRoleChangesTakeEffect(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, nil)
	ctx := context.Background()
	check := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearerInterceptor(f.bootTok)))
	allowed := func(perm, resource string) bool {
		t.Helper()
		r, err := check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
			Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: f.owner}, Permission: perm, Resource: resource}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Allowed
	}
	role := f.role(t, f.tenantAd, &keyplanev1.CreateRoleRequest{Name: "docs-reader", Permissions: []string{"docs.document.read"}})
	g := f.group(t, "readers", "")
	f.addMember(t, g, f.owner)
	f.bindAs(t, keyplanev1.Effect_EFFECT_ALLOW, "group", g, role.Id, "docs/")
	if !allowed("docs.document.read", "docs/1") || allowed("docs.document.write", "docs/1") {
		t.Fatal("before the update: want read allowed, write denied")
	}
	if _, err := f.tenantAd.UpdateRole(ctx, connect.NewRequest(&keyplanev1.UpdateRoleRequest{TenantId: "acme", RoleId: role.Id,
		Permissions: []string{"docs.document.write"}})); err != nil {
		t.Fatal(err)
	}
	if allowed("docs.document.read", "docs/1") || !allowed("docs.document.write", "docs/1") {
		t.Fatal("after the update: want read denied, write allowed")
	}
	if _, err := f.tenantAd.DeleteGroup(ctx, connect.NewRequest(&keyplanev1.DeleteGroupRequest{TenantId: "acme", GroupId: g, Cascade: true})); err != nil {
		t.Fatal(err)
	}
	if allowed("docs.document.write", "docs/1") {
		t.Fatal("after deleting the group: write still allowed")
	}
}
