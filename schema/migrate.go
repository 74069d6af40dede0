package schema

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Dialect is the SQL engine behind a connection.
type Dialect string

// Dialects.
const (
	Postgres  Dialect = "postgres"
	Cockroach Dialect = "cockroach"
)

// DetectDialect asks the server what it is.
func DetectDialect(ctx context.Context, pool *pgxpool.Pool) (Dialect, error) {
	var v string
	if err := pool.QueryRow(ctx, `SELECT version()`).Scan(&v); err != nil {
		return "", fmt.Errorf("detect database engine: %w", classify(err))
	}
	if strings.HasPrefix(v, "CockroachDB") {
		return Cockroach, nil
	}
	return Postgres, nil
}

// MigrateConfig describes the database's regions. Only Regions matters on PostgreSQL;
// on CockroachDB all fields become ALTER DATABASE statements.
type MigrateConfig struct {
	Regions      []string            // the first one is the primary region
	Survive      string              // "zone" (default) or "region" (needs 3+ regions)
	SuperRegions map[string][]string // super region name → member regions
	Placement    string              // "default" or "restricted" (zone survival only)
}

// Validate checks the configuration without touching a database.
func (c MigrateConfig) Validate() error {
	seen := map[string]bool{}
	for _, r := range c.Regions {
		if err := checkRegionName("regions", r); err != nil {
			return err
		}
		if seen[r] {
			return fieldErr("regions", "region %q listed twice", r)
		}
		seen[r] = true
	}
	switch c.Survive {
	case "", "zone":
	case "region":
		if len(c.Regions) < 3 {
			return fieldErr("survive", "surviving a region failure needs at least 3 regions, got %d", len(c.Regions))
		}
	default:
		return fieldErr("survive", `must be "zone" or "region", got %q`, c.Survive)
	}
	switch c.Placement {
	case "", "default":
	case "restricted":
		if c.Survive == "region" {
			return fieldErr("placement", "restricted placement is only available with zone survival")
		}
	default:
		return fieldErr("placement", `must be "default" or "restricted", got %q`, c.Placement)
	}
	member := map[string]string{}
	for _, name := range sortedKeys(c.SuperRegions) {
		if err := checkRegionName("super_region", name); err != nil {
			return err
		}
		if len(c.SuperRegions[name]) == 0 {
			return fieldErr("super_region", "super region %q has no regions", name)
		}
		for _, r := range c.SuperRegions[name] {
			if !seen[r] {
				return fieldErr("super_region", "super region %q names region %q, which is not in --regions", name, r)
			}
			if other, ok := member[r]; ok {
				return fieldErr("super_region", "region %q is in super regions %q and %q; they must not overlap", r, other, name)
			}
			member[r] = name
		}
		if c.Survive == "region" && len(c.SuperRegions[name]) < 3 {
			return fieldErr("super_region", "with region survival a super region needs at least 3 regions to keep its data inside it through a region failure; %q has %d",
				name, len(c.SuperRegions[name]))
		}
	}
	return nil
}

// ParseSuperRegions parses MigrateConfig.SuperRegions from its flag form: entries of
// NAME=REGION,REGION..., several in one entry separated by ';' (as --super-region and
// KEYPLANE_SUPER_REGION take them). No entries is a nil map.
func ParseSuperRegions(entries []string) (map[string][]string, error) {
	var out map[string][]string
	for _, e := range entries {
		for _, one := range strings.Split(e, ";") {
			name, members, err := ParseSuperRegion(one)
			if err != nil {
				return nil, err
			}
			if out == nil {
				out = map[string][]string{}
			}
			out[name] = members
		}
	}
	return out, nil
}

// ParseSuperRegion parses "eu=europe-west1,europe-west2".
func ParseSuperRegion(s string) (string, []string, error) {
	name, list, ok := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	var regions []string
	for _, r := range strings.Split(list, ",") {
		if r = strings.TrimSpace(r); r != "" {
			regions = append(regions, r)
		}
	}
	if !ok || name == "" || len(regions) == 0 {
		return "", nil, fieldErr("super_region", "want NAME=REGION,REGION..., got %q", s)
	}
	return name, regions, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Migration is one versioned schema change, rendered for a dialect.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

//go:embed migrations/*.sql.tmpl
var migrationFiles embed.FS

// Migrations returns every migration rendered for d, in version order.
func Migrations(d Dialect) ([]Migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql.tmpl")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	cockroach := d == Cockroach
	funcs := template.FuncMap{
		"global": func() string {
			if cockroach {
				return " LOCALITY GLOBAL"
			}
			return ""
		},
		"rbr": func() string {
			if cockroach {
				return " LOCALITY REGIONAL BY ROW AS crdb_region"
			}
			return ""
		},
		// pkr: a primary key that names crdb_region first on both engines, for rows
		// whose id the application generates: CockroachDB then checks uniqueness within
		// the home region only, instead of probing every region on each insert.
		"pkr": func(cols string) string { return "PRIMARY KEY (crdb_region, " + cols + ")" },
		"pk": func(cols string) string {
			if cockroach {
				return "PRIMARY KEY (" + cols + ")"
			}
			return "PRIMARY KEY (crdb_region, " + cols + ")"
		},
	}
	var out []Migration
	for _, name := range names {
		base := strings.TrimSuffix(path.Base(name), ".sql.tmpl")
		num, label, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration file %s: want NNNN_name.sql.tmpl", name)
		}
		src, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		t, err := template.New(base).Funcs(funcs).Parse(string(src))
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", base, err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, struct{ Cockroach bool }{cockroach}); err != nil {
			return nil, fmt.Errorf("migration %s: %w", base, err)
		}
		out = append(out, Migration{Version: version, Name: label, SQL: buf.String()})
	}
	return out, nil
}

// RegionSetup returns the statements that make database a multi-region database on
// CockroachDB (none on PostgreSQL). Each is idempotent and runs as its own implicit
// transaction: CockroachDB does not run multi-region DDL atomically with other
// statements.
func RegionSetup(d Dialect, database string, c MigrateConfig) []string {
	if d != Cockroach || len(c.Regions) == 0 {
		return nil
	}
	db := quoteIdent(database)
	stmts := []string{fmt.Sprintf(`ALTER DATABASE %s SET PRIMARY REGION %s`, db, quoteIdent(c.Regions[0]))}
	for _, r := range c.Regions[1:] {
		stmts = append(stmts, fmt.Sprintf(`ALTER DATABASE %s ADD REGION IF NOT EXISTS %s`, db, quoteIdent(r)))
	}
	survive := "ZONE"
	if c.Survive == "region" {
		survive = "REGION"
	}
	stmts = append(stmts, fmt.Sprintf(`ALTER DATABASE %s SURVIVE %s FAILURE`, db, survive))
	if len(c.SuperRegions) > 0 {
		stmts = append(stmts, `SET enable_super_regions = 'on'`)
		for _, name := range sortedKeys(c.SuperRegions) {
			var members []string
			for _, r := range c.SuperRegions[name] {
				members = append(members, quoteIdent(r))
			}
			stmts = append(stmts, fmt.Sprintf(`ALTER DATABASE %s ADD SUPER REGION %s VALUES %s`, db, quoteIdent(name), strings.Join(members, ", ")))
		}
	}
	if c.Placement == "restricted" {
		stmts = append(stmts, `SET enable_multiregion_placement_policy = 'on'`,
			fmt.Sprintf(`ALTER DATABASE %s PLACEMENT RESTRICTED`, db))
	} else {
		stmts = append(stmts, fmt.Sprintf(`ALTER DATABASE %s PLACEMENT DEFAULT`, db))
	}
	return stmts
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// Render returns everything Migrate would run on an empty database of dialect d, as
// one script. The golden tests pin it.
func Render(d Dialect, database string, c MigrateConfig) (string, error) {
	ms, err := Migrations(d)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "-- keyplane schema, %s dialect\n", d)
	if setup := RegionSetup(d, database, c); len(setup) > 0 {
		b.WriteString("\n-- region setup (each statement on its own)\n")
		for _, s := range setup {
			b.WriteString(s + ";\n")
		}
	}
	b.WriteString("\n" + migrationsTable + ";\n")
	for _, m := range ms {
		fmt.Fprintf(&b, "\n-- migration %04d %s\n%s", m.Version, m.Name, m.SQL)
	}
	return b.String(), nil
}

const migrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INT8 NOT NULL PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)`

// MigrateResult reports what Migrate did.
type MigrateResult struct {
	Dialect Dialect
	Applied []string // migrations applied by this call, "0001_initial"...
	Regions []Region // the regions the database serves afterwards
}

// String is the result as `keyplane migrate` prints it, one fact a line.
func (r MigrateResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "engine: %s\n", r.Dialect)
	if len(r.Applied) == 0 {
		b.WriteString("migrations: up to date, nothing applied\n")
	} else {
		fmt.Fprintf(&b, "migrations applied: %s\n", strings.Join(r.Applied, ", "))
	}
	for _, reg := range r.Regions {
		if reg.SuperRegion != "" {
			fmt.Fprintf(&b, "region: %s (super region %s)\n", reg.Name, reg.SuperRegion)
		} else {
			fmt.Fprintf(&b, "region: %s\n", reg.Name)
		}
	}
	return b.String()
}

// Migrate brings the database up to date and records the regions. It is idempotent:
// a second call applies nothing. On PostgreSQL each migration runs in one transaction
// under an advisory lock; on CockroachDB each statement runs on its own (see
// RegionSetup) and every statement is IF NOT EXISTS, so an interrupted run resumes.
func Migrate(ctx context.Context, pool *pgxpool.Pool, cfg MigrateConfig) (MigrateResult, error) {
	if err := cfg.Validate(); err != nil {
		return MigrateResult{}, err
	}
	d, err := DetectDialect(ctx, pool)
	if err != nil {
		return MigrateResult{}, err
	}
	res := MigrateResult{Dialect: d}
	if len(cfg.Regions) == 0 {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM regions`).Scan(&n); err != nil || n == 0 {
			return res, fieldErr("regions", "the database serves no region yet: pass --regions (for example --regions us-east,eu-west)")
		}
	}
	if d == Cockroach {
		var db string
		if err := pool.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
			return res, fmt.Errorf("read database name: %w", classify(err))
		}
		if err := runRegionSetup(ctx, pool, db, cfg); err != nil {
			return res, err
		}
	}
	if _, err := pool.Exec(ctx, migrationsTable); err != nil {
		return res, fmt.Errorf("create schema_migrations: %w", classify(err))
	}
	ms, err := Migrations(d)
	if err != nil {
		return res, err
	}
	s := New(pool, Config{})
	for _, m := range ms {
		applied, err := s.applyMigration(ctx, d, m)
		if err != nil {
			return res, fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
		}
		if applied {
			res.Applied = append(res.Applied, fmt.Sprintf("%04d_%s", m.Version, m.Name))
		}
	}
	if err := s.recordRegions(ctx, cfg); err != nil {
		return res, err
	}
	res.Regions, err = s.ListRegions(ctx)
	return res, err
}

func runRegionSetup(ctx context.Context, pool *pgxpool.Pool, db string, cfg MigrateConfig) error {
	conn, err := pool.Acquire(ctx) // session settings (enable_super_regions) need one connection
	if err != nil {
		return fmt.Errorf("region setup: %w", classify(err))
	}
	defer conn.Release()
	for _, stmt := range RegionSetup(Cockroach, db, cfg) {
		_, err := conn.Exec(ctx, stmt)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" && strings.Contains(stmt, "ADD SUPER REGION") {
			_, err = conn.Exec(ctx, strings.Replace(stmt, "ADD SUPER REGION", "ALTER SUPER REGION", 1))
		}
		if err != nil {
			return fmt.Errorf("region setup %q: %w", stmt, classify(err))
		}
	}
	return nil
}

// applyMigration applies m unless schema_migrations already records it.
func (s *Store) applyMigration(ctx context.Context, d Dialect, m Migration) (bool, error) {
	if d == Cockroach {
		var done bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, m.Version).Scan(&done); err != nil {
			return false, classify(err)
		}
		if done {
			return false, nil
		}
		for _, stmt := range splitStatements(m.SQL) {
			if _, err := s.pool.Exec(ctx, stmt); err != nil {
				return false, classify(err)
			}
		}
		_, err := s.pool.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING`, m.Version, m.Name)
		return err == nil, classify(err)
	}
	applied := false
	err := s.tx(ctx, func(tx pgx.Tx) error {
		applied = false
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7381204)`); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		var done bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, m.Version).Scan(&done); err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		if done {
			return nil
		}
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
			return fmt.Errorf("record: %w", err)
		}
		applied = true
		return nil
	})
	return applied, err
}

// splitStatements splits a rendered migration at the semicolons that end a line,
// dropping comment-only chunks.
func splitStatements(sql string) []string {
	var out []string
	for _, chunk := range strings.Split(sql, ";\n") {
		var lines []string
		for _, l := range strings.Split(chunk, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "--") {
				lines = append(lines, l)
			}
		}
		if len(lines) > 0 {
			out = append(out, strings.TrimSuffix(strings.Join(lines, "\n"), ";"))
		}
	}
	return out
}

// recordRegions writes the configured regions into the regions table. Regions are
// never removed here: tenants may be homed in them.
func (s *Store) recordRegions(ctx context.Context, cfg MigrateConfig) error {
	superOf := map[string]string{}
	for name, members := range cfg.SuperRegions {
		for _, r := range members {
			superOf[r] = name
		}
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		for _, r := range cfg.Regions {
			var super *string
			if name, ok := superOf[r]; ok {
				super = &name
			}
			if _, err := tx.Exec(ctx, `INSERT INTO regions (name, super_region) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET super_region = excluded.super_region`, r, super); err != nil {
				return fmt.Errorf("record region %s: %w", r, err)
			}
		}
		return nil
	})
}

// AppliedMigrations lists the versions recorded in schema_migrations.
func (s *Store) AppliedMigrations(ctx context.Context) ([]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, classify(err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int])
	return vs, classify(err)
}

// CheckSchema reports an error unless every migration this binary knows is applied.
func (s *Store) CheckSchema(ctx context.Context) error {
	have, err := s.AppliedMigrations(ctx)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) || strings.Contains(err.Error(), "42P01") {
			return errors.New("database is not migrated: run `keyplane migrate` first")
		}
		return err
	}
	ms, err := Migrations(Postgres)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if !slices.Contains(have, m.Version) {
			return fmt.Errorf("database lacks migration %04d_%s: run `keyplane migrate`", m.Version, m.Name)
		}
	}
	return nil
}
