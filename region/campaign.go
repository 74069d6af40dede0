package region

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region/authz"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// Access review permissions (docs/access-reviews.md). PermReviewsManage, held on a
// campaign's scope (resource "tenant" for scopes tenant and nhis, roles/<id> or
// groups/<id>), lets the holder create and close campaigns there; PermReviewsRead on
// the tenant lets it read campaigns, their items and their evidence. Deciding an item
// needs neither: being its reviewer is the authority.
const (
	PermReviewsManage = "iam.reviews.manage"
	PermReviewsRead   = "iam.reviews.read"
)

// ReviewService implements keyplane.v1.ReviewService. The authority interceptor has
// authenticated the caller (and checked PermReviewsRead for the reads); the handlers
// check what depends on the request. Safe for concurrent use.
type ReviewService struct {
	node *Node
}

var _ keyplanev1connect.ReviewServiceHandler = (*ReviewService)(nil)

// Campaign defaults and bounds.
const (
	defaultReminderInterval = 7 * 24 * time.Hour
	defaultUnusedDays       = 90
	maxCampaignLength       = 2 * 365 * 24 * time.Hour
)

var campaignScopes = map[keyplanev1.CampaignScope]string{
	keyplanev1.CampaignScope_CAMPAIGN_SCOPE_NHIS:   schema.CampaignScopeNHIs,
	keyplanev1.CampaignScope_CAMPAIGN_SCOPE_ROLE:   schema.CampaignScopeRole,
	keyplanev1.CampaignScope_CAMPAIGN_SCOPE_GROUP:  schema.CampaignScopeGroup,
	keyplanev1.CampaignScope_CAMPAIGN_SCOPE_TENANT: schema.CampaignScopeTenant,
}

var reviewDecisions = map[keyplanev1.ReviewDecision]string{
	keyplanev1.ReviewDecision_REVIEW_DECISION_KEEP:   schema.ReviewKeep,
	keyplanev1.ReviewDecision_REVIEW_DECISION_REVOKE: schema.ReviewRevoke,
	keyplanev1.ReviewDecision_REVIEW_DECISION_MODIFY: schema.ReviewModify,
}

func reviewDecisionProto(d string) keyplanev1.ReviewDecision {
	for k, v := range reviewDecisions {
		if v == d {
			return k
		}
	}
	return keyplanev1.ReviewDecision_REVIEW_DECISION_UNSPECIFIED
}

func campaignScopeProto(s string) keyplanev1.CampaignScope {
	for k, v := range campaignScopes {
		if v == s {
			return k
		}
	}
	return keyplanev1.CampaignScope_CAMPAIGN_SCOPE_UNSPECIFIED
}

// campaignResource is the resource PermReviewsManage is checked on for a campaign.
func campaignResource(kind, id string) string {
	switch kind {
	case schema.CampaignScopeRole:
		return "roles/" + id
	case schema.CampaignScopeGroup:
		return "groups/" + id
	}
	return "tenant"
}

// reviewTenant reads the tenant a review call names.
func (n *Node) reviewTenant(ctx context.Context, tenantID string) (schema.Tenant, error) {
	if tenantID == "" {
		return schema.Tenant{}, fieldError("tenant_id", "required")
	}
	return n.store.GetTenant(ctx, tenantID)
}

// mayManageCampaign refuses a caller without PermReviewsManage on the campaign's scope.
func (n *Node) mayManageCampaign(ctx context.Context, c caller, tenantID, kind, id string) error {
	if c.operator() {
		return nil
	}
	p, err := n.policyFor(ctx, tenantID, c)
	if err != nil {
		return err
	}
	return n.requireOnScope(ctx, p, PermReviewsManage, campaignResource(kind, id))
}

func (s *ReviewService) CreateCampaign(ctx context.Context, req *connect.Request[keyplanev1.CreateCampaignRequest]) (*connect.Response[keyplanev1.CreateCampaignResponse], error) {
	m, n := req.Msg, s.node
	t, err := n.reviewTenant(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	kind, ok := campaignScopes[m.Scope]
	if !ok {
		return nil, fieldError("scope", "CAMPAIGN_SCOPE_NHIS, _ROLE, _GROUP or _TENANT")
	}
	in := schema.Campaign{Name: m.Name, ScopeKind: kind, ScopeID: m.ScopeId, ReminderInterval: defaultReminderInterval,
		DefaultAction: schema.ReviewKeep, UnusedDays: defaultUnusedDays, SignInClientID: m.SignInClientId}
	now := n.now()
	switch {
	case m.Deadline == nil:
		return nil, fieldError("deadline", "required")
	case !m.Deadline.IsValid() || !m.Deadline.AsTime().After(now):
		return nil, fieldError("deadline", "must be in the future")
	case m.Deadline.AsTime().After(now.Add(maxCampaignLength)):
		return nil, fieldError("deadline", "at most two years away")
	}
	in.Deadline = m.Deadline.AsTime()
	if m.ReminderInterval != nil {
		if !m.ReminderInterval.IsValid() {
			return nil, fieldError("reminder_interval", "not a valid duration")
		}
		in.ReminderInterval = m.ReminderInterval.AsDuration()
	}
	switch m.DefaultAction {
	case keyplanev1.ReviewDecision_REVIEW_DECISION_UNSPECIFIED, keyplanev1.ReviewDecision_REVIEW_DECISION_KEEP:
	case keyplanev1.ReviewDecision_REVIEW_DECISION_REVOKE:
		in.DefaultAction = schema.ReviewRevoke
	default:
		return nil, fieldError("default_action", "KEEP or REVOKE")
	}
	if m.UnusedDays != 0 {
		in.UnusedDays = int(m.UnusedDays)
	}
	c := callerOf(ctx)
	if err := n.mayManageCampaign(ctx, c, t.ID, kind, m.ScopeId); err != nil {
		return nil, err
	}
	if in.SignInClientID != "" {
		if err := n.checkReviewClient(ctx, t, in.SignInClientID); err != nil {
			return nil, err
		}
	}
	out, err := n.store.CreateCampaign(ctx, c.change(ctx), t.Scope(), c.identityID, in)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.CreateCampaignResponse{Campaign: campaignProto(out)}), nil
}

// checkReviewClient refuses a sign-in client that cannot sign reviewers in to the
// review page: unknown, or without the page's redirect URI registered.
func (n *Node) checkReviewClient(ctx context.Context, t schema.Tenant, clientID string) error {
	cl, err := n.store.GetOAuthClient(ctx, t.Scope(), clientID)
	if errors.Is(err, schema.ErrNotFound) {
		return fieldError("sign_in_client_id", fmt.Sprintf("no OAuth client %q in tenant %q", clientID, t.ID))
	}
	if err != nil {
		return err
	}
	if !slices.Contains(cl.RedirectURIs, n.reviewPageURL(t.ID)) {
		return fieldError("sign_in_client_id", fmt.Sprintf("client %q must register the review page's redirect URI %s", clientID, n.reviewPageURL(t.ID)))
	}
	return nil
}

func (s *ReviewService) GetCampaign(ctx context.Context, req *connect.Request[keyplanev1.GetCampaignRequest]) (*connect.Response[keyplanev1.GetCampaignResponse], error) {
	t, err := s.node.reviewTenant(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	c, err := s.node.store.GetCampaign(ctx, t.Scope(), req.Msg.CampaignId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.GetCampaignResponse{Campaign: campaignProto(c)}), nil
}

func (s *ReviewService) ListCampaigns(ctx context.Context, req *connect.Request[keyplanev1.ListCampaignsRequest]) (*connect.Response[keyplanev1.ListCampaignsResponse], error) {
	t, err := s.node.reviewTenant(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	cs, next, err := s.node.store.ListCampaigns(ctx, t.Scope(), schema.Page{Size: int(req.Msg.PageSize), Token: req.Msg.PageToken})
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListCampaignsResponse{NextPageToken: next}
	for _, c := range cs {
		out.Campaigns = append(out.Campaigns, campaignProto(c))
	}
	return connect.NewResponse(out), nil
}

func (s *ReviewService) ListItems(ctx context.Context, req *connect.Request[keyplanev1.ListItemsRequest]) (*connect.Response[keyplanev1.ListItemsResponse], error) {
	m, n := req.Msg, s.node
	t, err := n.reviewTenant(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	c := callerOf(ctx)
	f := schema.ItemFilter{CampaignID: m.CampaignId}
	switch {
	case m.Mine && c.operator():
		return nil, fieldError("mine", "the operator reviews no items: list a campaign's items")
	case m.Mine:
		f.ReviewerID = c.identityID
	case m.CampaignId == "":
		return nil, fieldError("campaign_id", "required (or mine)")
	case !c.operator():
		p, err := n.policyFor(ctx, t.ID, c)
		if err != nil {
			return nil, err
		}
		if err := n.requireOnScope(ctx, p, PermReviewsRead, "tenant"); err != nil {
			return nil, err
		}
	}
	items, next, err := n.store.ListReviewItems(ctx, t.Scope(), f, schema.Page{Size: int(m.PageSize), Token: m.PageToken})
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListItemsResponse{NextPageToken: next}
	days := map[string]int{}
	for _, it := range items {
		d, ok := days[it.CampaignID]
		if !ok {
			camp, err := n.store.GetCampaign(ctx, t.Scope(), it.CampaignID)
			if err != nil {
				return nil, err
			}
			d, days[it.CampaignID] = camp.UnusedDays, camp.UnusedDays
		}
		out.Items = append(out.Items, itemProto(it, n.now(), d))
	}
	return connect.NewResponse(out), nil
}

func (s *ReviewService) DecideItem(ctx context.Context, req *connect.Request[keyplanev1.DecideItemRequest]) (*connect.Response[keyplanev1.DecideItemResponse], error) {
	m, n := req.Msg, s.node
	t, err := n.reviewTenant(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	d, ok := reviewDecisions[m.Decision]
	if !ok {
		return nil, fieldError("decision", "KEEP, REVOKE or MODIFY")
	}
	it, camp, err := n.decideItem(ctx, t, callerOf(ctx), m.CampaignId, m.ItemId,
		schema.ItemDecision{Decision: d, Justification: m.Justification, NewRoleID: m.NewRoleId, NewScope: m.NewScope})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.DecideItemResponse{Item: itemProto(it, n.now(), camp.UnusedDays)}), nil
}

// decideItem authorizes caller c's decision d on an item (the API and the review
// page): the subject never decides its own access; only the item's reviewer (or the
// operator) decides. A modification must narrow: a role whose permissions the old
// role's include, a scope the old scope includes.
func (n *Node) decideItem(ctx context.Context, t schema.Tenant, c caller, campaignID, itemID string, d schema.ItemDecision) (schema.ReviewItem, schema.Campaign, error) {
	if campaignID == "" {
		return schema.ReviewItem{}, schema.Campaign{}, fieldError("campaign_id", "required")
	}
	if itemID == "" {
		return schema.ReviewItem{}, schema.Campaign{}, fieldError("item_id", "required")
	}
	sc := t.Scope()
	it, err := n.store.GetReviewItem(ctx, sc, itemID)
	if err != nil {
		return schema.ReviewItem{}, schema.Campaign{}, err
	}
	switch {
	case !c.operator() && c.identityID == it.SubjectID:
		return schema.ReviewItem{}, schema.Campaign{}, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("item_id: item %s is the caller's own access: nobody reviews their own access", itemID))
	case !c.operator() && c.identityID != it.ReviewerID:
		return schema.ReviewItem{}, schema.Campaign{}, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("item_id: the caller is not the reviewer of item %s", itemID))
	}
	if d.Decision == schema.ReviewModify && it.Kind == schema.ItemBinding {
		if err := n.checkNarrower(ctx, t, it, d); err != nil {
			return schema.ReviewItem{}, schema.Campaign{}, err
		}
	}
	out, err := n.store.DecideReviewItem(ctx, c.change(ctx), sc, campaignID, itemID, d)
	if err != nil {
		return schema.ReviewItem{}, schema.Campaign{}, err
	}
	n.reviewMetrics.items.WithLabelValues(out.Decision).Inc()
	camp, err := n.store.GetCampaign(ctx, sc, campaignID)
	return out, camp, err
}

// checkNarrower refuses a modification that is not a narrowing of it's binding.
func (n *Node) checkNarrower(ctx context.Context, t schema.Tenant, it schema.ReviewItem, d schema.ItemDecision) error {
	if len(it.RoleIDs) != 1 || len(it.Scopes) != 1 {
		return fieldError("decision", "modify narrows a single binding")
	}
	if d.NewScope != "" {
		if err := authz.ValidateScope(d.NewScope); err != nil {
			return fieldError("new_scope", err.Error())
		}
		if !authz.ScopeIncludes(it.Scopes[0], d.NewScope) {
			return fieldError("new_scope", fmt.Sprintf("%q is not within the binding's scope %q: a modification only narrows", d.NewScope, it.Scopes[0]))
		}
	}
	if d.NewRoleID == "" {
		return nil
	}
	snap, err := n.policies.snapshot(ctx, t, consistency{})
	if err != nil {
		return err
	}
	old, ok := snap.Role(it.RoleIDs[0])
	if !ok {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("item_id: the binding's role %s no longer exists", it.RoleIDs[0]))
	}
	nr, ok := snap.Role(d.NewRoleID)
	if !ok {
		return fieldError("new_role_id", fmt.Sprintf("no role %s in tenant %q", d.NewRoleID, t.ID))
	}
	for _, p := range nr.Permissions {
		if !slices.ContainsFunc(old.Permissions, func(o string) bool { return authz.PatternIncludes(o, p) }) {
			return fieldError("new_role_id", fmt.Sprintf("role %q grants %s, which role %q does not: a modification only narrows", nr.Name, p, old.Name))
		}
	}
	return nil
}

func (s *ReviewService) CloseCampaign(ctx context.Context, req *connect.Request[keyplanev1.CloseCampaignRequest]) (*connect.Response[keyplanev1.CloseCampaignResponse], error) {
	m, n := req.Msg, s.node
	t, err := n.reviewTenant(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	camp, err := n.store.GetCampaign(ctx, t.Scope(), m.CampaignId)
	if err != nil {
		return nil, err
	}
	c := callerOf(ctx)
	if err := n.mayManageCampaign(ctx, c, t.ID, camp.ScopeKind, camp.ScopeID); err != nil {
		return nil, err
	}
	out, defaulted, _, err := n.store.CloseCampaign(ctx, c.change(ctx), t.Scope(), m.CampaignId, false)
	if err != nil {
		return nil, err
	}
	n.countDefaulted(defaulted)
	return connect.NewResponse(&keyplanev1.CloseCampaignResponse{Campaign: campaignProto(out)}), nil
}

func (s *ReviewService) GetEvidence(ctx context.Context, req *connect.Request[keyplanev1.GetEvidenceRequest]) (*connect.Response[keyplanev1.GetEvidenceResponse], error) {
	m, n := req.Msg, s.node
	if m.Format != "json" && m.Format != "md" {
		return nil, fieldError("format", "json or md")
	}
	t, err := n.reviewTenant(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	camp, items, err := n.store.CampaignEvidence(ctx, t.Scope(), m.CampaignId)
	if err != nil {
		return nil, err
	}
	if camp.Status != schema.CampaignClosed {
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("campaign_id: campaign %s is open until %s: its evidence is exported once it is closed", camp.ID, camp.Deadline.UTC().Format(time.RFC3339)))
	}
	ev := buildEvidence(t.ID, camp, items, n.now())
	out := &keyplanev1.GetEvidenceResponse{}
	if m.Format == "json" {
		b, err := ev.JSON()
		if err != nil {
			return nil, err
		}
		out.Content, out.ContentType = string(b), "application/json"
	} else {
		out.Content, out.ContentType = ev.Markdown(), "text/markdown"
	}
	return connect.NewResponse(out), nil
}

func campaignProto(c schema.Campaign) *keyplanev1.Campaign {
	out := &keyplanev1.Campaign{Id: c.ID, Name: c.Name, Scope: campaignScopeProto(c.ScopeKind), ScopeId: c.ScopeID,
		Deadline: timestamppb.New(c.Deadline), ReminderInterval: durationpb.New(c.ReminderInterval), DefaultAction: reviewDecisionProto(c.DefaultAction),
		UnusedDays: int32(c.UnusedDays), SignInClientId: c.SignInClientID, Status: c.Status, CreatedBy: c.CreatedBy,
		CreateTime: timestamppb.New(c.CreatedAt), Items: int32(c.Items), Decided: int32(c.Decided)}
	if !c.ClosedAt.IsZero() {
		out.CloseTime = timestamppb.New(c.ClosedAt)
	}
	return out
}

func itemProto(i schema.ReviewItem, now time.Time, unusedDays int) *keyplanev1.ReviewItem {
	out := &keyplanev1.ReviewItem{Id: i.ID, CampaignId: i.CampaignID, Kind: i.Kind, SubjectId: i.SubjectID, SubjectName: i.SubjectName,
		SubjectKind: i.SubjectKind, BindingId: i.BindingID, GroupId: i.GroupID, GroupName: i.GroupName, RoleIds: i.RoleIDs, RoleNames: i.RoleNames,
		Scopes: i.Scopes, Sensitive: i.Sensitive, ReviewerId: i.ReviewerID, ReviewerName: i.ReviewerName, Risks: i.Risks(now, unusedDays),
		Decision: reviewDecisionProto(i.Decision), Justification: i.Justification, DecidedBy: i.DecidedBy, Defaulted: i.Defaulted,
		Applied: i.Applied, NewRoleId: i.NewRoleID, NewScope: i.NewScope}
	if !i.LastUsed.IsZero() {
		out.LastUsed = timestamppb.New(i.LastUsed)
	}
	if !i.DecidedAt.IsZero() {
		out.DecideTime = timestamppb.New(i.DecidedAt)
	}
	return out
}
