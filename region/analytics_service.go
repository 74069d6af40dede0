package region

import (
	"context"
	"slices"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// Permissions of the AnalyticsService, held on resource "tenant".
const (
	// PermAnalyticsRead lets the holder list the tenant's alerts and webhooks.
	PermAnalyticsRead = "iam.analytics.read"
	// PermAnalyticsManage lets the holder add and delete webhooks.
	PermAnalyticsManage = "iam.analytics.manage"
)

// AnalyticsService implements keyplane.v1.AnalyticsService. The authority
// interceptor has checked iam.analytics.read or iam.analytics.manage before a handler
// runs.
type AnalyticsService struct {
	node *Node
}

var _ keyplanev1connect.AnalyticsServiceHandler = (*AnalyticsService)(nil)

func (s *AnalyticsService) scope(ctx context.Context, tenantID string) (schema.Scope, error) {
	return (&AdminService{node: s.node}).scope(ctx, tenantID)
}

func (s *AnalyticsService) ListAlerts(ctx context.Context, req *connect.Request[keyplanev1.ListAlertsRequest]) (*connect.Response[keyplanev1.ListAlertsResponse], error) {
	m := req.Msg
	if m.Kind != "" && !slices.Contains(AlertKinds, m.Kind) {
		return nil, fieldError("kind", "must be one of new_region, new_network, sensitive_permission, off_hours, impossible_travel, deny_burst, policy_drift")
	}
	if m.PageSize < 0 || m.PageSize > 100 {
		return nil, fieldError("page_size", "must be between 0 and 100")
	}
	size := int(m.PageSize)
	if size == 0 {
		size = 50
	}
	sc, err := s.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	as, next, err := s.node.store.ListAlerts(ctx, sc, schema.AlertFilter{IdentityID: m.IdentityId, Kind: m.Kind}, schema.Page{Size: size, Token: m.PageToken})
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListAlertsResponse{NextPageToken: next}
	for _, a := range as {
		pa := &keyplanev1.Alert{Id: a.ID, CreateTime: timestamppb.New(a.At), IdentityId: a.IdentityID, Kind: a.Kind, Value: a.Value, Reason: a.Reason,
			Region: a.Region, Node: a.Node}
		for _, d := range a.Deliveries {
			pd := &keyplanev1.WebhookDelivery{WebhookId: d.WebhookID, State: d.State, Attempts: int32(d.Attempts), LastError: d.LastError}
			if !d.DeliveredAt.IsZero() {
				pd.DeliverTime = timestamppb.New(d.DeliveredAt)
			}
			pa.Deliveries = append(pa.Deliveries, pd)
		}
		out.Alerts = append(out.Alerts, pa)
	}
	return connect.NewResponse(out), nil
}

func (s *AnalyticsService) CreateWebhook(ctx context.Context, req *connect.Request[keyplanev1.CreateWebhookRequest]) (*connect.Response[keyplanev1.CreateWebhookResponse], error) {
	w := req.Msg.Webhook
	if w == nil {
		return nil, fieldError("webhook", "required")
	}
	c := s.node.cfg.Analytics
	if _, err := validateWebhookURL(w.Url, webhookPolicy{allowLoopback: c.WebhookAllowLoopback, allowPrivate: c.WebhookAllowPrivate}); err != nil {
		return nil, err
	}
	if s.node.cfg.KEK == nil {
		return nil, ErrNoKEK
	}
	sc, err := s.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	id, secret := schema.NewWebhookID(), newWebhookSecret()
	out, err := s.node.store.CreateWebhook(ctx, change(ctx), sc, schema.Webhook{ID: id, URL: w.Url, Description: w.Description,
		SealedSecret: s.node.cfg.KEK.Seal([]byte(secret), schema.WebhookSecretAD(sc.TenantID, id))})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.CreateWebhookResponse{Webhook: webhookToProto(out), Secret: secret}), nil
}

func (s *AnalyticsService) ListWebhooks(ctx context.Context, req *connect.Request[keyplanev1.ListWebhooksRequest]) (*connect.Response[keyplanev1.ListWebhooksResponse], error) {
	sc, err := s.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	ws, err := s.node.store.ListWebhooks(ctx, sc)
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListWebhooksResponse{}
	for _, w := range ws {
		out.Webhooks = append(out.Webhooks, webhookToProto(w))
	}
	return connect.NewResponse(out), nil
}

func (s *AnalyticsService) DeleteWebhook(ctx context.Context, req *connect.Request[keyplanev1.DeleteWebhookRequest]) (*connect.Response[keyplanev1.DeleteWebhookResponse], error) {
	sc, err := s.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	if err := s.node.store.DeleteWebhook(ctx, change(ctx), sc, req.Msg.Id); err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.DeleteWebhookResponse{}), nil
}

func webhookToProto(w schema.Webhook) *keyplanev1.Webhook {
	return &keyplanev1.Webhook{Id: w.ID, Url: w.URL, Description: w.Description, CreateTime: timestamppb.New(w.CreatedAt)}
}
