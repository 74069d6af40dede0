package region

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/authz"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
)

// Reading, updating and deleting roles and groups (issue 14), and the rules that keep
// those writes from granting (or un-denying) what the caller does not hold itself
// (docs/administration.md, "No privilege escalation").

func (a *AdminService) GetRole(ctx context.Context, req *connect.Request[keyplanev1.GetRoleRequest]) (*connect.Response[keyplanev1.GetRoleResponse], error) {
	sc, err := a.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	r, err := a.node.store.GetRole(ctx, sc, req.Msg.RoleId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.GetRoleResponse{Role: roleToProto(r)}), nil
}

func (a *AdminService) ListRoles(ctx context.Context, req *connect.Request[keyplanev1.ListRolesRequest]) (*connect.Response[keyplanev1.ListRolesResponse], error) {
	m := req.Msg
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	rs, next, err := a.node.store.ListRoles(ctx, sc, m.NamePrefix, schema.Page{Size: int(m.PageSize), Token: m.PageToken})
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListRolesResponse{NextPageToken: next}
	for _, r := range rs {
		out.Roles = append(out.Roles, roleToProto(r))
	}
	return connect.NewResponse(out), nil
}

func (a *AdminService) UpdateRole(ctx context.Context, req *connect.Request[keyplanev1.UpdateRoleRequest]) (*connect.Response[keyplanev1.UpdateRoleResponse], error) {
	m := req.Msg
	for i, p := range m.Permissions {
		if err := authz.ValidatePermissionPattern(p); err != nil {
			return nil, fieldError(fmt.Sprintf("permissions[%d]", i), err.Error())
		}
	}
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	u := schema.RoleUpdate{Name: m.Name, Description: m.Description, Permissions: m.Permissions, Sensitive: m.Sensitive, Privileged: m.Privileged}
	judged, err := a.node.mayUpdateRole(ctx, callerOf(ctx), sc, m.RoleId, u)
	if err != nil {
		return nil, err
	}
	_, r, rev, err := a.node.store.UpdateRole(ctx, change(ctx), sc.JudgedAt(judged), m.RoleId, u)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.UpdateRoleResponse{Role: roleToProto(r), PolicyRevision: rev}), nil
}

func (a *AdminService) DeleteRole(ctx context.Context, req *connect.Request[keyplanev1.DeleteRoleRequest]) (*connect.Response[keyplanev1.DeleteRoleResponse], error) {
	m := req.Msg
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	judged, err := a.node.mayDeleteRole(ctx, callerOf(ctx), sc, m.RoleId, m.Cascade)
	if err != nil {
		return nil, err
	}
	gone, rev, err := a.node.store.DeleteRole(ctx, change(ctx), sc.JudgedAt(judged), m.RoleId, m.Cascade)
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.DeleteRoleResponse{PolicyRevision: rev, EndedElevationIds: gone.Active, DeniedElevationIds: gone.Pending}
	for _, b := range gone.Bindings {
		out.DeletedBindingIds = append(out.DeletedBindingIds, b.ID)
	}
	return connect.NewResponse(out), nil
}

func (a *AdminService) GetGroup(ctx context.Context, req *connect.Request[keyplanev1.GetGroupRequest]) (*connect.Response[keyplanev1.GetGroupResponse], error) {
	sc, err := a.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	g, err := a.node.store.GetGroup(ctx, sc, req.Msg.GroupId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.GetGroupResponse{Group: groupToProto(g)}), nil
}

func (a *AdminService) ListGroups(ctx context.Context, req *connect.Request[keyplanev1.ListGroupsRequest]) (*connect.Response[keyplanev1.ListGroupsResponse], error) {
	m := req.Msg
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	gs, next, err := a.node.store.ListGroups(ctx, sc, schema.GroupFilter{NamePrefix: m.NamePrefix, ExternalID: m.ExternalId},
		schema.Page{Size: int(m.PageSize), Token: m.PageToken})
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListGroupsResponse{NextPageToken: next}
	for _, g := range gs {
		out.Groups = append(out.Groups, groupToProto(g))
	}
	return connect.NewResponse(out), nil
}

func (a *AdminService) UpdateGroup(ctx context.Context, req *connect.Request[keyplanev1.UpdateGroupRequest]) (*connect.Response[keyplanev1.UpdateGroupResponse], error) {
	m := req.Msg
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	g, rev, err := a.node.store.UpdateGroup(ctx, change(ctx), sc, m.GroupId, schema.GroupUpdate{Name: m.Name, Description: m.Description,
		ExternalID: m.ExternalId})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.UpdateGroupResponse{Group: groupToProto(g), PolicyRevision: rev}), nil
}

func (a *AdminService) ListGroupMembers(ctx context.Context, req *connect.Request[keyplanev1.ListGroupMembersRequest]) (*connect.Response[keyplanev1.ListGroupMembersResponse], error) {
	m := req.Msg
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	ms, next, err := a.node.store.ListGroupMembers(ctx, sc, m.GroupId, m.Source, schema.Page{Size: int(m.PageSize), Token: m.PageToken})
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListGroupMembersResponse{NextPageToken: next}
	for _, x := range ms {
		out.Members = append(out.Members, &keyplanev1.GroupMember{IdentityId: x.IdentityID, Kind: kindToProto(x.Kind), DisplayName: x.DisplayName,
			Email: x.Email, Status: statusToProto(x.Status), AddTime: timeToProto(x.AddedAt), Source: x.Source})
	}
	return connect.NewResponse(out), nil
}

func (a *AdminService) DeleteGroup(ctx context.Context, req *connect.Request[keyplanev1.DeleteGroupRequest]) (*connect.Response[keyplanev1.DeleteGroupResponse], error) {
	m := req.Msg
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	judged, err := a.node.mayDeleteGroup(ctx, callerOf(ctx), sc, m.GroupId, m.Cascade)
	if err != nil {
		return nil, err
	}
	gone, rev, err := a.node.store.DeleteGroup(ctx, change(ctx), sc.JudgedAt(judged), m.GroupId, m.Cascade)
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.DeleteGroupResponse{PolicyRevision: rev, RemovedMemberIds: gone.Members}
	for _, b := range gone.Bindings {
		out.DeletedBindingIds = append(out.DeletedBindingIds, b.ID)
	}
	return connect.NewResponse(out), nil
}

// mayUpdateRole authorizes caller c's update u of role roleID (iam.roles.write on
// the tenant is the interceptor's) and returns the policy revision it judged at (0:
// nothing to judge). The update changes what every principal bound to the role may
// do, so, on the scope of every unexpired binding of the role:
//   - permissions it adds need the caller to hold them (as CreateBinding would), for
//     allow and deny bindings alike (deny only what you could grant);
//   - permissions it removes from a role bound as a deny lift that deny: the caller
//     must hold them (as DeleteBinding of the deny would);
//   - clearing sensitive (decisions logged synchronously) re-grants the whole role
//     less audited: the caller must hold all of it.
//
// A privileged role is not widened by a tenant identity at all: adding permissions
// to it or clearing privileged would change what a two-person-approved binding
// grants with one person (docs/decisions/0010-change-control.md); make a new role
// and bind it through a change request instead, or use the operator's break-glass.
func (n *Node) mayUpdateRole(ctx context.Context, c caller, sc schema.Scope, roleID string, u schema.RoleUpdate) (int64, error) {
	if c.operator() || (len(u.Permissions) == 0 && u.Sensitive == nil && u.Privileged == nil) {
		return 0, nil // renaming and describing grant nothing
	}
	if _, ok := schema.BuiltinRole(roleID); ok {
		return 0, nil // the store refuses it, naming it
	}
	// The role as of the judged revision: if it changes before the update commits,
	// the revision moved and the store refuses the update.
	p, err := n.policyFor(ctx, sc.TenantID, c)
	if err != nil {
		return 0, err
	}
	before, ok := p.snap.Role(roleID)
	if !ok {
		return 0, connect.NewError(connect.CodeNotFound, fmt.Errorf("role_id: no role %s in tenant %q", roleID, sc.TenantID))
	}
	after := before.Permissions
	if len(u.Permissions) > 0 {
		after = u.Permissions
	}
	added, removed := notIncluded(after, before.Permissions), notIncluded(before.Permissions, after)
	clearsSensitive := before.Sensitive && u.Sensitive != nil && !*u.Sensitive
	if before.Privileged && len(added) > 0 {
		return 0, connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
			"permissions: role %q is privileged: a tenant identity cannot add %s to it (two-person change control); create a role with the new permissions and bind it, which needs an approved change request",
			before.Name, added[0]))
	}
	if before.Privileged && u.Privileged != nil && !*u.Privileged {
		return 0, connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
			"privileged: role %q is privileged: a tenant identity cannot clear it (two-person change control); the operator can", before.Name))
	}
	uses, err := n.store.RoleUses(ctx, sc, roleID)
	if err != nil {
		return 0, err
	}
	now := n.now()
	for _, b := range uses.Bindings {
		if !b.ExpiresAt.IsZero() && !b.ExpiresAt.After(now) {
			continue
		}
		need := added
		if clearsSensitive {
			need = after
		}
		if b.Effect == string(authz.Deny) {
			need = append(append([]string(nil), need...), removed...)
		}
		what := "changing the permissions of"
		if clearsSensitive {
			what = "clearing sensitive of"
		}
		if err := n.requireRoleOn(p, authz.Role{Name: before.Name, Permissions: need}, b.Scope, what); err != nil {
			return 0, err
		}
	}
	return p.snap.Revision(), nil
}

// notIncluded returns the patterns of ps that no pattern of of includes.
func notIncluded(ps, of []string) []string {
	var out []string
	for _, p := range ps {
		included := false
		for _, o := range of {
			if authz.PatternIncludes(o, p) {
				included = true
				break
			}
		}
		if !included {
			out = append(out, p)
		}
	}
	return out
}

// mayDeleteRole authorizes caller c's DeleteRole of roleID with cascade (without it a
// role in use is refused by the store, and deleting an unused one needs only
// iam.roles.write). Cascade deletes the role's bindings, so each needs what
// DeleteBinding of it needs: iam.bindings.write on its scope, and for a deny every
// permission of the role there. Ending active elevations deletes their bindings
// (among those); a pending elevation of a deleted role can never be approved, so
// denying it needs nothing more. It returns the revision it judged at.
func (n *Node) mayDeleteRole(ctx context.Context, c caller, sc schema.Scope, roleID string, cascade bool) (int64, error) {
	if c.operator() || !cascade {
		return 0, nil
	}
	if _, ok := schema.BuiltinRole(roleID); ok {
		return 0, nil // the store refuses it, naming it
	}
	p, err := n.policyFor(ctx, sc.TenantID, c)
	if err != nil {
		return 0, err
	}
	uses, err := n.store.RoleUses(ctx, sc, roleID)
	if err != nil {
		return 0, err
	}
	if err := n.mayDeleteBindings(ctx, p, uses.Bindings, "deleting role "+roleID); err != nil {
		return 0, err
	}
	return p.snap.Revision(), nil
}

// mayDeleteGroup authorizes caller c's DeleteGroup of groupID with cascade (without
// it a bound group is refused by the store, and removing the members of an unbound
// group lifts nothing). Cascade deletes the group's bindings: each needs what
// DeleteBinding of it needs (a deny lifted needs the role's permissions); and one of
// tenant-admin removes tenant admins, which takes a second person: the caller deletes
// that binding first (DeleteBinding makes a change request). It returns the revision
// it judged at.
func (n *Node) mayDeleteGroup(ctx context.Context, c caller, sc schema.Scope, groupID string, cascade bool) (int64, error) {
	if c.operator() || !cascade {
		return 0, nil
	}
	p, err := n.policyFor(ctx, sc.TenantID, c)
	if err != nil {
		return 0, err
	}
	bs, err := n.store.GroupBindings(ctx, sc, groupID)
	if err != nil {
		return 0, err
	}
	for _, b := range bs {
		if b.RoleID == schema.RoleTenantAdmin && b.Effect == string(authz.Allow) {
			return 0, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
				"group_id: group %s is bound to tenant-admin (binding %s): removing tenant admins needs a second person; delete that binding first (DeleteBinding makes a change request)",
				groupID, b.ID))
		}
	}
	if err := n.mayDeleteBindings(ctx, p, bs, "deleting group "+groupID); err != nil {
		return 0, err
	}
	return p.snap.Revision(), nil
}

// mayDeleteBindings refuses unless the caller may delete every one of bs
// (mayWriteBinding with deleting, judged on one policy).
func (n *Node) mayDeleteBindings(ctx context.Context, p adminPolicy, bs []schema.Binding, why string) error {
	for _, b := range bs {
		if err := n.requireOnScope(ctx, p, PermBindingsWrite, b.Scope); err != nil {
			return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("cascade: %s deletes binding %s: %s", why, b.ID, message(err)))
		}
		if b.Effect != string(authz.Deny) {
			continue
		}
		role, ok := p.snap.Role(b.RoleID)
		if !ok {
			continue
		}
		if err := n.requireRoleOn(p, role, b.Scope, "removing a deny of"); err != nil {
			return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("cascade: %s deletes deny binding %s: %s", why, b.ID, message(err)))
		}
	}
	return nil
}

// message is err's text without a Connect code prefix.
func message(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

func roleToProto(r schema.Role) *keyplanev1.Role {
	return &keyplanev1.Role{Id: r.ID, Name: r.Name, Description: r.Description, Permissions: r.Permissions, Sensitive: r.Sensitive,
		Privileged: r.Privileged, BuiltIn: r.BuiltIn}
}

func groupToProto(g schema.Group) *keyplanev1.Group {
	return &keyplanev1.Group{Id: g.ID, Name: g.Name, Description: g.Description, ExternalId: g.ExternalID}
}
