package region

import (
	"context"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region/authz"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// PermDecisionsRead lets the holder read the tenant's decision log (DecisionService),
// held on resource "tenant".
const PermDecisionsRead = "iam.decisions.read"

// DecisionService implements keyplane.v1.DecisionService: reads of the decision log.
// The authority interceptor has checked iam.decisions.read before a handler runs.
type DecisionService struct {
	node *Node
}

var _ keyplanev1connect.DecisionServiceHandler = (*DecisionService)(nil)

// decisionTenant reads the tenant a decision read names and the instant before which
// its decisions are past the retention, by the node's clock (the clock decisions are
// stamped with).
func (n *Node) decisionTenant(ctx context.Context, tenantID string) (schema.Scope, time.Time, error) {
	if tenantID == "" {
		return schema.Scope{}, time.Time{}, fieldError("tenant_id", "required")
	}
	t, err := n.store.GetTenant(ctx, tenantID)
	if err != nil {
		return schema.Scope{}, time.Time{}, err
	}
	return t.Scope(), n.now().Add(-t.DecisionRetention), nil
}

func (s *DecisionService) GetDecision(ctx context.Context, req *connect.Request[keyplanev1.GetDecisionRequest]) (*connect.Response[keyplanev1.GetDecisionResponse], error) {
	sc, horizon, err := s.node.decisionTenant(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	d, err := s.node.store.GetDecision(ctx, sc, req.Msg.DecisionId, horizon)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.GetDecisionResponse{Decision: decisionToProto(d)}), nil
}

func (s *DecisionService) ListDecisions(ctx context.Context, req *connect.Request[keyplanev1.ListDecisionsRequest]) (*connect.Response[keyplanev1.ListDecisionsResponse], error) {
	m := req.Msg
	f, err := decisionFilter(m)
	if err != nil {
		return nil, err
	}
	sc, horizon, err := s.node.decisionTenant(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	ds, next, err := s.node.store.ListDecisions(ctx, sc, f, horizon, schema.Page{Size: int(m.PageSize), Token: m.PageToken})
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListDecisionsResponse{NextPageToken: next}
	for _, d := range ds {
		out.Decisions = append(out.Decisions, decisionToProto(d))
	}
	return connect.NewResponse(out), nil
}

// decisionFilter validates ListDecisions's filters (the store checks the principal id,
// the time order and the page).
func decisionFilter(m *keyplanev1.ListDecisionsRequest) (schema.DecisionFilter, error) {
	f := schema.DecisionFilter{PrincipalID: m.PrincipalId, Permission: m.Permission, Resource: m.Resource, ResourcePrefix: m.ResourcePrefix}
	if m.Permission != "" {
		if err := authz.ValidatePermission(m.Permission); err != nil {
			return f, fieldError("permission", err.Error())
		}
	}
	if m.Resource != "" {
		if err := authz.ValidateResource(m.Resource); err != nil {
			return f, fieldError("resource", err.Error())
		}
	}
	if m.ResourcePrefix != "" {
		// A prefix of a resource: its whole segments are a resource (a trailing "/"
		// ends the last one), its last segment may be partial.
		if err := authz.ValidateResource(strings.TrimSuffix(m.ResourcePrefix, "/")); err != nil {
			return f, fieldError("resource_prefix", err.Error())
		}
	}
	if m.Resource != "" && m.ResourcePrefix != "" {
		return f, fieldError("resource_prefix", "give either resource or resource_prefix, not both")
	}
	switch m.Outcome {
	case keyplanev1.Decision_DECISION_UNSPECIFIED:
	case keyplanev1.Decision_DECISION_ALLOW, keyplanev1.Decision_DECISION_DENY:
		allowed := m.Outcome == keyplanev1.Decision_DECISION_ALLOW
		f.Allowed = &allowed
	default:
		return f, fieldError("outcome", fmt.Sprintf("must be DECISION_ALLOW, DECISION_DENY or unset (both), got %d", m.Outcome))
	}
	for _, t := range []struct {
		field string
		ts    *timestamppb.Timestamp
		into  *time.Time
	}{{"start_time", m.StartTime, &f.Start}, {"end_time", m.EndTime, &f.End}} {
		if t.ts == nil {
			continue
		}
		if err := t.ts.CheckValid(); err != nil {
			return f, fieldError(t.field, "not a valid timestamp")
		}
		*t.into = t.ts.AsTime()
	}
	return f, nil
}

func decisionToProto(d schema.Decision) *keyplanev1.LoggedDecision {
	return &keyplanev1.LoggedDecision{
		Id: d.ID, Time: timestamppb.New(d.At), PrincipalId: d.PrincipalID, Permission: d.Permission, Resource: d.Resource,
		Allowed: d.Allowed, Decision: decisionOf(d.Allowed), Reason: d.Reason, BindingIds: d.BindingIDs, PolicyRevision: d.Revision,
		HomeRegion: d.Region, ServingRegion: d.ServingRegion, ServingNode: d.Node, Latency: durationpb.New(d.Latency), Trace: d.Trace,
	}
}
