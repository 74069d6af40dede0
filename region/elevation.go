package region

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region/authz"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// Permissions of elevation approvers (on resource "tenant").
const (
	// PermApproveElevations lets an identity approve other identities' elevations to
	// roles whose every permission it holds on the elevation's scope.
	PermApproveElevations = "iam.elevations.approve"
	// PermApprovePrivilegedElevations, granted by name (a role listing it; "*" or
	// "iam.*" do not count), also lets it approve roles granting iam.* permissions and
	// elevations on scope "*": the tenant's explicit opt-in to such approvals.
	PermApprovePrivilegedElevations = "iam.elevations.approve_privileged"
)

// ElevationService implements keyplane.v1.ElevationService.
type ElevationService struct {
	node *Node
}

var _ keyplanev1connect.ElevationServiceHandler = (*ElevationService)(nil)

// caller authenticates a call: the operator, or an identity with an active
// token of the tenant.
func (e *ElevationService) caller(ctx context.Context, header, tenantID string) (schema.Tenant, caller, error) {
	t, err := e.node.activeTenant(ctx, tenantID)
	if err != nil {
		return schema.Tenant{}, caller{}, err
	}
	c, err := e.node.authenticate(ctx, header, t.ID)
	return t, c, err
}

func (e *ElevationService) RequestElevation(ctx context.Context, req *connect.Request[keyplanev1.RequestElevationRequest]) (*connect.Response[keyplanev1.RequestElevationResponse], error) {
	m := req.Msg
	if err := authz.ValidateScope(m.Scope); err != nil {
		return nil, fieldError("scope", err.Error())
	}
	if m.Duration == nil || m.Duration.CheckValid() != nil {
		return nil, fieldError("duration", "required: how long the role is needed")
	}
	t, c, err := e.caller(ctx, req.Header().Get("Authorization"), m.TenantId)
	if err != nil {
		return nil, err
	}
	requester := m.RequesterId
	switch {
	case c.identityID != "" && requester == "":
		requester = c.identityID
	case c.identityID != "" && requester != c.identityID:
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("requester_id: an identity may only request elevations for itself"))
	case requester == "":
		return nil, fieldError("requester_id", "required when the operator requests")
	}
	if _, err := e.node.store.GetIdentity(ctx, t.Scope(), requester); err != nil {
		return nil, err
	}
	el, err := e.node.store.RequestElevation(ctx, c.change(ctx), t.Scope(), schema.Elevation{RequesterID: requester, RoleID: m.RoleId,
		Scope: m.Scope, Duration: m.Duration.AsDuration(), Justification: m.Justification})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.RequestElevationResponse{Elevation: elevationToProto(el)}), nil
}

func (e *ElevationService) decide(ctx context.Context, header, tenantID, id string, approve bool) (schema.Elevation, int64, error) {
	t, c, err := e.caller(ctx, header, tenantID)
	if err != nil {
		return schema.Elevation{}, 0, err
	}
	if c.operator() {
		return schema.Elevation{}, 0, connect.NewError(connect.CodePermissionDenied,
			errors.New("elevations are decided by an identity holding iam.elevations.approve, not by the operator"))
	}
	snap, err := e.node.policies.snapshot(ctx, t, consistency{})
	if err != nil {
		return schema.Elevation{}, 0, err
	}
	if err := e.node.holdsOnTenant(ctx, t, snap, c, PermApproveElevations); err != nil {
		return schema.Elevation{}, 0, err
	}
	var atRevision int64
	if approve {
		if err := e.mayApprove(ctx, t, snap, c, id); err != nil {
			return schema.Elevation{}, 0, err
		}
		// The store refuses the approval if the policy changed since snap: the limits
		// were judged on exactly the policy the approval applies to.
		atRevision = snap.Revision()
	}
	return e.node.store.DecideElevation(ctx, c.change(ctx), t.Scope(), id, c.identityID, approve, atRevision)
}

// mayApprove applies the limits on approving elevation id (issue 12, finding 7):
// never one's own request; never a role granting iam.* permissions, nor any role on
// scope "*", unless the approver is granted PermApprovePrivilegedElevations by name;
// and only a role whose every permission the approver holds on the whole scope (see
// holdsEverywhere). A refusal is permission_denied naming what the approver lacks.
func (e *ElevationService) mayApprove(ctx context.Context, t schema.Tenant, snap *authz.Snapshot, c caller, id string) error {
	el, err := e.node.store.GetElevation(ctx, t.Scope(), id)
	if err != nil {
		return err
	}
	if el.RequesterID == c.identityID {
		return connect.NewError(connect.CodePermissionDenied, errors.New("elevation_id: an identity may not approve its own elevation"))
	}
	role, ok := snap.Role(el.RoleID)
	if !ok {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("elevation_id: its role %s no longer exists", el.RoleID))
	}
	grants := snap.EffectivePermissions(c.identityID, e.node.now())
	if privilegedElevation(role, el.Scope) && !holdsEverywhere(grants, PermApprovePrivilegedElevations, "tenant", true) {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
			"the approver lacks %s on the tenant (granted by name, not by a wildcard), needed to approve role %q on scope %q: it grants iam.* permissions or covers every resource",
			PermApprovePrivilegedElevations, role.Name, el.Scope))
	}
	for _, p := range role.Permissions {
		if !holdsEverywhere(grants, p, el.Scope, false) {
			return connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
				"the approver lacks %s on %s: approving role %q needs every permission it grants, held unconditionally on the whole scope", p, el.Scope, role.Name))
		}
	}
	return nil
}

// privilegedElevation reports whether elevating to role on scope needs
// PermApprovePrivilegedElevations: the role grants a permission of the iam service
// (keyplane's own, the approval permission included) or the scope is "*".
func privilegedElevation(role authz.Role, scope string) bool {
	if scope == "*" {
		return true
	}
	for _, p := range role.Permissions {
		if authz.PatternIncludes("iam.*", p) || authz.PatternIncludes(p, "iam.*") {
			return true
		}
	}
	return false
}

// holdsEverywhere reports whether grants (an identity's effective permissions)
// certainly give pattern on every resource scope covers, whatever a condition or a
// request would say: an unconditional allow grant includes both the pattern (is it,
// when byName) and the scope, and no deny grant, conditional or not, overlaps both.
func holdsEverywhere(grants []authz.Grant, pattern, scope string, byName bool) bool {
	held := false
	for _, g := range grants {
		if g.Effect == authz.Deny {
			if (authz.PatternIncludes(g.Permission, pattern) || authz.PatternIncludes(pattern, g.Permission)) &&
				(authz.ScopeIncludes(g.Scope, scope) || authz.ScopeIncludes(scope, g.Scope)) {
				return false
			}
			continue
		}
		if !g.Conditional && authz.ScopeIncludes(g.Scope, scope) && (g.Permission == pattern || !byName && authz.PatternIncludes(g.Permission, pattern)) {
			held = true
		}
	}
	return held
}

func (e *ElevationService) ApproveElevation(ctx context.Context, req *connect.Request[keyplanev1.ApproveElevationRequest]) (*connect.Response[keyplanev1.ApproveElevationResponse], error) {
	el, rev, err := e.decide(ctx, req.Header().Get("Authorization"), req.Msg.TenantId, req.Msg.ElevationId, true)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.ApproveElevationResponse{Elevation: elevationToProto(el), PolicyRevision: rev}), nil
}

func (e *ElevationService) DenyElevation(ctx context.Context, req *connect.Request[keyplanev1.DenyElevationRequest]) (*connect.Response[keyplanev1.DenyElevationResponse], error) {
	el, _, err := e.decide(ctx, req.Header().Get("Authorization"), req.Msg.TenantId, req.Msg.ElevationId, false)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.DenyElevationResponse{Elevation: elevationToProto(el)}), nil
}

func (e *ElevationService) EndElevation(ctx context.Context, req *connect.Request[keyplanev1.EndElevationRequest]) (*connect.Response[keyplanev1.EndElevationResponse], error) {
	t, c, err := e.caller(ctx, req.Header().Get("Authorization"), req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	cur, err := e.node.store.GetElevation(ctx, t.Scope(), req.Msg.ElevationId)
	if err != nil {
		return nil, err
	}
	if c.identityID != "" && c.identityID != cur.RequesterID && c.identityID != cur.ApproverID {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("elevation_id: only its requester, its approver or the operator may end it"))
	}
	el, rev, err := e.node.store.EndElevation(ctx, c.change(ctx), t.Scope(), req.Msg.ElevationId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.EndElevationResponse{Elevation: elevationToProto(el), PolicyRevision: rev}), nil
}

func (e *ElevationService) GetElevation(ctx context.Context, req *connect.Request[keyplanev1.GetElevationRequest]) (*connect.Response[keyplanev1.GetElevationResponse], error) {
	t, c, err := e.caller(ctx, req.Header().Get("Authorization"), req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	el, err := e.node.store.GetElevation(ctx, t.Scope(), req.Msg.ElevationId)
	if err != nil {
		return nil, err
	}
	// Its requester and approver see it; so does whoever may decide elevations.
	if !c.operator() && c.identityID != el.RequesterID && c.identityID != el.ApproverID {
		if err := e.node.requirePermission(ctx, t, c, PermApproveElevations); err != nil {
			return nil, err
		}
	}
	return connect.NewResponse(&keyplanev1.GetElevationResponse{Elevation: elevationToProto(el)}), nil
}

func (e *ElevationService) ListElevations(ctx context.Context, req *connect.Request[keyplanev1.ListElevationsRequest]) (*connect.Response[keyplanev1.ListElevationsResponse], error) {
	m := req.Msg
	t, c, err := e.caller(ctx, req.Header().Get("Authorization"), m.TenantId)
	if err != nil {
		return nil, err
	}
	// GetElevation's rule: whoever may decide elevations sees them all; anyone else
	// only the ones it requested or approved.
	party := ""
	if !c.operator() {
		if err := e.node.requirePermission(ctx, t, c, PermApproveElevations); err != nil {
			if connect.CodeOf(err) != connect.CodePermissionDenied {
				return nil, err
			}
			party = c.identityID
		}
	}
	els, next, err := e.node.store.ListElevations(ctx, t.Scope(), m.Status, party, schema.Page{Size: int(m.PageSize), Token: m.PageToken})
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListElevationsResponse{NextPageToken: next}
	for _, el := range els {
		out.Elevations = append(out.Elevations, elevationToProto(el))
	}
	return connect.NewResponse(out), nil
}

func elevationToProto(e schema.Elevation) *keyplanev1.Elevation {
	return &keyplanev1.Elevation{Id: e.ID, RequesterId: e.RequesterID, RoleId: e.RoleID, Scope: e.Scope, Duration: durationpb.New(e.Duration),
		Justification: e.Justification, Status: e.Status, ApproverId: e.ApproverID, BindingId: e.BindingID,
		CreateTime: timestamppb.New(e.CreatedAt), DecideTime: timeToProto(e.DecidedAt), EndTime: timeToProto(e.EndsAt)}
}
