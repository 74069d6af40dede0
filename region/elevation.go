package region

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region/authz"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// PermApproveElevations lets an identity approve other identities' elevations (on
// resource "tenant").
const PermApproveElevations = "iam.elevations.approve"

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
	if err := e.node.requirePermission(ctx, t, c, PermApproveElevations); err != nil {
		return schema.Elevation{}, 0, err
	}
	return e.node.store.DecideElevation(ctx, c.change(ctx), t.Scope(), id, c.identityID, approve)
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
	t, _, err := e.caller(ctx, req.Header().Get("Authorization"), req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	el, err := e.node.store.GetElevation(ctx, t.Scope(), req.Msg.ElevationId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.GetElevationResponse{Elevation: elevationToProto(el)}), nil
}

func elevationToProto(e schema.Elevation) *keyplanev1.Elevation {
	return &keyplanev1.Elevation{Id: e.ID, RequesterId: e.RequesterID, RoleId: e.RoleID, Scope: e.Scope, Duration: durationpb.New(e.Duration),
		Justification: e.Justification, Status: e.Status, ApproverId: e.ApproverID, BindingId: e.BindingID,
		CreateTime: timestamppb.New(e.CreatedAt), DecideTime: timeToProto(e.DecidedAt), EndTime: timeToProto(e.EndsAt)}
}
