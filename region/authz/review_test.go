package authz_test

import (
	"reflect"
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
			name: "read d1", perm: "docs.document.read", resource: "projects/alpha/documents/d1",
			want: []authz.Holder{
				{Kind: "group", ID: "eng", BindingIDs: []string{"b2"}},
				{Kind: "identity", ID: "alice", BindingIDs: []string{"b1", "b9"}},
				{Kind: "identity", ID: "bob", BindingIDs: []string{"b3"}, Conditional: true},
				{Kind: "identity", ID: "erin", BindingIDs: []string{"b7"}, Conditional: true},
			},
		},
		{
			name: "list a folder in alpha", perm: "docs.folder.list", resource: "projects/alpha/folders/f1",
			want: []authz.Holder{
				{Kind: "group", ID: "eng", BindingIDs: []string{"b2"}},
				{Kind: "identity", ID: "alice", BindingIDs: []string{"b1"}},
				{Kind: "identity", ID: "bob", BindingIDs: []string{"b3"}, Conditional: true},
				{Kind: "identity", ID: "carol", BindingIDs: []string{"b4"}},
				{Kind: "identity", ID: "erin", BindingIDs: []string{"b7"}, Conditional: true},
			},
		},
		{
			name: "iam permission", perm: "iam.role.delete", resource: "projects/alpha/documents/d1",
			want: []authz.Holder{
				{Kind: "identity", ID: "alice", BindingIDs: []string{"b9"}},
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
