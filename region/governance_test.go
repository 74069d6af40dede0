package region_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

func governanceClient(url, token string) keyplanev1connect.GovernanceServiceClient {
	return keyplanev1connect.NewGovernanceServiceClient(http.DefaultClient, url, connect.WithInterceptors(
		connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+token)
				return next(ctx, req)
			}
		})))
}

// govFixture is a tenant with one NHI per inventory finding, served by a node whose
// sweeper is off (so nothing changes under the inventory).
type govFixture struct {
	*fixture
	gov keyplanev1connect.GovernanceServiceClient
	// One NHI per finding, and one with none.
	orphaned, expired, expiring, overdue, highTier, unused, staticSecret, overPrivileged, clean string
	leaver                                                                                      string
	overPrivilegedBinding                                                                       string
}

func (f *govFixture) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := f.store.Pool().Exec(context.Background(), sql, args...); err != nil {
		t.Fatal(err)
	}
}

func (f *govFixture) nhi(t *testing.T, name string, kind keyplanev1.IdentityKind, owner string, expires time.Duration, attrs map[string]any) string {
	t.Helper()
	req := &keyplanev1.CreateIdentityRequest{TenantId: "acme", Kind: kind, DisplayName: name, OwnerId: owner, Purpose: "governance test " + name,
		ExpireTime: timestamppb.New(time.Now().Add(expires))}
	if attrs != nil {
		s, err := structpb.NewStruct(attrs)
		if err != nil {
			t.Fatal(err)
		}
		req.Attributes = s
	}
	r, err := f.admin.CreateIdentity(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return r.Msg.Identity.Id
}

func (f *govFixture) apiKey(t *testing.T, identity string) string {
	t.Helper()
	k, err := f.admin.CreateAPIKey(context.Background(), connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: "acme", IdentityId: identity,
		Name: "key", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	return k.Msg.Credential.Id
}

func newGovFixture(t *testing.T) *govFixture {
	t.Helper()
	ctx := context.Background()
	f := &govFixture{fixture: newFixtureWith(t, func(c *region.Config) { c.GovernanceSweepEvery = -1 })}
	f.gov = governanceClient(f.url, secret)
	sa, wl := keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, keyplanev1.IdentityKind_IDENTITY_KIND_WORKLOAD
	const month = 30 * 24 * time.Hour
	lv, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Contractor", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	f.leaver = lv.Msg.Identity.Id
	f.orphaned = f.nhi(t, "orphaned", sa, f.leaver, month, nil)
	f.expired = f.nhi(t, "expired", sa, f.owner, month, nil)
	f.expiring = f.nhi(t, "expiring", sa, f.owner, 3*24*time.Hour, nil)
	f.overdue = f.nhi(t, "overdue", sa, f.owner, month, nil)
	f.highTier = f.nhi(t, "high-tier", sa, f.owner, month, map[string]any{"risk_tier": "high"})
	f.unused = f.nhi(t, "unused", sa, f.owner, month, nil)
	f.staticSecret = f.nhi(t, "static", wl, f.owner, month, nil)
	f.overPrivileged = f.nhi(t, "over-privileged", sa, f.owner, month, nil)
	f.clean = f.nhi(t, "clean", sa, f.owner, month, nil)
	overdueKey, highKey := f.apiKey(t, f.overdue), f.apiKey(t, f.highTier)
	f.apiKey(t, f.staticSecret)
	f.apiKey(t, f.clean)
	role, err := f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "docs-editor",
		Permissions: []string{"docs.document.read", "docs.document.write", "docs.document.delete"}}))
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "identity",
		PrincipalId: f.overPrivileged, RoleId: role.Msg.Role.Id, Scope: "docs/"}))
	if err != nil {
		t.Fatal(err)
	}
	f.overPrivilegedBinding = b.Msg.Binding.Id
	// The state the findings need, set in the database as time would have: the
	// contractor's expiry passed, an NHI's expiry passed, keys 35 and 100 days old, an
	// NHI created 40 days ago and never used.
	f.exec(t, `UPDATE identities SET expires_at = now() - INTERVAL '1 minute' WHERE id = ANY($1::UUID[])`, []string{f.leaver, f.expired})
	f.exec(t, `UPDATE credentials SET created_at = now() - INTERVAL '100 days' WHERE id = $1`, overdueKey)
	f.exec(t, `UPDATE credentials SET created_at = now() - INTERVAL '35 days' WHERE id = $1`, highKey)
	f.exec(t, `UPDATE identities SET created_at = now() - INTERVAL '40 days' WHERE id = $1`, f.unused)
	// The over-privileged NHI uses one of its three permissions (1/3 < 50%).
	check := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearerInterceptor(secret)))
	r, err := check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: f.overPrivileged}, Permission: "docs.document.read", Resource: "docs/1"}))
	if err != nil || !r.Msg.Allowed {
		t.Fatalf("check: %v %v", r, err)
	}
	// The decision log writes in batches: wait until the decision is there.
	deadline := time.Now().Add(20 * time.Second)
	for {
		lp, err := f.gov.GetLeastPrivilege(ctx, connect.NewRequest(&keyplanev1.GetLeastPrivilegeRequest{TenantId: "acme", IdentityId: f.overPrivileged}))
		if err != nil {
			t.Fatal(err)
		}
		if lp.Msg.Used == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the check never showed in least privilege: %v", lp.Msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return f
}

func (f *govFixture) inventory(t *testing.T, req *keyplanev1.ListInventoryRequest) map[string]*keyplanev1.InventoryEntry {
	t.Helper()
	req.TenantId = "acme"
	out := map[string]*keyplanev1.InventoryEntry{}
	for {
		r, err := f.gov.ListInventory(context.Background(), connect.NewRequest(req))
		if err != nil {
			t.Fatalf("ListInventory: %v", err)
		}
		if req.PageSize > 0 && len(r.Msg.Entries) > int(req.PageSize) {
			t.Fatalf("a page of %d entries, page_size %d", len(r.Msg.Entries), req.PageSize)
		}
		for _, e := range r.Msg.Entries {
			if out[e.IdentityId] != nil {
				t.Fatalf("%s listed twice", e.IdentityId)
			}
			out[e.IdentityId] = e
		}
		if r.Msg.NextPageToken == "" {
			return out
		}
		req.PageToken = r.Msg.NextPageToken
	}
}

// TestGovernanceInventoryFindings: one NHI per finding class, each found in the
// inventory through a real server with the generated client, the finding filter
// selecting exactly those NHIs, and a clean NHI without findings.
func TestGovernanceInventoryFindings(t *testing.T) {
	t.Parallel()
	f := newGovFixture(t)
	all := f.inventory(t, &keyplanev1.ListInventoryRequest{PageSize: 3})
	if all[f.leaver] != nil || all[f.owner] != nil {
		t.Fatal("humans in the NHI inventory")
	}
	want := map[string][]keyplanev1.RiskFinding{
		f.orphaned:       {keyplanev1.RiskFinding_RISK_FINDING_ORPHANED},
		f.expired:        {keyplanev1.RiskFinding_RISK_FINDING_EXPIRED},
		f.expiring:       {keyplanev1.RiskFinding_RISK_FINDING_EXPIRING},
		f.overdue:        {keyplanev1.RiskFinding_RISK_FINDING_ROTATION_OVERDUE},
		f.highTier:       {keyplanev1.RiskFinding_RISK_FINDING_ROTATION_OVERDUE}, // 35 days: overdue at the high tier's 30
		f.unused:         {keyplanev1.RiskFinding_RISK_FINDING_UNUSED},
		f.staticSecret:   {keyplanev1.RiskFinding_RISK_FINDING_STATIC_SECRET},
		f.overPrivileged: {keyplanev1.RiskFinding_RISK_FINDING_OVER_PRIVILEGED},
		f.clean:          nil,
	}
	for id, findings := range want {
		e := all[id]
		if e == nil {
			t.Fatalf("NHI %s missing from the inventory", id)
		}
		if !slices.Equal(e.Findings, findings) {
			t.Errorf("%s: findings %v, want %v", e.DisplayName, e.Findings, findings)
		}
	}
	if e := all[f.orphaned]; e.OwnerState != keyplanev1.OwnerState_OWNER_STATE_EXPIRED || e.OwnerId != f.leaver {
		t.Errorf("orphaned: owner %s state %v", e.OwnerId, e.OwnerState)
	}
	if e := all[f.clean]; e.OwnerState != keyplanev1.OwnerState_OWNER_STATE_ACTIVE || e.RiskTier != keyplanev1.RiskTier_RISK_TIER_NORMAL ||
		!slices.Equal(e.CredentialKinds, []string{"api_key"}) || len(e.Credentials) != 1 || e.OldestSecretAge == nil ||
		e.Credentials[0].RotationDeadline == nil || e.LeastPrivilegeRatio != 1 {
		t.Errorf("clean: %v", e)
	}
	if e := all[f.highTier]; e.RiskTier != keyplanev1.RiskTier_RISK_TIER_HIGH || e.RiskTierSource != "attribute" {
		t.Errorf("high tier: %v %q", e.RiskTier, e.RiskTierSource)
	}
	if e := all[f.overdue]; e.OldestSecretAge.AsDuration() < 99*24*time.Hour {
		t.Errorf("overdue: oldest secret age %v", e.OldestSecretAge.AsDuration())
	}
	op := all[f.overPrivileged]
	if len(op.Permissions) != 3 || op.LeastPrivilegeRatio > 0.34 || op.LeastPrivilegeRatio < 0.33 || op.LastUseTime == nil {
		t.Errorf("over-privileged: %d permissions, ratio %v, last use %v", len(op.Permissions), op.LeastPrivilegeRatio, op.LastUseTime)
	}
	// The tenant's first admin (a service account holding tenant-admin) is high-risk
	// through its role.
	if e := all[f.tenantAdmin]; e == nil || e.RiskTier != keyplanev1.RiskTier_RISK_TIER_HIGH || e.RiskTierSource != "sensitive_role" {
		t.Errorf("tenant admin: %v", e)
	}
	for finding := range keyplanev1.RiskFinding_name {
		rf := keyplanev1.RiskFinding(finding)
		if rf == keyplanev1.RiskFinding_RISK_FINDING_UNSPECIFIED {
			continue
		}
		got := f.inventory(t, &keyplanev1.ListInventoryRequest{Finding: region.FindingName(rf), PageSize: 2})
		for id, e := range all {
			if slices.Contains(e.Findings, rf) != (got[id] != nil) {
				t.Errorf("filter %v: %s (%v) listed %v", rf, e.DisplayName, e.Findings, got[id] != nil)
			}
		}
	}
	byOwner := f.inventory(t, &keyplanev1.ListInventoryRequest{OwnerId: f.leaver})
	if len(byOwner) != 1 || byOwner[f.orphaned] == nil {
		t.Errorf("owner filter: %v", byOwner)
	}
	byKind := f.inventory(t, &keyplanev1.ListInventoryRequest{Kind: keyplanev1.IdentityKind_IDENTITY_KIND_WORKLOAD})
	if len(byKind) != 1 || byKind[f.staticSecret] == nil {
		t.Errorf("kind filter: %v", byKind)
	}

	lp, err := f.gov.GetLeastPrivilege(context.Background(), connect.NewRequest(&keyplanev1.GetLeastPrivilegeRequest{TenantId: "acme",
		IdentityId: f.overPrivileged, Days: 7}))
	if err != nil {
		t.Fatal(err)
	}
	var suggested []string
	for _, s := range lp.Msg.Suggestions {
		suggested = append(suggested, s.Permission)
		if s.BindingId != f.overPrivilegedBinding || s.Via != "direct" {
			t.Errorf("suggestion %v", s)
		}
	}
	slices.Sort(suggested)
	if lp.Msg.Granted != 3 || lp.Msg.Used != 1 || !slices.Equal(suggested, []string{"docs.document.delete", "docs.document.write"}) ||
		len(lp.Msg.Bindings) != 1 || lp.Msg.Bindings[0].LastUsedTime == nil {
		t.Errorf("least privilege: %v", lp.Msg)
	}
}

// TestGovernanceJSON lists the orphaned NHIs with plain net/http speaking Connect's
// JSON, and gets an unknown finding name refused naming the field.
func TestGovernanceJSON(t *testing.T) {
	t.Parallel()
	f := newGovFixture(t)
	post := func(body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, f.url+"/keyplane.v1.GovernanceService/ListInventory", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := post(`{"tenantId": "acme", "finding": "RISK_FINDING_ORPHANED"}`)
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	var out struct {
		Entries []struct {
			IdentityID string   `json:"identityId"`
			OwnerState string   `json:"ownerState"`
			Findings   []string `json:"findings"`
		} `json:"entries"`
		EvaluateTime string `json:"evaluateTime"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Entries) != 1 || out.Entries[0].IdentityID != f.orphaned || out.Entries[0].OwnerState != "OWNER_STATE_EXPIRED" ||
		!slices.Contains(out.Entries[0].Findings, "RISK_FINDING_ORPHANED") || out.EvaluateTime == "" {
		t.Fatalf("JSON inventory: %s", body)
	}
	code, body = post(`{"tenantId": "acme", "finding": "RISK_FINDING_HAUNTED"}`)
	if code != http.StatusBadRequest || !strings.Contains(body, "invalid_argument") || !strings.Contains(body, "finding") {
		t.Fatalf("unknown finding name: %d %s", code, body)
	}
}

func TestGovernanceBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := &govFixture{fixture: newFixtureWith(t, func(c *region.Config) { c.GovernanceSweepEvery = -1 })}
	f.gov = governanceClient(f.url, secret)
	// A page token of another listing: ListIdentities' (sealed to that call).
	ids, err := f.admin.ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: "acme", PageSize: 1}))
	if err != nil || ids.Msg.NextPageToken == "" {
		t.Fatalf("identities page: %v", err)
	}
	inv, err := f.gov.ListInventory(ctx, connect.NewRequest(&keyplanev1.ListInventoryRequest{TenantId: "acme", PageSize: 1}))
	if err != nil || inv.Msg.NextPageToken == "" {
		t.Fatalf("inventory page: %v %v", inv, err)
	}
	notice, high := int32(40), int32(200)
	for _, tc := range []struct {
		name  string
		call  func() error
		code  connect.Code
		field string
	}{
		{"unknown finding", func() error {
			_, err := f.gov.ListInventory(ctx, connect.NewRequest(&keyplanev1.ListInventoryRequest{TenantId: "acme", Finding: "haunted"}))
			return err
		}, connect.CodeInvalidArgument, "finding"},
		{"human kind", func() error {
			_, err := f.gov.ListInventory(ctx, connect.NewRequest(&keyplanev1.ListInventoryRequest{TenantId: "acme", Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN}))
			return err
		}, connect.CodeInvalidArgument, "kind"},
		{"bad owner", func() error {
			_, err := f.gov.ListInventory(ctx, connect.NewRequest(&keyplanev1.ListInventoryRequest{TenantId: "acme", OwnerId: "nobody"}))
			return err
		}, connect.CodeInvalidArgument, "owner_id"},
		{"page size", func() error {
			_, err := f.gov.ListInventory(ctx, connect.NewRequest(&keyplanev1.ListInventoryRequest{TenantId: "acme", PageSize: -1}))
			return err
		}, connect.CodeInvalidArgument, "page_size"},
		{"another call's page token", func() error {
			_, err := f.gov.ListInventory(ctx, connect.NewRequest(&keyplanev1.ListInventoryRequest{TenantId: "acme", PageToken: ids.Msg.NextPageToken}))
			return err
		}, connect.CodeInvalidArgument, "page_token"},
		{"page token with other filters", func() error {
			_, err := f.gov.ListInventory(ctx, connect.NewRequest(&keyplanev1.ListInventoryRequest{TenantId: "acme", PageToken: inv.Msg.NextPageToken,
				Finding: "unused"}))
			return err
		}, connect.CodeInvalidArgument, "page_token"},
		{"negative days", func() error {
			_, err := f.gov.GetLeastPrivilege(ctx, connect.NewRequest(&keyplanev1.GetLeastPrivilegeRequest{TenantId: "acme", IdentityId: f.bot, Days: -1}))
			return err
		}, connect.CodeInvalidArgument, "days"},
		{"bad identity", func() error {
			_, err := f.gov.GetLeastPrivilege(ctx, connect.NewRequest(&keyplanev1.GetLeastPrivilegeRequest{TenantId: "acme", IdentityId: "42"}))
			return err
		}, connect.CodeInvalidArgument, "identity_id"},
		{"missing identity", func() error {
			_, err := f.gov.GetLeastPrivilege(ctx, connect.NewRequest(&keyplanev1.GetLeastPrivilegeRequest{TenantId: "acme", IdentityId: "00000000-0000-4000-8000-000000000042"}))
			return err
		}, connect.CodeNotFound, "identity"},
		{"notice beyond rotation", func() error {
			_, err := f.gov.UpdateGovernancePolicy(ctx, connect.NewRequest(&keyplanev1.UpdateGovernancePolicyRequest{TenantId: "acme", RotationNoticeDays: &notice}))
			return err
		}, connect.CodeInvalidArgument, "rotation_notice_days"},
		{"high beyond normal", func() error {
			_, err := f.gov.UpdateGovernancePolicy(ctx, connect.NewRequest(&keyplanev1.UpdateGovernancePolicyRequest{TenantId: "acme", RotationDaysHigh: &high}))
			return err
		}, connect.CodeInvalidArgument, "rotation_days_high"},
		{"no tenant", func() error {
			_, err := f.gov.GetGovernancePolicy(ctx, connect.NewRequest(&keyplanev1.GetGovernancePolicyRequest{}))
			return err
		}, connect.CodeInvalidArgument, "tenant_id"},
		{"no permission", func() error {
			_, err := governanceClient(f.url, f.exchange(t)).ListInventory(ctx, connect.NewRequest(&keyplanev1.ListInventoryRequest{TenantId: "acme"}))
			return err
		}, connect.CodePermissionDenied, "iam.governance.read"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.call(), tc.code, tc.field) })
	}
	// A good update changes what it names, is audited, and a read returns it.
	days := int32(45)
	up, err := f.gov.UpdateGovernancePolicy(ctx, connect.NewRequest(&keyplanev1.UpdateGovernancePolicyRequest{TenantId: "acme", UnusedDays: &days}))
	if err != nil || up.Msg.Policy.UnusedDays != 45 || up.Msg.Policy.RotationDaysNormal != 90 || up.Msg.Policy.UpdateTime == nil {
		t.Fatalf("update: %v %v", up, err)
	}
	got, err := f.gov.GetGovernancePolicy(ctx, connect.NewRequest(&keyplanev1.GetGovernancePolicyRequest{TenantId: "acme"}))
	if err != nil || got.Msg.Policy.UnusedDays != 45 {
		t.Fatalf("get: %v %v", got, err)
	}
	if evs := f.listAudit(t, &keyplanev1.ListAuditEventsRequest{Action: "governance.policy.update"}); len(evs) != 1 {
		t.Fatalf("%d governance.policy.update events, want 1", len(evs))
	}
}

// TestFindingNames: every finding has a short name, and both names parse back.
func TestFindingNames(t *testing.T) {
	t.Parallel()
	for v, enum := range keyplanev1.RiskFinding_name {
		f := keyplanev1.RiskFinding(v)
		if f == keyplanev1.RiskFinding_RISK_FINDING_UNSPECIFIED {
			if _, ok := region.ParseFinding(enum); ok {
				t.Errorf("%s parses", enum)
			}
			continue
		}
		short := region.FindingName(f)
		if short == "" || "RISK_FINDING_"+strings.ToUpper(short) != enum {
			t.Errorf("%s: short name %q", enum, short)
		}
		for _, name := range []string{short, enum} {
			if got, ok := region.ParseFinding(name); !ok || got != f {
				t.Errorf("ParseFinding(%q) = %v, %v", name, got, ok)
			}
		}
	}
}

func FuzzParseFinding(f *testing.F) {
	for _, s := range []string{"orphaned", "RISK_FINDING_UNUSED", "", "RISK_FINDING_UNSPECIFIED", "Orphaned", "over_privileged\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, ok := region.ParseFinding(name)
		if !ok {
			return
		}
		if region.FindingName(got) != name && keyplanev1.RiskFinding_name[int32(got)] != name {
			t.Fatalf("ParseFinding(%q) = %v, whose names differ", name, got)
		}
	})
}

// TestGovernanceGroupGrants: permissions held through a group appear in the inventory
// and in least privilege with the group they come through, and a sensitive role held
// through a group makes the NHI high-risk.
func TestGovernanceGroupGrants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := &govFixture{fixture: newFixtureWith(t, func(c *region.Config) { c.GovernanceSweepEvery = -1 })}
	f.gov = governanceClient(f.url, secret)
	nhi := f.nhi(t, "grouped", keyplanev1.IdentityKind_IDENTITY_KIND_AGENT, f.owner, 30*24*time.Hour, nil)
	g, err := f.admin.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: "agents"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: "acme", GroupId: g.Msg.Group.Id, IdentityId: nhi})); err != nil {
		t.Fatal(err)
	}
	role, err := f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "payments-operator",
		Permissions: []string{"payments.*"}, Sensitive: true}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "group",
		PrincipalId: g.Msg.Group.Id, RoleId: role.Msg.Role.Id, Scope: "payments/"})); err != nil {
		t.Fatal(err)
	}
	e := f.inventory(t, &keyplanev1.ListInventoryRequest{Kind: keyplanev1.IdentityKind_IDENTITY_KIND_AGENT})[nhi]
	if e == nil || len(e.Permissions) != 1 || e.Permissions[0].Via != "group:"+g.Msg.Group.Id || e.Permissions[0].Permission != "payments.*" {
		t.Fatalf("inventory entry: %v", e)
	}
	if e.RiskTier != keyplanev1.RiskTier_RISK_TIER_HIGH || e.RiskTierSource != "sensitive_role" {
		t.Errorf("tier %v from %q, want high from sensitive_role", e.RiskTier, e.RiskTierSource)
	}
	if !slices.Contains(e.Findings, keyplanev1.RiskFinding_RISK_FINDING_OVER_PRIVILEGED) {
		t.Errorf("an unused grant: findings %v", e.Findings)
	}
	lp, err := f.gov.GetLeastPrivilege(ctx, connect.NewRequest(&keyplanev1.GetLeastPrivilegeRequest{TenantId: "acme", IdentityId: nhi}))
	if err != nil {
		t.Fatal(err)
	}
	if lp.Msg.Granted != 1 || lp.Msg.Used != 0 || lp.Msg.LeastPrivilegeRatio != 0 || len(lp.Msg.Suggestions) != 1 ||
		lp.Msg.Suggestions[0].Via != "group:"+g.Msg.Group.Id || len(lp.Msg.Bindings) != 1 || lp.Msg.Bindings[0].LastUsedTime != nil {
		t.Fatalf("least privilege: %v", lp.Msg)
	}
	// The explicit attribute wins over the role.
	attrs, _ := structpb.NewStruct(map[string]any{"risk_tier": "normal"})
	if _, err := f.admin.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: nhi, Attributes: attrs})); err != nil {
		t.Fatal(err)
	}
	e = f.inventory(t, &keyplanev1.ListInventoryRequest{OwnerId: f.owner, Kind: keyplanev1.IdentityKind_IDENTITY_KIND_AGENT})[nhi]
	if e.RiskTier != keyplanev1.RiskTier_RISK_TIER_NORMAL || e.RiskTierSource != "attribute" {
		t.Errorf("after risk_tier=normal: %v from %q", e.RiskTier, e.RiskTierSource)
	}
}
