package schema_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestRoleAndGroupChangesJudgedAt: an update or cascading delete authorized at a
// policy revision the policy has since left is refused and writes nothing, so a
// binding made between the judgement and the write is never changed or deleted
// unjudged.
func TestRoleAndGroupChangesJudgedAt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	role, _, err := s.CreateRole(ctx, op, sc, schema.Role{Name: "editor", Permissions: []string{"docs.document.read"}})
	if err != nil {
		t.Fatal(err)
	}
	g, _, err := s.CreateGroup(ctx, op, sc, schema.Group{Name: "editors"})
	if err != nil {
		t.Fatal(err)
	}
	judged, err := s.PolicyRevision(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	// The policy moves after the judgement: a binding of the role to the group.
	b, rev, err := s.CreateBinding(ctx, op, sc, schema.Binding{Effect: "allow", PrincipalKind: "group", PrincipalID: g.ID, RoleID: role.ID, Scope: "docs/"})
	if err != nil {
		t.Fatal(err)
	}
	stale := sc.JudgedAt(judged)
	if _, _, _, err := s.UpdateRole(ctx, op, stale, role.ID, schema.RoleUpdate{Permissions: []string{"docs.*"}}); !errors.Is(err, schema.ErrPrecondition) {
		t.Errorf("stale UpdateRole: %v, want ErrPrecondition", err)
	}
	if _, _, err := s.DeleteRole(ctx, op, stale, role.ID, true); !errors.Is(err, schema.ErrPrecondition) {
		t.Errorf("stale DeleteRole: %v, want ErrPrecondition", err)
	}
	if _, _, err := s.DeleteGroup(ctx, op, stale, g.ID, true); !errors.Is(err, schema.ErrPrecondition) {
		t.Errorf("stale DeleteGroup: %v, want ErrPrecondition", err)
	}
	if now, _ := s.PolicyRevision(ctx, "acme"); now != rev {
		t.Fatalf("revision %d after refused changes, want %d", now, rev)
	}
	if r, err := s.GetRole(ctx, sc, role.ID); err != nil || !slices.Equal(r.Permissions, []string{"docs.document.read"}) {
		t.Fatalf("role after a refused update: %+v %v", r, err)
	}
	if bs, err := s.GroupBindings(ctx, sc, g.ID); err != nil || len(bs) != 1 || bs[0].ID != b.ID {
		t.Fatalf("group bindings after refused deletes: %+v %v", bs, err)
	}
	// Judged at the current revision, both go through.
	gone, _, err := s.DeleteGroup(ctx, op, sc.JudgedAt(rev), g.ID, true)
	if err != nil || len(gone.Bindings) != 1 || gone.Bindings[0].ID != b.ID {
		t.Fatalf("DeleteGroup judged now: %+v %v", gone, err)
	}
	if _, _, err := s.DeleteRole(ctx, op, sc, role.ID, false); err != nil {
		t.Fatalf("DeleteRole of an unused role: %v", err)
	}
}

// TestListRolesIsTenantScoped: a tenant lists its own roles and the built-in ones,
// once each (a built-in role's row, written on first use, is not listed twice), never
// another tenant's.
func TestListRolesIsTenantScoped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	acme := mustTenant(t, s, "acme", "us-east").Scope()
	other := mustTenant(t, s, "other", "us-east").Scope()
	alice := mustHuman(t, s, acme, "Alice")
	if _, _, err := s.CreateRole(ctx, op, other, schema.Role{Name: "secret-role", Permissions: []string{"x.y.z"}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateBinding(ctx, op, acme, schema.Binding{Effect: "allow", PrincipalKind: "identity", PrincipalID: alice.ID,
		RoleID: schema.RoleSecurityAuditor, Scope: "*"}); err != nil {
		t.Fatal(err)
	}
	rs, next, err := s.ListRoles(ctx, acme, "", schema.Page{})
	if err != nil || next != "" {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
	}
	if want := []string{"access-admin", "identity-manager", "nhi-owner", "security-auditor", "tenant-admin"}; !slices.Equal(names, want) {
		t.Fatalf("acme's roles: %v, want %v", names, want)
	}
	if _, err := s.GetGroup(ctx, acme, "00000000-0000-4000-8000-000000000001"); !errors.Is(err, schema.ErrNotFound) {
		t.Fatalf("unknown group: %v", err)
	}
}
