// Package schematest gives tests a real, migrated PostgreSQL database each.
//
// One private server (see pglocal) is started per test binary, on first use; a
// template database is migrated once and every test gets a fresh copy of it. Set
// KEYPLANE_TEST_DATABASE_URL to run the same tests against an existing server instead
// (for example a multi-region CockroachDB cluster; KEYPLANE_TEST_REGIONS then names
// its regions, comma-separated): each test gets its own freshly migrated database.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(schematest.Run(m)) }
package schematest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/pglocal"
)

// Regions are the regions the test databases are migrated with, unless
// KEYPLANE_TEST_REGIONS says otherwise. The first is the primary region.
var Regions = []string{"us-east", "eu-west", "ap-south"}

const template = "keyplane_template"

var (
	once     sync.Once
	server   *pglocal.Server
	startErr error
	counter  atomic.Int64
)

// Run runs the tests and stops the shared server afterwards.
func Run(m *testing.M) int {
	code := m.Run()
	if server != nil {
		_ = server.Stop()
	}
	return code
}

// MigrateConfig is the configuration the test databases are migrated with.
func MigrateConfig() schema.MigrateConfig {
	regions := Regions
	if env := os.Getenv("KEYPLANE_TEST_REGIONS"); env != "" {
		regions = strings.Split(env, ",")
	}
	return schema.MigrateConfig{Regions: regions}
}

// NewDatabase returns the URL of a fresh, migrated database for this test.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return newDatabase(t, true)
}

// NewEmptyDatabase returns the URL of a fresh database with no tables.
func NewEmptyDatabase(t testing.TB) string {
	t.Helper()
	return newDatabase(t, false)
}

// NewStore returns a store on a fresh, migrated database, as seen from a node of
// region.
func NewStore(t testing.TB, region string) *schema.Store {
	t.Helper()
	pool, err := schema.Open(context.Background(), NewDatabase(t), schema.PoolConfig{})
	if err != nil {
		t.Fatalf("open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return schema.New(pool, schema.Config{Region: region, Node: region + "-test"})
}

func newDatabase(t testing.TB, migrated bool) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := fmt.Sprintf("kp_test_%d_%d", os.Getpid(), counter.Add(1))
	if ext := os.Getenv("KEYPLANE_TEST_DATABASE_URL"); ext != "" {
		return externalDatabase(ctx, t, ext, name, migrated)
	}
	once.Do(func() {
		server, startErr = pglocal.Start(ctx, pglocal.Config{})
		if startErr != nil {
			return
		}
		if startErr = server.CreateDatabase(ctx, template, ""); startErr != nil {
			return
		}
		startErr = migrate(ctx, server.URL(template))
	})
	if startErr != nil {
		t.Fatalf("test database: %v", startErr)
	}
	tmpl := template
	if !migrated {
		tmpl = "template0"
	}
	if err := server.CreateDatabase(ctx, name, tmpl); err != nil {
		t.Fatalf("test database: %v", err)
	}
	return server.URL(name)
}

func migrate(ctx context.Context, url string) error {
	pool, err := schema.Open(ctx, url, schema.PoolConfig{MaxConns: 2})
	if err != nil {
		return err
	}
	defer pool.Close()
	_, err = schema.Migrate(ctx, pool, MigrateConfig())
	return err
}

func externalDatabase(ctx context.Context, t testing.TB, base, name string, migrated bool) string {
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("KEYPLANE_TEST_DATABASE_URL: connect: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("KEYPLANE_TEST_DATABASE_URL: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), base)
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize())
			_ = c.Close(context.Background())
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("KEYPLANE_TEST_DATABASE_URL: %v", err)
	}
	u.Path = "/" + name
	if migrated {
		if err := migrate(ctx, u.String()); err != nil {
			t.Fatalf("migrate %s: %v", name, err)
		}
	}
	return u.String()
}
