package region_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// ruleFixture: groups eng and sales, each bound to its own role on its own scope, so a
// check tells whether an identity is a member.
type ruleFixture struct {
	*policyFixture
	eng, sales string // group ids
}

func newRuleFixture(t *testing.T) *ruleFixture {
	t.Helper()
	ctx := context.Background()
	f := &ruleFixture{policyFixture: newPolicyFixture(t)}
	for _, g := range []struct {
		name string
		id   *string
	}{{"eng", &f.eng}, {"sales", &f.sales}} {
		r, err := f.admin.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: g.name}))
		if err != nil {
			t.Fatal(err)
		}
		*g.id = r.Msg.Group.Id
		f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "group", PrincipalId: r.Msg.Group.Id, RoleId: f.viewer, Scope: g.name + "/"})
	}
	return f
}

// member reports whether identity is in group (by its group's grant).
func (f *ruleFixture) member(t *testing.T, identity, group string) bool {
	t.Helper()
	return f.allowed(t, identity, "docs.document.read", group+"/doc", nil).Allowed
}

func (f *ruleFixture) human(t *testing.T, name string, attrs map[string]any) string {
	t.Helper()
	r, err := f.admin.CreateIdentity(context.Background(), connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: name, Attributes: mustStruct(t, attrs)}))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg.Identity.Id
}

func (f *ruleFixture) setTeam(t *testing.T, id, dept string) {
	t.Helper()
	if _, err := f.admin.UpdateIdentity(context.Background(), connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: id,
		Attributes: mustStruct(t, map[string]any{"team": dept})})); err != nil {
		t.Fatal(err)
	}
}

// TestMembershipRulesJoinerMoverLeaver: a rule gives existing identities their
// membership at once and new ones at creation; a mover loses the memberships its old
// attributes gave (no accumulation) and gains the new ones; manual memberships are
// kept; disabling takes rule memberships away and enabling gives them back; deleting the
// rule removes only what it gave.
func TestMembershipRulesJoinerMoverLeaver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newRuleFixture(t)
	early := f.human(t, "early", map[string]any{"team": "eng"})

	eng, err := f.admin.CreateMembershipRule(ctx, connect.NewRequest(&keyplanev1.CreateMembershipRuleRequest{TenantId: "acme",
		Name: "engineering", Condition: `attributes.team == "eng"`, GroupIds: []string{f.eng}}))
	if err != nil {
		t.Fatal(err)
	}
	if got := eng.Msg.MembershipsAdded; len(got) != 1 || got[0].IdentityId != early || got[0].GroupId != f.eng {
		t.Errorf("rule creation added %v, want early in eng", got)
	}
	if _, err := f.admin.CreateMembershipRule(ctx, connect.NewRequest(&keyplanev1.CreateMembershipRuleRequest{TenantId: "acme",
		Name: "sales", Condition: `identity.attributes.team == "sales"`, GroupIds: []string{f.sales}})); err != nil {
		t.Fatal(err)
	}

	joiner := f.human(t, "joiner", map[string]any{"team": "eng"})
	if !f.member(t, joiner, "eng") || f.member(t, joiner, "sales") {
		t.Fatal("joiner with department eng: want in eng only")
	}
	// A manual membership of sales for someone in eng stays whatever the attributes.
	// (The fixture's alice has a department, not a team: no rule matches her.)
	if _, err := f.admin.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: "acme", GroupId: f.sales, IdentityId: early})); err != nil {
		t.Fatal(err)
	}

	f.setTeam(t, joiner, "sales")
	if f.member(t, joiner, "eng") || !f.member(t, joiner, "sales") {
		t.Fatal("mover eng → sales: want in sales only (no accumulation)")
	}
	f.setTeam(t, early, "legal")
	if f.member(t, early, "eng") || !f.member(t, early, "sales") {
		t.Fatal("mover eng → legal: want out of eng, still in sales (manual)")
	}

	// A rule membership is not removed by hand: the rule would give it back.
	_, err = f.admin.RemoveGroupMember(ctx, connect.NewRequest(&keyplanev1.RemoveGroupMemberRequest{TenantId: "acme", GroupId: f.sales, IdentityId: joiner}))
	wantCode(t, err, connect.CodeFailedPrecondition, "membership rule")

	// Leaver: disabled identities hold no rule memberships; enabling restores them.
	if _, err := f.admin.DisableIdentity(ctx, connect.NewRequest(&keyplanev1.DisableIdentityRequest{TenantId: "acme", Id: joiner})); err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.EnableIdentity(ctx, connect.NewRequest(&keyplanev1.EnableIdentityRequest{TenantId: "acme", Id: joiner})); err != nil {
		t.Fatal(err)
	}
	if !f.member(t, joiner, "sales") {
		t.Fatal("re-enabled mover: want back in sales")
	}

	// A manual addition on top of a rule membership makes it manual: kept after the
	// rule goes.
	if _, err := f.admin.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: "acme", GroupId: f.eng, IdentityId: f.human(t, "pinned", map[string]any{"team": "eng"})})); err != nil {
		t.Fatal(err)
	}
	del, err := f.admin.DeleteMembershipRule(ctx, connect.NewRequest(&keyplanev1.DeleteMembershipRuleRequest{TenantId: "acme", Id: eng.Msg.Rule.Id}))
	if err != nil {
		t.Fatal(err)
	}
	if len(del.Msg.MembershipsRemoved) != 0 {
		t.Errorf("deleting the eng rule removed %v; the only eng member left by rule is pinned, whose membership is manual", del.Msg.MembershipsRemoved)
	}

	rules, err := f.admin.ListMembershipRules(ctx, connect.NewRequest(&keyplanev1.ListMembershipRulesRequest{TenantId: "acme"}))
	if err != nil || len(rules.Msg.Rules) != 1 || rules.Msg.Rules[0].Name != "sales" || !slices.Equal(rules.Msg.Rules[0].GroupIds, []string{f.sales}) {
		t.Fatalf("rules after delete: %v %v", rules, err)
	}
	// Reviewers list the manual members: access no rule explains.
	for source, want := range map[string]int{"manual": 1, "rule": 1} {
		ms, err := f.admin.ListGroupMembers(ctx, connect.NewRequest(&keyplanev1.ListGroupMembersRequest{TenantId: "acme", GroupId: f.sales, Source: source}))
		if err != nil {
			t.Fatal(err)
		}
		if len(ms.Msg.Members) != want || ms.Msg.Members[0].Source != source {
			t.Errorf("sales members by %s: %v, want %d", source, ms.Msg.Members, want)
		}
	}
	// A group a rule gives cannot be deleted from under it, even with cascade.
	_, err = f.admin.DeleteGroup(ctx, connect.NewRequest(&keyplanev1.DeleteGroupRequest{TenantId: "acme", GroupId: f.sales, Cascade: true}))
	wantCode(t, err, connect.CodeFailedPrecondition, "membership rules")

	// Every change is audited with the memberships it moved.
	evs, err := f.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", Action: "identity.update", PageSize: 100}))
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for _, e := range evs.Msg.Events {
		if _, ok := e.After.AsMap()["rule_memberships"]; ok {
			moved++
		}
	}
	if moved != 2 {
		t.Errorf("%d identity.update events record rule memberships, want 2 (the two movers)", moved)
	}
}

// TestMembershipRulesBadInput: conditions, groups and names are checked, naming the
// field, and a refused rule writes nothing.
func TestMembershipRulesBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newRuleFixture(t)
	create := func(name, cond string, groups ...string) error {
		_, err := f.admin.CreateMembershipRule(ctx, connect.NewRequest(&keyplanev1.CreateMembershipRuleRequest{TenantId: "acme",
			Name: name, Condition: cond, GroupIds: groups}))
		return err
	}
	wantCode(t, create("r", `attributes.department`, f.eng), connect.CodeInvalidArgument, "condition")
	wantCode(t, create("r", `request.ip == "1"`, f.eng), connect.CodeInvalidArgument, "condition")
	wantCode(t, create("r", `true`), connect.CodeInvalidArgument, "group_ids")
	wantCode(t, create("r", `true`, "not-a-uuid"), connect.CodeInvalidArgument, "group_ids[0]")
	wantCode(t, create("r", `true`, f.eng, "0b6f3a4e-5c1d-4f7e-9a2b-3c4d5e6f7a8b"), connect.CodeInvalidArgument, "group_ids[1]")
	wantCode(t, create("r", `true`, f.eng, f.eng), connect.CodeInvalidArgument, "group_ids[1]")
	wantCode(t, create("", `true`, f.eng), connect.CodeInvalidArgument, "name")
	if err := create("everyone", `true`, f.eng); err != nil {
		t.Fatal(err)
	}
	wantCode(t, create("everyone", `true`, f.sales), connect.CodeAlreadyExists, "name")
	rules, err := f.admin.ListMembershipRules(ctx, connect.NewRequest(&keyplanev1.ListMembershipRulesRequest{TenantId: "acme"}))
	if err != nil || len(rules.Msg.Rules) != 1 {
		t.Fatalf("after refused creations: %v %v, want the one rule", rules, err)
	}
	_, err = f.admin.UpdateMembershipRule(ctx, connect.NewRequest(&keyplanev1.UpdateMembershipRuleRequest{TenantId: "acme",
		Id: rules.Msg.Rules[0].Id, GroupIds: []string{f.sales}}))
	wantCode(t, err, connect.CodeInvalidArgument, "set_group_ids")
	_, err = f.admin.GetMembershipRule(ctx, connect.NewRequest(&keyplanev1.GetMembershipRuleRequest{TenantId: "acme", Id: "0b6f3a4e-5c1d-4f7e-9a2b-3c4d5e6f7a8b"}))
	wantCode(t, err, connect.CodeNotFound, "membership rule")
}

// TestSecurityMembershipRuleIsNoWayUp: a rule hands a group's grants to everyone it
// matches, for ever after; an identity that may write groups but does not hold what a
// group grants cannot target it with a rule, and no tenant identity can target a group
// bound to a privileged role (whose membership needs a second person), through a real
// server.
func TestSecurityMembershipRuleIsNoWayUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newAdminFixture(t, nil)
	group := func(name, role string) string {
		g, err := f.op.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: name}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.op.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "group",
			PrincipalId: g.Msg.Group.Id, RoleId: role, Scope: "*"})); err != nil {
			t.Fatal(err)
		}
		return g.Msg.Group.Id
	}
	admins := group("admins", schema.RoleTenantAdmin)
	auditors := group("auditors", schema.RoleSecurityAuditor)
	_, tok := f.identityWith(t, "group-writer", "*", "iam.groups.write")
	gw := adminClient(f.url, tok)
	create := func(g string) error {
		_, err := gw.CreateMembershipRule(ctx, connect.NewRequest(&keyplanev1.CreateMembershipRuleRequest{TenantId: "acme",
			Name: "everyone-" + g, Condition: `true`, GroupIds: []string{g}}))
		return err
	}
	wantCode(t, create(admins), connect.CodeFailedPrecondition, "privileged")
	wantCode(t, create(auditors), connect.CodePermissionDenied, "lacks iam.audit.read")
	// The access admin holds what an empty group grants (nothing): allowed.
	empty, err := f.op.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: "empty"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := create(empty.Msg.Group.Id); err != nil {
		t.Fatalf("a rule over a group granting nothing: %v", err)
	}
	rules, err := f.op.ListMembershipRules(ctx, connect.NewRequest(&keyplanev1.ListMembershipRulesRequest{TenantId: "acme"}))
	if err != nil || len(rules.Msg.Rules) != 1 {
		t.Fatalf("rules: %v %v, want only the allowed one", rules, err)
	}
}

// TestSecurityAttributesAreNoWayIntoRuleGroups (review of issue 15): a membership rule
// turns attributes into group memberships, so whoever sets an identity's attributes
// would decide its groups. An identity manager creates a service account, mints it a
// client (allowed: it holds nothing yet), then sets the attribute a finance rule reads:
// refused, like adding the member by hand; creating it with that attribute likewise.
// Nothing is written, and the account never reaches the finance permission.
func TestSecurityAttributesAreNoWayIntoRuleGroups(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newAdminFixture(t, nil)
	role, err := f.op.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "finance", Permissions: []string{"finance.*"}}))
	if err != nil {
		t.Fatal(err)
	}
	g, err := f.op.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: "finance"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.op.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "group",
		PrincipalId: g.Msg.Group.Id, RoleId: role.Msg.Role.Id, Scope: "*"})); err != nil {
		t.Fatal(err)
	}
	if _, err := f.op.CreateMembershipRule(ctx, connect.NewRequest(&keyplanev1.CreateMembershipRuleRequest{TenantId: "acme",
		Name: "finance", Condition: `attributes.team == "finance"`, GroupIds: []string{g.Msg.Group.Id}})); err != nil {
		t.Fatal(err)
	}
	_, tok := f.identityWith(t, "mgr", "*", "iam.identities.create", "iam.identities.update", "iam.credentials.manage")
	mgr := adminClient(f.url, tok)
	x, err := mgr.CreateIdentity(ctx, connect.NewRequest(f.serviceAccount("x")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mgr.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: x.Msg.Identity.Id, Name: "c"})); err != nil {
		t.Fatalf("minting for an identity that holds nothing: %v", err)
	}
	finance, err := structpb.NewStruct(map[string]any{"team": "finance"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = mgr.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: x.Msg.Identity.Id, Attributes: finance}))
	wantCode(t, err, connect.CodePermissionDenied, "membership rule")
	req := f.serviceAccount("y")
	req.Attributes = finance
	_, err = mgr.CreateIdentity(ctx, connect.NewRequest(req))
	wantCode(t, err, connect.CodePermissionDenied, "membership rule")

	check := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearerInterceptor(secret)))
	d, err := check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: x.Msg.Identity.Id}, Permission: "finance.ledger.write", Resource: "books/1"}))
	if err != nil || d.Msg.Allowed {
		t.Fatalf("x after the refused change: %v %v, want denied", d, err)
	}
	got, err := f.op.GetIdentity(ctx, connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: x.Msg.Identity.Id}))
	if err != nil || got.Msg.Identity.Attributes.AsMap()["team"] != nil {
		t.Fatalf("x's attributes after the refused change: %v %v", got, err)
	}
	// The operator may (break-glass, audited).
	if _, err := f.op.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: x.Msg.Identity.Id, Attributes: finance})); err != nil {
		t.Fatalf("the operator setting the attribute: %v", err)
	}
}

// TestSecurityPrivilegedRolesNeverReachRuleGroups (review of issue 15): a rule hands
// its groups to everyone it matches without a second person, so a privileged role
// never reaches a rule's group: not by binding it to the group, not by making a role
// already bound there privileged, not by a rule targeting a group that has one — not
// even for the operator. And a SCIM-managed group is never a rule's target.
func TestSecurityPrivilegedRolesNeverReachRuleGroups(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newRuleFixture(t) // groups eng and sales, bound to the viewer role
	if _, err := f.admin.CreateMembershipRule(ctx, connect.NewRequest(&keyplanev1.CreateMembershipRuleRequest{TenantId: "acme",
		Name: "eng", Condition: `attributes.team == "eng"`, GroupIds: []string{f.eng}})); err != nil {
		t.Fatal(err)
	}
	_, err := f.admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "group",
		PrincipalId: f.eng, RoleId: schema.RoleTenantAdmin, Scope: "*"}))
	wantCode(t, err, connect.CodeFailedPrecondition, "membership rule")
	privileged := true
	_, err = f.admin.UpdateRole(ctx, connect.NewRequest(&keyplanev1.UpdateRoleRequest{TenantId: "acme", RoleId: f.viewer, Privileged: &privileged}))
	wantCode(t, err, connect.CodeFailedPrecondition, "membership rule")

	// sales gets tenant-admin (the operator may bind it): no rule may target it then.
	if _, err := f.admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "group",
		PrincipalId: f.sales, RoleId: schema.RoleTenantAdmin, Scope: "*"})); err != nil {
		t.Fatal(err)
	}
	_, err = f.admin.CreateMembershipRule(ctx, connect.NewRequest(&keyplanev1.CreateMembershipRuleRequest{TenantId: "acme",
		Name: "sales", Condition: `attributes.team == "sales"`, GroupIds: []string{f.sales}}))
	wantCode(t, err, connect.CodeFailedPrecondition, "privileged")

	// A SCIM client's group: the directory decides its members, not a rule.
	sf, c, _ := scimFixture(t)
	sg := c.do(t, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"pushed"}`).must(t, http.StatusCreated)
	_, err = sf.op.CreateMembershipRule(ctx, connect.NewRequest(&keyplanev1.CreateMembershipRuleRequest{TenantId: "acme",
		Name: "pushed", Condition: `true`, GroupIds: []string{sg["id"].(string)}}))
	wantCode(t, err, connect.CodeInvalidArgument, "SCIM")
}

// TestFrozenNHIsLoseRuleMemberships: an NHI frozen by its owner's offboarding (no
// manager to hand it to) loses the memberships rules gave it, in the offboarding's
// transaction; assigning an owner unfreezes it and gives them back.
func TestFrozenNHIsLoseRuleMemberships(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newRuleFixture(t)
	if _, err := f.admin.CreateMembershipRule(ctx, connect.NewRequest(&keyplanev1.CreateMembershipRuleRequest{TenantId: "acme",
		Name: "bots", Condition: `identity.kind == "service_account"`, GroupIds: []string{f.eng}})); err != nil {
		t.Fatal(err)
	}
	owner := f.human(t, "owner", map[string]any{})
	req := &keyplanev1.CreateIdentityRequest{TenantId: "acme", Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, DisplayName: "bot",
		OwnerId: owner, Purpose: "tests", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}
	bot, err := f.admin.CreateIdentity(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	id := bot.Msg.Identity.Id
	inEng := func() bool {
		t.Helper()
		ms, err := f.admin.ListGroupMembers(ctx, connect.NewRequest(&keyplanev1.ListGroupMembersRequest{TenantId: "acme", GroupId: f.eng}))
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(ms.Msg.Members, func(m *keyplanev1.GroupMember) bool { return m.IdentityId == id })
	}
	if !inEng() {
		t.Fatal("the service account is not in eng by rule")
	}
	if _, err := f.admin.OffboardIdentity(ctx, connect.NewRequest(&keyplanev1.OffboardIdentityRequest{TenantId: "acme", IdentityId: owner})); err != nil {
		t.Fatal(err)
	}
	if inEng() {
		t.Fatal("the frozen service account kept its rule membership")
	}
	newOwner := f.human(t, "new-owner", map[string]any{})
	if _, err := f.admin.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: id, OwnerId: &newOwner})); err != nil {
		t.Fatal(err)
	}
	if !inEng() {
		t.Fatal("the unfrozen service account did not get its rule membership back")
	}
}
