package schema_test

import (
	"context"
	"errors"
	"testing"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestPolicyChangeJudgedAtARevision: a change authorized against the policy at
// revision r commits only while the policy is still at r; after any other policy
// change it is refused and writes nothing.
func TestPolicyChangeJudgedAtARevision(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	alice := mustHuman(t, s, sc, "Alice")
	g, rev, err := s.CreateGroup(ctx, op, sc, schema.Group{Name: "writers"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateGroup(ctx, op, sc, schema.Group{Name: "readers"}); err != nil { // the policy moves on
		t.Fatal(err)
	}
	if _, err := s.SetMembership(ctx, op, sc.JudgedAt(rev), g.ID, alice.ID, true); !errors.Is(err, schema.ErrPrecondition) {
		t.Fatalf("a change judged at an old revision: %v, want ErrPrecondition", err)
	}
	cur, err := s.PolicyRevision(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if cur != rev+1 {
		t.Fatalf("revision %d after a refused change, want %d (nothing written)", cur, rev+1)
	}
	if _, err := s.SetMembership(ctx, op, sc.JudgedAt(cur), g.ID, alice.ID, true); err != nil {
		t.Fatalf("a change judged at the current revision: %v", err)
	}
}

// TestLastTenantAdminInTheStore: CreateTenantWithAdmin makes one tenant admin in one
// transaction; the store refuses to remove it and the refusal writes nothing.
func TestLastTenantAdminInTheStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	tn, admin, err := s.CreateTenantWithAdmin(ctx, op, schema.NewTenant{ID: "acme", Name: "Acme", HomeRegion: "us-east"},
		schema.NewTenantAdmin{KeyID: "bootstrapkey", Hash: []byte("hash")})
	if err != nil {
		t.Fatal(err)
	}
	if admin.Binding.RoleID != schema.RoleTenantAdmin || admin.Binding.Scope != "*" || admin.Identity.OwnerID != admin.Owner.ID {
		t.Fatalf("bootstrap admin: %+v", admin)
	}
	if _, err := s.DeleteBinding(ctx, op, tn.Scope(), admin.Binding.ID); !errors.Is(err, schema.ErrPrecondition) {
		t.Fatalf("deleting the last admin's binding: %v, want ErrPrecondition", err)
	}
	if _, err := s.SetIdentityStatus(ctx, op, tn.Scope(), admin.Identity.ID, schema.StatusDisabled); !errors.Is(err, schema.ErrPrecondition) {
		t.Fatalf("disabling the last admin: %v, want ErrPrecondition", err)
	}
	bs, err := s.ListBindings(ctx, tn.Scope())
	if err != nil || len(bs) != 1 {
		t.Fatalf("bindings after refused removals: %v %v", bs, err)
	}
	if _, _, err := s.DeleteRole(ctx, op, tn.Scope(), schema.RoleTenantAdmin, false); !errors.Is(err, schema.ErrPrecondition) {
		t.Fatalf("deleting the built-in role: %v", err)
	}
}
