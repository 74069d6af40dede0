package authz_test

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/keyplane/keyplane/region/authz"
)

func TestEffectivePermissions(t *testing.T) {
	t.Parallel()
	jit := t0.Add(time.Hour)
	s := compile(t,
		allow("b1", "identity", "alice", "viewer", "projects/alpha/"),
		withExpiry(allow("b2", "identity", "alice", "admin", "*"), jit),
		withExpiry(allow("b3", "identity", "alice", "admin", "*"), t0), // expired at t0
		withCond(allow("b4", "group", "eng", "doc-writer", "projects/beta/"), `request.region == "eu-west"`),
		deny("b5", "group", "ops", "editor", "projects/secret/"),
		allow("b6", "identity", "alice", "ghost", "*"),
		allow("b7", "identity", "bob", "viewer", "*"),
		allow("b8", "group", "sales", "viewer", "*"),
	)
	tests := []struct {
		name string
		id   string
		at   time.Time
		want []authz.Grant
	}{
		{
			name: "alice at t0",
			id:   "alice",
			at:   t0,
			want: []authz.Grant{
				{BindingID: "b2", RoleID: "admin", Permission: "*", Scope: "*", Effect: authz.Allow, ExpiresAt: jit, Via: "direct"},
				{BindingID: "b5", RoleID: "editor", Permission: "docs.*", Scope: "projects/secret/", Effect: authz.Deny, Via: "group:ops"},
				{BindingID: "b4", RoleID: "doc-writer", Permission: "docs.document.*", Scope: "projects/beta/", Effect: authz.Allow, Conditional: true, Via: "group:eng"},
				{BindingID: "b1", RoleID: "viewer", Permission: "docs.document.read", Scope: "projects/alpha/", Effect: authz.Allow, Via: "direct"},
				{BindingID: "b1", RoleID: "viewer", Permission: "docs.folder.list", Scope: "projects/alpha/", Effect: authz.Allow, Via: "direct"},
			},
		},
		{
			name: "alice after the jit grant expires",
			id:   "alice",
			at:   jit,
			want: []authz.Grant{
				{BindingID: "b5", RoleID: "editor", Permission: "docs.*", Scope: "projects/secret/", Effect: authz.Deny, Via: "group:ops"},
				{BindingID: "b4", RoleID: "doc-writer", Permission: "docs.document.*", Scope: "projects/beta/", Effect: authz.Allow, Conditional: true, Via: "group:eng"},
				{BindingID: "b1", RoleID: "viewer", Permission: "docs.document.read", Scope: "projects/alpha/", Effect: authz.Allow, Via: "direct"},
				{BindingID: "b1", RoleID: "viewer", Permission: "docs.folder.list", Scope: "projects/alpha/", Effect: authz.Allow, Via: "direct"},
			},
		},
		{
			name: "bob",
			id:   "bob",
			at:   t0,
			want: []authz.Grant{
				{BindingID: "b4", RoleID: "doc-writer", Permission: "docs.document.*", Scope: "projects/beta/", Effect: authz.Allow, Conditional: true, Via: "group:eng"},
				{BindingID: "b7", RoleID: "viewer", Permission: "docs.document.read", Scope: "*", Effect: authz.Allow, Via: "direct"},
				{BindingID: "b7", RoleID: "viewer", Permission: "docs.folder.list", Scope: "*", Effect: authz.Allow, Via: "direct"},
			},
		},
		{name: "stranger", id: "mallory", at: t0, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := s.EffectivePermissions(tt.id, tt.at)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("EffectivePermissions(%q, %v) =\n%+v\nwant\n%+v", tt.id, tt.at, got, tt.want)
			}
		})
	}
}

func TestWhoCan(t *testing.T) {
	t.Parallel()
	s := compile(t,
		allow("b1", "identity", "alice", "viewer", "projects/alpha/"),
		allow("b2", "group", "eng", "editor", "*"),
		withCond(allow("b3", "identity", "bob", "viewer", "*"), `request.region == "eu-west"`),
		allow("b4", "identity", "carol", "viewer", "projects/alpha/"),
		deny("b5", "identity", "carol", "viewer", "projects/alpha/documents/"),
		withExpiry(allow("b6", "identity", "dave", "viewer", "*"), t0),
		allow("b7", "identity", "erin", "viewer", "*"),
		withCond(deny("b8", "identity", "erin", "viewer", "*"), `request.region == "cn"`),
		allow("b9", "identity", "alice", "admin", "projects/alpha/documents/d1"),
		allow("b10", "identity", "frank", "ghost", "*"),
		allow("b11", "group", "ops", "viewer", "projects/beta/"),
	)
	tests := []struct {
		name, perm, resource string
		want                 []authz.Holder
	}{
		{
			// bob's own grant is conditional, but eng's is not: he is allowed whatever
			// the region. carol is in ops, which has nothing here.
			name: "read d1", perm: "docs.document.read", resource: "projects/alpha/documents/d1",
			want: []authz.Holder{
				{Kind: "group", ID: "eng", BindingIDs: []string{"b2"}, Via: []string{"direct"}},
				{Kind: "identity", ID: "alice", BindingIDs: []string{"b1", "b9", "b2"}, Via: []string{"direct", "group:eng"}},
				{Kind: "identity", ID: "bob", BindingIDs: []string{"b3", "b2"}, Via: []string{"direct", "group:eng"}},
				{Kind: "identity", ID: "erin", BindingIDs: []string{"b7"}, Via: []string{"direct"}, Conditional: true},
			},
		},
		{
			name: "list a folder in alpha", perm: "docs.folder.list", resource: "projects/alpha/folders/f1",
			want: []authz.Holder{
				{Kind: "group", ID: "eng", BindingIDs: []string{"b2"}, Via: []string{"direct"}},
				{Kind: "identity", ID: "alice", BindingIDs: []string{"b1", "b2"}, Via: []string{"direct", "group:eng"}},
				{Kind: "identity", ID: "bob", BindingIDs: []string{"b3", "b2"}, Via: []string{"direct", "group:eng"}},
				{Kind: "identity", ID: "carol", BindingIDs: []string{"b4"}, Via: []string{"direct"}},
				{Kind: "identity", ID: "erin", BindingIDs: []string{"b7"}, Via: []string{"direct"}, Conditional: true},
			},
		},
		{
			// ops's grant on beta reaches its members, carol and alice.
			name: "group members", perm: "docs.document.read", resource: "projects/beta/x",
			want: []authz.Holder{
				{Kind: "group", ID: "eng", BindingIDs: []string{"b2"}, Via: []string{"direct"}},
				{Kind: "group", ID: "ops", BindingIDs: []string{"b11"}, Via: []string{"direct"}},
				{Kind: "identity", ID: "alice", BindingIDs: []string{"b2", "b11"}, Via: []string{"group:eng", "group:ops"}},
				{Kind: "identity", ID: "bob", BindingIDs: []string{"b3", "b2"}, Via: []string{"direct", "group:eng"}},
				{Kind: "identity", ID: "carol", BindingIDs: []string{"b11"}, Via: []string{"group:ops"}},
				{Kind: "identity", ID: "erin", BindingIDs: []string{"b7"}, Via: []string{"direct"}, Conditional: true},
			},
		},
		{
			name: "iam permission", perm: "iam.role.delete", resource: "projects/alpha/documents/d1",
			want: []authz.Holder{
				{Kind: "identity", ID: "alice", BindingIDs: []string{"b9"}, Via: []string{"direct"}},
			},
		},
		{name: "nobody", perm: "billing.invoice.pay", resource: "orgs/o1"},
		{name: "invalid permission", perm: "docs.*", resource: "projects/alpha/documents/d1"},
		{name: "invalid resource", perm: "docs.document.read", resource: "/projects"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := s.WhoCan(tt.perm, tt.resource, t0)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("WhoCan(%q, %q) =\n%+v\nwant\n%+v", tt.perm, tt.resource, got, tt.want)
			}
		})
	}
}

// TestWhoCanAppliesGroupDenies is the case a held-out review found: dave may read beta
// directly, his group may not read beta/confidential/, so Check denies him there and
// WhoCan must not list him.
func TestWhoCanAppliesGroupDenies(t *testing.T) {
	t.Parallel()
	s, err := newEnv(t, 0).Compile(authz.Policy{
		Revision: 1,
		Roles:    testRoles,
		Bindings: []authz.Binding{
			allow("b1", "identity", "dave", "viewer", "beta/"),
			deny("b2", "group", "contractors", "viewer", "beta/confidential/"),
			allow("b3", "identity", "erin", "viewer", "beta/"),
		},
		Members: map[string][]string{"contractors": {"dave"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		resource string
		want     []string
	}{
		{"beta/confidential/1", []string{"identity/erin"}},
		{"beta/public/1", []string{"identity/dave", "identity/erin"}},
	} {
		var got []string
		for _, h := range s.WhoCan("docs.document.read", tt.resource, t0) {
			got = append(got, h.Kind+"/"+h.ID)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("WhoCan(read, %s) = %v, want %v", tt.resource, got, tt.want)
		}
		for _, who := range []string{"dave", "erin"} {
			d := s.Check(authz.Request{PrincipalID: who, Permission: "docs.document.read", Resource: tt.resource, Time: t0})
			if d.Allowed != slices.Contains(tt.want, "identity/"+who) {
				t.Errorf("Check(%s, read, %s).Allowed = %v, disagrees with WhoCan %v", who, tt.resource, d.Allowed, tt.want)
			}
		}
	}
}
