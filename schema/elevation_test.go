package schema_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// An approval judged on one policy revision is refused when the policy moved on
// before it commits (the approver's grants may be gone), and goes through when it
// did not.
func TestDecideElevationRefusesAStalePolicy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	alice := mustHuman(t, s, sc, "Alice")
	bob := mustHuman(t, s, sc, "Bob")
	role, judged, err := s.CreateRole(ctx, op, sc, schema.Role{Name: "editor", Permissions: []string{"docs.*"}})
	if err != nil {
		t.Fatal(err)
	}
	el, err := s.RequestElevation(ctx, op, sc, schema.Elevation{RequesterID: alice.ID, RoleID: role.ID, Scope: "prod/",
		Duration: time.Hour, Justification: "incident"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateGroup(ctx, op, sc, schema.Group{Name: "moved-on"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.DecideElevation(ctx, op, sc, el.ID, bob.ID, true, judged); !errors.Is(err, schema.ErrPrecondition) {
		t.Fatalf("approval judged at revision %d after a policy change: %v, want ErrPrecondition", judged, err)
	}
	if got, err := s.GetElevation(ctx, sc, el.ID); err != nil || got.Status != schema.ElevationPending || got.BindingID != "" {
		t.Fatalf("after the refused approval: %+v %v, want pending without a binding", got, err)
	}
	current, err := s.PolicyRevision(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	got, rev, err := s.DecideElevation(ctx, op, sc, el.ID, bob.ID, true, current)
	if err != nil || got.Status != schema.ElevationActive || rev != current+1 {
		t.Fatalf("approval judged at the current revision %d: %+v rev %d %v", current, got, rev, err)
	}
}
