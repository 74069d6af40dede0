package peers_test

import (
	"context"
	"os"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyplane/keyplane/bench"
	"github.com/keyplane/keyplane/bench/peers"
	"github.com/keyplane/keyplane/deploy/deploytest"
)

func TestMain(m *testing.M) { os.Exit(deploytest.Run(m)) }

// tiny: identity 0 in groups 0 and 1, identity 1 in group 2, identity 2 in none;
// resource 0 grants groups 1 and 2, resource 1 grants group 0, resource 2 nothing.
func tiny() *peers.Shape {
	return &peers.Shape{Identities: 3, Groups: 3, Resources: 3,
		Members: [][]int{{0, 1}, {2}, nil},
		Grants:  [][]int{{1, 2}, {0}, nil}}
}

func TestTuples(t *testing.T) {
	t.Parallel()
	got := tiny().Tuples()
	want := []peers.Tuple{
		{Subject: "user:0", Relation: "member", Object: "group:0"},
		{Subject: "user:0", Relation: "member", Object: "group:1"},
		{Subject: "user:1", Relation: "member", Object: "group:2"},
		{Subject: "group:1#member", Relation: "viewer", Object: "resource:0"},
		{Subject: "group:2#member", Relation: "viewer", Object: "resource:0"},
		{Subject: "group:0#member", Relation: "viewer", Object: "resource:1"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("tuples:\ngot  %v\nwant %v", got, want)
	}
}

func TestAllowed(t *testing.T) {
	t.Parallel()
	s := tiny()
	want := [3][3]bool{ // [identity][resource]
		{true, true, false},
		{true, false, false},
		{false, false, false},
	}
	for i := range 3 {
		for r := range 3 {
			if got := s.Allowed(i, r); got != want[i][r] {
				t.Errorf("Allowed(%d, %d) = %v, want %v", i, r, got, want[i][r])
			}
		}
	}
}

// TestShapeMatchesKeyplane seeds a small keyplane as the peers bench does, reads the
// shape back from its database, and checks that the tuples carry exactly what the
// seeding granted: for every (identity, resource) pair, keyplane's own fresh Check
// answers what the tuples imply.
func TestShapeMatchesKeyplane(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const identities, roles, resources = 12, 5, 10
	target, err := bench.StartCheckTarget(ctx, bench.Config{Identities: identities, Roles: roles, Resources: resources, Binary: deploytest.Binary})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(target.Stop)
	pool, err := pgxpool.New(ctx, target.Cluster.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s, err := peers.LoadShape(ctx, pool, peers.Seeded{Tenant: target.Tenant, Region: target.Region, Identities: target.Identities,
		Groups: target.Groups, Roles: target.Roles, Resources: target.Resources})
	if err != nil {
		t.Fatal(err)
	}
	var members, grants int
	for _, tu := range s.Tuples() {
		switch tu.Relation {
		case "member":
			members++
		case "viewer":
			grants++
		default:
			t.Errorf("unexpected relation in %v", tu)
		}
	}
	if s.Identities != identities || len(s.Members) != identities+s.Others {
		t.Fatalf("%d identities, %d others, %d members lists; want %d identities", s.Identities, s.Others, len(s.Members), identities)
	}
	if members != 3*(identities+s.Others) || grants != 2*resources {
		t.Fatalf("tuples: %d member, %d viewer; want %d and %d (3 roles per member, 2 per resource)", members, grants,
			3*(identities+s.Others), 2*resources)
	}
	var allowed, denied int
	for i := range identities {
		for r := range resources {
			got, err := target.Check(ctx, i, r)
			if err != nil {
				t.Fatalf("check identity %d, resource %d: %v", i, r, err)
			}
			if want := s.Allowed(i, r); got != want {
				t.Errorf("identity %d, resource %d: keyplane says %v, the tuples say %v", i, r, got, want)
			}
			if got {
				allowed++
			} else {
				denied++
			}
		}
	}
	if allowed == 0 || denied == 0 {
		t.Fatalf("%d allowed, %d denied: the shape must exercise both answers", allowed, denied)
	}
}
