package region

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// Permissions of FederationService, held on resource "tenant".
const (
	PermFederationRead  = "iam.federation.read"
	PermFederationWrite = "iam.federation.write"
)

// FederationService implements keyplane.v1.FederationService: the tenant's trust
// policies for workload identity federation (docs/federation.md). The authority
// interceptor has checked iam.federation.read or .write (and step-up for writes);
// writes also need what minting a credential for the policy's identity needs
// (mayManageIdentity), because a policy is a way to get that identity's tokens.
type FederationService struct {
	node *Node
}

var _ keyplanev1connect.FederationServiceHandler = (*FederationService)(nil)

func (s *FederationService) scope(ctx context.Context, tenantID string) (schema.Scope, error) {
	return (&AdminService{node: s.node}).scope(ctx, tenantID)
}

// checkCondition type-checks a trust policy's condition.
func (s *FederationService) checkCondition(expr string) error {
	if err := s.node.claimsEnv.CheckCondition(expr); err != nil {
		return fieldError("policy.condition", err.Error())
	}
	return nil
}

func (s *FederationService) CreateTrustPolicy(ctx context.Context, req *connect.Request[keyplanev1.CreateTrustPolicyRequest]) (*connect.Response[keyplanev1.CreateTrustPolicyResponse], error) {
	m := req.Msg
	if m.Policy == nil {
		return nil, fieldError("policy", "required")
	}
	p, err := trustPolicyFromProto(m.Policy)
	if err != nil {
		return nil, err
	}
	if err := s.checkCondition(p.Condition); err != nil {
		return nil, err
	}
	sc, err := s.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	if err := s.node.mayManageIdentity(ctx, callerOf(ctx), m.TenantId, p.IdentityID, true); err != nil {
		return nil, err
	}
	out, err := s.node.store.CreateTrustPolicy(ctx, change(ctx), sc, p)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.CreateTrustPolicyResponse{Policy: trustPolicyToProto(out)}), nil
}

func (s *FederationService) GetTrustPolicy(ctx context.Context, req *connect.Request[keyplanev1.GetTrustPolicyRequest]) (*connect.Response[keyplanev1.GetTrustPolicyResponse], error) {
	sc, err := s.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	p, err := s.node.store.GetTrustPolicy(ctx, sc, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.GetTrustPolicyResponse{Policy: trustPolicyToProto(p)}), nil
}

func (s *FederationService) ListTrustPolicies(ctx context.Context, req *connect.Request[keyplanev1.ListTrustPoliciesRequest]) (*connect.Response[keyplanev1.ListTrustPoliciesResponse], error) {
	sc, err := s.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	ps, next, err := s.node.store.ListTrustPolicies(ctx, sc, schema.Page{Size: int(req.Msg.PageSize), Token: req.Msg.PageToken})
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListTrustPoliciesResponse{NextPageToken: next}
	for _, p := range ps {
		out.Policies = append(out.Policies, trustPolicyToProto(p))
	}
	return connect.NewResponse(out), nil
}

func (s *FederationService) UpdateTrustPolicy(ctx context.Context, req *connect.Request[keyplanev1.UpdateTrustPolicyRequest]) (*connect.Response[keyplanev1.UpdateTrustPolicyResponse], error) {
	m := req.Msg
	if len(m.UpdateFields) == 0 {
		return nil, fieldError("update_fields", "required: name the fields to change")
	}
	if m.Policy == nil {
		return nil, fieldError("policy", "required")
	}
	p := m.Policy
	var u schema.TrustPolicyUpdate
	for i, f := range m.UpdateFields {
		switch f {
		case "name":
			u.Name = &p.Name
		case "description":
			u.Description = &p.Description
		case "issuer":
			u.Issuer = &p.Issuer
		case "condition":
			if err := s.checkCondition(p.Condition); err != nil {
				return nil, err
			}
			u.Condition = &p.Condition
		case "identity_id":
			u.IdentityID = &p.IdentityId
		case "audiences":
			u.Audiences = &p.Audiences
		case "algorithms":
			u.Algorithms = &p.Algorithms
		case "allowed_audiences":
			u.AllowedAudiences = &p.AllowedAudiences
		case "allowed_scopes":
			u.AllowedScopes = &p.AllowedScopes
		case "allow_missing_jti":
			u.AllowMissingJTI = &p.AllowMissingJti
		case "max_token_age":
			age, err := maxTokenAge(p.MaxTokenAge)
			if err != nil {
				return nil, err
			}
			u.MaxAge = &age
		default:
			return nil, fieldError(fmt.Sprintf("update_fields[%d]", i), fmt.Sprintf("%q is not a field of TrustPolicy that can be changed", truncateParam(f)))
		}
	}
	sc, err := s.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	before, err := s.node.store.GetTrustPolicy(ctx, sc, m.Id)
	if err != nil {
		return nil, err
	}
	// Any change can widen who gets the identity's tokens: the caller needs what
	// minting for the identity (the old one and the new one) needs.
	ids := []string{before.IdentityID}
	if u.IdentityID != nil && *u.IdentityID != before.IdentityID {
		ids = append(ids, *u.IdentityID)
	}
	for _, id := range ids {
		if err := s.node.mayManageIdentity(ctx, callerOf(ctx), m.TenantId, id, true); err != nil {
			return nil, err
		}
	}
	out, err := s.node.store.UpdateTrustPolicy(ctx, change(ctx), sc, m.Id, u)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.UpdateTrustPolicyResponse{Policy: trustPolicyToProto(out)}), nil
}

func (s *FederationService) DeleteTrustPolicy(ctx context.Context, req *connect.Request[keyplanev1.DeleteTrustPolicyRequest]) (*connect.Response[keyplanev1.DeleteTrustPolicyResponse], error) {
	sc, err := s.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	if err := s.node.store.DeleteTrustPolicy(ctx, change(ctx), sc, req.Msg.Id); err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.DeleteTrustPolicyResponse{}), nil
}

func truncateParam(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

func maxTokenAge(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, fieldError("policy.max_token_age", "not a valid duration")
	}
	age := d.AsDuration()
	if age <= 0 {
		return 0, fieldError("policy.max_token_age", "must be positive; leave it unset for the default (1h)")
	}
	return age, nil
}

func trustPolicyFromProto(p *keyplanev1.TrustPolicy) (schema.TrustPolicy, error) {
	age, err := maxTokenAge(p.MaxTokenAge)
	if err != nil {
		return schema.TrustPolicy{}, err
	}
	return schema.TrustPolicy{Name: p.Name, Description: p.Description, Issuer: p.Issuer, Audiences: p.Audiences, Algorithms: p.Algorithms,
		Condition: p.Condition, MaxAge: age, IdentityID: p.IdentityId, AllowedAudiences: p.AllowedAudiences, AllowedScopes: p.AllowedScopes,
		AllowMissingJTI: p.AllowMissingJti}, nil
}

func trustPolicyToProto(p schema.TrustPolicy) *keyplanev1.TrustPolicy {
	return &keyplanev1.TrustPolicy{Id: p.ID, Name: p.Name, Description: p.Description, Issuer: p.Issuer, Audiences: p.Audiences,
		Algorithms: p.Algorithms, Condition: p.Condition, MaxTokenAge: durationpb.New(p.MaxAge), IdentityId: p.IdentityID,
		AllowedAudiences: p.AllowedAudiences, AllowedScopes: p.AllowedScopes, AllowMissingJti: p.AllowMissingJTI,
		CreateTime: timestamppb.New(p.CreatedAt), UpdateTime: timestamppb.New(p.UpdatedAt)}
}
