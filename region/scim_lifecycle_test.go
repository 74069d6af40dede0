package region_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// TestSCIMJoinerMoverLeaver (issue 15): a directory provisions people through SCIM and
// keyplane does the rest. The enterprise department feeds a membership rule (joiner:
// member at creation; mover: out of the old group, into the new one, in the same
// transaction); active false offboards the leaver: its token is dead, its groups are
// left, and the service account it owned now belongs to its SCIM manager, whose token
// keeps working; the deprovisioning histogram counts it under source="scim".
func TestSCIMJoinerMoverLeaver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f, c, _ := scimFixture(t)
	groups := map[string]string{}
	for _, name := range []string{"eng", "sales"} {
		g, err := f.op.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: name}))
		if err != nil {
			t.Fatal(err)
		}
		groups[name] = g.Msg.Group.Id
		if _, err := f.op.CreateMembershipRule(ctx, connect.NewRequest(&keyplanev1.CreateMembershipRuleRequest{TenantId: "acme",
			Name: name, Condition: `attributes.department == "` + name + `"`, GroupIds: []string{g.Msg.Group.Id}})); err != nil {
			t.Fatal(err)
		}
	}
	user := func(name, dept, manager string) string {
		t.Helper()
		ext := `"department": "` + dept + `"`
		if manager != "" {
			ext += `, "manager": {"value": "` + manager + `"}`
		}
		b := c.do(t, "POST", "/Users", `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
  "userName": "`+name+`@acme.example",
  "name": {"givenName": "`+name+`", "familyName": "Example"},
  "emails": [{"primary": true, "value": "`+name+`@acme.example", "type": "work"}],
  "active": true,
  "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {`+ext+`}
}`).must(t, http.StatusCreated)
		return b["id"].(string)
	}
	members := func(group string) map[string]string {
		t.Helper()
		ms, err := f.op.ListGroupMembers(ctx, connect.NewRequest(&keyplanev1.ListGroupMembersRequest{TenantId: "acme", GroupId: groups[group]}))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, m := range ms.Msg.Members {
			out[m.IdentityId] = m.Source
		}
		return out
	}
	morgan := user("morgan", "sales", "")
	dana := user("dana", "eng", morgan)
	if got := members("eng"); got[dana] != "rule" || len(got) != 1 {
		t.Fatalf("joiner: eng members %v, want dana by rule", got)
	}
	got, err := f.op.GetIdentity(ctx, connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: dana}))
	if err != nil || got.Msg.Identity.ManagerId != morgan || got.Msg.Identity.Attributes.AsMap()["department"] != "eng" {
		t.Fatalf("dana: %v %v, want manager morgan and department eng", got, err)
	}

	// Entra's mover: a PATCH replacing the enterprise department.
	c.do(t, "PATCH", "/Users/"+dana, `{
  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations": [{"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "sales"}]
}`).must(t, http.StatusOK)
	if eng, sales := members("eng"), members("sales"); len(eng) != 0 || sales[dana] != "rule" || sales[morgan] != "rule" {
		t.Fatalf("mover: eng %v, sales %v; want dana out of eng and in sales", eng, sales)
	}

	// Dana owns a service account with an API key, and has a login session.
	bot, err := f.op.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, DisplayName: "dana-bot", OwnerId: dana, Purpose: "reports",
		ExpireTime: timestamppb.New(time.Now().Add(24 * time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	key, err := f.op.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: "acme", IdentityId: bot.Msg.Identity.Id,
		Name: "k", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	auth := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, f.url)
	botTok, err := auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "acme", ApiKey: key.Msg.ApiKey}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.op.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: dana, Password: "a long enough password"})); err != nil {
		t.Fatal(err)
	}
	lr, err := login(ctx, auth, "dana@acme.example", "a long enough password")
	if err != nil {
		t.Fatal(err)
	}
	active := func(tok string) bool {
		t.Helper()
		v, err := auth.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "acme", Token: tok}))
		if err != nil {
			t.Fatal(err)
		}
		return v.Msg.Active
	}
	before, _ := deprovisioned(t, f.url, "scim")

	// Leaver: Entra's deactivation PATCH.
	c.do(t, "PATCH", "/Users/"+dana, `{
  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations": [{"op": "Replace", "path": "active", "value": "False"}]
}`).must(t, http.StatusOK)
	if active(lr.Token.AccessToken) {
		t.Error("the leaver's token is still active after the deactivation PATCH returned")
	}
	if !active(botTok.Msg.Token.AccessToken) {
		t.Error("the service account handed to the manager lost its token")
	}
	owned, err := f.op.GetIdentity(ctx, connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: bot.Msg.Identity.Id}))
	if err != nil || owned.Msg.Identity.OwnerId != morgan {
		t.Errorf("dana-bot after offboarding: %v %v, want owned by morgan", owned, err)
	}
	if sales := members("sales"); sales[dana] != "" {
		t.Errorf("the leaver is still in sales: %v", sales)
	}
	if after, _ := deprovisioned(t, f.url, "scim"); after != before+1 {
		t.Errorf("keyplane_deprovision_seconds{source=\"scim\"} count %v, want %v", after, before+1)
	}
	evs, err := f.op.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", Action: "identity.offboard"}))
	if err != nil || len(evs.Msg.Events) != 1 || evs.Msg.Events[0].TargetId != dana {
		t.Errorf("offboarding audit events: %v %v, want one for dana", evs, err)
	}
}

// TestSCIMLeaverIsOneTransaction: the SCIM leaver path offboards in the transaction of
// the SCIM write. active false for a User an administrator merely disabled offboards
// it (its binding goes); and a deactivation the offboarding refuses (the last tenant
// admin) leaves nothing of the write behind, so the IdP's retry with the same If-Match
// still applies.
func TestSCIMLeaverIsOneTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f, c, _ := scimFixture(t)
	user := func(name string) (string, string) {
		b := c.do(t, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+name+`@acme.example","active":true}`).
			must(t, http.StatusCreated)
		return b["id"].(string), b["meta"].(map[string]any)["version"].(string)
	}
	role, err := f.op.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "reader", Permissions: []string{"docs.document.read"}}))
	if err != nil {
		t.Fatal(err)
	}
	eve, _ := user("eve")
	f.bind(t, eve, role.Msg.Role.Id, "docs/")
	if _, err := f.op.DisableIdentity(ctx, connect.NewRequest(&keyplanev1.DisableIdentityRequest{TenantId: "acme", Id: eve})); err != nil {
		t.Fatal(err)
	}
	c.do(t, "PATCH", "/Users/"+eve, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations":[{"op":"replace","path":"active","value":false}]}`).must(t, http.StatusOK)
	got, err := f.op.GetIdentity(ctx, connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: eve}))
	if err != nil || got.Msg.Identity.OffboardTime == nil {
		t.Fatalf("a disabled User set inactive over SCIM: %v %v, want it offboarded", got, err)
	}
	bs, err := f.op.ListBindings(ctx, connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme", PrincipalKind: "identity", PrincipalId: eve}))
	if err != nil || len(bs.Msg.Bindings) != 0 {
		t.Fatalf("the offboarded User's bindings: %v %v, want none", bs, err)
	}

	// boss becomes the only tenant admin.
	boss, version := user("boss")
	f.bind(t, boss, schema.RoleTenantAdmin, "*")
	if _, err := f.op.OffboardIdentity(ctx, connect.NewRequest(&keyplanev1.OffboardIdentityRequest{TenantId: "acme", IdentityId: f.boot.AdminIdentityId})); err != nil {
		t.Fatal(err)
	}
	r := c.do(t, "PATCH", "/Users/"+boss, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations":[{"op":"replace","path":"title","value":"CEO"},{"op":"replace","path":"active","value":false}]}`, "If-Match", `W/"`+version+`"`)
	if r.status != http.StatusConflict && r.status != http.StatusBadRequest && r.status != http.StatusPreconditionFailed {
		t.Fatalf("deactivating the last tenant admin: %d %s, want a refusal", r.status, r.raw)
	}
	after := c.do(t, "GET", "/Users/"+boss, "").must(t, http.StatusOK)
	if after["title"] != nil || after["active"] != true || after["meta"].(map[string]any)["version"] != version {
		t.Fatalf("a refused deactivation wrote: %v", after)
	}
}
