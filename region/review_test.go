package region_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
)

// whoCan returns every holder of perm on resource, paging with size pageSize.
func (f *policyFixture) whoCan(t *testing.T, perm, resource string, pageSize int32) []*keyplanev1.Holder {
	t.Helper()
	var out []*keyplanev1.Holder
	req := &keyplanev1.WhoCanRequest{TenantId: "acme", Permission: perm, Resource: resource, PageSize: pageSize}
	for pages := 0; ; pages++ {
		r, err := f.check.WhoCan(context.Background(), connect.NewRequest(req))
		if err != nil {
			t.Fatalf("WhoCan(%s, %s): %v", perm, resource, err)
		}
		if pageSize > 0 && len(r.Msg.Holders) > int(pageSize) {
			t.Fatalf("WhoCan page of %d holders, asked for %d", len(r.Msg.Holders), pageSize)
		}
		out = append(out, r.Msg.Holders...)
		if req.PageToken = r.Msg.NextPageToken; req.PageToken == "" {
			return out
		}
		if pages > 100 {
			t.Fatal("WhoCan pages do not end")
		}
	}
}

// holderIDs lists the ids of holders of kind, but for the tenant admin CreateTenant
// made (built-in role tenant-admin: "*" on "*").
func (f *policyFixture) holderIDs(hs []*keyplanev1.Holder, kind string) []string {
	var ids []string
	for _, h := range hs {
		if h.Kind == kind && h.Id != f.tenantAdmin {
			ids = append(ids, h.Id)
		}
	}
	return ids
}

// TestWhoCanIsCheck: over a real node, WhoCan lists exactly the identities Check
// allows, with groups expanded, group denies applied and disabled identities left out,
// for the held-out review's case and for random policies; EffectivePermissions says
// when Check denies an identity everything.
func TestWhoCanIsCheck(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPolicyFixture(t)
	var people []string
	for _, name := range []string{"dave", "erin", "frank", "gina"} {
		h, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
			Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: name}))
		if err != nil {
			t.Fatal(err)
		}
		people = append(people, h.Msg.Identity.Id)
	}
	dave, erin, frank, gina := people[0], people[1], people[2], people[3]
	contractors, err := f.admin.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: "contractors"}))
	if err != nil {
		t.Fatal(err)
	}
	groups := []string{f.group, contractors.Msg.Group.Id}
	for _, m := range [][2]string{{groups[1], dave}, {groups[0], erin}, {groups[1], frank}, {groups[0], gina}} {
		if _, err := f.admin.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: "acme", GroupId: m[0], IdentityId: m[1]})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.admin.DisableIdentity(ctx, connect.NewRequest(&keyplanev1.DisableIdentityRequest{TenantId: "acme", Id: gina})); err != nil {
		t.Fatal(err)
	}

	t.Run("a group deny removes its member", func(t *testing.T) {
		f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: dave, RoleId: f.viewer, Scope: "beta/"})
		f.bind(t, &keyplanev1.CreateBindingRequest{Effect: keyplanev1.Effect_EFFECT_DENY, PrincipalKind: "group", PrincipalId: groups[1],
			RoleId: f.viewer, Scope: "beta/confidential/"})
		if got := f.holderIDs(f.whoCan(t, "docs.document.read", "beta/confidential/1", 0), "identity"); slices.Contains(got, dave) {
			t.Errorf("WhoCan(read, beta/confidential/1) lists dave, whose group is denied: %v", got)
		}
		if f.allowed(t, dave, "docs.document.read", "beta/confidential/1", nil).Allowed {
			t.Error("Check allows dave on beta/confidential/1")
		}
		if got := f.holderIDs(f.whoCan(t, "docs.document.read", "beta/public/1", 0), "identity"); !slices.Contains(got, dave) {
			t.Errorf("WhoCan(read, beta/public/1) = %v, want dave in it", got)
		}
	})

	t.Run("groups are expanded to their members, disabled ones left out", func(t *testing.T) {
		f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "group", PrincipalId: groups[0], RoleId: f.editor, Scope: "wiki/"})
		hs := f.whoCan(t, "docs.document.write", "wiki/page", 1)
		want := []string{f.alice, erin}
		slices.Sort(want)
		if got := f.holderIDs(hs, "identity"); !slices.Equal(got, want) {
			t.Errorf("identities holding write on wiki/page = %v, want alice and erin %v (gina is disabled)", got, want)
		}
		if got := f.holderIDs(hs, "group"); !slices.Equal(got, []string{groups[0]}) {
			t.Errorf("groups holding write on wiki/page = %v, want %v", got, groups[:1])
		}
		for _, h := range hs {
			if h.Kind == "identity" && h.Id != f.tenantAdmin && !slices.Equal(h.Via, []string{"group:" + groups[0]}) {
				t.Errorf("holder %s via %v, want [group:%s]", h.Id, h.Via, groups[0])
			}
		}
		ep, err := f.check.EffectivePermissions(ctx, connect.NewRequest(&keyplanev1.EffectivePermissionsRequest{TenantId: "acme", IdentityId: gina}))
		if err != nil {
			t.Fatal(err)
		}
		if ep.Msg.InactiveReason != "identity disabled" || len(ep.Msg.Grants) == 0 {
			t.Errorf("EffectivePermissions(disabled gina) = %d grants, inactive reason %q; want her grants and \"identity disabled\"",
				len(ep.Msg.Grants), ep.Msg.InactiveReason)
		}
	})

	t.Run("random policies", func(t *testing.T) {
		scopes := []string{"*", "r/", "r/a/", "r/a/1", "r/b/"}
		resources := []string{"r/a/1", "r/a/2", "r/b/1", "s/1"}
		perms := []string{"docs.document.read", "docs.document.write"}
		principals := append([]string{f.alice}, people...)
		for seed := range uint64(3) {
			rng := rand.New(rand.NewPCG(seed, 14))
			var made []string
			for range 6 {
				b := &keyplanev1.CreateBindingRequest{RoleId: []string{f.editor, f.viewer}[rng.IntN(2)], Scope: scopes[rng.IntN(len(scopes))]}
				if rng.IntN(3) == 0 {
					b.Effect = keyplanev1.Effect_EFFECT_DENY
				}
				if rng.IntN(2) == 0 {
					b.PrincipalKind, b.PrincipalId = "group", groups[rng.IntN(len(groups))]
				} else {
					b.PrincipalKind, b.PrincipalId = "identity", principals[rng.IntN(len(principals))]
				}
				id, _ := f.bind(t, b)
				made = append(made, id)
			}
			for _, perm := range perms {
				for _, res := range resources {
					listed := f.holderIDs(f.whoCan(t, perm, res, 2), "identity")
					for _, p := range principals {
						if allowed := f.allowed(t, p, perm, res, nil).Allowed; allowed != slices.Contains(listed, p) {
							t.Errorf("seed %d: %s on %s: Check(%s) allowed %v, WhoCan lists %v", seed, perm, res, p, allowed, listed)
						}
					}
				}
			}
			for _, id := range made {
				if _, err := f.admin.DeleteBinding(ctx, connect.NewRequest(&keyplanev1.DeleteBindingRequest{TenantId: "acme", BindingId: id})); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

// connectJSON posts body to procedure over plain HTTP as a Connect JSON call with the
// operator's bearer and the tenant header, as an outside client without keyplane's
// generated code would, and returns the status and the decoded answer.
func connectJSON(t *testing.T, url, procedure, tenant string, body any) (int, map[string]any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, url+procedure, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Keyplane-Tenant", tenant)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: %s: not JSON: %q", procedure, resp.Status, raw)
	}
	return resp.StatusCode, out
}

// TestCheckJSONSaysDeny: a denied answer in Connect JSON has no "allowed" key (protobuf
// JSON omits false) but always says "decision".
func TestCheckJSONSaysDeny(t *testing.T) {
	t.Parallel()
	f := newPolicyFixture(t)
	f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: f.alice, RoleId: f.viewer, Scope: "docs/"})
	for _, tt := range []struct {
		resource, want string
	}{{"docs/1", "DECISION_ALLOW"}, {"other/1", "DECISION_DENY"}} {
		status, out := connectJSON(t, f.url, "/keyplane.v1.CheckService/Check", "acme",
			map[string]any{"tenantId": "acme", "identityId": f.alice, "permission": "docs.document.read", "resource": tt.resource})
		if status != http.StatusOK || out["decision"] != tt.want {
			t.Errorf("check %s: %d %v, want decision %s", tt.resource, status, out, tt.want)
		}
		if allowed, _ := out["allowed"].(bool); allowed != (tt.want == "DECISION_ALLOW") {
			t.Errorf("check %s: allowed %v disagrees with decision %s", tt.resource, out["allowed"], tt.want)
		}
	}
}

// TestSecurityPageTokenBoundToListing: a page token is only a position, so keyplane
// seals it (issue 14, bad input). A token from another tenant, another listing or
// other filters, or an edited one, is refused with invalid_argument naming
// page_token, through a real server; the same token with another page size is taken.
func TestSecurityPageTokenBoundToListing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPolicyFixture(t)
	if _, err := f.admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "globex", Name: "Globex", HomeRegion: "us-east"})); err != nil {
		t.Fatal(err)
	}
	first, err := f.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", PageSize: 1}))
	if err != nil {
		t.Fatal(err)
	}
	tok := first.Msg.NextPageToken
	if tok == "" {
		t.Fatal("acme's audit log has one page only")
	}
	second, err := f.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", PageSize: 5, PageToken: tok}))
	if err != nil || len(second.Msg.Events) == 0 || second.Msg.Events[0].Id == first.Msg.Events[0].Id {
		t.Fatalf("the next page with another page size: %v", err)
	}
	edited := []byte(tok)
	edited[len(edited)/2] ^= 1
	for name, call := range map[string]func() error{
		"another tenant": func() error {
			_, err := f.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "globex", PageToken: tok}))
			return err
		},
		"other filters": func() error {
			_, err := f.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", Action: "role.create", PageToken: tok}))
			return err
		},
		"another listing": func() error {
			_, err := f.admin.ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: "acme", PageToken: tok}))
			return err
		},
		"edited": func() error {
			_, err := f.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", PageToken: string(edited)}))
			return err
		},
		"made up": func() error {
			_, err := f.check.WhoCan(ctx, connect.NewRequest(&keyplanev1.WhoCanRequest{TenantId: "acme", Permission: "docs.document.read",
				Resource: "x", PageToken: "identity/" + f.alice}))
			return err
		},
	} {
		if err := call(); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "page_token") {
			t.Errorf("%s: %v, want invalid_argument naming page_token", name, err)
		}
	}
}
