package region

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region/credential"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// AdminService implements keyplane.v1.AdminService. Handlers return store errors as
// they are; the node's interceptor maps them to Connect codes.
type AdminService struct {
	node *Node
}

var _ keyplanev1connect.AdminServiceHandler = (*AdminService)(nil)

// change describes the caller of an admin call for the audit log: the caller the
// authority interceptor authenticated (the operator on cluster calls).
func change(ctx context.Context) schema.Change {
	return callerOf(ctx).change(ctx)
}

// scope resolves the tenant named by a request to the partition its rows live in.
func (a *AdminService) scope(ctx context.Context, tenantID string) (schema.Scope, error) {
	if tenantID == "" {
		return schema.Scope{}, fieldError("tenant_id", "required")
	}
	t, err := a.node.store.GetTenant(ctx, tenantID)
	if err != nil {
		return schema.Scope{}, err
	}
	return t.Scope(), nil
}

func (a *AdminService) ListRegions(ctx context.Context, _ *connect.Request[keyplanev1.ListRegionsRequest]) (*connect.Response[keyplanev1.ListRegionsResponse], error) {
	rs, err := a.node.store.ListRegions(ctx)
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListRegionsResponse{}
	for _, r := range rs {
		out.Regions = append(out.Regions, &keyplanev1.Region{Name: r.Name, SuperRegion: r.SuperRegion})
	}
	return connect.NewResponse(out), nil
}

func (a *AdminService) CreateTenant(ctx context.Context, req *connect.Request[keyplanev1.CreateTenantRequest]) (*connect.Response[keyplanev1.CreateTenantResponse], error) {
	m := req.Msg
	residency, err := residencyFromProto(m.Residency)
	if err != nil {
		return nil, err
	}
	alg, err := signingAlgFromProto(m.SigningAlgorithm)
	if err != nil {
		return nil, err
	}
	retention, err := durationFromProto("decision_retention", m.DecisionRetention)
	if err != nil {
		return nil, err
	}
	policy, err := residencyPolicyFromProto(m.ResidencyPolicy)
	if err != nil {
		return nil, err
	}
	in := schema.NewTenant{ID: m.Id, Name: m.Name, HomeRegion: m.HomeRegion, Residency: residency, ResidencyPolicy: policy, SigningAlg: alg}
	if retention != nil {
		if *retention <= 0 { // 0 would mean the default: a zero duration is a mistake, not "unset"
			return nil, fieldError("decision_retention", "must be positive; leave it unset for the default")
		}
		in.DecisionRetention = *retention
	}
	// The first tenant admin's client secret: shown once, in the response; stored as
	// its hash (issue 13, item 4).
	sec, err := credential.NewSecret(credential.PrefixClientSecret)
	if err != nil {
		return nil, err
	}
	t, admin, err := a.node.store.CreateTenantWithAdmin(ctx, change(ctx), in, schema.NewTenantAdmin{KeyID: sec.KeyID, Hash: sec.Hash})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.CreateTenantResponse{Tenant: a.node.tenantToProto(t), AdminIdentityId: admin.Identity.ID,
		AdminClientId: schema.ClientID(admin.Credential.KeyID), AdminClientSecret: sec.Text}), nil
}

func (a *AdminService) GetTenant(ctx context.Context, req *connect.Request[keyplanev1.GetTenantRequest]) (*connect.Response[keyplanev1.GetTenantResponse], error) {
	if req.Msg.Id == "" {
		return nil, fieldError("id", "required")
	}
	t, err := a.node.store.GetTenant(ctx, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.GetTenantResponse{Tenant: a.node.tenantToProto(t)}), nil
}

func (a *AdminService) ListTenants(ctx context.Context, req *connect.Request[keyplanev1.ListTenantsRequest]) (*connect.Response[keyplanev1.ListTenantsResponse], error) {
	ts, next, err := a.node.store.ListTenants(ctx, schema.Page{Size: int(req.Msg.PageSize), Token: req.Msg.PageToken})
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListTenantsResponse{NextPageToken: next}
	for _, t := range ts {
		out.Tenants = append(out.Tenants, a.node.tenantToProto(t))
	}
	return connect.NewResponse(out), nil
}

func (a *AdminService) UpdateTenant(ctx context.Context, req *connect.Request[keyplanev1.UpdateTenantRequest]) (*connect.Response[keyplanev1.UpdateTenantResponse], error) {
	u := schema.TenantUpdate{Name: req.Msg.Name}
	var err error
	if u.AccessTokenTTL, err = durationFromProto("access_token_ttl", req.Msg.AccessTokenTtl); err != nil {
		return nil, err
	}
	if u.APIKeyMaxLifetime, err = durationFromProto("api_key_max_lifetime", req.Msg.ApiKeyMaxLifetime); err != nil {
		return nil, err
	}
	if u.StepUpWindow, err = durationFromProto("step_up_window", req.Msg.StepUpWindow); err != nil {
		return nil, err
	}
	if u.DecisionRetention, err = durationFromProto("decision_retention", req.Msg.DecisionRetention); err != nil {
		return nil, err
	}
	if req.Msg.SigningAlgorithm != keyplanev1.SigningAlgorithm_SIGNING_ALGORITHM_UNSPECIFIED {
		alg, err := signingAlgFromProto(req.Msg.SigningAlgorithm)
		if err != nil {
			return nil, err
		}
		u.SigningAlg = &alg
	}
	if req.Msg.ResidencyPolicy != keyplanev1.ResidencyPolicy_RESIDENCY_POLICY_UNSPECIFIED {
		p, err := residencyPolicyFromProto(req.Msg.ResidencyPolicy)
		if err != nil {
			return nil, err
		}
		u.ResidencyPolicy = &p
	}
	t, err := a.node.store.UpdateTenant(ctx, change(ctx), req.Msg.Id, u)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.UpdateTenantResponse{Tenant: a.node.tenantToProto(t)}), nil
}

func (a *AdminService) DisableTenant(ctx context.Context, req *connect.Request[keyplanev1.DisableTenantRequest]) (*connect.Response[keyplanev1.DisableTenantResponse], error) {
	t, err := a.node.store.SetTenantStatus(ctx, change(ctx), req.Msg.Id, schema.StatusDisabled)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.DisableTenantResponse{Tenant: a.node.tenantToProto(t)}), nil
}

func (a *AdminService) EnableTenant(ctx context.Context, req *connect.Request[keyplanev1.EnableTenantRequest]) (*connect.Response[keyplanev1.EnableTenantResponse], error) {
	t, err := a.node.store.SetTenantStatus(ctx, change(ctx), req.Msg.Id, schema.StatusActive)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.EnableTenantResponse{Tenant: a.node.tenantToProto(t)}), nil
}

func (a *AdminService) RehomeTenant(ctx context.Context, req *connect.Request[keyplanev1.RehomeTenantRequest]) (*connect.Response[keyplanev1.RehomeTenantResponse], error) {
	t, err := a.node.store.RehomeTenant(ctx, change(ctx), req.Msg.Id, req.Msg.HomeRegion)
	if err != nil {
		return nil, err
	}
	a.node.tenantMoved(t.ID, t.PlacementEpoch)
	return connect.NewResponse(&keyplanev1.RehomeTenantResponse{Tenant: a.node.tenantToProto(t)}), nil
}

func (a *AdminService) CreateIdentity(ctx context.Context, req *connect.Request[keyplanev1.CreateIdentityRequest]) (*connect.Response[keyplanev1.CreateIdentityResponse], error) {
	m := req.Msg
	kind, err := kindFromProto(m.Kind)
	if err != nil {
		return nil, err
	}
	expires, err := timeFromProto("expire_time", m.ExpireTime)
	if err != nil {
		return nil, err
	}
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	i, err := a.node.store.CreateIdentity(ctx, change(ctx), a.node.guardRuleMemberships(ctx, callerOf(ctx), sc), schema.NewIdentity{
		Kind: kind, DisplayName: m.DisplayName, Email: m.Email, Attributes: m.Attributes.AsMap(),
		OwnerID: m.OwnerId, ManagerID: m.ManagerId, Purpose: m.Purpose, ExpiresAt: expires,
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.CreateIdentityResponse{Identity: identityToProto(i)}), nil
}

func (a *AdminService) GetIdentity(ctx context.Context, req *connect.Request[keyplanev1.GetIdentityRequest]) (*connect.Response[keyplanev1.GetIdentityResponse], error) {
	sc, err := a.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	i, err := a.node.store.GetIdentity(ctx, sc, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.GetIdentityResponse{Identity: identityToProto(i)}), nil
}

func (a *AdminService) ListIdentities(ctx context.Context, req *connect.Request[keyplanev1.ListIdentitiesRequest]) (*connect.Response[keyplanev1.ListIdentitiesResponse], error) {
	sc, err := a.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	is, next, err := a.node.store.ListIdentities(ctx, sc, schema.Page{Size: int(req.Msg.PageSize), Token: req.Msg.PageToken})
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListIdentitiesResponse{NextPageToken: next}
	for _, i := range is {
		out.Identities = append(out.Identities, identityToProto(i))
	}
	return connect.NewResponse(out), nil
}

func (a *AdminService) UpdateIdentity(ctx context.Context, req *connect.Request[keyplanev1.UpdateIdentityRequest]) (*connect.Response[keyplanev1.UpdateIdentityResponse], error) {
	m := req.Msg
	u := schema.IdentityUpdate{DisplayName: m.DisplayName, Email: m.Email, OwnerID: m.OwnerId, ManagerID: m.ManagerId, Purpose: m.Purpose}
	if m.Attributes != nil {
		u.Attributes = m.Attributes.AsMap()
	}
	if m.ExpireTime != nil {
		t, err := timeFromProto("expire_time", m.ExpireTime)
		if err != nil {
			return nil, err
		}
		u.ExpiresAt = &t
	}
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	// The manager inherits the NHIs the identity owns when it is offboarded: who sets
	// it is held to the same rule as who sets the owner.
	if m.Attributes != nil || m.OwnerId != nil || m.ManagerId != nil {
		if err := a.node.mayRewriteIdentity(ctx, callerOf(ctx), m.TenantId, m.Id); err != nil {
			return nil, err
		}
	}
	i, err := a.node.store.UpdateIdentity(ctx, change(ctx), a.node.guardRuleMemberships(ctx, callerOf(ctx), sc), m.Id, u)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.UpdateIdentityResponse{Identity: identityToProto(i)}), nil
}

func (a *AdminService) DisableIdentity(ctx context.Context, req *connect.Request[keyplanev1.DisableIdentityRequest]) (*connect.Response[keyplanev1.DisableIdentityResponse], error) {
	i, err := a.setIdentityStatus(ctx, req.Msg.TenantId, req.Msg.Id, schema.StatusDisabled)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.DisableIdentityResponse{Identity: i}), nil
}

func (a *AdminService) EnableIdentity(ctx context.Context, req *connect.Request[keyplanev1.EnableIdentityRequest]) (*connect.Response[keyplanev1.EnableIdentityResponse], error) {
	i, err := a.setIdentityStatus(ctx, req.Msg.TenantId, req.Msg.Id, schema.StatusActive)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.EnableIdentityResponse{Identity: i}), nil
}

func (a *AdminService) setIdentityStatus(ctx context.Context, tenantID, id, status string) (*keyplanev1.Identity, error) {
	sc, err := a.scope(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	i, err := a.node.store.SetIdentityStatus(ctx, change(ctx), a.node.guardRuleMemberships(ctx, callerOf(ctx), sc), id, status)
	if err != nil {
		return nil, err
	}
	return identityToProto(i), nil
}

func (a *AdminService) ListAuditEvents(ctx context.Context, req *connect.Request[keyplanev1.ListAuditEventsRequest]) (*connect.Response[keyplanev1.ListAuditEventsResponse], error) {
	sc, err := a.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	f := schema.AuditFilter{Actor: m.Actor, Action: m.Action, TargetKind: m.TargetKind, TargetID: m.TargetId}
	if f.Since, err = timeFromProto("start_time", m.StartTime); err != nil {
		return nil, err
	}
	if f.Until, err = timeFromProto("end_time", m.EndTime); err != nil {
		return nil, err
	}
	evs, next, err := a.node.store.ListAuditEvents(ctx, sc, f, schema.Page{Size: int(m.PageSize), Token: m.PageToken})
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListAuditEventsResponse{NextPageToken: next}
	for _, e := range evs {
		out.Events = append(out.Events, &keyplanev1.AuditEvent{
			Id: e.ID, TenantId: e.TenantID, Time: timestamppb.New(e.At), Actor: e.Actor, Action: e.Action,
			TargetKind: e.TargetKind, TargetId: e.TargetID, Before: structOrNil(e.Before), After: structOrNil(e.After),
			RequestId: e.RequestID, Region: e.Region, Node: e.Node,
			ActorKind: e.ActorKind, SessionId: e.SessionID, TokenId: e.TokenID, ClientId: e.ClientID, BreakGlass: e.BreakGlass,
		})
	}
	return connect.NewResponse(out), nil
}

// Conversions between the API and the store.

func residencyFromProto(r keyplanev1.Residency) (string, error) {
	switch r {
	case keyplanev1.Residency_RESIDENCY_UNSPECIFIED, keyplanev1.Residency_RESIDENCY_REGION:
		return schema.ResidencyRegion, nil
	case keyplanev1.Residency_RESIDENCY_SUPER_REGION:
		return schema.ResidencySuperRegion, nil
	}
	return "", fieldError("residency", fmt.Sprintf("unknown value %d", r))
}

// residencyPolicyFromProto: "" for unspecified (the default by residency).
func residencyPolicyFromProto(p keyplanev1.ResidencyPolicy) (string, error) {
	switch p {
	case keyplanev1.ResidencyPolicy_RESIDENCY_POLICY_UNSPECIFIED:
		return "", nil
	case keyplanev1.ResidencyPolicy_RESIDENCY_POLICY_STRICT:
		return schema.ResidencyStrict, nil
	case keyplanev1.ResidencyPolicy_RESIDENCY_POLICY_RELAXED:
		return schema.ResidencyRelaxed, nil
	}
	return "", fieldError("residency_policy", fmt.Sprintf("unknown value %d", p))
}

func signingAlgFromProto(a keyplanev1.SigningAlgorithm) (string, error) {
	switch a {
	case keyplanev1.SigningAlgorithm_SIGNING_ALGORITHM_UNSPECIFIED, keyplanev1.SigningAlgorithm_SIGNING_ALGORITHM_EDDSA:
		return schema.SigningEdDSA, nil
	case keyplanev1.SigningAlgorithm_SIGNING_ALGORITHM_RS256:
		return schema.SigningRS256, nil
	}
	return "", fieldError("signing_algorithm", fmt.Sprintf("unknown value %d (SIGNING_ALGORITHM_EDDSA or SIGNING_ALGORITHM_RS256)", a))
}

func signingAlgToProto(alg string) keyplanev1.SigningAlgorithm {
	if alg == schema.SigningRS256 {
		return keyplanev1.SigningAlgorithm_SIGNING_ALGORITHM_RS256
	}
	return keyplanev1.SigningAlgorithm_SIGNING_ALGORITHM_EDDSA
}

var kinds = map[keyplanev1.IdentityKind]string{
	keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN:           schema.KindHuman,
	keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT: schema.KindServiceAccount,
	keyplanev1.IdentityKind_IDENTITY_KIND_WORKLOAD:        schema.KindWorkload,
	keyplanev1.IdentityKind_IDENTITY_KIND_DEVICE:          schema.KindDevice,
	keyplanev1.IdentityKind_IDENTITY_KIND_AGENT:           schema.KindAgent,
}

func kindFromProto(k keyplanev1.IdentityKind) (string, error) {
	if k == keyplanev1.IdentityKind_IDENTITY_KIND_UNSPECIFIED {
		return "", fieldError("kind", "required (IDENTITY_KIND_HUMAN, _SERVICE_ACCOUNT, _WORKLOAD, _DEVICE or _AGENT)")
	}
	s, ok := kinds[k]
	if !ok {
		return "", fieldError("kind", fmt.Sprintf("unknown value %d", k))
	}
	return s, nil
}

func kindToProto(s string) keyplanev1.IdentityKind {
	for k, v := range kinds {
		if v == s {
			return k
		}
	}
	return keyplanev1.IdentityKind_IDENTITY_KIND_UNSPECIFIED
}

func timeFromProto(field string, ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, fieldError(field, "not a valid timestamp")
	}
	return ts.AsTime(), nil
}

func timeToProto(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func statusToProto(s string) keyplanev1.Status {
	switch s {
	case schema.StatusDisabled:
		return keyplanev1.Status_STATUS_DISABLED
	case schema.StatusFrozen:
		return keyplanev1.Status_STATUS_FROZEN
	}
	return keyplanev1.Status_STATUS_ACTIVE
}

func (n *Node) tenantToProto(t schema.Tenant) *keyplanev1.Tenant {
	res := keyplanev1.Residency_RESIDENCY_REGION
	if t.Residency == schema.ResidencySuperRegion {
		res = keyplanev1.Residency_RESIDENCY_SUPER_REGION
	}
	policy := keyplanev1.ResidencyPolicy_RESIDENCY_POLICY_RELAXED
	if t.ResidencyPolicy == schema.ResidencyStrict {
		policy = keyplanev1.ResidencyPolicy_RESIDENCY_POLICY_STRICT
	}
	return &keyplanev1.Tenant{
		Id: t.ID, Name: t.Name, HomeRegion: t.HomeRegion, Residency: res, Status: statusToProto(t.Status),
		PolicyRevision: t.PolicyRevision, PlacementEpoch: t.PlacementEpoch,
		CreateTime: timestamppb.New(t.CreatedAt), UpdateTime: timestamppb.New(t.UpdatedAt),
		AccessTokenTtl: durationpb.New(t.AccessTokenTTL), ApiKeyMaxLifetime: durationpb.New(t.APIKeyMaxLifetime),
		Issuer: n.Issuer(t.ID), SigningAlgorithm: signingAlgToProto(t.SigningAlg), StepUpWindow: durationOrNil(t.StepUpWindow),
		DecisionRetention: durationpb.New(t.DecisionRetention), ResidencyPolicy: policy, Limits: tenantLimitsToProto(t.Limits),
		RehomingTo: t.RehomingTo,
	}
}

// durationFromProto is an optional duration field: nil when unset, an error naming
// field when invalid.
func durationFromProto(field string, d *durationpb.Duration) (*time.Duration, error) {
	if d == nil {
		return nil, nil
	}
	if err := d.CheckValid(); err != nil {
		return nil, fieldError(field, "not a valid duration")
	}
	v := d.AsDuration()
	return &v, nil
}

// durationOrNil is d as a proto Duration, nil when zero (unset).
func durationOrNil(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func identityToProto(i schema.Identity) *keyplanev1.Identity {
	return &keyplanev1.Identity{
		TenantId: i.TenantID, Id: i.ID, Kind: kindToProto(i.Kind), DisplayName: i.DisplayName, Email: i.Email,
		Attributes: structOrNil(i.Attributes), OwnerId: i.OwnerID, Purpose: i.Purpose, Status: statusToProto(i.Status),
		ExpireTime: timeToProto(i.ExpiresAt), TokensValidAfter: timeToProto(i.TokensValidAfter),
		CreateTime: timestamppb.New(i.CreatedAt), UpdateTime: timestamppb.New(i.UpdatedAt),
		ManagerId: i.ManagerID, OffboardTime: timeToProto(i.OffboardedAt), EraseTime: timeToProto(i.ErasedAt),
	}
}

func structOrNil(m map[string]any) *structpb.Struct {
	if m == nil {
		return nil
	}
	s, err := structpb.NewStruct(m)
	if err != nil {
		return nil // cannot happen for values decoded from JSON
	}
	return s
}
