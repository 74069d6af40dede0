package region_test

import (
	"context"
	"encoding/json"
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
)

// reviewClient is a ReviewService client with a bearer token.
func reviewClient(url, token string) keyplanev1connect.ReviewServiceClient {
	return keyplanev1connect.NewReviewServiceClient(http.DefaultClient, url, connect.WithInterceptors(
		connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+token)
				return next(ctx, req)
			}
		})))
}

// reviewWorld is tenant acme with people and access to review:
//
//   - manager (human, password) manages alice (human, password);
//   - alice holds docs-reader on docs/ directly, and is a member of group eng, which
//     holds docs-reader on wiki/;
//   - the fixture's bot (owned by the fixture's owner) holds payments-admin (a
//     sensitive role) on payments/.
type reviewWorld struct {
	*fixture
	ops                    keyplanev1connect.ReviewServiceClient
	manager, alice         string
	managerEmail           string
	reader, payments       string // roles
	narrow                 string // a role narrower than reader
	eng                    string // group
	aliceDocs, engWiki     string // bindings
	botPayments            string
	managerTok, aliceTok   string
	ownerTok               string
	deadline               *timestamppb.Timestamp
	adminTok               string // an identity holding iam.reviews.* on the tenant
	adminID                string
	managerRvw, aliceRvw   keyplanev1connect.ReviewServiceClient
	ownerRvw, adminRvw     keyplanev1connect.ReviewServiceClient
	ownerEmail, aliceEmail string
}

func newReviewWorld(t *testing.T, configure func(*region.Config)) *reviewWorld {
	t.Helper()
	ctx := context.Background()
	f := newFixtureWith(t, func(c *region.Config) {
		c.IssuerBase = ""
		if configure != nil {
			configure(c)
		}
	})
	w := &reviewWorld{fixture: f, ops: reviewClient(f.url, secret), managerEmail: "meg@acme.example", aliceEmail: "alice@acme.example",
		ownerEmail: "owen@acme.example", deadline: timestamppb.New(time.Now().Add(7 * 24 * time.Hour))}
	human := func(name, email, manager string) string {
		h, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
			Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: name, Email: email, ManagerId: manager}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.admin.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: h.Msg.Identity.Id,
			Password: opPassword})); err != nil {
			t.Fatal(err)
		}
		return h.Msg.Identity.Id
	}
	w.manager = human("Meg Manager", w.managerEmail, "")
	w.alice = human("Alice Liddell", w.aliceEmail, w.manager)
	if _, err := f.admin.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: f.owner,
		Email: &w.ownerEmail})); err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: f.owner,
		Password: opPassword})); err != nil {
		t.Fatal(err)
	}
	role := func(name string, sensitive bool, perms ...string) string {
		r, err := f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: name, Permissions: perms, Sensitive: sensitive}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Role.Id
	}
	w.reader = role("docs-reader", false, "docs.document.read", "docs.document.list")
	w.narrow = role("docs-list", false, "docs.document.list")
	w.payments = role("payments-admin", true, "payments.*")
	g, err := f.admin.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: "eng"}))
	if err != nil {
		t.Fatal(err)
	}
	w.eng = g.Msg.Group.Id
	bind := func(kind, principal, role, scope string) string {
		b, err := f.admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: kind,
			PrincipalId: principal, RoleId: role, Scope: scope}))
		if err != nil {
			t.Fatal(err)
		}
		return b.Msg.Binding.Id
	}
	w.aliceDocs = bind("identity", w.alice, w.reader, "docs/")
	w.engWiki = bind("group", w.eng, w.reader, "wiki/")
	w.botPayments = bind("identity", f.bot, w.payments, "payments/")
	if _, err := f.admin.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: "acme", GroupId: w.eng, IdentityId: w.alice})); err != nil {
		t.Fatal(err)
	}
	// A campaign administrator: a service account holding iam.reviews.* on the tenant.
	adm, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, DisplayName: "review-admin", OwnerId: w.manager, Purpose: "reviews",
		ExpireTime: timestamppb.New(time.Now().Add(24 * time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	w.adminID = adm.Msg.Identity.Id
	bind("identity", w.adminID, role("review-admin", false, "iam.reviews.*"), "tenant")
	cl, err := f.admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: w.adminID, Name: "reviews"}))
	if err != nil {
		t.Fatal(err)
	}
	w.adminTok = clientToken(t, f.url, cl.Msg.ClientId, cl.Msg.ClientSecret)
	w.managerTok, w.aliceTok, w.ownerTok = w.login(t, w.managerEmail), w.login(t, w.aliceEmail), w.login(t, w.ownerEmail)
	w.managerRvw, w.aliceRvw = reviewClient(f.url, w.managerTok), reviewClient(f.url, w.aliceTok)
	w.ownerRvw, w.adminRvw = reviewClient(f.url, w.ownerTok), reviewClient(f.url, w.adminTok)
	return w
}

func clientToken(t *testing.T, base, id, sec string) string {
	t.Helper()
	r := postForm(t, base+"/t/acme/oauth2/token", id, sec, map[string][]string{"grant_type": {"client_credentials"}})
	tok, _ := r.body["access_token"].(string)
	if tok == "" {
		t.Fatalf("client_credentials: %d %v", r.status, r.body)
	}
	return tok
}

func (w *reviewWorld) login(t *testing.T, email string) string {
	t.Helper()
	r, err := w.auth.Login(context.Background(), connect.NewRequest(&keyplanev1.LoginRequest{TenantId: "acme", Email: email, Password: opPassword}))
	if err != nil {
		t.Fatalf("login %s: %v", email, err)
	}
	return r.Msg.Token.AccessToken
}

func (w *reviewWorld) create(t *testing.T, c keyplanev1connect.ReviewServiceClient, req *keyplanev1.CreateCampaignRequest) *keyplanev1.Campaign {
	t.Helper()
	req.TenantId = "acme"
	if req.Deadline == nil {
		req.Deadline = w.deadline
	}
	r, err := c.CreateCampaign(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("create campaign: %v", err)
	}
	return r.Msg.Campaign
}

func (w *reviewWorld) items(t *testing.T, campaign string) []*keyplanev1.ReviewItem {
	t.Helper()
	r, err := w.ops.ListItems(context.Background(), connect.NewRequest(&keyplanev1.ListItemsRequest{TenantId: "acme", CampaignId: campaign}))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg.Items
}

// item finds the item of subject for a binding or a group.
func item(t *testing.T, items []*keyplanev1.ReviewItem, subject, bindingOrGroup string) *keyplanev1.ReviewItem {
	t.Helper()
	for _, it := range items {
		if it.SubjectId == subject && (it.BindingId == bindingOrGroup || it.GroupId == bindingOrGroup) {
			return it
		}
	}
	t.Fatalf("no item of %s for %s among %d", subject, bindingOrGroup, len(items))
	return nil
}

func decide(c keyplanev1connect.ReviewServiceClient, campaign, itemID string, d keyplanev1.ReviewDecision, why string) (*keyplanev1.ReviewItem, error) {
	r, err := c.DecideItem(context.Background(), connect.NewRequest(&keyplanev1.DecideItemRequest{TenantId: "acme", CampaignId: campaign,
		ItemId: itemID, Decision: d, Justification: why}))
	if err != nil {
		return nil, err
	}
	return r.Msg.Item, nil
}

func (w *reviewWorld) bindingExists(t *testing.T, id string) bool {
	t.Helper()
	r, err := w.admin.ListBindings(context.Background(), connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(r.Msg.Bindings, func(b *keyplanev1.Binding) bool { return b.Id == id })
}

func (w *reviewWorld) isMember(t *testing.T, group, identity string) bool {
	t.Helper()
	r, err := w.admin.ListGroupMembers(context.Background(), connect.NewRequest(&keyplanev1.ListGroupMembersRequest{TenantId: "acme", GroupId: group}))
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(r.Msg.Members, func(m *keyplanev1.GroupMember) bool { return m.IdentityId == identity })
}

// TestCampaignEndToEnd runs one campaign over the tenant through the real API: the
// items and their reviewers, a use recorded by the decision log, a keep, a revoke of
// a membership, a narrowing modify, a close that revokes the undecided sensitive
// access by default, and the evidence report in JSON and Markdown.
func TestCampaignEndToEnd(t *testing.T) {
	t.Parallel()
	w := newReviewWorld(t, nil)
	ctx := context.Background()
	// alice uses her direct binding once: the decision log records it.
	checks := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, w.url, connect.WithInterceptors(bearerInterceptor(secret)))
	if r, err := checks.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme", Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: w.alice},
		Permission: "docs.document.read",
		Resource:   "docs/plan"})); err != nil || r.Msg.Decision != keyplanev1.Decision_DECISION_ALLOW {
		t.Fatalf("check: %v %v", r, err)
	}
	waitDecisionLogged(t, w, w.alice)

	c := w.create(t, w.adminRvw, &keyplanev1.CreateCampaignRequest{Name: "Q3 review", Scope: keyplanev1.CampaignScope_CAMPAIGN_SCOPE_TENANT})
	if c.Status != "open" || c.DefaultAction != keyplanev1.ReviewDecision_REVIEW_DECISION_KEEP || c.Items < 4 {
		t.Fatalf("campaign %+v", c)
	}
	items := w.items(t, c.Id)
	docs, eng, bot := item(t, items, w.alice, w.aliceDocs), item(t, items, w.alice, w.eng), item(t, items, w.bot, w.botPayments)
	if docs.ReviewerId != w.manager || eng.ReviewerId != w.manager || bot.ReviewerId != w.owner {
		t.Fatalf("reviewers: docs %s eng %s bot %s; want manager %s, manager, owner %s", docs.ReviewerId, eng.ReviewerId, bot.ReviewerId, w.manager, w.owner)
	}
	if eng.Kind != "membership" || docs.Kind != "binding" || !bot.Sensitive || docs.Sensitive {
		t.Fatalf("kinds and sensitivity: %+v %+v %+v", docs, eng, bot)
	}
	if docs.LastUsed == nil || slices.Contains(docs.Risks, "never_used") || !slices.Contains(eng.Risks, "never_used") ||
		!slices.Contains(bot.Risks, "sensitive") {
		t.Fatalf("last use and risks: docs %v %v, eng %v, bot %v", docs.LastUsed, docs.Risks, eng.Risks, bot.Risks)
	}
	// The manager's own items, over plain Connect JSON.
	code, body := (&adminFixture{url: w.url}).call(t, "/keyplane.v1.ReviewService/ListItems", w.managerTok, map[string]any{"tenantId": "acme", "mine": true})
	if code != "" || !strings.Contains(body, docs.Id) || !strings.Contains(body, eng.Id) || strings.Contains(body, bot.Id) {
		t.Fatalf("my items: %s %s", code, body)
	}

	if _, err := decide(w.managerRvw, c.Id, docs.Id, keyplanev1.ReviewDecision_REVIEW_DECISION_KEEP, "writes the docs weekly"); err != nil {
		t.Fatal(err)
	}
	got, err := decide(w.managerRvw, c.Id, eng.Id, keyplanev1.ReviewDecision_REVIEW_DECISION_REVOKE, "moved to sales")
	if err != nil {
		t.Fatal(err)
	}
	if got.Applied != "membership removed" || w.isMember(t, w.eng, w.alice) || !w.bindingExists(t, w.engWiki) {
		t.Fatalf("revoke of the membership: %q, member %v, group binding kept %v", got.Applied, w.isMember(t, w.eng, w.alice), w.bindingExists(t, w.engWiki))
	}
	// Closing defaults the rest: the bot's sensitive access is revoked.
	cl, err := w.adminRvw.CloseCampaign(ctx, connect.NewRequest(&keyplanev1.CloseCampaignRequest{TenantId: "acme", CampaignId: c.Id}))
	if err != nil {
		t.Fatal(err)
	}
	if cl.Msg.Campaign.Status != "closed" || cl.Msg.Campaign.Decided != cl.Msg.Campaign.Items {
		t.Fatalf("closed campaign %+v", cl.Msg.Campaign)
	}
	if w.bindingExists(t, w.botPayments) || !w.bindingExists(t, w.aliceDocs) {
		t.Fatalf("after close: bot's sensitive binding exists %v, alice's kept binding exists %v", w.bindingExists(t, w.botPayments), w.bindingExists(t, w.aliceDocs))
	}
	if _, err := w.adminRvw.CloseCampaign(ctx, connect.NewRequest(&keyplanev1.CloseCampaignRequest{TenantId: "acme", CampaignId: c.Id})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("second close: %v", err)
	}

	ev, err := w.adminRvw.GetEvidence(ctx, connect.NewRequest(&keyplanev1.GetEvidenceRequest{TenantId: "acme", CampaignId: c.Id, Format: "json"}))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Campaign struct{ ID, Name, Scope string }
		Controls []struct{ Framework, ID string }
		Summary  struct{ Items, Kept, Revoked, Defaulted int }
		Items    []struct {
			ID, Decision, Justification, Applied string
			SubjectID                            string     `json:"subject_id"`
			ReviewerID                           string     `json:"reviewer_id"`
			Defaulted                            bool       `json:"defaulted"`
			LastUsed                             *time.Time `json:"last_used"`
		}
	}
	if err := json.Unmarshal([]byte(ev.Msg.Content), &rep); err != nil || ev.Msg.ContentType != "application/json" {
		t.Fatalf("evidence json: %v %s", err, ev.Msg.Content)
	}
	var controls []string
	for _, k := range rep.Controls {
		controls = append(controls, k.Framework+" "+k.ID)
	}
	if rep.Campaign.ID != c.Id || rep.Campaign.Scope != "tenant" || !slices.Equal(controls, []string{"SOC 2 CC6.2", "SOC 2 CC6.3", "ISO/IEC 27001:2022 A.5.18"}) {
		t.Fatalf("evidence header: %+v %v", rep.Campaign, controls)
	}
	if rep.Summary.Items != int(c.Items) || rep.Summary.Kept < 1 || rep.Summary.Revoked < 2 || rep.Summary.Defaulted != int(c.Items)-2 {
		t.Fatalf("evidence summary %+v (items %d)", rep.Summary, c.Items)
	}
	byID := map[string]int{}
	for k, it := range rep.Items {
		byID[it.ID] = k
	}
	d, e, b := rep.Items[byID[docs.Id]], rep.Items[byID[eng.Id]], rep.Items[byID[bot.Id]]
	if d.Decision != "keep" || d.Justification != "writes the docs weekly" || d.ReviewerID != w.manager || d.Defaulted || d.LastUsed == nil || d.Applied != "kept" {
		t.Fatalf("evidence of the kept item: %+v", d)
	}
	if e.Decision != "revoke" || e.Applied != "membership removed" || e.Justification != "moved to sales" {
		t.Fatalf("evidence of the revoked membership: %+v", e)
	}
	if b.Decision != "revoke" || !b.Defaulted || b.Applied != "binding deleted" || !strings.Contains(b.Justification, "sensitive") {
		t.Fatalf("evidence of the defaulted sensitive item: %+v", b)
	}
	md, err := w.adminRvw.GetEvidence(ctx, connect.NewRequest(&keyplanev1.GetEvidenceRequest{TenantId: "acme", CampaignId: c.Id, Format: "md"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# Access review evidence: Q3 review", "| SOC 2 | CC6.2 ", "| SOC 2 | CC6.3 ", "| ISO/IEC 27001:2022 | A.5.18 ",
		"writes the docs weekly", "moved to sales", "## Defaulted at the deadline\n", "- bot: payments-admin on payments/ → revoke (binding deleted)\n", "not applied: this change would leave tenant",
		"Meg Manager"} {
		if !strings.Contains(md.Msg.Content, want) {
			t.Errorf("markdown evidence lacks %q:\n%s", want, md.Msg.Content)
		}
	}
	// Erasing a subject erases its name from the items; the decisions stay.
	w.offboard(t, w.alice, nil)
	if _, err := w.admin.EraseIdentity(ctx, connect.NewRequest(&keyplanev1.EraseIdentityRequest{TenantId: "acme", IdentityId: w.alice})); err != nil {
		t.Fatal(err)
	}
	for _, it := range w.items(t, c.Id) {
		if it.SubjectId == w.alice && (it.SubjectName != "erased" || it.Decision == keyplanev1.ReviewDecision_REVIEW_DECISION_UNSPECIFIED) {
			t.Errorf("erased subject's item: %+v", it)
		}
	}
	// Every decision is in the audit log, with the revocations it applied.
	for _, action := range []string{"review.decide", "review.default", "review.campaign_close", "group.remove_member", "binding.delete"} {
		r, err := w.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", Action: action}))
		if err != nil || len(r.Msg.Events) == 0 {
			t.Errorf("audit %s: %d events, %v", action, len(r.Msg.Events), err)
		}
	}
}

// waitDecisionLogged waits until the decision log has written a decision about
// principal (the log writes in batches, in the background).
func waitDecisionLogged(t *testing.T, w *reviewWorld, principal string) {
	t.Helper()
	dec := keyplanev1connect.NewDecisionServiceClient(http.DefaultClient, w.url, connect.WithInterceptors(bearerInterceptor(secret)))
	for range 200 {
		r, err := dec.ListDecisions(context.Background(), connect.NewRequest(&keyplanev1.ListDecisionsRequest{TenantId: "acme", PrincipalId: principal}))
		if err == nil && len(r.Msg.Decisions) > 0 {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatal("the decision was never logged")
}

// TestCampaignBadInput: every refusal of ReviewService through a real server, with
// its code and the field it names, and nothing applied.
func TestCampaignBadInput(t *testing.T) {
	t.Parallel()
	w := newReviewWorld(t, nil)
	ctx := context.Background()
	create := func(c keyplanev1connect.ReviewServiceClient, req *keyplanev1.CreateCampaignRequest) error {
		req.TenantId = "acme"
		_, err := c.CreateCampaign(ctx, connect.NewRequest(req))
		return err
	}
	future := w.deadline
	tenant := keyplanev1.CampaignScope_CAMPAIGN_SCOPE_TENANT
	for _, tc := range []struct {
		name  string
		c     keyplanev1connect.ReviewServiceClient
		req   *keyplanev1.CreateCampaignRequest
		code  connect.Code
		field string
	}{
		{"no deadline", w.adminRvw, &keyplanev1.CreateCampaignRequest{Name: "x", Scope: tenant}, connect.CodeInvalidArgument, "deadline"},
		{"past deadline", w.adminRvw, &keyplanev1.CreateCampaignRequest{Name: "x", Scope: tenant, Deadline: timestamppb.New(time.Now().Add(-time.Hour))},
			connect.CodeInvalidArgument, "deadline"},
		{"no scope", w.adminRvw, &keyplanev1.CreateCampaignRequest{Name: "x", Deadline: future}, connect.CodeInvalidArgument, "scope"},
		{"no name", w.adminRvw, &keyplanev1.CreateCampaignRequest{Scope: tenant, Deadline: future}, connect.CodeInvalidArgument, "name"},
		{"unknown role", w.adminRvw, &keyplanev1.CreateCampaignRequest{Name: "x", Scope: keyplanev1.CampaignScope_CAMPAIGN_SCOPE_ROLE,
			ScopeId: "8c0d7f3e-2f0a-4c55-9f59-3f1e0b0c1d2e", Deadline: future}, connect.CodeInvalidArgument, "scope_id"},
		{"scope id on tenant", w.adminRvw, &keyplanev1.CreateCampaignRequest{Name: "x", Scope: tenant, ScopeId: w.eng, Deadline: future},
			connect.CodeInvalidArgument, "scope_id"},
		{"short reminders", w.adminRvw, &keyplanev1.CreateCampaignRequest{Name: "x", Scope: tenant, Deadline: future,
			ReminderInterval: durationpb.New(time.Minute)}, connect.CodeInvalidArgument, "reminder_interval"},
		{"modify as default", w.adminRvw, &keyplanev1.CreateCampaignRequest{Name: "x", Scope: tenant, Deadline: future,
			DefaultAction: keyplanev1.ReviewDecision_REVIEW_DECISION_MODIFY}, connect.CodeInvalidArgument, "default_action"},
		{"unknown sign-in client", w.adminRvw, &keyplanev1.CreateCampaignRequest{Name: "x", Scope: tenant, Deadline: future, SignInClientId: "nope"},
			connect.CodeInvalidArgument, "sign_in_client_id"},
		{"caller cannot see the scope", w.managerRvw, &keyplanev1.CreateCampaignRequest{Name: "x", Scope: tenant, Deadline: future},
			connect.CodePermissionDenied, "iam.reviews.manage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := create(tc.c, tc.req)
			wantCode(t, err, tc.code, tc.field)
		})
	}
	// A campaign manager of one group only: its group, not another, not the tenant.
	g2, err := w.admin.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: "ops"}))
	if err != nil {
		t.Fatal(err)
	}
	gm, err := w.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "eng-reviews", Permissions: []string{"iam.reviews.manage"}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "identity",
		PrincipalId: w.manager, RoleId: gm.Msg.Role.Id, Scope: "groups/" + w.eng})); err != nil {
		t.Fatal(err)
	}
	group := keyplanev1.CampaignScope_CAMPAIGN_SCOPE_GROUP
	wantCode(t, create(w.managerRvw, &keyplanev1.CreateCampaignRequest{Name: "ops", Scope: group, ScopeId: g2.Msg.Group.Id, Deadline: future}),
		connect.CodePermissionDenied, "groups/"+g2.Msg.Group.Id)
	engCampaign := w.create(t, w.managerRvw, &keyplanev1.CreateCampaignRequest{Name: "eng", Scope: group, ScopeId: w.eng})
	// eng's only member is alice: her membership of it.
	if engCampaign.Items != 1 {
		t.Fatalf("group campaign items: %d", engCampaign.Items)
	}

	c := w.create(t, w.adminRvw, &keyplanev1.CreateCampaignRequest{Name: "all", Scope: tenant})
	items := w.items(t, c.Id)
	docs := item(t, items, w.alice, w.aliceDocs)
	other := item(t, w.items(t, engCampaign.Id), w.alice, w.eng)
	keep := keyplanev1.ReviewDecision_REVIEW_DECISION_KEEP
	revoke := keyplanev1.ReviewDecision_REVIEW_DECISION_REVOKE
	for _, tc := range []struct {
		name     string
		c        keyplanev1connect.ReviewServiceClient
		campaign string
		item     string
		d        keyplanev1.ReviewDecision
		why      string
		code     connect.Code
		field    string
	}{
		{"the subject decides its own access", w.aliceRvw, c.Id, docs.Id, keep, "mine", connect.CodePermissionDenied, "own access"},
		{"not the reviewer", w.ownerRvw, c.Id, docs.Id, revoke, "no", connect.CodePermissionDenied, "not the reviewer"},
		{"item of another campaign", w.managerRvw, c.Id, other.Id, keep, "ok", connect.CodeInvalidArgument, "item_id"},
		{"no justification", w.managerRvw, c.Id, docs.Id, keep, "  ", connect.CodeInvalidArgument, "justification"},
		{"no decision", w.managerRvw, c.Id, docs.Id, keyplanev1.ReviewDecision_REVIEW_DECISION_UNSPECIFIED, "x", connect.CodeInvalidArgument, "decision"},
		{"unknown item", w.managerRvw, c.Id, "8c0d7f3e-2f0a-4c55-9f59-3f1e0b0c1d2e", keep, "x", connect.CodeNotFound, "item_id"},
		{"malformed item", w.managerRvw, c.Id, "nope", keep, "x", connect.CodeInvalidArgument, "item_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decide(tc.c, tc.campaign, tc.item, tc.d, tc.why)
			wantCode(t, err, tc.code, tc.field)
		})
	}
	if !w.bindingExists(t, w.aliceDocs) {
		t.Fatal("a refused decision deleted the binding")
	}
	// Modify must narrow: a wider scope or a role with more permissions is refused.
	modify := func(role, scope string) error {
		_, err := w.managerRvw.DecideItem(ctx, connect.NewRequest(&keyplanev1.DecideItemRequest{TenantId: "acme", CampaignId: c.Id, ItemId: docs.Id,
			Decision: keyplanev1.ReviewDecision_REVIEW_DECISION_MODIFY, Justification: "narrow", NewRoleId: role, NewScope: scope}))
		return err
	}
	wantCode(t, modify("", "*"), connect.CodeInvalidArgument, "new_scope")
	wantCode(t, modify(w.payments, ""), connect.CodeInvalidArgument, "new_role_id")
	r, err := w.managerRvw.DecideItem(ctx, connect.NewRequest(&keyplanev1.DecideItemRequest{TenantId: "acme", CampaignId: c.Id, ItemId: docs.Id,
		Decision: keyplanev1.ReviewDecision_REVIEW_DECISION_MODIFY, Justification: "lists only", NewRoleId: w.narrow, NewScope: "docs/public/"}))
	if err != nil {
		t.Fatal(err)
	}
	if w.bindingExists(t, w.aliceDocs) || !strings.HasPrefix(r.Msg.Item.Applied, "binding replaced by ") {
		t.Fatalf("modify: %q", r.Msg.Item.Applied)
	}
	// A decided item is final.
	_, err = decide(w.managerRvw, c.Id, docs.Id, revoke, "again")
	wantCode(t, err, connect.CodeFailedPrecondition, "item_id")
	// Evidence waits for the close.
	_, err = w.adminRvw.GetEvidence(ctx, connect.NewRequest(&keyplanev1.GetEvidenceRequest{TenantId: "acme", CampaignId: c.Id, Format: "json"}))
	wantCode(t, err, connect.CodeFailedPrecondition, "campaign_id")
	_, err = w.adminRvw.GetEvidence(ctx, connect.NewRequest(&keyplanev1.GetEvidenceRequest{TenantId: "acme", CampaignId: c.Id, Format: "pdf"}))
	wantCode(t, err, connect.CodeInvalidArgument, "format")
	// Reading campaigns needs iam.reviews.read.
	_, err = w.managerRvw.ListCampaigns(ctx, connect.NewRequest(&keyplanev1.ListCampaignsRequest{TenantId: "acme"}))
	wantCode(t, err, connect.CodePermissionDenied, "iam.reviews.read")
	_, err = w.managerRvw.ListItems(ctx, connect.NewRequest(&keyplanev1.ListItemsRequest{TenantId: "acme", CampaignId: c.Id}))
	wantCode(t, err, connect.CodePermissionDenied, "iam.reviews.read")
	// Past the deadline (by the database's clock), decisions are refused.
	eng := item(t, items, w.alice, w.eng)
	if _, err := w.store.Pool().Exec(ctx, `UPDATE review_campaigns SET deadline = now() - INTERVAL '1 second' WHERE id = $1`, c.Id); err != nil {
		t.Fatal(err)
	}
	_, err = decide(w.managerRvw, c.Id, eng.Id, revoke, "late")
	wantCode(t, err, connect.CodeFailedPrecondition, "campaign_id")
	if !w.isMember(t, w.eng, w.alice) {
		t.Fatal("a late decision was applied")
	}
}

// auditAfter lists the after summaries of every audit event of action.
func (w *reviewWorld) auditAfter(t *testing.T, action string) []map[string]any {
	t.Helper()
	var out []map[string]any
	req := &keyplanev1.ListAuditEventsRequest{TenantId: "acme", Action: action, PageSize: 1000}
	for {
		r, err := w.admin.ListAuditEvents(context.Background(), connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range r.Msg.Events {
			out = append(out, e.After.AsMap())
		}
		if r.Msg.NextPageToken == "" {
			return out
		}
		req.PageToken = r.Msg.NextPageToken
	}
}

// TestReviewLoopsRaceActOnce runs two nodes' review loops on one database, racing
// every few milliseconds: each due reminder is sent once (one audit mention per item)
// and, past the deadline, each undecided item gets its default action once and the
// campaign closes once.
func TestReviewLoopsRaceActOnce(t *testing.T) {
	t.Parallel()
	w := newReviewWorld(t, func(c *region.Config) { c.ReviewEvery = 5 * time.Millisecond })
	second := authConfig(w.kek, "us-east-2")
	second.ReviewEvery, second.IssuerBase = 5*time.Millisecond, ""
	testNode(t, w.store, second)
	ctx := context.Background()
	c := w.create(t, w.adminRvw, &keyplanev1.CreateCampaignRequest{Name: "race", Scope: keyplanev1.CampaignScope_CAMPAIGN_SCOPE_NHIS,
		DefaultAction: keyplanev1.ReviewDecision_REVIEW_DECISION_REVOKE})
	items := w.items(t, c.Id)
	if len(items) < 2 {
		t.Fatalf("items: %d", len(items))
	}
	// Make the first reminder due: the items were created an interval ago.
	if _, err := w.store.Pool().Exec(ctx, `UPDATE review_items SET created_at = now() - INTERVAL '8 days' WHERE campaign_id = $1`, c.Id); err != nil {
		t.Fatal(err)
	}
	reminded := func() map[string]int {
		n := map[string]int{}
		for _, a := range w.auditAfter(t, "review.remind") {
			for _, id := range asStrings(a["item_ids"]) {
				n[id]++
			}
		}
		return n
	}
	var got map[string]int
	for range 400 {
		if got = reminded(); len(got) == len(items) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Let both loops run more rounds: nothing new is due.
	time.Sleep(100 * time.Millisecond)
	got = reminded()
	for _, it := range items {
		if it.ReviewerId != "" && got[it.Id] != 1 {
			t.Errorf("item %s reminded %d times, want once", it.Id, got[it.Id])
		}
	}
	// Past the deadline: both loops race to close.
	if _, err := w.store.Pool().Exec(ctx, `UPDATE review_campaigns SET deadline = now() - INTERVAL '1 second' WHERE id = $1`, c.Id); err != nil {
		t.Fatal(err)
	}
	for range 400 {
		g, err := w.ops.GetCampaign(ctx, connect.NewRequest(&keyplanev1.GetCampaignRequest{TenantId: "acme", CampaignId: c.Id}))
		if err != nil {
			t.Fatal(err)
		}
		if g.Msg.Campaign.Status == "closed" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(w.auditAfter(t, "review.campaign_close")); n != 1 {
		t.Fatalf("campaign closed %d times, want once", n)
	}
	defaults := map[string]int{}
	for _, a := range w.auditAfter(t, "review.default") {
		if a["campaign_id"] == c.Id {
			defaults[a["subject_id"].(string)+"/"+a["kind"].(string)]++
		}
	}
	for _, it := range w.items(t, c.Id) {
		if !it.Defaulted || it.Decision != keyplanev1.ReviewDecision_REVIEW_DECISION_REVOKE {
			t.Errorf("item %s after the deadline: %+v", it.Id, it)
		}
	}
	for k, n := range defaults {
		if n != 1 {
			t.Errorf("default action on %s applied %d times", k, n)
		}
	}
	if len(defaults) != len(items) {
		t.Errorf("%d defaults for %d items", len(defaults), len(items))
	}
	if w.bindingExists(t, w.botPayments) {
		t.Error("the bot's binding survived the default revoke")
	}
}
