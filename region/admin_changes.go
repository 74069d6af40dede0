package region

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/authz"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
)

// Two-person change control (issue 13, item 7; docs/decisions/0010-change-control.md).
// A tenant identity's allow binding of a privileged role, its addition of a member
// to a group bound to one, and its removal of a tenant admin (a tenant-admin binding,
// or a member of a group bound to tenant-admin) do not apply: they become change requests that another
// identity holding PermChangesApprove approves (never the requester), within
// schema.DefaultChangeExpiry. The approver must itself pass the no-escalation rule for
// the change (mayWriteBinding); the change then applies in the approval's
// transaction, and its audit event names both. The operator's break-glass applies at
// once, audited as break-glass.

// PermChangesApprove lets the holder read, approve and deny change requests.
const PermChangesApprove = "iam.changes.approve"

// needsApproval reports whether c's allow binding of roleID in tenantID must wait for
// a second person: c is a tenant identity and the role is privileged.
func (n *Node) needsApproval(ctx context.Context, c caller, tenantID, roleID string, effect authz.Effect) (bool, error) {
	if c.operator() || effect != authz.Allow {
		return false, nil
	}
	p, err := n.policyFor(ctx, tenantID, c)
	if err != nil {
		return false, err
	}
	role, ok := p.snap.Role(roleID)
	return ok && role.Privileged, nil
}

// bindingOf reads binding id of the tenant.
func (n *Node) bindingOf(ctx context.Context, sc schema.Scope, id string) (schema.Binding, error) {
	bs, err := n.store.ListBindings(ctx, sc)
	if err != nil {
		return schema.Binding{}, err
	}
	for _, b := range bs {
		if b.ID == id {
			return b, nil
		}
	}
	return schema.Binding{}, connect.NewError(connect.CodeNotFound, fmt.Errorf("binding_id: no binding %s in tenant %q", id, sc.TenantID))
}

// groupNeedsApproval reports whether c's change of groupID's members must wait for a
// second person: c is a tenant identity and, for an addition, the group has an allow
// binding of a privileged role (membership would grant it), for a removal, of
// tenant-admin (removing a tenant admin).
func (n *Node) groupNeedsApproval(ctx context.Context, c caller, sc schema.Scope, groupID string, add bool) (bool, error) {
	if c.operator() {
		return false, nil
	}
	p, err := n.policyFor(ctx, sc.TenantID, c)
	if err != nil {
		return false, err
	}
	bs, err := n.store.ListBindings(ctx, sc)
	if err != nil {
		return false, err
	}
	for _, b := range bs {
		if b.PrincipalKind != "group" || b.PrincipalID != groupID || b.Effect != string(authz.Allow) {
			continue
		}
		if !add && b.RoleID == schema.RoleTenantAdmin {
			return true, nil
		}
		if role, ok := p.snap.Role(b.RoleID); add && ok && role.Privileged {
			return true, nil
		}
	}
	return false, nil
}

// requestChange records c's pending change request want.
func (n *Node) requestChange(ctx context.Context, c caller, sc schema.Scope, want schema.ChangeRequest) (*keyplanev1.ChangeRequest, error) {
	cr, err := n.store.CreateChangeRequest(ctx, c.change(ctx), sc, c.identityID, want, n.now(), schema.DefaultChangeExpiry)
	if err != nil {
		return nil, err
	}
	return changeToProto(cr), nil
}

func (a *AdminService) GetChangeRequest(ctx context.Context, req *connect.Request[keyplanev1.GetChangeRequestRequest]) (*connect.Response[keyplanev1.GetChangeRequestResponse], error) {
	sc, err := a.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	cr, err := a.node.store.GetChangeRequest(ctx, sc, req.Msg.ChangeRequestId, a.node.now())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.GetChangeRequestResponse{ChangeRequest: changeToProto(cr)}), nil
}

func (a *AdminService) ListChangeRequests(ctx context.Context, req *connect.Request[keyplanev1.ListChangeRequestsRequest]) (*connect.Response[keyplanev1.ListChangeRequestsResponse], error) {
	m := req.Msg
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	crs, next, err := a.node.store.ListChangeRequests(ctx, sc, m.Status, schema.Page{Size: int(m.PageSize), Token: m.PageToken}, a.node.now())
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListChangeRequestsResponse{NextPageToken: next}
	for _, cr := range crs {
		out.ChangeRequests = append(out.ChangeRequests, changeToProto(cr))
	}
	return connect.NewResponse(out), nil
}

func (a *AdminService) ApproveChangeRequest(ctx context.Context, req *connect.Request[keyplanev1.ApproveChangeRequestRequest]) (*connect.Response[keyplanev1.ApproveChangeRequestResponse], error) {
	m := req.Msg
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	now := a.node.now()
	cr, err := a.node.store.GetChangeRequest(ctx, sc, m.ChangeRequestId, now)
	if err != nil {
		return nil, err
	}
	c := callerOf(ctx)
	// The approver must be allowed to make the change itself (no privilege
	// escalation through someone else's request); judged is the revision it was
	// judged at, so a policy change in between refuses the approval.
	var judged int64
	switch cr.Kind {
	case schema.ChangeGroupAddMember, schema.ChangeGroupRemoveMember:
		judged, err = a.node.mayChangeMembership(ctx, c, sc, cr.GroupID, cr.Kind == schema.ChangeGroupAddMember)
	default:
		judged, err = a.node.mayWriteBinding(ctx, c, sc.TenantID, cr.Binding.RoleID, cr.Binding.Scope, authz.Effect(cr.Binding.Effect),
			cr.Kind == schema.ChangeBindingDelete)
	}
	if err != nil {
		return nil, err
	}
	out, rev, err := a.node.store.DecideChangeRequest(ctx, change(ctx), sc, cr.ID, c.identityID, true, now, judged)
	if err != nil {
		return nil, err
	}
	resp := &keyplanev1.ApproveChangeRequestResponse{ChangeRequest: changeToProto(out), PolicyRevision: rev}
	if out.Kind == schema.ChangeBindingCreate {
		resp.Binding = resp.ChangeRequest.Binding
	}
	return connect.NewResponse(resp), nil
}

func (a *AdminService) DenyChangeRequest(ctx context.Context, req *connect.Request[keyplanev1.DenyChangeRequestRequest]) (*connect.Response[keyplanev1.DenyChangeRequestResponse], error) {
	sc, err := a.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	out, _, err := a.node.store.DecideChangeRequest(ctx, change(ctx), sc, req.Msg.ChangeRequestId, callerOf(ctx).identityID, false, a.node.now(), 0)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.DenyChangeRequestResponse{ChangeRequest: changeToProto(out)}), nil
}

func changeToProto(cr schema.ChangeRequest) *keyplanev1.ChangeRequest {
	var b *keyplanev1.Binding
	if cr.Kind == schema.ChangeBindingCreate || cr.Kind == schema.ChangeBindingDelete {
		b = bindingToProto(cr.Binding)
	}
	return &keyplanev1.ChangeRequest{Id: cr.ID, Kind: cr.Kind, Binding: b, GroupId: cr.GroupID, IdentityId: cr.IdentityID, RequesterId: cr.RequesterID,
		Status: cr.Status, CreateTime: timeToProto(cr.CreatedAt), ExpireTime: timeToProto(cr.ExpiresAt), DecidedBy: cr.DecidedBy,
		DecideTime: timeToProto(cr.DecidedAt)}
}
