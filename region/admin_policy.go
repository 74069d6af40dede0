package region

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region/authz"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
)

func (a *AdminService) CreateRole(ctx context.Context, req *connect.Request[keyplanev1.CreateRoleRequest]) (*connect.Response[keyplanev1.CreateRoleResponse], error) {
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
	r, rev, err := a.node.store.CreateRole(ctx, change(ctx), sc, schema.Role{Name: m.Name, Description: m.Description, Permissions: m.Permissions,
		Sensitive: m.Sensitive, Privileged: m.Privileged})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.CreateRoleResponse{PolicyRevision: rev, Role: roleToProto(r)}), nil
}

func (a *AdminService) CreateGroup(ctx context.Context, req *connect.Request[keyplanev1.CreateGroupRequest]) (*connect.Response[keyplanev1.CreateGroupResponse], error) {
	m := req.Msg
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	g, rev, err := a.node.store.CreateGroup(ctx, change(ctx), sc, schema.Group{Name: m.Name, Description: m.Description, ExternalID: m.ExternalId})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.CreateGroupResponse{PolicyRevision: rev, Group: groupToProto(g)}), nil
}

func (a *AdminService) AddGroupMember(ctx context.Context, req *connect.Request[keyplanev1.AddGroupMemberRequest]) (*connect.Response[keyplanev1.AddGroupMemberResponse], error) {
	if cr, err := a.requestMembership(ctx, req.Msg.TenantId, req.Msg.GroupId, req.Msg.IdentityId, true); err != nil || cr != nil {
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(&keyplanev1.AddGroupMemberResponse{ChangeRequest: cr}), nil
	}
	rev, err := a.setMembership(ctx, req.Msg.TenantId, req.Msg.GroupId, req.Msg.IdentityId, true)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.AddGroupMemberResponse{PolicyRevision: rev}), nil
}

func (a *AdminService) RemoveGroupMember(ctx context.Context, req *connect.Request[keyplanev1.RemoveGroupMemberRequest]) (*connect.Response[keyplanev1.RemoveGroupMemberResponse], error) {
	if cr, err := a.requestMembership(ctx, req.Msg.TenantId, req.Msg.GroupId, req.Msg.IdentityId, false); err != nil || cr != nil {
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(&keyplanev1.RemoveGroupMemberResponse{ChangeRequest: cr}), nil
	}
	rev, err := a.setMembership(ctx, req.Msg.TenantId, req.Msg.GroupId, req.Msg.IdentityId, false)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.RemoveGroupMemberResponse{PolicyRevision: rev}), nil
}

// requestMembership returns a pending change request (and applies nothing) when a
// tenant identity's membership change needs a second person's approval
// (groupNeedsApproval), after checking the caller may make it; nil when it does not.
func (a *AdminService) requestMembership(ctx context.Context, tenantID, groupID, identityID string, add bool) (*keyplanev1.ChangeRequest, error) {
	c := callerOf(ctx)
	if c.operator() {
		return nil, nil
	}
	sc, err := a.scope(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	if wait, err := a.node.groupNeedsApproval(ctx, c, sc, groupID, add); err != nil || !wait {
		return nil, err
	}
	if _, err := a.node.mayChangeMembership(ctx, c, sc, groupID, add); err != nil {
		return nil, err
	}
	kind := schema.ChangeGroupRemoveMember
	if add {
		kind = schema.ChangeGroupAddMember
	}
	return a.node.requestChange(ctx, c, sc, schema.ChangeRequest{Kind: kind, GroupID: groupID, IdentityID: identityID})
}

func (a *AdminService) setMembership(ctx context.Context, tenantID, groupID, identityID string, member bool) (int64, error) {
	sc, err := a.scope(ctx, tenantID)
	if err != nil {
		return 0, err
	}
	judged, err := a.node.mayChangeMembership(ctx, callerOf(ctx), sc, groupID, member)
	if err != nil {
		return 0, err
	}
	return a.node.store.SetMembership(ctx, change(ctx), sc.JudgedAt(judged), groupID, identityID, member)
}

func (a *AdminService) CreateBinding(ctx context.Context, req *connect.Request[keyplanev1.CreateBindingRequest]) (*connect.Response[keyplanev1.CreateBindingResponse], error) {
	m := req.Msg
	effect := authz.Allow
	switch m.Effect {
	case keyplanev1.Effect_EFFECT_UNSPECIFIED, keyplanev1.Effect_EFFECT_ALLOW:
	case keyplanev1.Effect_EFFECT_DENY:
		effect = authz.Deny
	default:
		return nil, fieldError("effect", fmt.Sprintf("unknown value %d", m.Effect))
	}
	if m.PrincipalKind != "identity" && m.PrincipalKind != "group" {
		return nil, fieldError("principal_kind", `must be "identity" or "group"`)
	}
	if err := authz.ValidateScope(m.Scope); err != nil {
		return nil, fieldError("scope", err.Error())
	}
	if len(m.Condition) > 4096 {
		return nil, fieldError("condition", "at most 4096 characters")
	}
	if m.Condition != "" {
		if err := a.node.policies.env.CheckCondition(m.Condition); err != nil {
			return nil, fieldError("condition", err.Error())
		}
	}
	expires, err := timeFromProto("expire_time", m.ExpireTime)
	if err != nil {
		return nil, err
	}
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	c := callerOf(ctx)
	judged, err := a.node.mayWriteBinding(ctx, c, sc.TenantID, m.RoleId, m.Scope, effect, false)
	if err != nil {
		return nil, err
	}
	want := schema.Binding{Effect: string(effect), PrincipalKind: m.PrincipalKind,
		PrincipalID: m.PrincipalId, RoleID: m.RoleId, Scope: m.Scope, Condition: m.Condition, ExpiresAt: expires, Justification: m.Justification}
	if wait, err := a.node.needsApproval(ctx, c, sc.TenantID, m.RoleId, effect); err != nil {
		return nil, err
	} else if wait {
		cr, err := a.node.requestChange(ctx, c, sc, schema.ChangeRequest{Kind: schema.ChangeBindingCreate, Binding: want})
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(&keyplanev1.CreateBindingResponse{ChangeRequest: cr}), nil
	}
	b, rev, err := a.node.store.CreateBinding(ctx, change(ctx), sc.JudgedAt(judged), want)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.CreateBindingResponse{Binding: bindingToProto(b), PolicyRevision: rev}), nil
}

func (a *AdminService) DeleteBinding(ctx context.Context, req *connect.Request[keyplanev1.DeleteBindingRequest]) (*connect.Response[keyplanev1.DeleteBindingResponse], error) {
	sc, err := a.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	c := callerOf(ctx)
	judged, err := a.node.mayDeleteBinding(ctx, c, sc, req.Msg.BindingId)
	if err != nil {
		return nil, err
	}
	if !c.operator() {
		// Removing a tenant admin waits for a second person.
		b, err := a.node.bindingOf(ctx, sc, req.Msg.BindingId)
		if err != nil {
			return nil, err
		}
		if b.RoleID == schema.RoleTenantAdmin {
			cr, err := a.node.requestChange(ctx, c, sc, schema.ChangeRequest{Kind: schema.ChangeBindingDelete, Binding: b})
			if err != nil {
				return nil, err
			}
			return connect.NewResponse(&keyplanev1.DeleteBindingResponse{ChangeRequest: cr}), nil
		}
	}
	rev, err := a.node.store.DeleteBinding(ctx, change(ctx), sc.JudgedAt(judged), req.Msg.BindingId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.DeleteBindingResponse{PolicyRevision: rev}), nil
}

func (a *AdminService) ListBindings(ctx context.Context, req *connect.Request[keyplanev1.ListBindingsRequest]) (*connect.Response[keyplanev1.ListBindingsResponse], error) {
	m := req.Msg
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	size := int(m.PageSize)
	if size == 0 {
		size = schema.MaxPageSize // before issue 14 ListBindings returned every binding
	}
	bs, next, err := a.node.store.ListBindingsPage(ctx, sc, schema.BindingFilter{PrincipalKind: m.PrincipalKind, PrincipalID: m.PrincipalId,
		RoleID: m.RoleId}, schema.Page{Size: size, Token: m.PageToken})
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListBindingsResponse{NextPageToken: next}
	for _, b := range bs {
		out.Bindings = append(out.Bindings, bindingToProto(b))
	}
	return connect.NewResponse(out), nil
}

func bindingToProto(b schema.Binding) *keyplanev1.Binding {
	effect := keyplanev1.Effect_EFFECT_ALLOW
	if b.Effect == string(authz.Deny) {
		effect = keyplanev1.Effect_EFFECT_DENY
	}
	return &keyplanev1.Binding{Id: b.ID, Effect: effect, PrincipalKind: b.PrincipalKind, PrincipalId: b.PrincipalID, RoleId: b.RoleID,
		Scope: b.Scope, Condition: b.Condition, ExpireTime: timeToProto(b.ExpiresAt), GrantedBy: b.GrantedBy,
		Justification: b.Justification, CreateTime: timestamppb.New(b.CreatedAt)}
}
