package region_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/routing/client"
	"github.com/keyplane/keyplane/schema"
)

func decisionClient(url, token string) keyplanev1connect.DecisionServiceClient {
	return keyplanev1connect.NewDecisionServiceClient(http.DefaultClient, url, connect.WithInterceptors(bearerInterceptor(token)))
}

// logged waits until the decision log has written decision id (the log writes in
// batches every 100 ms) and returns it as GetDecision does.
func logged(t *testing.T, c keyplanev1connect.DecisionServiceClient, tenant, id string) *keyplanev1.LoggedDecision {
	t.Helper()
	for range 200 {
		r, err := c.GetDecision(context.Background(), connect.NewRequest(&keyplanev1.GetDecisionRequest{TenantId: tenant, DecisionId: id}))
		if err == nil {
			return r.Msg.Decision
		}
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("get decision %s: %v", id, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("decision %s was never logged", id)
	return nil
}

func (f *policyFixture) checkQuiet(t *testing.T, identity, perm, resource string) *keyplanev1.CheckResponse {
	t.Helper()
	r, err := f.check.Check(context.Background(), connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: identity}, Permission: perm, Resource: resource}))
	if err != nil {
		t.Fatalf("check %s %s: %v", perm, resource, err)
	}
	return r.Msg
}

// TestGetDecisionExplains: a logged decision comes back with why: denied decisions
// and explained checks carry the engine's trace, allowed unexplained ones their
// reason and deciding bindings; another tenant cannot read it.
func TestGetDecisionExplains(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPolicyFixture(t)
	dc := decisionClient(f.url, secret)
	allow, _ := f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "group", PrincipalId: f.group, RoleId: f.editor, Scope: "projects/alpha/"})
	deny, _ := f.bind(t, &keyplanev1.CreateBindingRequest{Effect: keyplanev1.Effect_EFFECT_DENY, PrincipalKind: "identity", PrincipalId: f.alice,
		RoleId: f.editor, Scope: "projects/alpha/secret/"})

	t.Run("denied without explain keeps the trace", func(t *testing.T) {
		r := f.checkQuiet(t, f.alice, "docs.document.write", "projects/alpha/secret/plan")
		if r.Allowed || len(r.Trace) != 0 {
			t.Fatalf("check: %+v, want denied without a trace in the answer", r)
		}
		d := logged(t, dc, "acme", r.DecisionId)
		if d.Allowed || d.Decision != keyplanev1.Decision_DECISION_DENY || !slices.Contains(d.BindingIds, deny) {
			t.Fatalf("decision: %+v", d)
		}
		if len(d.Trace) != 2 || !slices.ContainsFunc(d.Trace, func(l string) bool { return strings.Contains(l, deny) }) ||
			!slices.ContainsFunc(d.Trace, func(l string) bool { return strings.Contains(l, allow) }) {
			t.Fatalf("trace %q: want one line for each candidate binding (%s, %s)", d.Trace, allow, deny)
		}
		if d.PrincipalId != f.alice || d.Permission != "docs.document.write" || d.Resource != "projects/alpha/secret/plan" ||
			d.PolicyRevision != r.PolicyRevision || d.HomeRegion != "us-east" || d.ServingRegion != "us-east" || d.ServingNode == "" ||
			d.Time == nil || d.Latency == nil || d.Reason != r.Reason {
			t.Fatalf("decision fields: %+v (check %+v)", d, r)
		}
	})
	t.Run("default deny has a trace too", func(t *testing.T) {
		r := f.checkQuiet(t, f.alice, "billing.invoice.read", "projects/alpha/x")
		d := logged(t, dc, "acme", r.DecisionId)
		if d.Allowed || len(d.Trace) == 0 {
			t.Fatalf("decision: %+v, want denied with a trace of the candidates that did not match", d)
		}
	})
	t.Run("allowed without explain keeps reason and bindings", func(t *testing.T) {
		r := f.checkQuiet(t, f.alice, "docs.document.write", "projects/alpha/doc")
		d := logged(t, dc, "acme", r.DecisionId)
		if !d.Allowed || d.Decision != keyplanev1.Decision_DECISION_ALLOW || !slices.Equal(d.BindingIds, []string{allow}) ||
			!strings.Contains(d.Reason, allow) || len(d.Trace) != 0 {
			t.Fatalf("decision: %+v, want allowed by %s, no trace", d, allow)
		}
	})
	t.Run("allowed with explain keeps the trace", func(t *testing.T) {
		r := f.allowed(t, f.alice, "docs.document.write", "projects/alpha/doc", nil)
		d := logged(t, dc, "acme", r.DecisionId)
		if !d.Allowed || !slices.Equal(d.Trace, r.Trace) || len(d.Trace) == 0 {
			t.Fatalf("decision trace %q, want the answer's %q", d.Trace, r.Trace)
		}
	})
	t.Run("not another tenant's", func(t *testing.T) {
		r := f.checkQuiet(t, f.alice, "docs.document.write", "projects/alpha/doc")
		logged(t, dc, "acme", r.DecisionId)
		if _, err := f.admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "other", Name: "Other", HomeRegion: "us-east"})); err != nil {
			t.Fatal(err)
		}
		_, err := dc.GetDecision(ctx, connect.NewRequest(&keyplanev1.GetDecisionRequest{TenantId: "other", DecisionId: r.DecisionId}))
		wantCode(t, err, connect.CodeNotFound, "decision")
	})
	t.Run("bad id", func(t *testing.T) {
		_, err := dc.GetDecision(ctx, connect.NewRequest(&keyplanev1.GetDecisionRequest{TenantId: "acme", DecisionId: "not-a-uuid"}))
		wantCode(t, err, connect.CodeInvalidArgument, "decision_id")
		_, err = dc.GetDecision(ctx, connect.NewRequest(&keyplanev1.GetDecisionRequest{TenantId: "nope", DecisionId: r0()}))
		wantCode(t, err, connect.CodeNotFound, "tenant")
	})
}

func r0() string { return "00000000-0000-4000-8000-000000000000" }

// TestListDecisions pages through filtered listings over real HTTP, newest first,
// and refuses bad filters naming the field.
func TestListDecisions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPolicyFixture(t)
	dc := decisionClient(f.url, secret)
	f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "group", PrincipalId: f.group, RoleId: f.editor, Scope: "projects/alpha/"})

	// Before: 6 checks; an hour later (the node's clock): 9 more.
	var early, late []string // decision ids, oldest first
	for i := range 6 {
		who := []string{f.alice, f.owner}[i%2]
		early = append(early, f.checkQuiet(t, who, "docs.document.read", "projects/alpha/d"+string(rune('0'+i))).DecisionId)
	}
	f.clock.Advance(time.Hour)
	split := f.clock.Now().Add(-30 * time.Minute)
	for i := range 9 {
		who := []string{f.alice, f.owner, f.bot}[i%3]
		res := []string{"projects/alpha/x", "projects/alpha_2/y", "projects/beta/z"}[i/3]
		late = append(late, f.checkQuiet(t, who, "docs.document.read", res).DecisionId)
	}
	logged(t, dc, "acme", late[len(late)-1])
	logged(t, dc, "acme", early[len(early)-1])

	list := func(t *testing.T, req *keyplanev1.ListDecisionsRequest) []*keyplanev1.LoggedDecision {
		t.Helper()
		req.TenantId, req.PageSize = "acme", 2
		var out []*keyplanev1.LoggedDecision
		for pages := 1; ; pages++ {
			r, err := dc.ListDecisions(ctx, connect.NewRequest(req))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, r.Msg.Decisions...)
			if r.Msg.NextPageToken == "" {
				return out
			}
			if pages > 50 {
				t.Fatal("the listing does not end")
			}
			req.PageToken = r.Msg.NextPageToken
		}
	}
	ids := func(ds []*keyplanev1.LoggedDecision) []string {
		var out []string
		for _, d := range ds {
			out = append(out, d.Id)
		}
		return out
	}
	newestFirst := func(ids ...[]string) []string {
		out := slices.Concat(ids...)
		slices.Reverse(out)
		return out
	}
	pick := func(from []string, keep ...int) []string {
		var out []string
		for _, i := range keep {
			out = append(out, from[i])
		}
		return out
	}

	for _, tc := range []struct {
		name string
		req  *keyplanev1.ListDecisionsRequest
		want []string
	}{
		{"everything, over 8 pages", &keyplanev1.ListDecisionsRequest{}, newestFirst(early, late)},
		{"principal", &keyplanev1.ListDecisionsRequest{PrincipalId: f.bot}, newestFirst(pick(late, 2, 5, 8))},
		{"allowed (alice, in the group, on alpha)", &keyplanev1.ListDecisionsRequest{Outcome: keyplanev1.Decision_DECISION_ALLOW},
			newestFirst(pick(early, 0, 2, 4), pick(late, 0))},
		{"denied of alice", &keyplanev1.ListDecisionsRequest{PrincipalId: f.alice, Outcome: keyplanev1.Decision_DECISION_DENY},
			newestFirst(pick(late, 3, 6))},
		{"exact resource", &keyplanev1.ListDecisionsRequest{Resource: "projects/alpha/x"}, newestFirst(pick(late, 0, 1, 2))},
		{"resource prefix", &keyplanev1.ListDecisionsRequest{ResourcePrefix: "projects/alpha/"}, newestFirst(early, pick(late, 0, 1, 2))},
		{"resource prefix mid-segment", &keyplanev1.ListDecisionsRequest{ResourcePrefix: "projects/alpha_"}, newestFirst(pick(late, 3, 4, 5))},
		{"permission", &keyplanev1.ListDecisionsRequest{Permission: "docs.document.write"}, nil},
		{"since", &keyplanev1.ListDecisionsRequest{StartTime: timestamppb.New(split)}, newestFirst(late)},
		{"until", &keyplanev1.ListDecisionsRequest{EndTime: timestamppb.New(split)}, newestFirst(early)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ids(list(t, tc.req)); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v\nwant %v", got, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		name, field string
		req         *keyplanev1.ListDecisionsRequest
	}{
		{"principal not a uuid", "principal_id", &keyplanev1.ListDecisionsRequest{PrincipalId: "alice"}},
		{"start after end", "start_time", &keyplanev1.ListDecisionsRequest{StartTime: timestamppb.New(split), EndTime: timestamppb.New(split.Add(-time.Second))}},
		{"unknown outcome", "outcome", &keyplanev1.ListDecisionsRequest{Outcome: keyplanev1.Decision(7)}},
		{"bad resource", "resource", &keyplanev1.ListDecisionsRequest{Resource: "a//b"}},
		{"bad prefix", "resource_prefix", &keyplanev1.ListDecisionsRequest{ResourcePrefix: "a b"}},
		{"both resource filters", "resource_prefix", &keyplanev1.ListDecisionsRequest{Resource: "a", ResourcePrefix: "a"}},
		{"bad permission", "permission", &keyplanev1.ListDecisionsRequest{Permission: "read"}},
		{"bad time", "end_time", &keyplanev1.ListDecisionsRequest{EndTime: &timestamppb.Timestamp{Seconds: -1 << 60}}},
		{"page size", "page_size", &keyplanev1.ListDecisionsRequest{PageSize: 5000}},
		{"page token", "page_token", &keyplanev1.ListDecisionsRequest{PageToken: "garbage!"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.TenantId = "acme"
			_, err := dc.ListDecisions(ctx, connect.NewRequest(tc.req))
			wantCode(t, err, connect.CodeInvalidArgument, tc.field)
		})
	}

	// A standard client speaking Connect JSON: the decision is always present (a bool
	// false is dropped), the trace of a deny is there (alice has a candidate binding).
	body, _ := json.Marshal(map[string]any{"tenantId": "acme", "principalId": f.alice, "outcome": "DECISION_DENY", "pageSize": 1})
	req, _ := http.NewRequest(http.MethodPost, f.url+"/"+keyplanev1connect.DecisionServiceName+"/ListDecisions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got struct {
		Decisions []struct {
			ID       string   `json:"id"`
			Decision string   `json:"decision"`
			Allowed  *bool    `json:"allowed"`
			Trace    []string `json:"trace"`
		} `json:"decisions"`
		Next string `json:"nextPageToken"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &got) != nil || len(got.Decisions) != 1 {
		t.Fatalf("Connect JSON: %d %s", resp.StatusCode, raw)
	}
	if d := got.Decisions[0]; d.ID != late[6] || d.Decision != "DECISION_DENY" || d.Allowed != nil || len(d.Trace) == 0 || got.Next == "" {
		t.Fatalf("Connect JSON decision: %s (want %s, denied, with a trace and a next page)", raw, late[6])
	}
}

// TestDecisionReadNeedsPermission: reading the decision log takes iam.decisions.read,
// which the built-in security-auditor role has.
func TestDecisionReadNeedsPermission(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newAdminFixture(t, nil)
	_, none := f.identityWith(t, "nobody", "*", "iam.audit.read")
	_, reader := f.identityWith(t, "reader", "*", region.PermDecisionsRead)
	auditor, auditorTok := f.identityWith(t, "auditor", "*")
	f.bind(t, auditor, schema.RoleSecurityAuditor, "*")
	// A grant on a narrower scope is not a grant on resource "tenant".
	_, scoped := f.identityWith(t, "scoped", "projects/", region.PermDecisionsRead)

	req := &keyplanev1.ListDecisionsRequest{TenantId: "acme"}
	for _, tok := range []string{none, scoped} {
		_, err := decisionClient(f.url, tok).ListDecisions(ctx, connect.NewRequest(req))
		wantCode(t, err, connect.CodePermissionDenied, region.PermDecisionsRead)
		_, err = decisionClient(f.url, tok).GetDecision(ctx, connect.NewRequest(&keyplanev1.GetDecisionRequest{TenantId: "acme", DecisionId: r0()}))
		wantCode(t, err, connect.CodePermissionDenied, region.PermDecisionsRead)
	}
	for _, tok := range []string{reader, auditorTok} {
		if _, err := decisionClient(f.url, tok).ListDecisions(ctx, connect.NewRequest(req)); err != nil {
			t.Fatalf("with iam.decisions.read: %v", err)
		}
		_, err := decisionClient(f.url, tok).GetDecision(ctx, connect.NewRequest(&keyplanev1.GetDecisionRequest{TenantId: "acme", DecisionId: r0()}))
		wantCode(t, err, connect.CodeNotFound, "decision")
	}
}

// TestDecisionRetention: the operator sets a tenant's retention (audited, bounded);
// decisions older than it are not returned at once, and the pruner deletes them
// while newer ones and other tenants' stay.
func TestDecisionRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// This node does not prune: what its reads hide, they hide by the retention alone.
	f := &policyFixture{fixture: newFixtureWith(t, func(c *region.Config) { c.DecisionPruneEvery = -1 })}
	f.check = keyplanev1connect.NewCheckServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearerInterceptor(secret)))
	dc := decisionClient(f.url, secret)

	got, err := f.admin.GetTenant(ctx, connect.NewRequest(&keyplanev1.GetTenantRequest{Id: "acme"}))
	if err != nil || got.Msg.Tenant.DecisionRetention.AsDuration() != 90*24*time.Hour {
		t.Fatalf("default retention: %v %v", got, err)
	}
	for _, bad := range []time.Duration{time.Hour, 11 * 365 * 24 * time.Hour, 36*time.Hour + time.Millisecond} {
		_, err := f.admin.UpdateTenant(ctx, connect.NewRequest(&keyplanev1.UpdateTenantRequest{Id: "acme", DecisionRetention: durationpb.New(bad)}))
		wantCode(t, err, connect.CodeInvalidArgument, "decision_retention")
	}
	_, err = f.admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "zero", Name: "Z", HomeRegion: "us-east",
		DecisionRetention: durationpb.New(0)}))
	wantCode(t, err, connect.CodeInvalidArgument, "decision_retention")
	other, err := f.admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "other", Name: "Other", HomeRegion: "us-east",
		DecisionRetention: durationpb.New(30 * 24 * time.Hour)}))
	if err != nil || other.Msg.Tenant.DecisionRetention.AsDuration() != 30*24*time.Hour {
		t.Fatalf("create with a retention: %v %v", other, err)
	}
	up, err := f.admin.UpdateTenant(ctx, connect.NewRequest(&keyplanev1.UpdateTenantRequest{Id: "acme", DecisionRetention: durationpb.New(24 * time.Hour)}))
	if err != nil || up.Msg.Tenant.DecisionRetention.AsDuration() != 24*time.Hour {
		t.Fatalf("update: %v %v", up, err)
	}
	evs := f.listAudit(t, &keyplanev1.ListAuditEventsRequest{TenantId: "acme"})
	if !slices.ContainsFunc(evs, func(e *keyplanev1.AuditEvent) bool {
		return e.Action == "tenant.update" && e.After.AsMap()["decision_retention"] == "24h0m0s" && e.Before.AsMap()["decision_retention"] == "2160h0m0s"
	}) {
		t.Fatalf("no tenant.update audit event with the retention change: %v", evs)
	}

	// Decisions of acme and other, then 25 hours pass (the node's clock), then newer
	// decisions of acme.
	otherCheck := func() string {
		r, err := f.check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "other",
			Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: other.Msg.AdminIdentityId}, Permission: "docs.document.read", Resource: "a"}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.DecisionId
	}
	var old, fresh []string
	for range 3 {
		old = append(old, f.checkQuiet(t, f.owner, "docs.document.read", "old/doc").DecisionId)
	}
	otherOld := otherCheck()
	logged(t, dc, "acme", old[2])
	logged(t, dc, "other", otherOld)
	f.clock.Advance(25 * time.Hour)
	for range 2 {
		fresh = append(fresh, f.checkQuiet(t, f.owner, "docs.document.read", "new/doc").DecisionId)
	}
	logged(t, dc, "acme", fresh[1])

	// Reads hide the expired ones whether or not the pruner has run.
	_, err = dc.GetDecision(ctx, connect.NewRequest(&keyplanev1.GetDecisionRequest{TenantId: "acme", DecisionId: old[0]}))
	wantCode(t, err, connect.CodeNotFound, "decision")
	l, err := dc.ListDecisions(ctx, connect.NewRequest(&keyplanev1.ListDecisionsRequest{TenantId: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, d := range l.Msg.Decisions {
		listed = append(listed, d.Id)
	}
	if want := []string{fresh[1], fresh[0]}; !slices.Equal(listed, want) {
		t.Fatalf("listed %v, want only the fresh %v", listed, want)
	}
	logged(t, dc, "other", otherOld) // 25 hours is within other's 30 days

	// A second node of the region, on the same clock, prunes: acme's 3 expired rows go,
	// nothing else does.
	// Counted before the pruning node starts: its first round comes within 25 ms.
	sc := schema.Scope{TenantID: "acme", Region: "us-east"}
	if n, err := f.store.CountDecisions(ctx, sc); err != nil || n != len(old)+len(fresh) {
		t.Fatalf("before pruning acme has %d decisions (%v), want %d", n, err, len(old)+len(fresh))
	}
	cfg := authConfig(f.kek, "us-east-2")
	cfg.Now, cfg.DecisionPruneEvery, cfg.MetricsPublic = f.clock.Now, 20*time.Millisecond, true
	pruner := testNode(t, f.store, cfg)
	for i := 0; ; i++ {
		n, err := f.store.CountDecisions(ctx, sc)
		if err != nil {
			t.Fatal(err)
		}
		if n == len(fresh) {
			break
		}
		if i > 400 {
			t.Fatalf("acme still has %d decisions, want %d after pruning", n, len(fresh))
		}
		time.Sleep(25 * time.Millisecond)
	}
	if n, err := f.store.CountDecisions(ctx, schema.Scope{TenantID: "other", Region: "us-east"}); err != nil || n != 1 {
		t.Fatalf("other has %d decisions (%v), want its 1", n, err)
	}
	if got := metricValue(t, pruner+"/metrics", "keyplane_decisions_pruned_total"); got != float64(len(old)) {
		t.Fatalf("keyplane_decisions_pruned_total = %v, want %d", got, len(old))
	}
}

// TestDecisionsRoutedToHomeRegion: decision reads are tenant-scoped like checks: a
// read at another region's node is forwarded to the tenant's home region, which
// decided and stored the decision.
func TestDecisionsRoutedToHomeRegion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pair := newRoutedPair(t)
	opts := connect.WithInterceptors(client.Tenant(), bearerInterceptor(secret))
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, pair.us, opts)
	if _, err := admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "Acme", HomeRegion: "us-east"})); err != nil {
		t.Fatal(err)
	}
	alice, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Alice"}))
	if err != nil {
		t.Fatal(err)
	}
	check := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, pair.eu, opts)
	r, err := check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: alice.Msg.Identity.Id}, Permission: "docs.document.read", Resource: "docs/x"}))
	if err != nil || r.Msg.Allowed {
		t.Fatalf("check: %v %v", r, err)
	}
	eu := keyplanev1connect.NewDecisionServiceClient(http.DefaultClient, pair.eu, opts)
	var d *keyplanev1.GetDecisionResponse
	for i := 0; ; i++ {
		resp, err := eu.GetDecision(ctx, connect.NewRequest(&keyplanev1.GetDecisionRequest{TenantId: "acme", DecisionId: r.Msg.DecisionId}))
		if err == nil {
			if got := resp.Header().Get(routing.RouteHeader); got != routing.RouteForwarded {
				t.Fatalf("%s = %q, want %q", routing.RouteHeader, got, routing.RouteForwarded)
			}
			d = resp.Msg
			break
		}
		if connect.CodeOf(err) != connect.CodeNotFound || i > 200 {
			t.Fatalf("get decision through eu-west: %v", err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	if d.Decision.ServingRegion != "us-east" || d.Decision.HomeRegion != "us-east" || d.Decision.Decision != keyplanev1.Decision_DECISION_DENY {
		t.Fatalf("decision: %+v, want decided and stored in us-east", d.Decision)
	}
	l, err := eu.ListDecisions(ctx, connect.NewRequest(&keyplanev1.ListDecisionsRequest{TenantId: "acme"}))
	if err != nil || len(l.Msg.Decisions) != 1 || l.Msg.Decisions[0].Id != r.Msg.DecisionId || l.Header().Get(routing.RouteHeader) != routing.RouteForwarded {
		t.Fatalf("list through eu-west: %v %v", l, err)
	}
}
