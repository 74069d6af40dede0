package region_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// analyticsConfig is quick analytics for tests: short flushes and retries, a short
// learning period, loopback webhooks, no drift rounds.
func analyticsConfig(c *region.Config) {
	c.Analytics = region.AnalyticsConfig{FlushEvery: 20 * time.Millisecond, DeliverEvery: 20 * time.Millisecond, LearningEvents: 5,
		WebhookAllowLoopback: true, WebhookBackoff: 10 * time.Millisecond, WebhookAttempts: 4, WebhookTimeout: 2 * time.Second, DriftEvery: -1}
}

func analyticsClient(url, token string) keyplanev1connect.AnalyticsServiceClient {
	return keyplanev1connect.NewAnalyticsServiceClient(http.DefaultClient, url, connect.WithInterceptors(bearerInterceptor(token)))
}

func checkClient(url, token string) keyplanev1connect.CheckServiceClient {
	return keyplanev1connect.NewCheckServiceClient(http.DefaultClient, url, connect.WithInterceptors(bearerInterceptor(token)))
}

// eventually polls cond until it holds (failing after 30 s).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// receiver is a webhook endpoint on 127.0.0.1 that records deliveries and answers
// each with status(n) for the n-th (1-based); block, when set, holds every request
// until it is closed.
type receiver struct {
	srv    *httptest.Server
	status func(n int) int
	block  chan struct{}
	got    chan struct{} // one value per request, as it arrives

	mu   sync.Mutex
	reqs []delivered
}

type delivered struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, status func(n int) int, blocking bool) *receiver {
	r := &receiver{status: status, got: make(chan struct{}, 100)}
	if blocking {
		r.block = make(chan struct{})
	}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, delivered{req.Header.Clone(), body})
		n := len(r.reqs)
		r.mu.Unlock()
		r.got <- struct{}{}
		if r.block != nil {
			select {
			case <-r.block:
			case <-req.Context().Done():
			}
			return
		}
		w.WriteHeader(r.status(n))
	}))
	t.Cleanup(r.srv.Close)
	if blocking {
		t.Cleanup(func() { close(r.block) }) // runs before srv.Close
	}
	return r
}

func (r *receiver) requests() []delivered {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivered(nil), r.reqs...)
}

// triggerSensitiveAlert gives identity a baseline (six reads) and then has it use a
// keyplane permission it never used: one sensitive_permission alert.
func triggerSensitiveAlert(t *testing.T, f *fixture, identity string) {
	t.Helper()
	ctx := context.Background()
	cc := checkClient(f.url, secret)
	check := func(perm, res string) {
		t.Helper()
		if _, err := cc.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: f.tenant,
			Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: identity}, Permission: perm, Resource: res})); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 6 {
		check("docs.doc.read", "docs/"+strconv.Itoa(i))
	}
	sc := schema.Scope{TenantID: f.tenant, Region: "us-east"}
	eventually(t, "the baseline to learn six events", func() bool {
		fs, err := f.store.LoadFeatures(ctx, sc, []string{identity})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range fs {
			if x.Kind == schema.FeatureEvents && x.Count >= 6 {
				return true
			}
		}
		return false
	})
	check("iam.roles.write", "tenant")
}

func listAlerts(t *testing.T, c keyplanev1connect.AnalyticsServiceClient, req *keyplanev1.ListAlertsRequest) []*keyplanev1.Alert {
	t.Helper()
	r, err := c.ListAlerts(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg.Alerts
}

// metricValue reads one series of the node's /metrics (operator secret) whose line
// starts with name{ and contains every label given.
func analyticsMetric(t *testing.T, url, name string, labels ...string) float64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
lines:
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, name+"{") {
			continue
		}
		for _, lb := range labels {
			if !strings.Contains(l, lb) {
				continue lines
			}
		}
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", l, err)
		}
		return v
	}
	t.Fatalf("no series %s with %v", name, labels)
	return 0
}

// TestAnalyticsWebhookRetriedUntilDelivered: an endpoint that answers 500 twice and
// then 200 gets the alert three times, signed, and the delivery is recorded as
// delivered after three attempts; the alert is also an audit event and a metric.
func TestAnalyticsWebhookRetriedUntilDelivered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rcv := newReceiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}, false)
	f := newFixtureWith(t, analyticsConfig)
	ac := analyticsClient(f.url, secret)
	wh, err := ac.CreateWebhook(ctx, connect.NewRequest(&keyplanev1.CreateWebhookRequest{TenantId: f.tenant,
		Webhook: &keyplanev1.Webhook{Url: rcv.srv.URL + "/hooks/keyplane", Description: "SOC"}}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(wh.Msg.Secret, "whsec_") || len(wh.Msg.Secret) < 40 {
		t.Fatalf("secret %q", wh.Msg.Secret)
	}

	triggerSensitiveAlert(t, f, f.tenantAdmin)
	var alert *keyplanev1.Alert
	eventually(t, "the alert's delivery", func() bool {
		as := listAlerts(t, ac, &keyplanev1.ListAlertsRequest{TenantId: f.tenant})
		if len(as) == 1 && len(as[0].Deliveries) == 1 && as[0].Deliveries[0].State == "delivered" {
			alert = as[0]
			return true
		}
		return false
	})
	if alert.Kind != region.AlertSensitive || alert.Value != "iam.roles.write" || alert.IdentityId != f.tenantAdmin || alert.Reason == "" {
		t.Fatalf("alert %v", alert)
	}
	if d := alert.Deliveries[0]; d.Attempts != 3 || d.WebhookId != wh.Msg.Webhook.Id || d.DeliverTime == nil || d.LastError != "" {
		t.Fatalf("delivery %v: want delivered on the third attempt", d)
	}
	reqs := rcv.requests()
	if len(reqs) != 3 {
		t.Fatalf("the endpoint got %d requests, want 3 (500, 500, 200)", len(reqs))
	}
	for i, r := range reqs {
		ts, err := strconv.ParseInt(r.header.Get(region.WebhookTimestampHeader), 10, 64)
		if err != nil {
			t.Fatalf("request %d: timestamp %q", i, r.header.Get(region.WebhookTimestampHeader))
		}
		if got, want := r.header.Get(region.WebhookSignatureHeader), region.WebhookSignature(wh.Msg.Secret, ts, r.body); got != want {
			t.Fatalf("request %d: signature %q, want %q", i, got, want)
		}
		if region.WebhookSignature(wh.Msg.Secret+"x", ts, r.body) == r.header.Get(region.WebhookSignatureHeader) {
			t.Fatal("another secret verifies the signature")
		}
		if r.header.Get(region.WebhookIDHeader) != alert.Id || !strings.Contains(string(r.body), `"kind":"sensitive_permission"`) {
			t.Fatalf("request %d: id %q body %s", i, r.header.Get(region.WebhookIDHeader), r.body)
		}
	}
	if got := analyticsMetric(t, f.url, "keyplane_analytics_alerts_total", `kind="sensitive_permission"`); got != 1 {
		t.Errorf("alerts metric %v, want 1", got)
	}
	if d, r := analyticsMetric(t, f.url, "keyplane_analytics_webhook_deliveries_total", `result="delivered"`),
		analyticsMetric(t, f.url, "keyplane_analytics_webhook_deliveries_total", `result="retry"`); d != 1 || r != 2 {
		t.Errorf("deliveries metric: delivered %v retry %v, want 1 and 2", d, r)
	}
	if evs := f.auditOf(t, "analytics.alert", f.tenantAdmin); len(evs) != 1 {
		t.Errorf("audit events analytics.alert: %d, want 1", len(evs))
	}
	// ListWebhooks never shows the secret again.
	ws, err := ac.ListWebhooks(ctx, connect.NewRequest(&keyplanev1.ListWebhooksRequest{TenantId: f.tenant}))
	if err != nil || len(ws.Msg.Webhooks) != 1 || strings.Contains(ws.Msg.String(), wh.Msg.Secret) {
		t.Fatalf("list webhooks: %v %v", ws, err)
	}
}

// TestAnalyticsWebhookTimeoutNeverBlocksChecks: while the endpoint holds a delivery
// open, checks answer; the delivery times out, is retried, and is given up after the
// bound, recorded as failed.
func TestAnalyticsWebhookTimeoutNeverBlocksChecks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rcv := newReceiver(t, nil, true)
	f := newFixtureWith(t, func(c *region.Config) {
		analyticsConfig(c)
		c.Analytics.WebhookTimeout = 300 * time.Millisecond
		c.Analytics.WebhookAttempts = 2
	})
	ac := analyticsClient(f.url, secret)
	if _, err := ac.CreateWebhook(ctx, connect.NewRequest(&keyplanev1.CreateWebhookRequest{TenantId: f.tenant,
		Webhook: &keyplanev1.Webhook{Url: rcv.srv.URL}})); err != nil {
		t.Fatal(err)
	}
	triggerSensitiveAlert(t, f, f.tenantAdmin)
	select {
	case <-rcv.got:
	case <-time.After(30 * time.Second):
		t.Fatal("no delivery reached the endpoint")
	}
	// The endpoint now holds the delivery open: checks still answer.
	for i := range 20 {
		if _, err := checkClient(f.url, secret).Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: f.tenant,
			Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: f.tenantAdmin}, Permission: "docs.doc.read", Resource: "docs/" + strconv.Itoa(i)})); err != nil {
			t.Fatalf("check while the webhook hangs: %v", err)
		}
	}
	var d *keyplanev1.WebhookDelivery
	eventually(t, "the delivery to give up", func() bool {
		as := listAlerts(t, ac, &keyplanev1.ListAlertsRequest{TenantId: f.tenant, Kind: region.AlertSensitive})
		if len(as) == 1 && len(as[0].Deliveries) == 1 && as[0].Deliveries[0].State == "failed" {
			d = as[0].Deliveries[0]
			return true
		}
		return false
	})
	if d.Attempts != 2 || d.LastError == "" || d.DeliverTime != nil {
		t.Fatalf("delivery %v: want failed after 2 attempts with the last error", d)
	}
	if n := len(rcv.requests()); n != 2 {
		t.Fatalf("the endpoint got %d requests, want 2 (the bound)", n)
	}
	if got := analyticsMetric(t, f.url, "keyplane_analytics_webhook_deliveries_total", `result="failed"`); got != 1 {
		t.Errorf("failed deliveries metric %v, want 1", got)
	}
}

// TestAnalyticsImpossibleTravelAcrossNodes: one token checked in us-east and then in
// ap-south a moment later, through two real nodes, raises impossible travel; the
// decision log records where each check came from.
func TestAnalyticsImpossibleTravelAcrossNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixtureWith(t, analyticsConfig)
	cfg := authConfig(f.kek, "ap-south-1")
	cfg.Region = "ap-south"
	analyticsConfig(&cfg)
	far := testNode(t, f.store, cfg)
	tok := f.exchange(t)
	for _, u := range []string{f.url, far} {
		if _, err := checkClient(u, secret).Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: f.tenant,
			Principal: &keyplanev1.CheckRequest_Token{Token: tok}, Permission: "docs.doc.read", Resource: "docs/1"})); err != nil {
			t.Fatal(err)
		}
	}
	ac := analyticsClient(f.url, secret)
	var as []*keyplanev1.Alert
	eventually(t, "an impossible travel alert", func() bool {
		as = listAlerts(t, ac, &keyplanev1.ListAlertsRequest{TenantId: f.tenant, IdentityId: f.bot})
		return len(as) > 0
	})
	if len(as) != 1 || as[0].Kind != region.AlertImpossibleTravel || as[0].Value != "ap-south↔us-east" {
		t.Fatalf("alerts %v, want one impossible_travel ap-south↔us-east", as)
	}
	var ds []schema.Decision
	eventually(t, "both nodes' decision logs", func() bool {
		var err error
		ds, _, err = f.store.ListDecisions(ctx, schema.Scope{TenantID: f.tenant, Region: "us-east"}, schema.DecisionFilter{PrincipalID: f.bot}, time.Time{}, schema.Page{})
		if err != nil {
			t.Fatal(err)
		}
		return len(ds) >= 2
	})
	entries := map[string]bool{}
	for _, d := range ds {
		entries[d.EntryRegion] = true
		if d.SourceNetwork != "127.0.0.0/24" || d.SessionID == "" || d.ClientID == "" {
			t.Errorf("decision %s: network %q session %q client %q", d.ID, d.SourceNetwork, d.SessionID, d.ClientID)
		}
	}
	if len(ds) != 2 || !entries["us-east"] || !entries["ap-south"] {
		t.Fatalf("decisions: %d from %v, want one entering in us-east and one in ap-south", len(ds), entries)
	}
}

// TestAnalyticsServiceAPI: who may call the service, bad input named by field, the
// webhook life cycle, and a plain Connect JSON call.
func TestAnalyticsServiceAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newAdminFixture(t, analyticsConfig)
	_, readTok := f.identityWith(t, "reader", "*", region.PermAnalyticsRead)
	_, manageTok := f.identityWith(t, "manager", "*", region.PermAnalyticsManage)
	_, nobodyTok := f.identityWith(t, "nobody", "*")
	reader, manager, nobody := analyticsClient(f.url, readTok), analyticsClient(f.url, manageTok), analyticsClient(f.url, nobodyTok)

	_, err := nobody.ListAlerts(ctx, connect.NewRequest(&keyplanev1.ListAlertsRequest{TenantId: "acme"}))
	wantCode(t, err, connect.CodePermissionDenied, region.PermAnalyticsRead)
	_, err = reader.CreateWebhook(ctx, connect.NewRequest(&keyplanev1.CreateWebhookRequest{TenantId: "acme", Webhook: &keyplanev1.Webhook{Url: "https://hooks.example.com/k"}}))
	wantCode(t, err, connect.CodePermissionDenied, region.PermAnalyticsManage)
	if _, err := reader.ListAlerts(ctx, connect.NewRequest(&keyplanev1.ListAlertsRequest{TenantId: "acme"})); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name  string
		call  func() error
		field string
	}{
		{"no webhook", func() error {
			_, err := manager.CreateWebhook(ctx, connect.NewRequest(&keyplanev1.CreateWebhookRequest{TenantId: "acme"}))
			return err
		}, "webhook"},
		{"http", func() error {
			_, err := manager.CreateWebhook(ctx, connect.NewRequest(&keyplanev1.CreateWebhookRequest{TenantId: "acme", Webhook: &keyplanev1.Webhook{Url: "http://hooks.example.com/k"}}))
			return err
		}, "webhook.url"},
		{"private target", func() error {
			_, err := manager.CreateWebhook(ctx, connect.NewRequest(&keyplanev1.CreateWebhookRequest{TenantId: "acme", Webhook: &keyplanev1.Webhook{Url: "https://169.254.169.254/latest"}}))
			return err
		}, "webhook.url"},
		{"long description", func() error {
			_, err := manager.CreateWebhook(ctx, connect.NewRequest(&keyplanev1.CreateWebhookRequest{TenantId: "acme",
				Webhook: &keyplanev1.Webhook{Url: "https://hooks.example.com/k", Description: strings.Repeat("d", 201)}}))
			return err
		}, "webhook.description"},
		{"kind", func() error {
			_, err := reader.ListAlerts(ctx, connect.NewRequest(&keyplanev1.ListAlertsRequest{TenantId: "acme", Kind: "bored"}))
			return err
		}, "kind"},
		{"identity", func() error {
			_, err := reader.ListAlerts(ctx, connect.NewRequest(&keyplanev1.ListAlertsRequest{TenantId: "acme", IdentityId: "alice"}))
			return err
		}, "identity_id"},
		{"page size", func() error {
			_, err := reader.ListAlerts(ctx, connect.NewRequest(&keyplanev1.ListAlertsRequest{TenantId: "acme", PageSize: 1000}))
			return err
		}, "page_size"},
		{"page token", func() error {
			_, err := reader.ListAlerts(ctx, connect.NewRequest(&keyplanev1.ListAlertsRequest{TenantId: "acme", PageToken: "forged"}))
			return err
		}, "page_token"},
		{"delete id", func() error {
			_, err := manager.DeleteWebhook(ctx, connect.NewRequest(&keyplanev1.DeleteWebhookRequest{TenantId: "acme", Id: "x"}))
			return err
		}, "id"},
	} {
		t.Run(c.name, func(t *testing.T) { wantCode(t, c.call(), connect.CodeInvalidArgument, c.field) })
	}

	made, err := manager.CreateWebhook(ctx, connect.NewRequest(&keyplanev1.CreateWebhookRequest{TenantId: "acme", Webhook: &keyplanev1.Webhook{Url: "https://hooks.example.com/k"}}))
	if err != nil {
		t.Fatal(err)
	}
	// A plain Connect JSON call lists it, without the secret.
	code, body := f.call(t, "/keyplane.v1.AnalyticsService/ListWebhooks", readTok, map[string]any{"tenantId": "acme"})
	if code != "" || !strings.Contains(body, made.Msg.Webhook.Id) || strings.Contains(body, made.Msg.Secret) || strings.Contains(body, "secret") {
		t.Fatalf("JSON ListWebhooks: %q %s", code, body)
	}
	code, body = f.call(t, "/keyplane.v1.AnalyticsService/ListAlerts", readTok, map[string]any{"tenantId": "acme", "kind": "nope"})
	if code != "invalid_argument" || !strings.Contains(body, "kind") {
		t.Fatalf("JSON ListAlerts with a bad kind: %q %s", code, body)
	}
	if _, err := manager.DeleteWebhook(ctx, connect.NewRequest(&keyplanev1.DeleteWebhookRequest{TenantId: "acme", Id: made.Msg.Webhook.Id})); err != nil {
		t.Fatal(err)
	}
	_, err = manager.DeleteWebhook(ctx, connect.NewRequest(&keyplanev1.DeleteWebhookRequest{TenantId: "acme", Id: made.Msg.Webhook.Id}))
	wantCode(t, err, connect.CodeNotFound, "webhook")
}
