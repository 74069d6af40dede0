package schema_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// rowsIn counts the tenant's rows in each per-tenant table that sit in region.
func rowsIn(t *testing.T, s *schema.Store, tenant, region string) map[string]int {
	t.Helper()
	out := map[string]int{}
	err := s.RunTx(context.Background(), func(tx pgx.Tx) error {
		for _, table := range []string{"identities", "credentials", "sessions", "roles", "groups", "group_members", "bindings", "audit_events"} {
			var n int
			if err := tx.QueryRow(context.Background(), `SELECT count(*) FROM `+table+` WHERE tenant_id = $1 AND crdb_region = $2`,
				tenant, region).Scan(&n); err != nil {
				return err
			}
			out[table] = n
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRehomeTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	tn := mustTenant(t, s, "acme", "us-east")
	old := tn.Scope()
	alice := mustHuman(t, s, old, "Alice")
	g, _, err := s.CreateGroup(ctx, op, old, schema.Group{Name: "eng"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetMembership(ctx, op, old, g.ID, alice.ID, true); err != nil {
		t.Fatal(err)
	}
	role, _, err := s.CreateRole(ctx, op, old, schema.Role{Name: "reader", Permissions: []string{"docs.document.read"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateBinding(ctx, op, old, schema.Binding{Effect: "allow", PrincipalKind: "group", PrincipalID: g.ID,
		RoleID: role.ID, Scope: "*"}); err != nil {
		t.Fatal(err)
	}
	before := rowsIn(t, s, "acme", "us-east")

	moved, err := s.RehomeTenant(ctx, op, "acme", "eu-west")
	if err != nil {
		t.Fatal(err)
	}
	if moved.HomeRegion != "eu-west" || moved.PlacementEpoch != tn.PlacementEpoch+1 {
		t.Fatalf("after rehome: home %q epoch %d, want eu-west and %d", moved.HomeRegion, moved.PlacementEpoch, tn.PlacementEpoch+1)
	}
	after := rowsIn(t, s, "acme", "eu-west")
	for table, n := range before {
		want := n
		if table == "audit_events" {
			want = n + 1 // the move's own event
		}
		if after[table] != want {
			t.Errorf("%s: %d rows in eu-west after the move, want %d", table, after[table], want)
		}
	}
	for table, n := range rowsIn(t, s, "acme", "us-east") {
		if n != 0 {
			t.Errorf("%s: %d rows left in us-east", table, n)
		}
	}
	if got, err := s.GetIdentity(ctx, moved.Scope(), alice.ID); err != nil || got.DisplayName != "Alice" {
		t.Errorf("alice in the new home: %+v, %v", got, err)
	}

	t.Run("a change made with the old home writes nothing", func(t *testing.T) {
		_, err := s.CreateIdentity(ctx, op, old, schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "Late"})
		if !errors.Is(err, schema.ErrMoved) {
			t.Fatalf("create with the old scope: %v, want ErrMoved", err)
		}
		if n := rowsIn(t, s, "acme", "us-east")["identities"]; n != 0 {
			t.Errorf("%d identities written to the old home", n)
		}
	})

	t.Run("moving to the current home changes nothing", func(t *testing.T) {
		again, err := s.RehomeTenant(ctx, op, "acme", "eu-west")
		if err != nil || again.PlacementEpoch != moved.PlacementEpoch {
			t.Fatalf("second move: epoch %d err %v, want epoch %d", again.PlacementEpoch, err, moved.PlacementEpoch)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		_, err := s.RehomeTenant(ctx, op, "acme", "mars")
		wantField(t, err, "home_region")
		_, err = s.RehomeTenant(ctx, op, "acme", "")
		wantField(t, err, "home_region")
		_, err = s.RehomeTenant(ctx, op, "Not A Tenant", "eu-west")
		wantField(t, err, "id")
		if _, err := s.RehomeTenant(ctx, op, "nobody", "eu-west"); !errors.Is(err, schema.ErrNotFound) {
			t.Errorf("unknown tenant: %v, want ErrNotFound", err)
		}
	})

	t.Run("super_region residency stays in its super region", func(t *testing.T) {
		if err := s.RunTx(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `UPDATE regions SET super_region = 'asia-eu' WHERE name IN ('eu-west', 'ap-south')`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateTenant(ctx, op, schema.NewTenant{ID: "euco", Name: "EU Co", HomeRegion: "eu-west",
			Residency: schema.ResidencySuperRegion}); err != nil {
			t.Fatal(err)
		}
		_, err := s.RehomeTenant(ctx, op, "euco", "us-east")
		wantField(t, err, "residency")
		if got, err := s.RehomeTenant(ctx, op, "euco", "ap-south"); err != nil || got.HomeRegion != "ap-south" {
			t.Errorf("move inside the super region: %+v, %v", got, err)
		}
	})
}

// TestRehomeMovesEveryTenantTable: every table with a tenant_id column is one that
// RehomeTenant moves, so a table added by a later migration cannot be left behind in
// the old home's partition.
func TestRehomeMovesEveryTenantTable(t *testing.T) {
	t.Parallel()
	s := schematest.NewStore(t, "us-east")
	rows, err := s.Pool().Query(context.Background(), `SELECT table_name FROM information_schema.columns
WHERE column_name = 'tenant_id' AND table_schema = current_schema() ORDER BY table_name`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	moved := schema.RehomedTables()
	if len(tables) < 10 {
		t.Fatalf("found only %d tables with a tenant_id column: %v", len(tables), tables)
	}
	for _, table := range tables {
		if !slices.Contains(moved, table) {
			t.Errorf("table %s has a tenant_id column but RehomeTenant does not move it", table)
		}
	}
}
