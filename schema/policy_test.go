package schema_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

func TestPolicyChangesBumpRevision(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	other := mustTenant(t, s, "other", "us-east").Scope()
	alice := mustHuman(t, s, sc, "Alice")
	stranger := mustHuman(t, s, other, "Stranger")

	rev0, err := s.PolicyRevision(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	role, rev1, err := s.CreateRole(ctx, op, sc, schema.Role{Name: "editor", Permissions: []string{"docs.*"}})
	if err != nil || rev1 != rev0+1 {
		t.Fatalf("create role: rev %d→%d %v", rev0, rev1, err)
	}
	if _, _, err := s.CreateRole(ctx, op, sc, schema.Role{Name: "editor", Permissions: []string{"x.y.z"}}); !errors.Is(err, schema.ErrConflict) {
		t.Fatalf("duplicate role: %v", err)
	}
	g, rev2, err := s.CreateGroup(ctx, op, sc, schema.Group{Name: "writers"})
	if err != nil || rev2 != rev1+1 {
		t.Fatalf("create group: %d %v", rev2, err)
	}
	rev3, err := s.SetMembership(ctx, op, sc, g.ID, alice.ID, true)
	if err != nil || rev3 != rev2+1 {
		t.Fatalf("add member: %d %v", rev3, err)
	}
	_, err = s.SetMembership(ctx, op, sc, g.ID, stranger.ID, true)
	wantField(t, err, "identity_id")
	b, rev4, err := s.CreateBinding(ctx, op, sc, schema.Binding{Effect: "allow", PrincipalKind: "group", PrincipalID: g.ID,
		RoleID: role.ID, Scope: "projects/alpha/", Justification: "team", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil || rev4 != rev3+1 || b.GrantedBy != "operator" {
		t.Fatalf("create binding: %+v %d %v", b, rev4, err)
	}
	_, _, err = s.CreateBinding(ctx, op, sc, schema.Binding{Effect: "allow", PrincipalKind: "identity", PrincipalID: stranger.ID, RoleID: role.ID, Scope: "*"})
	wantField(t, err, "principal_id")
	_, _, err = s.CreateBinding(ctx, op, sc, schema.Binding{Effect: "allow", PrincipalKind: "identity", PrincipalID: alice.ID, RoleID: uuid.NewString(), Scope: "*"})
	wantField(t, err, "role_id")
	// The other tenant's revision did not move.
	if r, _ := s.PolicyRevision(ctx, "other"); r != 1 {
		t.Fatalf("other tenant's revision: %d", r)
	}
	p, err := s.LoadPolicy(ctx, sc)
	if err != nil || p.Revision != rev4 || len(p.Roles) != 1 || len(p.Bindings) != 1 || len(p.Members[g.ID]) != 1 {
		t.Fatalf("load policy: %+v %v", p, err)
	}
	if _, _, err := s.DeleteRole(ctx, op, sc, role.ID, false); !errors.Is(err, schema.ErrPrecondition) {
		t.Fatalf("delete a role in use: %v", err)
	}
	rev5, err := s.DeleteBinding(ctx, op, sc, b.ID)
	if err != nil || rev5 != rev4+1 {
		t.Fatalf("delete binding: %d %v", rev5, err)
	}
	if _, err := s.DeleteBinding(ctx, op, sc, b.ID); !errors.Is(err, schema.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	if _, err := s.SetMembership(ctx, op, sc, g.ID, alice.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.DeleteRole(ctx, op, sc, role.ID, false); err != nil {
		t.Fatal(err)
	}
	got := auditActions(t, s, sc)
	want := []string{"tenant.create", "identity.create", "role.create", "group.create", "group.add_member", "binding.create",
		"binding.delete", "group.remove_member", "role.delete"}
	if len(got) != len(want) {
		t.Fatalf("audit: got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("audit: got %v, want %v", got, want)
		}
	}
}

func TestWriteDecisions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	var ds []schema.Decision
	for i := 0; i < 5; i++ {
		ds = append(ds, schema.Decision{ID: uuid.NewString(), TenantID: sc.TenantID, Region: sc.Region, At: time.Now(),
			PrincipalID: "p", Permission: "docs.document.read", Resource: "projects/a", Allowed: i%2 == 0, Reason: "r", Revision: 1})
	}
	if err := s.WriteDecisions(ctx, ds); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteDecisions(ctx, ds); err != nil { // a retried batch does not duplicate
		t.Fatal(err)
	}
	if n, err := s.CountDecisions(ctx, sc); err != nil || n != 5 {
		t.Fatalf("decisions: %d %v", n, err)
	}
}
