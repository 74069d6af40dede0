package schema_test

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

var update = flag.Bool("update", false, "rewrite the golden DDL files in testdata/")

func TestMain(m *testing.M) { os.Exit(schematest.Run(m)) }

// TestGoldenDDL pins the full DDL each dialect emits, so every schema change shows up
// in review as a diff of testdata/*.sql. Run `go test ./schema -run Golden -update`
// after an intended change.
func TestGoldenDDL(t *testing.T) {
	t.Parallel()
	cfg := schema.MigrateConfig{
		Regions:      []string{"us-east1", "europe-west1", "europe-west2", "europe-west3", "asia-south1"},
		Survive:      "region",
		SuperRegions: map[string][]string{"eu": {"europe-west1", "europe-west2", "europe-west3"}},
	}
	for _, d := range []schema.Dialect{schema.Postgres, schema.Cockroach} {
		t.Run(string(d), func(t *testing.T) {
			if err := cfg.Validate(); err != nil {
				t.Fatalf("golden config: %v", err)
			}
			got, err := schema.Render(d, "keyplane", cfg)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", string(d)+".sql")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("DDL for %s differs from %s; run `go test ./schema -run Golden -update` and review the diff", d, path)
			}
		})
	}
}

func TestCockroachDDLShape(t *testing.T) {
	t.Parallel()
	got, err := schema.Render(schema.Cockroach, "keyplane", schema.MigrateConfig{Regions: []string{"a1", "b1", "c1"}, Placement: "restricted"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`ALTER DATABASE "keyplane" SET PRIMARY REGION "a1"`,
		`ALTER DATABASE "keyplane" ADD REGION IF NOT EXISTS "b1"`,
		`ALTER DATABASE "keyplane" SURVIVE ZONE FAILURE`,
		`ALTER DATABASE "keyplane" PLACEMENT RESTRICTED`,
		"LOCALITY REGIONAL BY ROW AS crdb_region",
		"LOCALITY GLOBAL",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("cockroach DDL lacks %q", want)
		}
	}
	if strings.Contains(got, "CREATE DOMAIN") {
		t.Error("cockroach DDL must not create the crdb_internal_region domain (the database owns that type)")
	}
	// Every per-tenant table must be REGIONAL BY ROW; tenants and signing keys GLOBAL.
	for _, stmt := range strings.Split(got, "CREATE TABLE IF NOT EXISTS ")[1:] {
		name := strings.Fields(stmt)[0]
		body, _, _ := strings.Cut(stmt, ";")
		switch {
		case strings.Contains(body, "tenant_id ") || name == "signing_key_secrets":
			if !strings.HasSuffix(body, "LOCALITY REGIONAL BY ROW AS crdb_region") {
				t.Errorf("table %s is per-tenant but not REGIONAL BY ROW", name)
			}
		case name == "tenants" || name == "signing_keys" || name == "regions":
			if !strings.HasSuffix(body, "LOCALITY GLOBAL") {
				t.Errorf("table %s should be GLOBAL", name)
			}
		}
	}
}

func TestMigrateConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     schema.MigrateConfig
		wantErr string
	}{
		{"ok", schema.MigrateConfig{Regions: []string{"us-east"}}, ""},
		{"bad region", schema.MigrateConfig{Regions: []string{"US East"}}, "regions:"},
		{"duplicate", schema.MigrateConfig{Regions: []string{"a", "a"}}, "listed twice"},
		{"region survival needs 3", schema.MigrateConfig{Regions: []string{"a", "b"}, Survive: "region"}, "at least 3 regions"},
		{"bad survive", schema.MigrateConfig{Regions: []string{"a"}, Survive: "planet"}, "survive:"},
		{"restricted with region survival", schema.MigrateConfig{Regions: []string{"a", "b", "c"}, Survive: "region", Placement: "restricted"}, "zone survival"},
		{"super region unknown member", schema.MigrateConfig{Regions: []string{"a"}, SuperRegions: map[string][]string{"eu": {"b"}}}, "not in --regions"},
		{"two-region super region with region survival", schema.MigrateConfig{Regions: []string{"a", "b", "c"}, Survive: "region",
			SuperRegions: map[string][]string{"eu": {"a", "b"}}}, "at least 3 regions to keep"},
		{"super regions overlap", schema.MigrateConfig{Regions: []string{"a", "b"}, SuperRegions: map[string][]string{"x": {"a"}, "y": {"a", "b"}}}, "must not overlap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestMigrateFreshThenRepeat(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := schema.Open(ctx, schematest.NewEmptyDatabase(t), schema.PoolConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	if _, err := schema.Migrate(ctx, pool, schema.MigrateConfig{}); err == nil || !strings.Contains(err.Error(), "--regions") {
		t.Fatalf("migrate without regions on an empty database: got %v, want an error naming --regions", err)
	}
	cfg := schema.MigrateConfig{Regions: []string{"us-east", "eu-west"}, SuperRegions: map[string][]string{"eu": {"eu-west"}}}
	first, err := schema.Migrate(ctx, pool, cfg)
	if err != nil {
		t.Fatalf("first migrate: %v", err)
	}
	if first.Dialect != schema.Postgres || len(first.Applied) == 0 {
		t.Fatalf("first migrate: got dialect %q applied %v", first.Dialect, first.Applied)
	}
	second, err := schema.Migrate(ctx, pool, cfg)
	if err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if len(second.Applied) != 0 {
		t.Fatalf("second migrate applied %v, want nothing", second.Applied)
	}
	if got := len(second.Regions); got != 2 || second.Regions[1].Name != "us-east" || second.Regions[0].SuperRegion != "eu" {
		t.Fatalf("regions after migrate: %+v", second.Regions)
	}
	// A later migrate without --regions keeps the recorded ones.
	if _, err := schema.Migrate(ctx, pool, schema.MigrateConfig{}); err != nil {
		t.Fatalf("migrate without --regions on a migrated database: %v", err)
	}
	if err := schema.New(pool, schema.Config{}).CheckSchema(ctx); err != nil {
		t.Fatalf("CheckSchema after migrate: %v", err)
	}
}

func TestCheckSchemaUnmigrated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := schema.Open(ctx, schematest.NewEmptyDatabase(t), schema.PoolConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	err = schema.New(pool, schema.Config{}).CheckSchema(ctx)
	if err == nil || !strings.Contains(err.Error(), "keyplane migrate") {
		t.Fatalf("got %v, want an error telling to run keyplane migrate", err)
	}
}

func TestCheckServes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	regions := schematest.MigrateConfig().Regions
	store := schematest.NewStore(t, regions[0])
	for _, r := range regions {
		if err := store.CheckServes(ctx, r); err != nil {
			t.Errorf("CheckServes(%q) = %v, want nil", r, err)
		}
	}
	err := store.CheckServes(ctx, "mars-north")
	if !errors.Is(err, schema.ErrNotFound) || !strings.Contains(err.Error(), `"mars-north"`) || !strings.Contains(err.Error(), regions[0]) {
		t.Fatalf("CheckServes(mars-north) = %v, want ErrNotFound naming the region asked for and the database's regions", err)
	}
}
