package schema_test

import (
	"context"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestResidencyPolicy: super_region tenants are strict by default and served by
// their super region's members; region tenants are relaxed by default and, made
// strict, served by their home region only; the policy is validated and audited.
func TestResidencyPolicy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := schema.Open(ctx, schematest.NewEmptyDatabase(t), schema.PoolConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := schema.Migrate(ctx, pool, schema.MigrateConfig{Regions: []string{"us-east", "eu-west", "eu-central"},
		SuperRegions: map[string][]string{"eu": {"eu-west", "eu-central"}}}); err != nil {
		t.Fatal(err)
	}
	s := schema.New(pool, schema.Config{Region: "us-east", Node: "n1"})
	for _, in := range []schema.NewTenant{
		{ID: "eu-default", Name: "EU", HomeRegion: "eu-west", Residency: schema.ResidencySuperRegion},
		{ID: "eu-relaxed", Name: "EU relaxed", HomeRegion: "eu-west", Residency: schema.ResidencySuperRegion, ResidencyPolicy: schema.ResidencyRelaxed},
		{ID: "us-default", Name: "US", HomeRegion: "us-east"},
		{ID: "us-strict", Name: "US strict", HomeRegion: "us-east", ResidencyPolicy: schema.ResidencyStrict},
	} {
		if _, err := s.CreateTenant(ctx, op, in); err != nil {
			t.Fatalf("create %s: %v", in.ID, err)
		}
	}
	for id, want := range map[string][2]string{
		"eu-default": {schema.ResidencyStrict, "eu-central,eu-west"},
		"eu-relaxed": {schema.ResidencyRelaxed, ""},
		"us-default": {schema.ResidencyRelaxed, ""},
		"us-strict":  {schema.ResidencyStrict, "us-east"},
	} {
		got, err := s.GetTenant(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.ResidencyPolicy != want[0] || got.ServeRegions != want[1] {
			t.Errorf("%s: policy %q serve regions %q, want %q %q", id, got.ResidencyPolicy, got.ServeRegions, want[0], want[1])
		}
	}
	strict := schema.ResidencyStrict
	if _, err := s.UpdateTenant(ctx, op, "us-default", schema.TenantUpdate{ResidencyPolicy: &strict}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetTenant(ctx, "us-default"); got.ServeRegions != "us-east" {
		t.Errorf("made strict: serve regions %q, want us-east", got.ServeRegions)
	}
	bad := "loose"
	if _, err := s.UpdateTenant(ctx, op, "us-default", schema.TenantUpdate{ResidencyPolicy: &bad}); err == nil || !strings.Contains(err.Error(), "residency_policy") {
		t.Errorf("policy %q: %v, want an error naming residency_policy", bad, err)
	}
	if _, err := s.CreateTenant(ctx, op, schema.NewTenant{ID: "bad", Name: "B", HomeRegion: "us-east", ResidencyPolicy: bad}); err == nil || !strings.Contains(err.Error(), "residency_policy") {
		t.Errorf("create with policy %q: %v, want an error naming residency_policy", bad, err)
	}
}
